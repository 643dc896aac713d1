"""Weight statistics of one checkpoint: the metrics Hu et al. 2023 (arXiv 2308.09543, "Latent State Models
of Training Dynamics") fit their HMM on, so their method can be reproduced from semgraph's store.

Definitions, over the weight matrices W_1..W_K (2-D parameters; a >2-D parameter such as a TransformerLens
(n_heads, d_model, d_head) W_Q counts as one matrix per leading index) and the biases (1-D parameters):

- ``l1``, ``l2``: mean over matrices of the entrywise L1 norm sum|w| and the Frobenius norm sqrt(sum w^2);
- ``l1_over_l2``: mean over matrices of L1/L2 (a sparsity measure; lower is sparser);
- ``w_mean``, ``w_median``, ``w_var``: mean, median and population variance (ddof=0) of all matrix entries
  concatenated; ``b_mean``, ``b_median``, ``b_var``: the same for all bias entries;
- ``trace``: mean over matrices of tr(W) (the sum of the main diagonal, also for rectangular W);
- ``spectral``: mean over matrices of the spectral norm ||W||_2 (largest singular value, lambda_max);
- ``trace_over_spectral``: mean over matrices of tr(W) / ||W||_2;
- ``sv_mean``, ``sv_var``: mean and population variance of all singular values of all matrices together;
- per matrix ``<name>.l1``, ``.l2``, ``.spectral``, ``.sv_mean``, ``.sv_var``, ``.mean``, ``.var`` and
  ``.stable_rank`` = ||W||_F^2 / ||W||_2^2 (1 for rank one, min(shape) for an orthogonal W).

Concept presence: "low-rank <name>" is present when stable_rank <= ``low_rank_at`` x min(shape) (default
0.1), i.e. the matrix's energy sits in a few directions (as in a trained Fourier embedding).
Degenerate input: a parameter holding NaN/inf gives "not computed" for its values and every aggregate; an
all-zero matrix has no stable rank (recorded, not computed). Cost: one SVD per matrix (the checkpoint's
parameters are already in memory).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from probes.base import ProbeContext, ProbeResult, finite_or_reason

AGGREGATES = ("l1", "l2", "l1_over_l2", "w_mean", "w_median", "w_var", "trace", "spectral",
              "trace_over_spectral", "sv_mean", "sv_var")
BIAS_AGGREGATES = ("b_mean", "b_median", "b_var")


def matrices(name: str, w: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(name, 2-D matrix) pairs of a parameter: itself if 2-D, one per leading index if more."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim == 2:
        return [(name, w)]
    flat = w.reshape(-1, *w.shape[-2:])
    return [(f"{name}[{i}]", m) for i, m in enumerate(flat)]


def matrix_stats(w: np.ndarray) -> dict[str, float | None]:
    """Statistics of one 2-D matrix (see the module docstring)."""
    sv = np.linalg.svd(w, compute_uv=False)
    fro = float(np.sqrt((w ** 2).sum()))
    spectral = float(sv[0]) if sv.size else 0.0
    return {"l1": float(np.abs(w).sum()), "l2": fro, "spectral": spectral, "trace": float(np.trace(w)),
            "sv_mean": float(sv.mean()), "sv_var": float(sv.var()), "mean": float(w.mean()), "var": float(w.var()),
            "stable_rank": fro ** 2 / spectral ** 2 if spectral > 0 else None, "_sv": sv}


class WeightStatsProbe:
    """Hu et al. 2023 weight metrics of the parameters stored with the checkpoint (``ctx.params``).

    ``params`` limits the probe to some parameter names (default: all stored ones); ``per_matrix`` adds
    the per-matrix values.
    """

    name = "weights"

    def __init__(self, params: Sequence[str] | None = None, per_matrix: bool = True, low_rank_at: float = 0.1):
        self.params = params
        self.per_matrix = per_matrix
        self.low_rank_at = low_rank_at

    def compute(self, ctx: ProbeContext) -> ProbeResult:
        res = ProbeResult()
        names = list(self.params) if self.params is not None else sorted(ctx.params)
        missing = [n for n in names if n not in ctx.params]
        bad = {n: finite_or_reason(np.asarray(ctx.params[n]), n) for n in names if n in ctx.params}
        bad = {n: r for n, r in bad.items() if r}
        if not names or missing or bad:
            reason = ("no parameters were stored with the checkpoint" if not names else
                      f"parameters not stored: {missing}" if missing else "; ".join(bad.values()))
            for key in AGGREGATES + BIAS_AGGREGATES:
                res.not_computed(key, reason)
            return res
        stats, entries, biases, svs = [], [], [], []
        for name in names:
            w = np.asarray(ctx.params[name], dtype=np.float64)
            if w.ndim < 2:
                biases.append(w.ravel())
                continue
            for mname, m in matrices(name, w):
                s = matrix_stats(m)
                svs.append(s.pop("_sv"))
                entries.append(m.ravel())
                stats.append(s)
                if self.per_matrix:
                    for key in ("l1", "l2", "spectral", "sv_mean", "sv_var", "mean", "var"):
                        res.values[f"{mname}.{key}"] = s[key]
                    if s["stable_rank"] is None:
                        res.not_computed(f"{mname}.stable_rank", "the matrix is all zeros")
                    else:
                        res.values[f"{mname}.stable_rank"] = s["stable_rank"]
                if s["stable_rank"] is not None:
                    res.present[f"low-rank {mname}"] = bool(s["stable_rank"] <= self.low_rank_at * min(m.shape))
        if stats:
            w_all, sv_all = np.concatenate(entries), np.concatenate(svs)
            res.values.update(
                l1=float(np.mean([s["l1"] for s in stats])), l2=float(np.mean([s["l2"] for s in stats])),
                w_mean=float(w_all.mean()), w_median=float(np.median(w_all)), w_var=float(w_all.var()),
                trace=float(np.mean([s["trace"] for s in stats])),
                spectral=float(np.mean([s["spectral"] for s in stats])),
                sv_mean=float(sv_all.mean()), sv_var=float(sv_all.var()))
            if all(s["l2"] > 0 for s in stats):
                res.values["l1_over_l2"] = float(np.mean([s["l1"] / s["l2"] for s in stats]))
                res.values["trace_over_spectral"] = float(np.mean([s["trace"] / s["spectral"] for s in stats]))
            else:
                res.not_computed("l1_over_l2", "a weight matrix is all zeros")
                res.not_computed("trace_over_spectral", "a weight matrix is all zeros")
        else:
            for key in AGGREGATES:
                res.not_computed(key, "no 2-D weight matrix among the stored parameters")
        if biases:
            b_all = np.concatenate(biases)
            res.values.update(b_mean=float(b_all.mean()), b_median=float(np.median(b_all)), b_var=float(b_all.var()))
        else:
            for key in BIAS_AGGREGATES:
                res.not_computed(key, "no bias (1-D parameter) among the stored parameters")
        return res
