"""Progress measures for a grokking run (Nanda et al. 2023, arXiv 2301.05217, section 5), from the store.

For every stored checkpoint of a modular-addition run: the Fourier probe's own key frequencies, then
restricted and excluded loss computed with the FINAL checkpoint's key frequencies (so every checkpoint is
measured against the circuit the network ends with), next to train/test loss from the output probe.

Event definitions at a level f (default 0.5; steps are checkpoint steps, so an event is located to the
checkpoint grid). Progress is measured toward the network the run ends with, so the reference point is the
value at the last checkpoint:

- a curve *drops* at the first step after its maximum at which it has come down a fraction f of the way
  from that peak to its final value: value <= max - f (max - final);
- a curve *rises* at the first step after its minimum at which it has come up a fraction f of the way
  from that minimum to its final value: value >= min + f (final - min).

Losses are compared on a log10 scale: they span orders of magnitude (a test loss of 26 at the peak of
memorisation, 0.04 once grokked), and on a linear scale "half way down" would be reached while the test
accuracy is still near its memorisation level.

(``toward="extreme"`` measures against the min / max after the peak / minimum instead; a late loss spike,
such as a slingshot instability after grokking, then moves every level, which is why it is not the default.
``check_claims`` reports both.)

Nanda et al.'s claims, checked by ``check_claims``: key frequencies are stable over the last 20% of
checkpoints; restricted loss drops before test loss drops; excluded loss rises before test loss drops.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from probes.base import ProbeContext
from probes.fourier import FourierProbe
from probes.output import OutputProbe


def drop_step(steps: Sequence[int], values: Sequence[float], level: float = 0.5, toward: str = "final"
              ) -> int | None:
    """First step after the curve's maximum at which it has come ``level`` of the way down from that peak
    toward its value at the last step (``toward="final"``) or its minimum after the peak
    (``toward="extreme"``). None if the curve never comes down."""
    s, v = np.asarray(steps), np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    s, v = s[ok], v[ok]
    if len(v) < 2:
        return None
    peak = int(np.argmax(v))
    after = v[peak:]
    end = after[-1] if toward == "final" else after.min()
    if not end < v[peak]:
        return None
    hit = np.nonzero(after <= v[peak] - level * (v[peak] - end))[0]
    return int(s[peak + hit[0]])


def rise_step(steps: Sequence[int], values: Sequence[float], level: float = 0.5, toward: str = "final"
              ) -> int | None:
    """First step after the curve's minimum at which it has come ``level`` of the way up from that minimum
    toward its value at the last step (``toward="final"``) or its maximum after the minimum
    (``toward="extreme"``). None if the curve never rises."""
    return drop_step(steps, -np.asarray(values, dtype=np.float64), level, toward)


def measure_run(store, run: str, steps: Sequence[int], probe_set, task: dict[str, Any],
                neuron_hook: str | None = "blocks.0.mlp.hook_post", embedding_param: str = "embed.weight"
                ) -> list[dict[str, Any]]:
    """One row per step: own key frequencies, restricted/excluded loss at the final key frequencies, and
    train/test loss and accuracy. Reads one checkpoint's store file at a time (twice: own pass, final pass)."""
    from semgraph.probing import context_for

    steps = sorted(int(s) for s in steps)
    own = FourierProbe(embedding_param=embedding_param, neuron_hook=neuron_hook)
    final_ctx = context_for(store, run, steps[-1], probe_set, task)
    final_keys = own.compute(final_ctx).values.get("key_freqs") or []
    fixed = FourierProbe(embedding_param=embedding_param, neuron_hook=None, fixed_frequencies=final_keys)
    rows = []
    for step in steps:
        ctx: ProbeContext = context_for(store, run, step, probe_set, task)
        mine = own.compute(ctx)
        at_final = fixed.compute(ctx)
        out = OutputProbe().compute(ctx)
        rows.append({"step": step, "key_freqs": mine.values.get("key_freqs"),
                     "neuron_key_freqs": mine.values.get("neuron_key_freqs"), "gini": mine.values.get("gini"),
                     "restricted_loss": at_final.values.get("restricted_loss"),
                     "excluded_loss": at_final.values.get("excluded_loss"),
                     "distance_irrelevance": at_final.values.get("distance_irrelevance"),
                     **{k: out.values.get(k) for k in ("train_loss", "test_loss", "train_acc", "test_acc")},
                     "final_key_freqs": final_keys})
    return rows


def check_claims(rows: Sequence[dict[str, Any]], level: float = 0.5, last_fraction: float = 0.2,
                 levels: Sequence[float] = (0.25, 0.5, 0.75), scale: str = "log") -> dict[str, Any]:
    """The three progress-measure claims with the steps that decide them (see the module docstring).

    The verdicts use ``level``; ``by_level`` repeats the event steps and verdicts at other ``levels`` (a
    curve has come ``level`` of the way, e.g. 0.75: three quarters of its drop or rise), so a reader sees
    whether a verdict depends on the level. Steps are checkpoint steps: two events between the same pair
    of checkpoints land on the same step and do not count as "before".
    """
    steps = [r["step"] for r in rows]
    to_scale = (lambda v: math.log10(max(v, 1e-12))) if scale == "log" else float
    col = {k: [np.nan if r[k] is None else to_scale(r[k]) for r in rows]
           for k in ("restricted_loss", "excluded_loss", "test_loss", "train_loss")}
    n_last = max(1, math.ceil(last_fraction * len(rows)))
    last = rows[-n_last:]
    final = rows[-1]["key_freqs"]

    def events(f: float, toward: str = "final") -> dict[str, Any]:
        t_test = drop_step(steps, col["test_loss"], f, toward)
        t_restricted = drop_step(steps, col["restricted_loss"], f, toward)
        t_excluded = rise_step(steps, col["excluded_loss"], f, toward)
        return {"test_loss_drop_step": t_test, "restricted_loss_drop_step": t_restricted,
                "excluded_loss_rise_step": t_excluded,
                "restricted_drops_before_test": None if None in (t_test, t_restricted) else t_restricted < t_test,
                "excluded_rises_before_test_drops": None if None in (t_test, t_excluded) else t_excluded < t_test}

    return {
        "final_key_freqs": final,
        "last_checkpoints": [last[0]["step"], last[-1]["step"], n_last],
        "key_freqs_stable_last": all(r["key_freqs"] == final for r in last),
        "key_freqs_in_last": sorted({tuple(r["key_freqs"] or ()) for r in last}),
        "level": level,
        "scale": scale,
        **events(level),
        "by_level": {str(f): events(f) for f in levels},
        "toward_extreme_by_level": {str(f): events(f, "extreme") for f in levels},
    }
