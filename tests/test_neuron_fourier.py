"""Per-neuron Fourier probe against planted frequencies, random weights (theory) and degenerate input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from probes import FourierProbe, make_probe
from probes.base import ProbeContext
from probes.fourier import embedding_spectrum, key_frequencies
from probes.neuron_fourier import NeuronFourierProbe, chance_single_fraction

EXTERNAL = next((d for d in (Path(__file__).resolve().parents[1].parent / "shared/external/modadd-mlp-p23",
                             Path("/work/shared/external/modadd-mlp-p23")) if (d / "README.md").exists()), None)


def _ctx(params: dict, p: int | None = 23) -> ProbeContext:
    n = 4
    return ProbeContext(run="r", step=0, inputs=np.zeros((n, 3), int), labels=np.zeros(n, int),
                        split=np.array(["train"] * n), concepts={}, activations={}, logits=np.zeros((n, 3)),
                        params=params, task={} if p is None else {"name": "modular-addition", "p": p})


def _planted(freqs: np.ndarray, p: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """W_in-shaped [n, p]: neuron i = A_i cos(2 pi k_i t / p + phi_i) + N(0, noise^2), A_i in [1, 3]."""
    t = np.arange(p)
    amp = rng.uniform(1, 3, size=(len(freqs), 1))
    phase = rng.uniform(0, 2 * np.pi, size=(len(freqs), 1))
    return amp * np.cos(2 * np.pi * np.outer(freqs, t) / p + phase) + noise * rng.standard_normal((len(freqs), p))


def _random_dominant_share(m: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Max share of m i.i.d. exponential powers (what i.i.d. Gaussian weights give), sampled directly."""
    return rng.dirichlet(np.ones(m), size=n).max(axis=1)


@settings(max_examples=25, deadline=None)
@given(p=st.sampled_from([11, 13, 23, 31]), seed=st.integers(0, 2**31 - 1), noise=st.floats(0.0, 0.05))
def test_planted_single_frequency_neurons_are_recovered(p, seed, noise):
    rng = np.random.default_rng(seed)
    m = (p - 1) // 2
    key = np.sort(rng.choice(np.arange(1, m + 1), size=rng.integers(1, m + 1), replace=False))
    freqs = rng.choice(key, size=300)
    W = _planted(freqs, p, rng, noise)
    # neurons mixing three frequencies with equal amplitude: at most 1/3 of the energy in one (+ noise)
    t = np.arange(p)
    mixed = sum(np.cos(2 * np.pi * k * t / p + rng.uniform(0, 6.3, size=(100, 1))) for k in (1, 2, 3))
    W = np.concatenate([W, mixed + noise * rng.standard_normal((100, p))])
    res = NeuronFourierProbe(param="mlp.W_in", token_axis=1).compute(_ctx({"mlp.W_in": W}, p))
    v = res.values
    assert v["n_neurons"] == 400 and v["n_single"] == 300 and v["single_fraction"] == pytest.approx(0.75)
    assert v["key_freqs"] == [int(k) for k in key] and v["n_key_freqs"] == len(key)
    assert v["n_dominant_freqs"] == len(np.unique(freqs))
    assert v["dominant_counts"] == np.bincount(freqs, minlength=m + 1)[1:].tolist()
    assert res.present["Fourier features"] is True
    assert all(res.present[f"neuron Fourier k={k}"] for k in key)
    # planted neurons hold >= 0.9 of their energy at their frequency: signal power (A p / 2)^2 >= p^2 / 4
    # against noise power p sigma^2 per frequency
    assert v["median_concentration"] > 0.9
    assert 0.75 * 0.9 < v["mean_concentration"] < 0.75 + 0.25 * 0.45


def test_rare_frequency_is_dominant_but_not_key():
    rng = np.random.default_rng(0)
    p, m = 23, 11
    freqs = np.concatenate([np.repeat([2, 5, 7], 100), [9] * 5])        # 5 / 305 < 1 / (2 m)
    res = NeuronFourierProbe(param="W", token_axis=1).compute(_ctx({"W": _planted(freqs, p, rng, 0.02)}, p))
    assert res.values["key_freqs"] == [2, 5, 7] and res.values["n_dominant_freqs"] == 4
    assert "neuron Fourier k=9" not in res.present
    # the uniform share sets the bar: key_share = 5 / 305 - epsilon makes 9 key
    res = NeuronFourierProbe(param="W", token_axis=1, key_share=5 / 305 - 1e-9).compute(
        _ctx({"W": _planted(freqs, p, rng, 0.02)}, p))
    assert res.values["key_freqs"] == [2, 5, 7, 9]


def test_every_frequency_one_per_neuron_flat_aggregate_spectrum():
    """The case this probe exists for: the aggregate spectrum (FourierProbe) is flat and finds nothing."""
    rng = np.random.default_rng(1)
    p, m = 23, 11
    W = _planted(np.tile(np.arange(1, m + 1), 40), p, rng, 0.05)            # [440, 23]
    nf = NeuronFourierProbe(param="mlp.W_in", token_axis=1).compute(_ctx({"mlp.W_in": W}, p))
    assert nf.values["key_freqs"] == list(range(1, m + 1)) and nf.values["single_fraction"] == 1.0
    assert key_frequencies(embedding_spectrum(W.T, p), FourierProbe().threshold_factor) == []


def test_embedding_orientation_ignores_extra_tokens():
    """A transformer embedding [p + 1, d]: neurons are columns, the '=' row is not a residue."""
    rng = np.random.default_rng(2)
    p = 13
    W = _planted(np.repeat([1, 4], 30), p, rng, 0.01).T                     # [p, 60]
    E = np.concatenate([W, 100 * rng.standard_normal((1, 60))])             # row p: '=' token
    res = make_probe("neuron_fourier", param="embed.weight").compute(_ctx({"embed.weight": E}, p))
    assert res.values["key_freqs"] == [1, 4] and res.values["median_concentration"] > 0.95


def test_random_weights_match_theory():
    """i.i.d. Gaussian weights: E[c] = H_m / m, P(c >= 1/2) from direct Dirichlet sampling; no features."""
    rng = np.random.default_rng(3)
    p, m, n = 23, 11, 6000
    res = NeuronFourierProbe(param="W", token_axis=1).compute(_ctx({"W": rng.standard_normal((n, p))}, p))
    v = res.values
    harmonic = sum(1 / j for j in range(1, m + 1)) / m                      # 0.2745
    shares = _random_dominant_share(m, 400_000, rng)
    se = shares.std() / np.sqrt(n)
    assert abs(v["mean_concentration"] - harmonic) < 5 * se
    p_single = float((shares >= 0.5).mean())                                 # ~0.0107
    assert abs(v["single_fraction"] - p_single) < 5 * np.sqrt(p_single * (1 - p_single) / n)
    assert abs(v["chance_fraction"] - p_single) < 0.001
    assert res.present["Fourier features"] is False and v["key_freqs"] == [] and v["n_key_freqs"] == 0


@pytest.mark.parametrize("m,s", [(2, 0.6), (3, 0.5), (5, 0.3), (11, 0.5), (11, 0.25), (56, 0.1)])
def test_chance_fraction_against_sampling(m, s):
    n = 50_000
    shares = _random_dominant_share(m, n, np.random.default_rng(m))
    expected = float((shares >= s).mean())
    assert abs(chance_single_fraction(m, s) - expected) < 4 * np.sqrt(expected * (1 - expected) / n) + 1e-4


def test_small_modulus_random_neurons_are_not_features():
    """p = 7: three quarters of random neurons pass c >= 1/2, which is no evidence of Fourier features."""
    rng = np.random.default_rng(4)
    res = NeuronFourierProbe(param="W", token_axis=1).compute(_ctx({"W": rng.standard_normal((2000, 7))}, 7))
    assert res.values["single_fraction"] > 0.5 and res.present["Fourier features"] is False


@pytest.mark.parametrize("params,p,token_axis,reason", [
    ({}, 23, 1, "not stored"),
    ({"W": np.ones((8, 23))}, None, 1, "no modulus"),
    ({"W": np.ones(23)}, 23, 0, "not a 2-D matrix"),
    ({"W": np.ones((8, 23))}, 23, 2, "not a 2-D matrix with token axis 2"),
    ({"W": np.ones((8, 20))}, 23, 1, "fewer than p=23"),
    ({"W": np.where(np.eye(8, 23) > 0, np.nan, 1.0)}, 23, 1, "non-finite"),
    ({"W": np.zeros((8, 23))}, 23, 1, "constant over the residues"),
    ({"W": np.outer(np.arange(8.0), np.ones(23))}, 23, 1, "constant over the residues"),
])
def test_degenerate_input_is_not_computed(params, p, token_axis, reason):
    res = NeuronFourierProbe(param="W", token_axis=token_axis).compute(_ctx(params, p))
    assert res.values["single_fraction"] is None and reason in res.reasons["single_fraction"]
    assert res.values["key_freqs"] is None and not any(res.present.values())


def test_dead_neurons_are_left_out():
    rng = np.random.default_rng(5)
    W = np.concatenate([_planted(np.repeat([3], 20), 23, rng, 0.0), np.zeros((30, 23))])
    res = NeuronFourierProbe(param="W", token_axis=1).compute(_ctx({"W": W}, 23))
    assert res.values["n_neurons"] == 20 and res.values["single_fraction"] == 1.0


@pytest.mark.skipif(EXTERNAL is None, reason="../shared/external/modadd-mlp-p23 not present")
def test_external_mlp_neurons_lock_onto_one_frequency_each():
    """He et al. 2026: random at initialisation; at the end each neuron holds one frequency, all used."""
    probe = NeuronFourierProbe(param="mlp.W_in", token_axis=1)
    out = {}
    for epoch in (0, 49800):
        state = torch.load(EXTERNAL / f"{epoch}.pth", map_location="cpu", weights_only=True)["model"]
        out[epoch] = probe.compute(_ctx({"mlp.W_in": state["mlp.W_in"].numpy()}, 23))
    harmonic = sum(1 / j for j in range(1, 12)) / 11
    assert abs(out[0].values["mean_concentration"] - harmonic) < 0.02      # init scale 0.1 Gaussian
    assert out[0].present["Fourier features"] is False
    assert out[49800].present["Fourier features"] is True
    assert out[49800].values["single_fraction"] > 0.9 and out[49800].values["key_freqs"] == list(range(1, 12))
    # what the aggregate spectrum of probes.fourier reads off the same matrix
    assert key_frequencies(embedding_spectrum(state["mlp.W_in"].numpy().T, 23), FourierProbe().threshold_factor) == []


def test_fourier_param_flag_adds_the_per_neuron_probe():
    """`--fourier-param W --fourier-token-axis 1` runs both Fourier probes on W and stores W once."""
    import argparse

    from semgraph.runspec import add_arguments, analysis_settings, from_args
    from semgraph.tasks import ModularAddition
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    spec = from_args(parser.parse_args(["--hooks", "mlp.hook_post", "--fourier-param", "mlp.W_in",
                                        "--fourier-token-axis", "1"]))
    settings_ = analysis_settings(ModularAddition(p=7).analysis_defaults(), spec)
    assert ("neuron_fourier", {"param": "mlp.W_in", "token_axis": 1}) in settings_["probes"]
    assert settings_["params"] == ["mlp.W_in"]
    # a run spec naming only the per-neuron probe still gets its weight stored
    only = analysis_settings(ModularAddition(p=7).analysis_defaults(),
                             {"analysis": {"params": [], "probes": [["neuron_fourier", {"param": "W"}]]}})
    assert only["params"] == ["W"]


def test_node_label_names_the_per_neuron_key_frequencies():
    from semgraph.states import describe_node
    members = [{"output.train_acc": 1.0, "output.test_acc": 0.97,
                "present": {"Fourier features": True, "neuron Fourier k=2": True, "neuron Fourier k=5": True}}]
    assert describe_node(members)[0] == "generalising: Fourier circuit {2, 5}"
