"""The probe library against constructed ground truths: fingerprints, CV'd linear/ridge probes, clock vs
pizza, CKA, weight statistics, and degenerate input for every probe."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from probes import REGISTRY, make_probe
from probes.base import ProbeContext, ProbeResult
from probes.fourier import FourierProbe
from probes.induction import InductionProbe, repeated_tokens
from probes.linear import LinearConceptProbe
from probes.output import (OutputProbe, fingerprint, fingerprint_distance, js_divergence, read_fingerprint,
                           total_variation)
from probes.similarity import CKAProbe, cka_matrix, cka_matrix_blocked, cka_to_reference, linear_cka, store_loader
from probes.weights import WeightStatsProbe
from semgraph.store import ActivationStore
from semgraph.tasks import ModularAddition

P = 23


def context(logits=None, acts=None, params=None, p=P, split=None, concepts=None, inputs=None, labels=None):
    ps = ModularAddition(p=p, train_fraction=0.5, seed=1).probe_set()
    n = len(ps.labels)
    return ProbeContext(run="r", step=0, inputs=ps.inputs if inputs is None else inputs,
                        labels=ps.labels if labels is None else labels,
                        split=ps.split if split is None else split,
                        concepts={**ps.concepts, **(concepts or {})}, activations=acts or {},
                        logits=np.zeros((n, p)) if logits is None else logits,
                        params=params or {}, task={"name": "modular-addition", "p": p})


# ---- output: unseen split, fingerprint, distances --------------------------------------------------------

def test_output_probe_reports_unseen_split():
    rng = np.random.default_rng(0)
    ps = ModularAddition(p=P, train_fraction=0.5, seed=1).probe_set()
    split = ps.split.astype("<U6")                              # room for "unseen"
    split[:50] = "unseen"
    logits = rng.normal(size=(P * P, P))
    logits[:50][np.arange(50), ps.labels[:50]] += 100          # unseen inputs all answered correctly
    res = OutputProbe().compute(context(logits=logits, split=split))
    assert res.values["unseen_acc"] == 1.0
    assert 0 <= res.values["F_unseen"] < 1e-30                    # -log p(y*|x) ~ 22 e^-100 per input
    assert res.present["generalises to unseen"] is True


def test_fingerprint_is_softmax_and_distances_have_their_known_values():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(40, 7))
    f = fingerprint(z)
    assert np.allclose(f.sum(1), 1) and np.allclose(f, np.exp(z) / np.exp(z).sum(1, keepdims=True))
    assert js_divergence(f, f) == pytest.approx(0, abs=1e-12) and total_variation(f, f) == 0
    # disjoint point masses: JS = log 2, TV = 1 (their maxima)
    a, b = np.eye(7)[np.zeros(40, int)], np.eye(7)[np.ones(40, int)]
    assert js_divergence(a, b) == pytest.approx(np.log(2)) and total_variation(a, b) == pytest.approx(1)
    # two-outcome distributions (p, 1-p) vs (q, 1-q): TV = |p - q|; JS from its closed form
    p, q = 0.9, 0.3
    P2, Q2 = np.array([[p, 1 - p]]), np.array([[q, 1 - q]])
    m = (P2 + Q2) / 2
    closed = 0.5 * (P2 * np.log(P2 / m)).sum() + 0.5 * (Q2 * np.log(Q2 / m)).sum()
    assert total_variation(P2, Q2) == pytest.approx(abs(p - q))
    assert js_divergence(P2, Q2) == pytest.approx(closed)
    assert js_divergence(f, fingerprint(z[::-1])) == pytest.approx(js_divergence(fingerprint(z[::-1]), f))
    with pytest.raises(ValueError, match="non-finite"):
        fingerprint(np.full((2, 3), np.nan))


def test_fingerprint_distance_reads_logits_from_a_real_store(tmp_path):
    rng = np.random.default_rng(2)
    store = ActivationStore(tmp_path / "store")
    logits = {0: rng.normal(size=(30, 5)), 10: rng.normal(size=(30, 5))}
    for step, z in logits.items():
        with store.writer("run", step, {"run": "run", "step": step}) as w:
            w.append("logits", z[:16])
            w.append("logits", z[16:])                          # appended in two batches, as capture does
    assert np.allclose(read_fingerprint(store, "run", 0), fingerprint(logits[0]))
    expected = js_divergence(fingerprint(logits[0]), fingerprint(logits[10]))
    assert fingerprint_distance(store, "run", 0, 10) == pytest.approx(expected)
    assert fingerprint_distance(store, "run", 0, 0, metric="tv") == 0


# ---- linear: CV, class counts, convergence, ridge, control --------------------------------------------------

def test_linear_probe_chooses_regularisation_by_cv_and_records_convergence():
    rng = np.random.default_rng(0)
    n, d = 600, 10
    y = rng.integers(0, 3, size=n)
    X = rng.normal(size=(n, d))
    X[:, 0] += 4 * y
    probe = LinearConceptProbe(Cs=(0.001, 1.0)).fit(X, y)
    assert probe.penalty_ in (0.001, 1.0) and probe.converged_
    assert probe.score_ > 0.95 and probe.selectivity_ > 0.5
    assert LinearConceptProbe(max_iter=1, Cs=(100.0,)).fit(X, y).converged_ is False


def test_linear_probe_drops_classes_smaller_than_the_folds_need():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [300, 300, 3])                    # class 2 has 3 < ceil(3/0.7)+1 = 6 members
    X = rng.normal(size=(len(y), 5)) + 4 * y[:, None]
    probe = LinearConceptProbe()
    assert probe.min_class_count == 6
    probe.fit(X, y)
    assert probe.n_classes_dropped_ == 1 and probe.score_ > 0.95
    ctx = context(acts={"h": rng.normal(size=(20, 3))}, inputs=np.zeros((20, 3), int), labels=np.zeros(20, int),
                  split=np.array(["train"] * 20), concepts={"rare": np.arange(20) % 10})   # 2 members each
    res = LinearConceptProbe(concept="rare", hook="h").compute(ctx)
    assert res.values["score"] is None and "fewer than 2 classes" in res.reasons["score"]


def test_ridge_probe_planted_continuous_concept_vs_random_target():
    rng = np.random.default_rng(3)
    n, d = 500, 12
    X = rng.normal(size=(n, d))
    target = X @ rng.normal(size=d) + 0.05 * rng.normal(size=n)
    probe = LinearConceptProbe(kind="ridge").fit(X, target)
    assert probe.score_ > 0.95 and probe.selectivity_ > 0.9 and probe.penalty_ in (0.1, 1.0, 10.0, 100.0)
    noise = LinearConceptProbe(kind="ridge").fit(X, rng.normal(size=n))
    assert noise.score_ < 0.05                                  # held-out R^2 of unrelated noise
    ctx = context(acts={"h": X}, inputs=np.zeros((n, 3), int), labels=np.zeros(n, int),
                  split=np.array(["train"] * n), concepts={"t": np.full(n, 2.5)})
    res = LinearConceptProbe(kind="ridge", concept="t", hook="h").compute(ctx)
    assert res.values["score"] is None and "constant" in res.reasons["score"]


# ---- fourier: clock vs pizza ---------------------------------------------------------------------------------

def _grid(p=P):
    a, b = np.divmod(np.arange(p * p), p)
    return a, b, (a + b) % p


@pytest.mark.parametrize("algorithm, expected", [("clock", 1.0), ("pizza", 0.0)])
def test_distance_irrelevance_separates_clock_from_pizza_logits(algorithm, expected):
    """Clock logits cos(w(a+b-c)) (Zhong et al. eq. for Algorithm 'Clock'), modulated by a function of a+b
    only, have a correct logit independent of a-b: q = 1. Pizza logits |cos(w(a-b)/2)| cos(w(a+b-c)) have a
    correct logit that is a function of a-b only: q = 0."""
    a, b, y = _grid()
    c = np.arange(P)
    w = 2 * np.pi * 4 / P
    wave = np.cos(w * ((a + b)[:, None] - c[None, :]))
    if algorithm == "clock":
        logits = 5 * wave * (1 + 0.3 * np.sin(2 * np.pi * ((a + b) % P) / P))[:, None]
    else:
        logits = 5 * np.abs(np.cos(w * (a - b) / 2))[:, None] * wave
    res = FourierProbe(neuron_hook=None).compute(context(logits=logits))
    assert res.values["distance_irrelevance"] == pytest.approx(expected, abs=1e-9)
    acc = (logits.argmax(1) == y).mean()
    if acc >= 0.9:
        assert res.present["clock (distance-irrelevant)"] is (algorithm == "clock")


def test_distance_irrelevance_of_a_constant_correct_logit_is_not_computed():
    a, b, y = _grid()
    logits = np.zeros((P * P, P))
    logits[np.arange(P * P), y] = 3.0
    res = FourierProbe(neuron_hook=None).compute(context(logits=logits))
    assert res.values["distance_irrelevance"] is None and "constant" in res.reasons["distance_irrelevance"]


# ---- CKA -----------------------------------------------------------------------------------------------------

def _hsic_cka(x, y):
    """Independent computation: Gram-matrix form tr(K H L H) / sqrt(tr(K H K H) tr(L H L H))."""
    n = len(x)
    H = np.eye(n) - 1 / n
    K, L = x @ x.T, y @ y.T
    hs = lambda A, B: np.trace(A @ H @ B @ H)  # noqa: E731
    return hs(K, L) / np.sqrt(hs(K, K) * hs(L, L))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.01, 100), st.integers(2, 12))
def test_cka_is_one_on_itself_and_invariant_to_rotation_and_scaling(seed, scale, d):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, d))
    y = np.tanh(x @ rng.normal(size=(d, 7)))
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))                  # a random orthogonal matrix
    assert linear_cka(x, x) == pytest.approx(1.0)
    base = linear_cka(x, y)
    assert 0 <= base <= 1 + 1e-12
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(scale * x, y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(x, y) == pytest.approx(_hsic_cka(x, y), rel=1e-9)


def test_cka_matrix_streams_checkpoints_and_matches_pairwise_cka():
    rng = np.random.default_rng(4)
    acts = {s: rng.normal(size=(30, 6)) @ rng.normal(size=(6, 6)) for s in range(7)}
    acts[3] = np.ones((30, 6))                                   # a degenerate checkpoint
    loads = []

    def load(k):
        loads.append(k)
        return acts[k]
    m, reasons = cka_matrix_blocked(list(acts), load, block=2)
    for i in acts:
        for j in acts:
            if 3 in (i, j):
                assert np.isnan(m[i, j])
            else:
                assert m[i, j] == pytest.approx(_hsic_cka(acts[i], acts[j]))
    assert "constant" in reasons[3]
    assert len(loads) <= 7 * (-(-7 // 2))                          # each read at most ceil(T/block) times
    m2, _ = cka_matrix(list(acts), lambda k: acts[k], max_bytes=1)   # smallest budget: one at a time
    assert np.allclose(m, m2, equal_nan=True)
    ref = cka_to_reference(list(acts), lambda k: acts[k])
    assert ref[6] == pytest.approx(1.0) and ref[3] is None
    prev = cka_to_reference(list(acts), lambda k: acts[k], previous=True)
    assert prev[0] is None and prev[2] == pytest.approx(_hsic_cka(acts[2], acts[1])) and prev[4] is None


def test_cka_reads_the_hdf5_store(tmp_path):
    rng = np.random.default_rng(5)
    store = ActivationStore(tmp_path / "store")
    acts = {}
    for step in (0, 5, 9):
        acts[step] = rng.normal(size=(20, 4))
        with store.writer("run", step, {}) as w:
            w.append("acts/blocks.0.hook_resid_post", acts[step])
    m, _ = cka_matrix([0, 5, 9], store_loader(store, "run", "blocks.0.hook_resid_post"))
    assert m[0, 2] == pytest.approx(_hsic_cka(acts[0], acts[9]))
    res = CKAProbe(hook="h", reference=acts[9]).compute(context(acts={"h": acts[9]}, inputs=np.zeros((20, 3), int),
                                                                 labels=np.zeros(20, int), split=np.array(["train"] * 20)))
    assert res.values["cka"] == pytest.approx(1.0) and res.present["matches reference at h"]


# ---- weight statistics ---------------------------------------------------------------------------------------

def test_weight_stats_of_a_matrix_with_known_singular_values():
    rng = np.random.default_rng(6)
    s = np.array([5.0, 2.0, 1.0, 0.5])
    U, _ = np.linalg.qr(rng.normal(size=(8, 4)))
    V, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    W = U @ np.diag(s) @ V.T
    eye = np.eye(3) * 2.0                                         # trace 6, spectral 2, l1 6
    bias = np.array([1.0, 2.0, 3.0, 10.0])
    res = WeightStatsProbe().compute(context(params={"W": W, "I": eye, "b": bias}))
    v = res.values
    assert v["W.spectral"] == pytest.approx(5.0) and v["W.l2"] == pytest.approx(np.sqrt((s ** 2).sum()))
    assert v["W.stable_rank"] == pytest.approx((s ** 2).sum() / 25)
    assert v["spectral"] == pytest.approx((5.0 + 2.0) / 2)        # averaged over the K = 2 matrices
    assert v["sv_mean"] == pytest.approx(np.mean(np.r_[s, 2, 2, 2]))
    assert v["sv_var"] == pytest.approx(np.var(np.r_[s, 2, 2, 2]))
    assert v["trace"] == pytest.approx((np.trace(W) + 6) / 2)
    assert v["l1"] == pytest.approx((np.abs(W).sum() + 6) / 2)
    assert v["l1_over_l2"] == pytest.approx((np.abs(W).sum() / np.sqrt((s ** 2).sum()) + 6 / np.sqrt(12)) / 2)
    assert v["b_mean"] == 4.0 and v["b_median"] == 2.5 and v["b_var"] == pytest.approx(np.var(bias))
    assert v["w_var"] == pytest.approx(np.var(np.r_[W.ravel(), eye.ravel()]))
    assert res.present["low-rank I"] is False                     # stable rank 3 = full rank
    attn = np.stack([np.outer(rng.normal(size=64), rng.normal(size=32)) for _ in range(2)])  # (heads, d, d_head)
    r2 = WeightStatsProbe(params=["W_Q"]).compute(context(params={"W_Q": attn}))
    assert r2.values["W_Q[0].stable_rank"] == pytest.approx(1.0) and r2.present["low-rank W_Q[1]"]


# ---- degenerate input for every probe ------------------------------------------------------------------------

N_IND = 6


def _induction_ctx(pattern):
    tokens = repeated_tokens(20, 5, N_IND, seed=0)
    return ProbeContext(run="r", step=0, inputs=tokens, labels=np.zeros(N_IND, int), split=np.array(["test"] * N_IND),
                        concepts={}, activations={"blocks.0.attn.hook_pattern": pattern}, logits=np.zeros((N_IND, 5)))


def _all_probes():
    n = P * P
    return {
        "output": OutputProbe(), "fourier": FourierProbe(neuron_hook="h"),
        "linear": LinearConceptProbe(concept="one", hook="h"),
        "ridge": LinearConceptProbe(kind="ridge", concept="one", hook="h"),
        "cka": CKAProbe(hook="h", reference=np.random.default_rng(0).normal(size=(n, 4))),
        "weights": WeightStatsProbe(), "induction": InductionProbe(n_layers=1),
    }


def _degenerate(kind: str):
    n = P * P
    emb = np.random.default_rng(0).normal(size=(P + 1, 8))
    if kind == "nan":
        bad = np.random.default_rng(0).normal(size=(n, 4))
        bad[5, 1] = np.nan
        logits = np.zeros((n, P))
        logits[0, 0] = np.inf
        emb[2, 2] = np.nan
        return context(logits=logits, acts={"h": bad}, params={"embed.weight": emb},
                       concepts={"one": np.arange(n) % 3}), np.full((N_IND, 2, 10, 10), np.nan)
    if kind == "constant":
        return context(logits=np.zeros((n, P)), acts={"h": np.ones((n, 4))},
                       params={"embed.weight": np.ones((P + 1, 8))},
                       concepts={"one": np.arange(n) % 3}), np.ones((N_IND, 2, 10, 10))
    if kind == "one class":
        return context(acts={"h": np.random.default_rng(0).normal(size=(n, 4))}, params={},
                       concepts={"one": np.zeros(n, int)}), None
    raise AssertionError(kind)


# For each degenerate input, the values each probe must refuse (None + reason). Values not listed may be
# computed (e.g. constant logits are a valid uniform prediction with loss log p).
MUST_REFUSE = {
    "nan": {"output": ["train_loss", "test_acc"], "fourier": ["key_freqs", "neuron_key_freqs", "restricted_loss",
            "excluded_loss", "distance_irrelevance"], "linear": ["score", "selectivity"], "ridge": ["score"],
            "cka": ["cka"], "weights": ["l2", "spectral"], "induction": ["induction_L0", "induction_max"]},
    "constant": {"fourier": ["key_freqs", "gini", "neuron_key_freqs", "distance_irrelevance"],
                 "linear": ["score"], "ridge": ["score"], "cka": ["cka"], "induction": ["induction_max"]},
    "one class": {"linear": ["score", "control_score"], "ridge": ["score"], "weights": ["l2"],
                  "induction": ["induction_max"]},
}


@pytest.mark.parametrize("kind", sorted(MUST_REFUSE))
@pytest.mark.parametrize("probe_name", sorted(_all_probes()))
def test_every_probe_records_degenerate_input_instead_of_a_number(kind, probe_name):
    probe = _all_probes()[probe_name]
    ctx, pattern = _degenerate(kind)
    if probe_name == "induction":
        ctx = _induction_ctx(pattern) if pattern is not None else _induction_ctx(None)
        if pattern is None:
            ctx.activations.clear()
    res = probe.compute(ctx)
    assert isinstance(res, ProbeResult)
    for key in MUST_REFUSE[kind].get(probe_name, []):
        assert key in res.values and res.values[key] is None, (key, res.values.get(key))
        assert res.reasons[key], key
    for key, value in res.values.items():        # nothing that was computed is NaN/inf
        if value is None:
            assert res.reasons.get(key), key
        elif isinstance(value, float):
            assert np.isfinite(value), (key, value)


def test_registry_knows_every_probe_family():
    assert {"output", "fourier", "linear", "induction", "cka", "weights"} <= set(REGISTRY)
    assert make_probe("weights").name == "weights"
