"""Representation similarity: linear CKA (Kornblith et al. 2019, arXiv 1905.00414).

Definition: for activations X (n, d1) and Y (n, d2) of the same n inputs, centre each column, then

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)

(the feature-space form of HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear kernels K = X X^T,
L = Y Y^T). It is 1 for X = Y, invariant to orthogonal transforms and isotropic scaling of either side, and
lies in [0, 1]. It is undefined when either side is constant over inputs (zero after centring): that is
recorded as "not computed", never as a number.

Concept presence (``CKAProbe``): the checkpoint "matches the reference at <hook>" when CKA >= ``present_at``
(default 0.9).

Run-level matrices (``cka_matrix``) read checkpoints through a loader (e.g. ``store_loader`` on the HDF5
store) in blocks that fit a memory budget, never all activations at once; see its docstring for the bound.
Cost grows as T^2 n d^2 / 2 (measured: 67 checkpoints, n = 2809, d = 128 in 52 s; d = 512 in 622 s on two
shared cores; benchmarks/cka_matrix.py).
"""
from __future__ import annotations

from typing import Callable, Hashable, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from probes.base import ProbeContext, ProbeResult, finite_or_reason


def _centred(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return x - x.mean(axis=0, keepdims=True)


def _degenerate(x: np.ndarray, what: str) -> str | None:
    bad = finite_or_reason(np.asarray(x), what)
    if bad:
        return bad
    if len(x) < 2:
        return f"{what} has fewer than 2 inputs"
    if not np.any(np.ptp(np.asarray(x).reshape(len(x), -1), axis=0) > 0):
        return f"{what} is constant across inputs (CKA undefined)"
    return None


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between (n, d1) and (n, d2) activations of the same inputs (raises on degenerate input;
    ``CKAProbe`` records the reason instead)."""
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same inputs on both sides: {len(x)} vs {len(y)} rows")
    for arr, what in ((x, "first argument"), (y, "second argument")):
        reason = _degenerate(arr, what)
        if reason:
            raise ValueError(reason)
    xc, yc = _centred(x), _centred(y)
    cross = np.linalg.norm(yc.T @ xc) ** 2
    return float(cross / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))


class CKAProbe:
    """CKA of one hook's activations at this checkpoint with a reference (e.g. the final checkpoint's).

    ``reference`` is an (n, d) array of the same probe-set inputs. Values: ``cka``. Present:
    ``matches reference at <hook>`` when cka >= ``present_at``.
    """

    name = "cka"

    def __init__(self, hook: str = "blocks.0.hook_resid_post", reference: np.ndarray | None = None,
                 present_at: float = 0.9, reference_name: str = "reference"):
        self.hook = hook
        self.reference = reference
        self.present_at = present_at
        self.reference_name = reference_name

    def compute(self, ctx: ProbeContext) -> ProbeResult:
        res = ProbeResult()
        x = ctx.activations.get(self.hook)
        if x is None:
            reason = f"hook {self.hook!r} was not captured"
        elif self.reference is None:
            reason = "no reference activations were given"
        elif len(self.reference) != len(x):
            reason = f"reference has {len(self.reference)} inputs, the checkpoint {len(x)}"
        else:
            reason = _degenerate(x, self.hook) or _degenerate(self.reference, self.reference_name)
        if reason:
            res.not_computed("cka", reason)
            return res
        value = linear_cka(x, self.reference)
        res.values["cka"] = value
        res.present[f"matches {self.reference_name} at {self.hook}"] = bool(value >= self.present_at)
        return res


def cka_matrix(keys: Sequence[Hashable], load: Callable[[Hashable], np.ndarray], *,
               max_bytes: int = 256 << 20) -> tuple[np.ndarray, dict]:
    """The full key x key linear-CKA matrix of a run, reading checkpoints through ``load(key)`` -> (n, d).

    Never holds all activations: it picks the largest block B of checkpoints such that the block (held
    twice: as arrays and stacked side by side) plus one more checkpoint, all centred float64, fit in
    ``max_bytes`` (B >= 1), and calls ``cka_matrix_blocked``. Memory bound: max(max_bytes, 3 n d 8 bytes)
    plus the T x T result and d x B d products. Cost: T^2 / 2 products of (d x n)(n x d), batched.
    """
    keys = list(keys)
    if not keys:
        return np.zeros((0, 0)), {}
    first = np.asarray(load(keys[0]))
    per = max(1, first.size) * 8
    block = int(max(1, min(len(keys), (max_bytes // per - 1) // 2)))
    return cka_matrix_blocked(keys, load, block=block)


def cka_matrix_blocked(keys: Sequence[Hashable], load: Callable[[Hashable], np.ndarray], block: int = 8,
                       n_threads: int | None = 1) -> tuple[np.ndarray, dict]:
    """As ``cka_matrix``, holding ``block`` checkpoints for the rows and one for the columns at a time.

    Memory bound: (2 block + 1) checkpoints' centred activations (float64, (2 block + 1) n d values), their
    Frobenius norms ||X^T X||_F, and the T x T result. Each checkpoint is read ceil(T / block) + 1 times.
    Each column checkpoint meets the whole row block in one (d x n)(n x B d) product; ``n_threads`` caps
    BLAS threads (1: oversubscribed threads on a shared machine were much slower; None: library default).
    Returns (matrix, reasons) where reasons maps a key to why its row/column is NaN.
    """
    keys = list(keys)
    t = len(keys)
    out = np.full((t, t), np.nan)
    reasons: dict = {}
    norms = np.full(t, np.nan)

    def get(i: int) -> np.ndarray | None:
        x = load(keys[i])
        reason = _degenerate(x, f"activations of {keys[i]!r}")
        if reason:
            reasons[keys[i]] = reason
            return None
        xc = _centred(x)
        norms[i] = np.linalg.norm(xc.T @ xc)
        return xc

    with threadpool_limits(limits=n_threads):
        for start in range(0, t, block):
            rows = {i: x for i in range(start, min(t, start + block)) if (x := get(i)) is not None}
            if not rows:
                continue
            idx = list(rows)
            stacked = np.concatenate([rows[i] for i in idx], axis=1)     # (n, B d): one product per column
            for pos, i in enumerate(idx):                               # the block against itself
                _fill(out, norms, i, idx[pos:], rows[i].T @ stacked[:, _cols(rows, idx, pos)], rows)
            for j in range(start + block, t):
                xj = get(j)
                if xj is not None:
                    _fill(out, norms, j, idx, xj.T @ stacked, rows)
    return out, reasons


def _cols(rows: dict, idx: list, pos: int) -> slice:
    """Columns of the stacked block holding checkpoints idx[pos:]."""
    return slice(sum(rows[i].shape[1] for i in idx[:pos]), None)


def _fill(out: np.ndarray, norms: np.ndarray, i: int, others: list, prod: np.ndarray, rows: dict) -> None:
    """Write CKA(i, j) for j in ``others`` from prod = X_i^T [X_j ...] (d_i x sum d_j)."""
    col = 0
    for j in others:
        d = rows[j].shape[1]
        value = float((prod[:, col:col + d] ** 2).sum() / (norms[i] * norms[j]))
        out[i, j] = out[j, i] = value
        col += d


def cka_to_reference(keys: Sequence[Hashable], load: Callable[[Hashable], np.ndarray],
                     reference: Hashable | None = None, previous: bool = False) -> dict[Hashable, float | None]:
    """CKA of each checkpoint with ``reference`` (default: the last key) or, with ``previous=True``, with the
    checkpoint before it. Holds two checkpoints' activations at a time; degenerate ones give None."""
    keys = list(keys)
    out: dict[Hashable, float | None] = {}
    if previous:
        prev = None
        for k in keys:
            x = load(k)
            ok = _degenerate(x, str(k)) is None
            out[k] = linear_cka(x, prev) if ok and prev is not None else None
            prev = x if ok else None
        return out
    ref = load(keys[-1] if reference is None else reference)
    ref_ok = _degenerate(ref, "reference") is None
    for k in keys:
        x = load(k)
        out[k] = linear_cka(x, ref) if ref_ok and _degenerate(x, str(k)) is None else None
    return out


def store_loader(store, run: str, hook: str) -> Callable[[int], np.ndarray]:
    """A ``load(step)`` reading ``acts/<hook>`` of one checkpoint from a ``semgraph.store.ActivationStore``."""
    from semgraph.store import _h5_name

    def load(step: int) -> np.ndarray:
        with store.open(run, step) as fh:
            return fh[_h5_name(f"acts/{hook}")][()]
    return load
