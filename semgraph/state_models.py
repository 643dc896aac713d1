"""State models over per-checkpoint signatures pooled across runs, each with model selection and stability.

Every model is a scikit-learn style estimator: ``fit(X, lengths=None)`` sets ``labels_`` (one state per row),
``n_states_``, ``selection_`` (the criterion per number of states), ``criterion_`` (its name) and
``stability_`` (mean adjusted Rand index between the fit and refits on bootstrap samples or restarts).
Rows must be grouped by run and ordered by step; ``lengths`` gives the number of rows of each run.

Methods (``METHODS``; the default is ``DEFAULT_METHOD``):

- ``gmm``: Gaussian mixture on standardised signatures, number of states by BIC (the default: it is
  pooled over runs so node identity is shared, fast, and on planted data it recovers nodes exactly);
- ``hmm``: Gaussian HMM over the sequences (hmmlearn; Hu et al. 2023), number of states by BIC, with AIC
  and held-out log-likelihood per checkpoint (runs left out) reported beside it;
- ``agglomerative``: Ward clustering cut at a distance threshold placed in the largest gap of the merge
  heights (among cuts giving 2..max_states clusters);
- ``changepoint``: per-run change points (ruptures PELT, l2 cost, BIC-like penalty) as a cross-check;
  segments are then pooled by clustering their means with ``agglomerative``;
- ``concepts``: the node is the set of concepts the probes found present; no fitting;
- ``ward``: the first slice's Ward clustering with silhouette selection (kept for comparison).
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from semgraph.errors import ConfigError

DEFAULT_METHOD = "gmm"
METHODS = ("gmm", "hmm", "agglomerative", "changepoint", "concepts", "ward")


def standardise(X: np.ndarray) -> np.ndarray:
    """z-scores of the columns that vary (a constant column carries no state information)."""
    X = np.asarray(X, dtype=np.float64)
    keep = X.std(axis=0) > 0
    if not np.any(keep):
        return np.zeros((len(X), 1))
    return StandardScaler().fit_transform(X[:, keep])


def _lengths(n: int, lengths: Sequence[int] | None) -> list[int]:
    lengths = [n] if lengths is None else [int(x) for x in lengths]
    if sum(lengths) != n:
        raise ConfigError(f"run lengths sum to {sum(lengths)} but there are {n} rows", stage="states",
                          fix="pass one length per run, rows grouped by run")
    return lengths


def _relabel(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1].ravel()


class AgglomerativeStates(BaseEstimator, ClusterMixin):
    """Ward clustering cut at a distance threshold (given, or in the largest gap of merge heights)."""

    def __init__(self, distance_threshold: float | None = None, max_states: int = 8, max_rows: int = 3000,
                 n_boot: int = 10, random_state: int = 0):
        self.distance_threshold = distance_threshold
        self.max_states = max_states
        self.max_rows = max_rows
        self.n_boot = n_boot
        self.random_state = random_state

    def _cut(self, Z: np.ndarray) -> tuple[np.ndarray, float, dict[int, float]]:
        n = len(Z)
        if len(np.unique(np.round(Z, 9), axis=0)) < 3:
            return _relabel(np.unique(np.round(Z, 9), axis=0, return_inverse=True)[1].ravel()), 0.0, {}
        link = linkage(Z, method="ward")
        h = np.concatenate([[0.0], link[:, 2]])  # h[m] = height of the m-th merge (1-based)
        gaps = {}
        for k in range(2, min(self.max_states, n - 1) + 1):
            # k clusters: cut between merge n-k (kept) and merge n-k+1 (undone); the gap is a height ratio,
            # so a jump from within-cluster to between-cluster merges wins over gaps among the latter
            gaps[k] = float(h[n - k + 1] / max(h[n - k], 1e-12))
        if self.distance_threshold is not None:
            t = float(self.distance_threshold)
        else:
            k = max(gaps, key=gaps.get)
            t = float((h[n - k + 1] + h[n - k]) / 2)
        return fcluster(link, t, criterion="distance") - 1, t, gaps

    def _fit_labels(self, Z: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float, dict[int, float]]:
        if len(Z) <= self.max_rows:
            return self._cut(Z)
        sub = np.sort(rng.choice(len(Z), self.max_rows, replace=False))
        lab, t, gaps = self._cut(Z[sub])
        return _nearest_centroid(Z, Z[sub], lab), t, gaps

    def fit(self, X: np.ndarray, y: Any = None, lengths: Sequence[int] | None = None) -> "AgglomerativeStates":
        Z = standardise(X)
        rng = np.random.default_rng(self.random_state)
        self.labels_, self.threshold_, gaps = self._fit_labels(Z, rng)
        self.labels_ = _relabel(self.labels_)
        self.n_states_ = int(self.labels_.max() + 1)
        self.selection_ = {k: g for k, g in gaps.items()}
        self.criterion_ = "ratio of consecutive Ward merge heights at the cut (largest wins)"
        aris = []
        for _ in range(self.n_boot):
            idx = np.sort(rng.choice(len(Z), max(2, int(0.8 * len(Z))), replace=False))
            lab, _, _ = self._fit_labels(Z[idx], rng)
            aris.append(adjusted_rand_score(self.labels_[idx], lab))
        self.stability_ = float(np.mean(aris)) if aris else None
        self.stability_kind_ = "bootstrap (80% subsamples, threshold re-selected)"
        return self


def _nearest_centroid(Z: np.ndarray, Zs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    cents = np.stack([Zs[labels == c].mean(axis=0) for c in np.unique(labels)])
    return np.unique(labels)[np.argmin(((Z[:, None, :] - cents[None]) ** 2).sum(-1), axis=1)]


class GMMStates(BaseEstimator, ClusterMixin):
    """Gaussian mixture with the number of components chosen by BIC; stability over restarts."""

    def __init__(self, max_states: int = 8, covariance_type: str = "full", n_init: int = 2,
                 n_restarts: int = 3, reg_covar: float = 1e-3, random_state: int = 0):
        self.max_states = max_states
        self.covariance_type = covariance_type
        self.n_init = n_init
        self.n_restarts = n_restarts
        self.reg_covar = reg_covar
        self.random_state = random_state

    def _gmm(self, k: int, seed: int) -> GaussianMixture:
        return GaussianMixture(k, covariance_type=self.covariance_type, n_init=self.n_init,
                               reg_covar=self.reg_covar, random_state=seed)

    def fit(self, X: np.ndarray, y: Any = None, lengths: Sequence[int] | None = None) -> "GMMStates":
        Z = standardise(X)
        n_distinct = len(np.unique(np.round(Z, 9), axis=0))
        self.selection_ = {}
        best = None
        for k in range(1, min(self.max_states, n_distinct) + 1):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                g = self._gmm(k, self.random_state).fit(Z)
            self.selection_[k] = float(g.bic(Z))
            if best is None or self.selection_[k] < self.selection_[best[0]]:
                best = (k, g)
        k, self.model_ = best
        self.labels_ = _relabel(self.model_.predict(Z))
        self.n_states_ = int(self.labels_.max() + 1)
        self.criterion_ = "BIC (smallest wins)"
        aris = []
        for r in range(1, self.n_restarts + 1):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lab = self._gmm(k, self.random_state + 1000 * r).fit(Z).predict(Z)
            aris.append(adjusted_rand_score(self.labels_, lab))
        self.stability_ = float(np.mean(aris)) if aris else None
        self.stability_kind_ = f"restarts ({self.n_restarts} other seeds at k={k})"
        return self


class HMMStates(BaseEstimator, ClusterMixin):
    """Gaussian HMM over the runs' sequences (hmmlearn); states by BIC, AIC or held-out likelihood."""

    def __init__(self, max_states: int = 8, criterion: str = "bic", n_iter: int = 30, n_restarts: int = 3,
                 n_folds: int = 3, random_state: int = 0):
        self.max_states = max_states
        self.criterion = criterion
        self.n_iter = n_iter
        self.n_restarts = n_restarts
        self.n_folds = n_folds
        self.random_state = random_state

    def _fit_one(self, Z: np.ndarray, lengths: list[int], k: int, seed: int):
        """EM from a Gaussian-mixture start (means and variances), so restarts differ only by that start."""
        import logging

        from hmmlearn.hmm import GaussianHMM

        logging.getLogger("hmmlearn").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = GaussianMixture(k, covariance_type="diag", reg_covar=1e-3, random_state=seed).fit(Z)
            m = GaussianHMM(n_components=k, covariance_type="diag", n_iter=self.n_iter, tol=1e-3,
                            random_state=seed, min_covar=1e-3, init_params="st")
            m.means_ = g.means_
            m.covars_ = g.covariances_
            m.fit(Z, lengths)
        T = np.array(m.transmat_)
        T[T.sum(axis=1) <= 0] = 1.0 / k  # a state EM emptied: give it uniform exits so the model stays valid
        m.transmat_ = T / T.sum(axis=1, keepdims=True)
        if not np.isclose(m.startprob_.sum(), 1.0):
            m.startprob_ = np.full(k, 1.0 / k)
        return m

    def fit(self, X: np.ndarray, y: Any = None, lengths: Sequence[int] | None = None) -> "HMMStates":
        if self.criterion not in ("bic", "aic", "heldout"):
            raise ConfigError(f"unknown HMM criterion {self.criterion!r}", stage="states",
                              fix="use bic, aic or heldout")
        Z = standardise(X)
        lengths = _lengths(len(Z), lengths)
        starts = np.cumsum([0] + lengths)
        n_distinct = len(np.unique(np.round(Z, 9), axis=0))
        self.bic_, self.aic_, self.heldout_ = {}, {}, {}
        models = {}
        folds = _run_folds(len(lengths), self.n_folds, self.random_state)
        for k in range(1, min(self.max_states, n_distinct) + 1):
            m = self._fit_one(Z, lengths, k, self.random_state)
            models[k] = m
            self.bic_[k] = float(m.bic(Z, lengths))
            self.aic_[k] = float(m.aic(Z, lengths))
            if folds:
                ll = 0.0
                for test in folds:
                    tr = [i for i in range(len(lengths)) if i not in test]
                    Ztr = np.concatenate([Z[starts[i]:starts[i + 1]] for i in tr])
                    mt = self._fit_one(Ztr, [lengths[i] for i in tr], k, self.random_state)
                    Zte = np.concatenate([Z[starts[i]:starts[i + 1]] for i in test])
                    ll += mt.score(Zte, [lengths[i] for i in test])
                self.heldout_[k] = float(ll / len(Z))
        table = {"bic": self.bic_, "aic": self.aic_, "heldout": self.heldout_}[self.criterion]
        if not table:
            raise ConfigError("held-out likelihood needs at least 2 runs", stage="states",
                              fix="use --states hmm with the bic criterion, or add runs")
        k = max(table, key=table.get) if self.criterion == "heldout" else min(table, key=table.get)
        self.model_ = models[k]
        self.labels_ = _relabel(self.model_.predict(Z, lengths))
        self.n_states_ = int(self.labels_.max() + 1)
        self.selection_ = dict(table)
        self.criterion_ = {"bic": "BIC (smallest wins)", "aic": "AIC (smallest wins)",
                           "heldout": "held-out log-likelihood per checkpoint (largest wins)"}[self.criterion]
        aris = [adjusted_rand_score(self.labels_, self._fit_one(Z, lengths, k, self.random_state + 1000 * r)
                                    .predict(Z, lengths)) for r in range(1, self.n_restarts + 1)]
        self.stability_ = float(np.mean(aris)) if aris else None
        self.stability_kind_ = f"restarts ({self.n_restarts} other seeds at k={k})"
        return self


def _run_folds(n_runs: int, n_folds: int, seed: int) -> list[list[int]]:
    if n_runs < 2:
        return []
    order = np.random.default_rng(seed).permutation(n_runs)
    return [sorted(int(i) for i in f) for f in np.array_split(order, min(n_folds, n_runs)) if len(f)]


class ChangePointStates(BaseEstimator, ClusterMixin):
    """Per-run change points (ruptures PELT, l2 cost), then segments pooled by clustering their means."""

    def __init__(self, penalty: float | None = None, max_states: int = 8, random_state: int = 0):
        self.penalty = penalty
        self.max_states = max_states
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: Any = None, lengths: Sequence[int] | None = None) -> "ChangePointStates":
        import ruptures as rpt

        Z = standardise(X)
        lengths = _lengths(len(Z), lengths)
        d = Z.shape[1]
        # noise variance per feature from nearest neighbours in the pooled rows: states recur across runs, so a
        # row's nearest neighbour is almost always in its own state (E |z - z'|^2 = 2 d sigma^2 without the
        # nearest-neighbour shrinkage; the median keeps outliers out). BIC-like penalty per change point.
        from sklearn.neighbors import NearestNeighbors

        dist = NearestNeighbors(n_neighbors=2).fit(Z).kneighbors(Z)[0][:, 1]
        sigma2 = max(float(np.median(dist ** 2)) / (2 * d), 1e-6)
        self.penalty_ = float(self.penalty) if self.penalty is not None else \
            2.0 * d * sigma2 * np.log(max(len(Z), 2))
        seg_of_row = np.empty(len(Z), dtype=int)
        means, self.change_points_ = [], []
        start = 0
        for n in lengths:
            Zr = Z[start:start + n]
            bkps = rpt.Pelt(model="l2", min_size=1, jump=1).fit(Zr).predict(pen=self.penalty_) if n > 1 else [n]
            self.change_points_.append([start + b for b in bkps[:-1]])
            prev = 0
            for b in bkps:
                seg_of_row[start + prev:start + b] = len(means)
                means.append(Zr[prev:b].mean(axis=0))
                prev = b
            start += n
        means = np.array(means)
        sizes = np.bincount(seg_of_row, minlength=len(means))
        # weight segments by their length when clustering their means (repeat each mean ~ its size, capped)
        rep = np.repeat(np.arange(len(means)), np.minimum(sizes, 50))
        seg_model = AgglomerativeStates(max_states=self.max_states, random_state=self.random_state).fit(means[rep])
        seg_label = np.empty(len(means), dtype=int)
        seg_label[rep] = seg_model.labels_
        self.labels_ = _relabel(seg_label[seg_of_row])
        self.n_states_ = int(self.labels_.max() + 1)
        self.n_segments_ = int(len(means))
        self.selection_ = {"penalty": self.penalty_, "segments": self.n_segments_, **{
            f"gap k={k}": v for k, v in seg_model.selection_.items()}}
        self.criterion_ = "PELT penalty 2 d sigma^2 log n; segment means cut at the largest Ward height ratio"
        self.stability_ = seg_model.stability_
        self.stability_kind_ = "bootstrap of the segment-mean clustering"
        return self


class ConceptSetStates(BaseEstimator, ClusterMixin):
    """Node = the set of concepts present; X is a sequence of concept sets (or dicts concept -> bool)."""

    def fit(self, X: Sequence[Any], y: Any = None, lengths: Sequence[int] | None = None) -> "ConceptSetStates":
        sets = [frozenset(c for c, on in x.items() if on) if isinstance(x, dict) else frozenset(x) for x in X]
        self.sets_ = sorted(set(sets), key=lambda s: (len(s), sorted(s)))
        index = {s: i for i, s in enumerate(self.sets_)}
        self.labels_ = np.array([index[s] for s in sets], dtype=int)
        self.n_states_ = len(self.sets_)
        self.selection_ = {}
        self.criterion_ = "none (no fitting)"
        self.stability_ = 1.0
        self.stability_kind_ = "deterministic"
        return self


def make_state_model(method: str, max_states: int = 8, **kw: Any) -> BaseEstimator:
    from semgraph.states import WardStates

    if method == "gmm":
        return GMMStates(max_states=max_states, **kw)
    if method == "hmm":
        return HMMStates(max_states=max_states, **kw)
    if method == "agglomerative":
        return AgglomerativeStates(max_states=max_states, **kw)
    if method == "changepoint":
        return ChangePointStates(max_states=max_states, **kw)
    if method == "concepts":
        return ConceptSetStates()
    if method == "ward":
        return WardStates(max_states=max_states)
    raise ConfigError(f"unknown state model {method!r}", stage="states", fix=f"choose one of {', '.join(METHODS)}")


def fit_states(method: str, rows: Sequence[dict[str, Any]], keys: Sequence[str], max_states: int = 8,
               **kw: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit ``method`` on the rows (any order); returns labels in the rows' order and a report."""
    from semgraph.states import signature_matrix

    order = sorted(range(len(rows)), key=lambda i: (str(rows[i]["run"]), rows[i]["step"]))
    ordered = [rows[i] for i in order]
    runs = [r["run"] for r in ordered]
    lengths = [sum(1 for _ in g) for _, g in __import__("itertools").groupby(runs)]
    model = make_state_model(method, max_states, **kw)
    if method == "concepts":
        model.fit([r.get("present", {}) for r in ordered])
        used: list[str] = []
    else:
        X, used = signature_matrix(ordered, keys)
        model.fit(X, lengths=lengths) if method != "ward" else model.fit(X)
    labels = np.empty(len(rows), dtype=int)
    labels[order] = model.labels_
    report = {"method": method, "n_states": int(model.n_states_), "features": used,
              "criterion": getattr(model, "criterion_", "silhouette (largest wins)"),
              "selection": {str(k): v for k, v in (getattr(model, "selection_", None)
                                                   or getattr(model, "silhouette_", {})).items()},
              "stability_ari": getattr(model, "stability_", None),
              "stability_kind": getattr(model, "stability_kind_", None)}
    if method == "concepts":
        report["concept_sets"] = [sorted(s) for s in model.sets_]
    return labels, report


def boundary_f1(a: np.ndarray, b: np.ndarray, runs: Sequence[str], tolerance: int = 1) -> float | None:
    """F1 of state-change positions of ``a`` vs ``b`` (rows in run, step order), within ``tolerance`` rows."""
    runs = np.asarray(runs)
    same_run = runs[1:] == runs[:-1]
    ca = set(np.where(same_run & (a[1:] != a[:-1]))[0])
    cb = set(np.where(same_run & (b[1:] != b[:-1]))[0])
    if not ca and not cb:
        return 1.0
    if not ca or not cb:
        return 0.0
    hit_a = sum(any(abs(i - j) <= tolerance for j in cb) for i in ca)
    hit_b = sum(any(abs(i - j) <= tolerance for j in ca) for i in cb)
    prec, rec = hit_a / len(ca), hit_b / len(cb)
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


def agreement_table(labels: dict[str, np.ndarray], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pairwise adjusted Rand index and change-point F1 between methods' labels (rows in any order)."""
    order = sorted(range(len(rows)), key=lambda i: (str(rows[i]["run"]), rows[i]["step"]))
    runs = [rows[i]["run"] for i in order]
    names = sorted(labels)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            la, lb = np.asarray(labels[a])[order], np.asarray(labels[b])[order]
            out.append({"a": a, "b": b, "ari": float(adjusted_rand_score(la, lb)),
                        "boundary_f1": boundary_f1(la, lb, runs)})
    return out
