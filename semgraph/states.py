"""Stage: per-checkpoint signatures -> nodes (states), each with a human-readable label.

A signature is a checkpoint's probe results (accuracies, log-losses, Fourier sparsity, restricted/excluded
loss, linear decodability), standardised across all checkpoints. Nodes are found by Ward agglomerative
clustering; the number of nodes is chosen by the silhouette score (model selection, not a fixed k).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

from semgraph.errors import SemgraphError

LOG_FEATURES = ("_loss", "F_")


def signature_matrix(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """(n_checkpoints, n_features) with losses on a log scale; features missing anywhere are dropped."""
    cols, used = [], []
    for key in keys:
        vals = np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])
        if not np.all(np.isfinite(vals)):
            continue  # not computed at some checkpoint (recorded with a reason in the table)
        if any(tag in key for tag in LOG_FEATURES):
            vals = np.log10(np.maximum(vals, 1e-8))
        cols.append(vals)
        used.append(key)
    if not cols:
        raise SemgraphError("no signature feature was computed at every checkpoint", stage="states",
                            fix="check the probe results table (reasons column) and the --signature keys")
    return np.stack(cols, axis=1), used


class WardStates(BaseEstimator, ClusterMixin):
    """Ward clustering of standardised signatures with the number of states chosen by silhouette."""

    def __init__(self, min_states: int = 2, max_states: int = 8):
        self.min_states = min_states
        self.max_states = max_states

    def fit(self, X: np.ndarray, y: Any = None) -> "WardStates":
        X = np.asarray(X, dtype=np.float64)
        Z = StandardScaler().fit_transform(X)
        Z = Z[:, X.std(axis=0) > 0] if np.any(X.std(axis=0) > 0) else np.zeros((len(X), 1))
        n_distinct = len(np.unique(np.round(Z, 9), axis=0))
        self.silhouette_: dict[int, float] = {}
        if n_distinct < 3:  # nothing to choose: every distinct signature is its own state
            self.labels_ = np.unique(np.round(Z, 9), axis=0, return_inverse=True)[1].ravel()
        else:
            best = None
            for k in range(self.min_states, min(self.max_states, n_distinct - 1) + 1):
                labels = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(Z)
                self.silhouette_[k] = float(silhouette_score(Z, labels))
                if best is None or self.silhouette_[k] > self.silhouette_[best[0]] + 1e-12:
                    best = (k, labels)
            self.labels_ = best[1]
        self.n_states_ = int(len(np.unique(self.labels_)))
        return self


#: Behaviour concepts (from the output probe) that split any node mixing them: checkpoints that generalise
#: and checkpoints that don't compute different input-output functions, so they are different algorithms.
BEHAVIOUR_CONCEPTS = ("fits train", "generalises")


def refine_by_concepts(labels: np.ndarray, rows: Sequence[dict[str, Any]],
                       concepts: Sequence[str] = BEHAVIOUR_CONCEPTS) -> np.ndarray:
    """Split each state into parts that agree on the presence of ``concepts`` (new integer labels)."""
    keys = [(int(lab), tuple(bool(r.get("present", {}).get(c, False)) for c in concepts))
            for lab, r in zip(labels, rows)]
    index: dict[tuple, int] = {}
    return np.array([index.setdefault(k, len(index)) for k in keys])


def order_by_first_visit(labels: np.ndarray, order_key: np.ndarray) -> np.ndarray:
    """Relabel states 0..k-1 in order of first visit (smallest ``order_key``, e.g. step)."""
    first = {}
    for lab, key in sorted(zip(labels, order_key), key=lambda t: t[1]):
        first.setdefault(lab, key)
    mapping = {lab: i for i, lab in enumerate(sorted(first, key=first.get))}
    return np.array([mapping[lab] for lab in labels])


def _mean_of_known(values: Sequence[float]) -> float:
    """Mean of the non-NaN values; NaN (without numpy's empty-slice warning) when no value is known."""
    a = np.asarray(values, dtype=float)
    known = a[~np.isnan(a)]
    return float(known.mean()) if known.size else float("nan")


def describe_node(members: Sequence[dict[str, Any]]) -> tuple[str, list[str]]:
    """A label from the members' probe results, and the concepts present in most members."""
    votes = Counter(c for r in members for c, on in r.get("present", {}).items() if on)
    concepts = sorted(c for c, n in votes.items() if n * 2 > len(members))
    tr = _mean_of_known([_f(r.get("output.train_acc")) for r in members])
    te = _mean_of_known([_f(r.get("output.test_acc")) for r in members])
    freqs = sorted(int(c.split("=")[1]) for c in concepts if c.startswith("Fourier k=")) or \
        sorted(int(c.split("=")[1]) for c in concepts if c.startswith("neuron Fourier k="))  # probes/neuron_fourier
    circuit = f"Fourier circuit {{{', '.join(map(str, freqs))}}}" if freqs else ""
    if te >= 0.95:
        name = "generalising" + (f": {circuit}" if circuit else "")
    elif tr >= 0.99 and te <= 0.5:
        name = "memorising" + (f", {circuit} forming" if circuit else "")
    elif tr < 0.5:
        name = "initial (fitting)"
    else:
        name = (f"{circuit} forming" if circuit else "transition") + f" (test acc {te:.2f})"
    return name, concepts


def _f(x: Any) -> float:
    return np.nan if x is None else float(x)
