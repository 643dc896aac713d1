"""Output probe: loss, accuracy and fallibility per split of the probe set.

Fallibility (Gokhale 2023) of the node the network occupies is F = sum_x KL(P_true(.|x) || P_model(.|x)).
For a deterministic task P_true is a point mass, so KL = -log P_model(y*|x): we report the sum over each
split (F_<split>) and the per-input mean (F_<split>_mean, equal to the split's cross-entropy loss).
Splits: ``train``, ``test`` and ``unseen`` (inputs never used in training, where the task defines them);
each split present in the probe set gets ``<split>_loss``, ``<split>_acc``, ``F_<split>``, ``F_<split>_mean``.

Concept presence: "fits train" when train accuracy >= ``memorised_at`` (0.99); "generalises" when test
accuracy >= ``generalised_at`` (0.95); "generalises to unseen" when unseen accuracy >= ``generalised_at``.
Degenerate input: NaN/inf logits, or logits that do not match the labels, give "not computed" with the
reason for every value (constant logits are a valid, uniform prediction: loss log C).

The output fingerprint (``fingerprint``: the predictive distribution on the probe set) and the functional
distances between two checkpoints (``js_divergence``, ``total_variation``, ``fingerprint_distance`` reading
the logits from the HDF5 store) are below.
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
        labels = np.asarray(ctx.labels)
        if logits.ndim != 2 or len(logits) != len(labels):
            reason = f"logits of shape {logits.shape} do not match {len(labels)} labels"
        elif len(labels) and (labels.min() < 0 or labels.max() >= logits.shape[1]):
            reason = f"labels outside the {logits.shape[1]} output classes"
        parts = [p for p in ("train", "test", "unseen") if np.any(ctx.split == p)]
        if not parts:
            res.not_computed("train_loss", "the probe set has no train/test/unseen split")
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
        un = res.values.get("unseen_acc")
        if un is not None:
            res.present["generalises to unseen"] = un >= self.generalised_at
        return res


# ---- output fingerprint: the predictive distribution, for distances between checkpoints ------------------

def fingerprint(logits: np.ndarray) -> np.ndarray:
    """The model's predictive distribution softmax(logits) over the probe set, (n, C) float64 rows summing to 1.

    Two checkpoints with the same fingerprint compute the same function on the probe set, whatever their
    weights; distances between fingerprints are functional distances (``js_divergence``,
    ``total_variation``). Raises ValueError on NaN/inf logits (no distribution exists).
    """
    logits = np.asarray(logits, dtype=np.float64)
    bad = finite_or_reason(logits, "logits")
    if bad:
        raise ValueError(bad)
    return np.exp(log_softmax(logits))


def read_fingerprint(store, run: str, step: int, mask: np.ndarray | None = None) -> np.ndarray:
    """The fingerprint of one stored checkpoint, read from its HDF5 ``logits`` (optionally some inputs only)."""
    with store.open(run, step) as fh:
        logits = fh["logits"][()]
    return fingerprint(logits if mask is None else logits[mask])


def _check_pair(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"fingerprints differ in shape: {p.shape} vs {q.shape}")
    return p, q


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Mean over inputs of the Jensen-Shannon divergence (natural log, in [0, log 2]) between two fingerprints.

    JS(P, Q) = (KL(P || M) + KL(Q || M)) / 2 with M = (P + Q) / 2; symmetric, 0 iff P = Q, and its square
    root is a metric.
    """
    p, q = _check_pair(p, q)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(a > 0, a * (np.log(a) - np.log(m)), 0.0)
        return terms.sum(axis=-1)
    return float(np.mean((kl(p) + kl(q)) / 2))


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Mean over inputs of the total-variation distance sum|P - Q| / 2 (in [0, 1]) between two fingerprints."""
    p, q = _check_pair(p, q)
    return float(np.mean(np.abs(p - q).sum(axis=-1) / 2))


def fingerprint_distance(store, run: str, step_a: int, step_b: int, metric: str = "js",
                         mask: np.ndarray | None = None) -> float:
    """Functional distance between two stored checkpoints of ``run``: metric "js" or "tv"."""
    fns = {"js": js_divergence, "tv": total_variation}
    if metric not in fns:
        raise ValueError(f"unknown fingerprint metric {metric!r}; use one of {sorted(fns)}")
    return fns[metric](read_fingerprint(store, run, step_a, mask), read_fingerprint(store, run, step_b, mask))
