"""Output probe: loss, accuracy and fallibility per split of the probe set.

Fallibility (Gokhale 2023) of the node the network occupies is F = sum_x KL(P_true(.|x) || P_model(.|x)).
For a deterministic task P_true is a point mass, so KL = -log P_model(y*|x): we report the sum over each
split (F_<split>) and the per-input mean (F_<split>_mean, equal to the split's cross-entropy loss).
"""
from __future__ import annotations

import numpy as np

from probes.base import ProbeContext, ProbeResult, finite_or_reason


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class OutputProbe:
    name = "output"

    def __init__(self, memorised_at: float = 0.99, generalised_at: float = 0.95):
        self.memorised_at = memorised_at
        self.generalised_at = generalised_at

    def compute(self, ctx: ProbeContext) -> ProbeResult:
        res = ProbeResult()
        logits = np.asarray(ctx.logits, dtype=np.float64)
        reason = finite_or_reason(logits, "logits")
        parts = [p for p in ("train", "test", "unseen") if np.any(ctx.split == p)]
        for part in parts:
            mask = ctx.split == part
            if reason:
                for key in ("loss", "acc"):
                    res.not_computed(f"{part}_{key}", reason)
                res.not_computed(f"F_{part}", reason)
                res.not_computed(f"F_{part}_mean", reason)
                continue
            logp = log_softmax(logits[mask])
            nll = -logp[np.arange(mask.sum()), ctx.labels[mask]]
            res.values[f"{part}_loss"] = float(nll.mean())
            res.values[f"{part}_acc"] = float((logits[mask].argmax(-1) == ctx.labels[mask]).mean())
            res.values[f"F_{part}"] = float(nll.sum())
            res.values[f"F_{part}_mean"] = float(nll.mean())
        tr, te = res.values.get("train_acc"), res.values.get("test_acc")
        if tr is not None:
            res.present["fits train"] = tr >= self.memorised_at
        if te is not None:
            res.present["generalises"] = te >= self.generalised_at
        return res
