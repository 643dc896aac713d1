"""Linear probes for one concept at several layers: one ``LinearConceptProbe`` per hook.

Values are keyed by hook (``<hook>.score``, ``<hook>.control_score``, ``<hook>.selectivity``), so several
layers can enter one landscape signature (separate ``linear`` probes would share the key ``linear.score``).
"""
from __future__ import annotations

from typing import Sequence

from threadpoolctl import threadpool_limits

from probes.base import ProbeContext, ProbeResult
from probes.linear import LinearConceptProbe


class LinearPerLayerProbe:
    """Held-out decodability of ``concept`` at each of ``hooks`` (logistic regression + shuffled control)."""

    name = "linear_per_layer"

    def __init__(self, concept: str, hooks: Sequence[str], C: float = 1.0, test_size: float = 0.3,
                 max_iter: int = 300, present_at: float = 0.9, random_state: int = 0):
        self.concept = concept
        self.hooks = list(hooks)
        self.C = C
        self.test_size = test_size
        self.max_iter = max_iter
        self.present_at = present_at
        self.random_state = random_state

    def get_params(self) -> dict:
        return dict(vars(self))

    def compute(self, ctx: ProbeContext) -> ProbeResult:
        res = ProbeResult()
        with threadpool_limits(1):  # small fits: BLAS threads only contend (10x slower on a busy machine)
            self._compute(ctx, res)
        return res

    def _compute(self, ctx: ProbeContext, res: ProbeResult) -> None:
        for hook in self.hooks:
            probe = LinearConceptProbe(concept=self.concept, hook=hook, C=self.C, test_size=self.test_size,
                                       max_iter=self.max_iter, present_at=self.present_at,
                                       random_state=self.random_state)
            r = probe.compute(ctx)
            res.values.update({f"{hook}.{k}": v for k, v in r.values.items()})
            res.reasons.update({f"{hook}.{k}": v for k, v in r.reasons.items()})
            res.present.update({f"{key} @ {hook}": on for key, on in r.present.items()})
