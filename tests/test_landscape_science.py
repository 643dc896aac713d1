"""State models and observables against planted ground truth (semgraph.synthetic) and constructed cases."""
from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score

from semgraph.landscape import build_landscape
from semgraph.observables import (arrhenius, dwell_times, estimate_dc, first_step, fit_tg_divergence,
                                  grokking_probability, loss_bump, minimax_barriers, tail_exponent)
from semgraph.state_models import DEFAULT_METHOD, agreement_table, boundary_f1, fit_states
from semgraph.synthetic import default_landscape, signature_keys, simulate


@pytest.fixture(scope="module")
def planted():
    return simulate(default_landscape(beta=1.0, mu=1.5), n_runs=12, n_checkpoints=120, seed=0)


def _landscape(data, labels):
    rows = [dict(r, node=f"N{lab}") for r, lab in zip(data.rows, labels)]
    return build_landscape(rows, {}), rows


def _mapping(true, found):
    """recovered label -> planted label by majority vote."""
    return {f: Counter(true[found == f]).most_common(1)[0][0] for f in np.unique(found)}


@pytest.mark.parametrize("method", [DEFAULT_METHOD, "concepts"])
def test_planted_nodes_and_transition_counts_recovered(planted, method):
    labels, report = fit_states(method, planted.rows, signature_keys(planted))
    assert adjusted_rand_score(planted.labels, labels) >= 0.9
    assert report["n_states"] == planted.landscape.k
    G, _ = _landscape(planted, labels)
    m = _mapping(planted.labels, labels)
    found = Counter({(m[int(u[1:])], m[int(w[1:])]): d["count"] for u, w, d in G.edges(data=True)})
    assert found == planted.transitions  # every planted transition, counted exactly


def test_agglomerative_threshold_recovers_planted_nodes(planted):
    labels, report = fit_states("agglomerative", planted.rows, signature_keys(planted))
    assert adjusted_rand_score(planted.labels, labels) >= 0.9
    assert report["stability_ari"] >= 0.8


def test_planted_beta_and_mu_recovered_within_15_percent(planted):
    labels, _ = fit_states(DEFAULT_METHOD, planted.rows, signature_keys(planted))
    G, _ = _landscape(planted, labels)
    arr = arrhenius(G, "F_test_mean")
    assert arr["beta"] == pytest.approx(1.0, rel=0.15)
    assert arr["beta_mle"] == pytest.approx(1.0, rel=0.15)
    tail = tail_exponent(dwell_times(G))
    assert tail["mu"] == pytest.approx(1.5, rel=0.15)
    # the recovered dwell times are the planted ones
    assert sorted(dwell_times(G)) == sorted(planted.dwell_times)


def test_hmm_recovers_planted_nodes_with_bic():
    data = simulate(default_landscape(k=4, seed=1), n_runs=6, n_checkpoints=80, seed=1)
    labels, report = fit_states("hmm", data.rows, signature_keys(data), max_states=6)
    assert adjusted_rand_score(data.labels, labels) >= 0.9
    assert report["n_states"] == 4 and set(report["selection"]) == {str(k) for k in range(1, 7)}


def test_changepoints_cross_check_planted_boundaries():
    data = simulate(default_landscape(k=4, seed=2), n_runs=6, n_checkpoints=80, seed=2)
    labels, _ = fit_states("changepoint", data.rows, signature_keys(data), max_states=6)
    runs = [r["run"] for r in data.rows]
    assert boundary_f1(labels, data.labels, runs) >= 0.9
    assert adjusted_rand_score(data.labels, labels) >= 0.9


def test_agreement_table_on_identical_and_permuted_labels():
    rows = [{"run": "a", "step": s} for s in range(6)]
    a = np.array([0, 0, 1, 1, 2, 2])
    table = agreement_table({"x": a, "y": (a + 1) % 3, "z": np.zeros(6, int)}, rows)
    by = {(t["a"], t["b"]): t for t in table}
    assert by[("x", "y")]["ari"] == pytest.approx(1.0) and by[("x", "y")]["boundary_f1"] == 1.0
    assert by[("x", "z")]["ari"] == pytest.approx(0.0) and by[("x", "z")]["boundary_f1"] == 0.0


def test_more_noise_lowers_agreement():
    land = default_landscape(k=4, seed=3)
    easy = simulate(land, n_runs=4, n_checkpoints=60, seed=3)
    hard = simulate(land, n_runs=4, n_checkpoints=60, noise=6.0, seed=3)
    ari = [adjusted_rand_score(d.labels, fit_states("gmm", d.rows, signature_keys(d), max_states=5)[0])
           for d in (easy, hard)]
    assert ari[0] >= 0.9 > ari[1]


# ------------------------------------------------------------------------------------------ observables
def test_first_step_and_bump_on_constructed_curve():
    steps = [0, 100, 200, 300, 400, 500]
    tr = [0.1, 0.95, 1.0, 1.0, 1.0, 1.0]
    te = [0.0, 0.1, 0.1, 0.5, 0.96, 0.995]
    loss = [4.0, 5.0, 9.0, 7.0, 1.0, 0.1]
    rows = [{"step": s, "output.train_acc": a, "output.test_acc": b, "output.test_loss": c}
            for s, a, b, c in zip(steps, tr, te, loss)]
    assert first_step(rows, "output.train_acc", 0.9) == 100 and first_step(rows, "output.train_acc", 0.99) == 200
    assert first_step(rows, "output.test_acc", 0.95) == 400 and first_step(rows, "output.test_acc", 0.999) is None
    assert loss_bump(rows, 200, 400) == pytest.approx(0.0)  # 9.0 at t_mem is already the max
    assert loss_bump(rows, 100, 400) == pytest.approx(9.0 - 5.0)


def test_dc_separated_outcomes_is_gap_midpoint():
    D = np.array([0.3] * 4 + [0.5] * 4 + [0.7] * 4)
    y = D > 0.4
    est = estimate_dc(D, y)
    assert est["D_c"] == pytest.approx(0.4) and est["D_c_interval"] == [0.3, 0.5]
    assert estimate_dc(D, np.zeros(12, bool))["D_c"] is None


def test_dc_logistic_mle_recovers_planted_midpoint():
    rng = np.random.default_rng(0)
    D = rng.uniform(0.2, 0.8, 3000)
    y = rng.random(3000) < 1 / (1 + np.exp(-(D - 0.47) / 0.05))
    est = estimate_dc(D, y)
    assert est["D_c"] == pytest.approx(0.47, abs=0.01)
    assert est["D_c_interval"][0] < 0.47 < est["D_c_interval"][1]


@pytest.mark.parametrize("fractions", [(0.5, 0.6, 0.7, 0.8, 0.9, 1.0), (0.5, 0.7, 0.9)])
def test_tg_divergence_fit_recovers_planted_nu(fractions):
    rng = np.random.default_rng(1)
    A, Dc, nu, t0 = 100.0, 0.4, 1.3, 200.0
    D = np.repeat(fractions, 6)
    tg = (A * (D - Dc) ** (-nu) + t0) * rng.lognormal(0, 0.02, len(D))
    fit = fit_tg_divergence(D, tg, Dc if len(fractions) < 5 else 0.38, n_boot=40 if len(fractions) < 5 else 0)
    assert fit["nu"] == pytest.approx(nu, rel=0.15)
    lo, hi = fit["nu_bootstrap_95"] or (-math.inf, math.inf)
    assert lo <= fit["nu"] <= hi


def test_tg_fit_explains_why_it_cannot_fit():
    assert fit_tg_divergence(np.array([0.6, 0.6]), np.array([10.0, 12.0]), 0.5)["nu"] is None
    assert "D_c" in fit_tg_divergence(np.array([0.6, 0.8]), np.array([10.0, 5.0]), None)["reason"]


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 7), st.integers(0, 10_000))
def test_minimax_barrier_matches_brute_force_over_paths(n, seed):
    rng = np.random.default_rng(seed)
    G = nx.gnp_random_graph(n, 0.4, seed=seed, directed=True)
    for v in G.nodes:
        G.nodes[v]["F_test_mean"] = float(rng.uniform(0, 5))
    bars = minimax_barriers(G)
    for s, t in itertools.permutations(G.nodes, 2):
        paths = list(nx.all_simple_paths(G, s, t))
        if not paths:
            assert t not in bars[s]
            continue
        brute = min(max(G.nodes[v]["F_test_mean"] for v in p) for p in paths) - G.nodes[s]["F_test_mean"]
        assert bars[s][t] == pytest.approx(brute)


def test_tail_exponent_on_continuous_pareto():
    rng = np.random.default_rng(0)
    x = 10 * (1 - rng.random(3000)) ** (-1 / 0.8)  # P(X > x) = (x / 10)^-0.8
    res = tail_exponent(x, discrete=False)
    assert res["mu"] == pytest.approx(0.8, rel=0.1)
    assert tail_exponent([1.0, 2.0])["mu"] is None


def test_arrhenius_needs_two_out_edges():
    G = nx.DiGraph()
    G.add_node("a", F_test_mean=1.0)
    G.add_node("b", F_test_mean=0.0)
    G.add_edge("a", "b", count=3, mean_waiting_time=10.0)
    assert arrhenius(G)["beta"] is None


def test_observables_json_is_plain(planted, tmp_path):
    from semgraph.observables import observe_graph, write_observables

    labels, _ = fit_states("concepts", planted.rows, signature_keys(planted))
    G, rows = _landscape(planted, labels)
    obs = observe_graph(G, rows)
    files = write_observables(obs, tmp_path)
    back = json.loads(files["observables"].read_text())
    assert back["arrhenius"]["beta"] == pytest.approx(obs["arrhenius"]["beta"])
    assert G.graph["arrhenius_beta"] == obs["arrhenius"]["beta"]
    assert math.isfinite(G.graph["dwell_mu"])
    assert files["observables_runs"].read_text().count("\n") == 1 + len(planted.stays)


def test_tg_fit_frees_D_c_when_the_grokking_midpoint_lies_above_a_grokked_fraction():
    # planted divergence at 0.45; the finite-budget grokking midpoint (0.62) lies above the lowest grokked D
    rng = np.random.default_rng(2)
    A, Dc, nu = 60.0, 0.45, 1.2
    D = np.repeat([0.6, 0.7, 0.8, 0.9], 8)
    tg = A * (D - Dc) ** (-nu) * rng.lognormal(0, 0.02, len(D))
    fit = fit_tg_divergence(D, tg, 0.62, D_c_floor=0.5, n_boot=0)
    assert fit["free_parameters"] == ["A", "D_c", "nu"]
    assert 0.5 <= fit["D_c"] < 0.6
    # the window [0.5, 0.6) excludes the planted 0.45, so nu is biased low but the fit stays finite and ordered
    assert 0 < fit["nu"] < nu
    free = fit_tg_divergence(D, tg, 0.62, n_boot=0)  # no floor: D_c and nu are recovered
    assert free["D_c"] == pytest.approx(Dc, abs=0.03) and free["nu"] == pytest.approx(nu, rel=0.15)


def test_dc_says_why_it_is_missing():
    """A foreign run without a recorded data fraction is not 'a run that did not grok'."""
    assert "no run records its data fraction" in grokking_probability([{"grokked": True}])["D_c_method"]
    assert estimate_dc(np.array([0.3, 0.5]), np.array([False, False]))["D_c_method"].endswith("no run grokked")
    assert estimate_dc(np.array([0.3, 0.5]), np.array([True, True]))["D_c_method"].endswith("every run grokked")


def test_dc_quasi_separated_outcomes_give_the_neighbouring_fractions():
    """0/4, 2/4, 4/4 at 0.4/0.6/0.8 (a real default sweep): the ML curve is a step at 0.6, so the likelihood
    says only that D_c lies between the all-fail and the all-grok fractions; a Wald interval of +-0.01 lied."""
    D = np.repeat([0.4, 0.6, 0.8], 4)
    y = np.array([0, 0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 1], bool)
    est = estimate_dc(D, y)
    assert est["D_c"] == pytest.approx(0.6, abs=1e-3)
    assert est["D_c_interval"] == [0.4, 0.8]
    # a grokked fraction sitting at D_c has t_g = infinity in the divergence law: no nu from two fractions then
    fit = fit_tg_divergence(np.array([0.6, 0.6, 0.8, 0.8]), np.array([900.0, 1300.0, 400.0, 300.0]), est["D_c"])
    assert fit["nu"] is None and "D <= D_c" in fit["reason"]
