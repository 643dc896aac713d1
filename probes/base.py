"""The probe protocol: what semgraph gives a probe and what a probe gives back.

A probe is any object with a ``name`` and ``compute(ctx) -> ProbeResult``. It reads only the
``ProbeContext`` (probe set with ground truth, stored activations, logits and weights of ONE checkpoint),
so it runs from what the capture stage wrote, and a user adds a probe without touching semgraph/.

A result is flat: named values (float, int, str or list), a reason for every value that could not be
computed (degenerate input is recorded, never turned into a number), and present/absent decisions for
concepts, which label the landscape's nodes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class ProbeContext:
    run: str
    step: int
    inputs: np.ndarray                      # (n, seq) tokens
    labels: np.ndarray                      # (n,) correct answer
    split: np.ndarray                       # (n,) "train" / "test" / "unseen"
    concepts: Mapping[str, np.ndarray]      # concept name -> (n,) integer labels
    activations: Mapping[str, np.ndarray]   # hook name -> (n, ...) at the answer position
    logits: np.ndarray                      # (n, n_classes)
    params: Mapping[str, np.ndarray] = field(default_factory=dict)
    task: Mapping[str, Any] = field(default_factory=dict)  # the task spec (e.g. {"name":..., "p": 53})


@dataclass
class ProbeResult:
    values: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)    # value name -> why it was not computed
    present: dict[str, bool] = field(default_factory=dict)   # concept -> present at this checkpoint

    def not_computed(self, key: str, reason: str) -> None:
        self.values[key] = None
        self.reasons[key] = reason

    def prefixed(self, prefix: str) -> "ProbeResult":
        return ProbeResult({f"{prefix}.{k}": v for k, v in self.values.items()},
                           {f"{prefix}.{k}": v for k, v in self.reasons.items()},
                           dict(self.present))


@runtime_checkable
class Probe(Protocol):
    name: str

    def compute(self, ctx: ProbeContext) -> ProbeResult:  # pragma: no cover - protocol
        ...


def finite_or_reason(x: np.ndarray, what: str) -> str | None:
    """A reason string when ``x`` holds NaN/inf (fp16 overflow, a diverged checkpoint), else None."""
    bad = ~np.isfinite(x)
    if bad.any():
        return f"{what} holds {int(bad.sum())} non-finite values (NaN/inf)"
    return None
