"""Linear concept probe: is a labelled concept linearly decodable from one hook's activations?

Definition: standardise the activations, fit a multinomial logistic regression on a seeded, stratified
70% of the probe set, and report held-out accuracy. The same fit on randomly permuted labels (a control
task, Hewitt & Liang 2019) gives the accuracy expected from memorising noise; selectivity = score - control.
The concept is present when score >= ``present_at`` and selectivity >= ``min_selectivity``.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from probes.base import ProbeContext, ProbeResult, finite_or_reason


class LinearConceptProbe(BaseEstimator):
    """Held-out decodability of ``concept`` from ``hook`` (scikit-learn estimator conventions)."""

    def __init__(self, concept: str = "a+b mod p", hook: str = "blocks.0.hook_resid_post", C: float = 1.0,
                 test_size: float = 0.3, max_iter: int = 300, present_at: float = 0.9,
                 min_selectivity: float = 0.5, random_state: int = 0):
        self.concept = concept
        self.hook = hook
        self.C = C
        self.test_size = test_size
        self.max_iter = max_iter
        self.present_at = present_at
        self.min_selectivity = min_selectivity
        self.random_state = random_state

    @property
    def name(self) -> str:
        return f"linear[{self.concept}@{self.hook}]"

    def _fit_score(self, X: np.ndarray, y: np.ndarray) -> tuple[float, bool]:
        counts = np.bincount(np.unique(y, return_inverse=True)[1])
        stratify = y if counts.min() >= 2 else None
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=self.test_size, random_state=self.random_state,
                                              stratify=stratify)
        model = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(Xtr, ytr)
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        return float(model.score(Xte, yte)), converged

    def fit(self, X: np.ndarray, y: np.ndarray) -> "LinearConceptProbe":
        """Fit probe and control; results in ``score_``, ``control_score_``, ``selectivity_``, ``converged_``."""
        X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        y = np.asarray(y)
        self.score_, self.converged_ = self._fit_score(X, y)
        control = np.random.default_rng(self.random_state).permutation(y)
        self.control_score_, _ = self._fit_score(X, control)
        self.selectivity_ = self.score_ - self.control_score_
        return self

    def compute(self, ctx: ProbeContext) -> ProbeResult:
        res = ProbeResult()
        keys = ("score", "control_score", "selectivity")
        X = ctx.activations.get(self.hook)
        y = ctx.concepts.get(self.concept)
        reason = None
        if X is None:
            reason = f"hook {self.hook!r} was not captured"
        elif y is None:
            reason = f"the task has no concept {self.concept!r}"
        else:
            X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
            reason = finite_or_reason(X, self.hook)
            if reason is None and len(np.unique(y)) < 2:
                reason = "the concept has a single class"
            elif reason is None and np.all(X.std(axis=0) == 0):
                reason = "activations are constant across inputs"
        if reason:
            for k in keys:
                res.not_computed(k, reason)
            return res
        self.fit(X, y)
        res.values.update(score=self.score_, control_score=self.control_score_,
                          selectivity=self.selectivity_, converged=bool(self.converged_))
        res.present[f"decodes {self.concept}"] = bool(self.score_ >= self.present_at
                                                      and self.selectivity_ >= self.min_selectivity)
        return res
