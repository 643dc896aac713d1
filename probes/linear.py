"""Linear concept probe: is a labelled concept linearly decodable from one hook's activations?

Definition (``kind="logistic"``, integer concepts): standardise the activations, hold out a seeded,
stratified ``test_size`` share of the probe set, choose the inverse regularisation C from ``Cs`` by
``cv``-fold stratified cross-validation on the rest (``LogisticRegressionCV``), refit, and report held-out
accuracy (``score``). The same pipeline with the chosen C on randomly permuted labels (a control task,
Hewitt & Liang 2019: same probe, same hyperparameters, no concept) gives the accuracy expected from
memorising noise; ``selectivity = score - control_score``.

``kind="ridge"`` (continuous concepts): ``RidgeCV`` with the penalty chosen from ``alphas`` by ``cv``-fold
cross-validation; ``score`` is the held-out R^2, the control permutes the targets.

Class-count check: every class must be seen in every CV fold, so classes with fewer than
``ceil(cv / (1 - test_size)) + 1`` members are dropped from the probe (their number is recorded as
``n_classes_dropped``); fewer than two classes left means "not computed". ``converged`` records whether
the solver converged (False when scikit-learn raised a ConvergenceWarning); the value is kept either way.

Concept presence: "decodes <concept>" when score >= ``present_at`` (0.9) and selectivity >=
``min_selectivity`` (0.5 of accuracy / R^2).
Degenerate input (hook or concept missing, NaN/inf, constant activations, a single class or a constant
target, too few inputs) gives "not computed" with the reason, never a number.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from probes.base import ProbeContext, ProbeResult, finite_or_reason

KEYS = ("score", "control_score", "selectivity")


class LinearConceptProbe(BaseEstimator):
    """Held-out decodability of ``concept`` from ``hook`` (scikit-learn estimator conventions).

    ``C`` fixes the regularisation instead of cross-validating it (None: choose from ``Cs``). ``n_threads``
    caps BLAS/OpenMP threads during the fit (1 by default: these probes are small, and on a shared machine
    oversubscribed threads made a 53-class fit several times slower: benchmarks/linear_probe_threads.py);
    None leaves them alone.
    """

    def __init__(self, concept: str = "a+b mod p", hook: str = "blocks.0.hook_resid_post", C: float | None = None,
                 test_size: float = 0.3, max_iter: int = 300, present_at: float = 0.9,
                 min_selectivity: float = 0.5, random_state: int = 0, kind: str = "logistic",
                 Cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0), alphas: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
                 cv: int = 3, tol: float = 1e-3, n_threads: int | None = 1):
        self.concept = concept
        self.hook = hook
        self.C = C
        self.test_size = test_size
        self.max_iter = max_iter
        self.present_at = present_at
        self.min_selectivity = min_selectivity
        self.random_state = random_state
        self.kind = kind
        self.Cs = Cs
        self.alphas = alphas
        self.cv = cv
        self.tol = tol
        self.n_threads = n_threads

    @property
    def name(self) -> str:
        return f"linear[{self.concept}@{self.hook}]"

    @property
    def min_class_count(self) -> int:
        return math.ceil(self.cv / (1 - self.test_size)) + 1

    # ---- checks --------------------------------------------------------------------------------------
    def check(self, X: np.ndarray, y: np.ndarray) -> tuple[str | None, np.ndarray]:
        """(reason the probe cannot be computed or None, mask of the inputs it uses)."""
        if self.kind not in ("logistic", "ridge"):
            raise ValueError(f"kind must be 'logistic' or 'ridge', not {self.kind!r}")
        keep = np.ones(len(y), dtype=bool)
        reason = finite_or_reason(X, "activations") or finite_or_reason(np.asarray(y, dtype=np.float64), "concept")
        if reason:
            return reason, keep
        if len(y) != len(X):
            return f"{len(X)} activation rows but {len(y)} concept labels", keep
        if not np.any(np.ptp(X, axis=0) > 0):
            return "activations are constant across inputs", keep
        if self.kind == "ridge":
            if np.ptp(y) == 0:
                return "the concept is constant (a single value)", keep
            if len(y) < 2 * self.cv + 2:
                return f"only {len(y)} inputs, too few for {self.cv}-fold CV and a held-out split", keep
            return None, keep
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            return "the concept has a single class", keep
        small = classes[counts < self.min_class_count]
        keep = ~np.isin(y, small)
        if len(classes) - len(small) < 2:
            return (f"fewer than 2 classes have the {self.min_class_count} members {self.cv}-fold CV with a "
                    f"{self.test_size:.0%} held-out split needs"), keep
        return None, keep

    # ---- fitting -------------------------------------------------------------------------------------
    def _split(self, X, y):
        stratify = y if self.kind == "logistic" else None
        return train_test_split(X, y, test_size=self.test_size, random_state=self.random_state, stratify=stratify)

    def _folds(self):
        if self.kind == "logistic":
            return StratifiedKFold(self.cv, shuffle=True, random_state=self.random_state)
        return KFold(self.cv, shuffle=True, random_state=self.random_state)

    def _model(self, penalty: float | None):
        if self.kind == "ridge":
            est = Ridge(alpha=penalty) if penalty is not None else RidgeCV(alphas=list(self.alphas), cv=self._folds())
        elif penalty is not None:
            est = LogisticRegression(C=penalty, max_iter=self.max_iter, tol=self.tol)
        else:
            est = LogisticRegressionCV(Cs=list(self.Cs), cv=self._folds(), max_iter=self.max_iter, tol=self.tol,
                                       random_state=self.random_state)
        return make_pipeline(StandardScaler(), est)

    def _fit_score(self, X, y, penalty: float | None) -> tuple[float, bool, float]:
        Xtr, Xte, ytr, yte = self._split(X, y)
        model = self._model(penalty)
        with warnings.catch_warnings(record=True) as caught, threadpool_limits(limits=self.n_threads):
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(Xtr, ytr)
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        est = model[-1]
        chosen = penalty if penalty is not None else float(
            est.alpha_ if self.kind == "ridge" else np.ravel(est.C_)[0])
        return float(model.score(Xte, yte)), converged, chosen

    def fit(self, X: np.ndarray, y: np.ndarray) -> "LinearConceptProbe":
        """Fit probe and control; results in ``score_``, ``control_score_``, ``selectivity_``,
        ``converged_``, ``penalty_`` (the chosen C or alpha) and ``n_classes_dropped_``.

        Raises ValueError on input ``compute`` would record as not computed (see ``check``).
        """
        X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        y = np.asarray(y)
        reason, keep = self.check(X, y)
        if reason:
            raise ValueError(reason)
        self.n_classes_dropped_ = int(len(np.unique(y)) - len(np.unique(y[keep])))
        X, y = X[keep], y[keep]
        if self.kind == "ridge":
            y = y.astype(np.float64)
        self.score_, self.converged_, self.penalty_ = self._fit_score(X, y, self.C)
        control = np.random.default_rng(self.random_state).permutation(y)
        self.control_score_, _, _ = self._fit_score(X, control, self.penalty_)
        self.selectivity_ = self.score_ - self.control_score_
        return self

    def compute(self, ctx: ProbeContext) -> ProbeResult:
        res = ProbeResult()
        X = ctx.activations.get(self.hook)
        y = ctx.concepts.get(self.concept)
        if X is None:
            reason = f"hook {self.hook!r} was not captured"
        elif y is None:
            reason = f"the task has no concept {self.concept!r}"
        else:
            X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
            reason, _ = self.check(X, np.asarray(y))
        if reason:
            for k in KEYS:
                res.not_computed(k, reason)
            return res
        self.fit(X, y)
        res.values.update(score=self.score_, control_score=self.control_score_, selectivity=self.selectivity_,
                          converged=bool(self.converged_), penalty=self.penalty_,
                          n_classes_dropped=self.n_classes_dropped_)
        res.present[f"decodes {self.concept}"] = bool(self.score_ >= self.present_at
                                                      and self.selectivity_ >= self.min_selectivity)
        return res
