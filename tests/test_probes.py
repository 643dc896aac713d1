"""Each probe against a constructed ground truth."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from probes import FourierProbe, LinearConceptProbe, OutputProbe
from probes.base import ProbeContext
from semgraph.tasks import ModularAddition

P = 23


def context(logits=None, acts=None, params=None, p=P, train_fraction=0.5):
    ps = ModularAddition(p=p, train_fraction=train_fraction, seed=1).probe_set()
    n = len(ps.labels)
    return ProbeContext(run="r", step=0, inputs=ps.inputs, labels=ps.labels, split=ps.split,
                        concepts=ps.concepts, activations=acts or {},
                        logits=np.zeros((n, p)) if logits is None else logits,
                        params=params or {}, task={"name": "modular-addition", "p": p})


def test_output_probe_matches_independent_cross_entropy():
    rng = np.random.default_rng(0)
    ctx = context(logits=rng.normal(size=(P * P, P)) * 3)
    res = OutputProbe().compute(ctx)
    for part in ("train", "test"):
        m = ctx.split == part
        z = ctx.logits[m]
        p_true = np.exp(z[np.arange(m.sum()), ctx.labels[m]]) / np.exp(z).sum(1)
        assert np.isclose(res.values[f"F_{part}"], -np.log(p_true).sum())
        assert np.isclose(res.values[f"{part}_loss"], -np.log(p_true).mean())
        assert np.isclose(res.values[f"{part}_acc"], (z.argmax(1) == ctx.labels[m]).mean())


def test_output_probe_uniform_logits_give_log_p():
    res = OutputProbe().compute(context())
    assert np.isclose(res.values["test_loss"], np.log(P))


def test_output_probe_nan_logits_recorded_not_computed():
    logits = np.zeros((P * P, P))
    logits[3, 2] = np.nan
    res = OutputProbe().compute(context(logits=logits))
    assert res.values["test_loss"] is None and "non-finite" in res.reasons["test_loss"]


@settings(max_examples=25, deadline=None)
@given(st.sets(st.integers(1, (P - 1) // 2), min_size=1, max_size=5), st.integers(0, 10_000))
def test_fourier_probe_recovers_planted_embedding_frequencies(freqs, seed):
    """An embedding built from cos/sin of chosen frequencies (random phases and mixing) -> exactly those."""
    rng = np.random.default_rng(seed)
    t = np.arange(P)
    cols = []
    for k in sorted(freqs):
        phase = rng.uniform(0, 2 * np.pi)
        cols += [np.cos(2 * np.pi * k * t / P + phase), np.sin(2 * np.pi * k * t / P + phase)]
    basis = np.stack(cols, axis=1)                                  # (P, 2|freqs|)
    W_E = basis @ rng.normal(size=(basis.shape[1], 32))             # mixed into d_model = 32
    W_E = np.vstack([W_E, rng.normal(size=(1, 32))])                # the '=' token row is ignored
    res = FourierProbe(neuron_hook=None).compute(context(params={"embed.weight": W_E}))
    assert res.values["key_freqs"] == sorted(freqs)
    assert all(res.present[f"Fourier k={k}"] for k in freqs)


def test_fourier_probe_random_embedding_has_no_key_frequency():
    W_E = np.random.default_rng(0).normal(size=(P + 1, 512))
    res = FourierProbe(neuron_hook=None).compute(context(params={"embed.weight": W_E}))
    assert res.values["key_freqs"] == []
    assert res.values["gini"] < 0.3


def test_restricted_and_excluded_loss_on_constructed_logits():
    """Logits made only of key-frequency terms cos(w(a+b-c)): restricting keeps them all (restricted loss
    equals the full loss), excluding removes them all (excluded loss = log p, uniform prediction)."""
    ps = ModularAddition(p=P, train_fraction=0.5, seed=1).probe_set()
    a, b = ps.concepts["a"], ps.concepts["b"]
    c = np.arange(P)
    keys = [3, 7]
    logits = sum(4 * np.cos(2 * np.pi * k * ((a + b)[:, None] - c[None, :]) / P) for k in keys)
    emb_t = np.arange(P + 1)
    W_E = np.stack([np.cos(2 * np.pi * k * emb_t / P) for k in keys] +
                   [np.sin(2 * np.pi * k * emb_t / P) for k in keys], axis=1)
    ctx = context(logits=logits, params={"embed.weight": W_E})
    res = FourierProbe(neuron_hook=None).compute(ctx)
    full = OutputProbe().compute(ctx)
    assert res.values["key_freqs"] == keys
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    all_loss = -logp[np.arange(len(a)), ps.labels].mean()
    assert np.isclose(res.values["restricted_loss"], all_loss)
    assert np.isclose(res.values["excluded_loss"], np.log(P))
    assert full.values["train_acc"] == 1.0


def test_neuron_spectrum_finds_planted_neuron_frequency():
    ps = ModularAddition(p=P, train_fraction=0.5, seed=1).probe_set()
    a, b = ps.concepts["a"], ps.concepts["b"]
    th = 2 * np.pi * 5 / P
    acts = np.stack([np.maximum(0, np.cos(th * a) + np.cos(th * b)),     # ReLU of a frequency-5 neuron
                     np.cos(th * (a + b)), np.sin(th * a) * np.cos(th * b)], axis=1)
    W_E = np.random.default_rng(0).normal(size=(P + 1, 64))
    res = FourierProbe(neuron_hook="mlp").compute(context(acts={"mlp": acts}, params={"embed.weight": W_E}))
    # ReLU creates harmonics (10 = 2*5) but the planted frequency dominates
    assert 5 in res.values["neuron_key_freqs"]


def test_linear_probe_planted_concept_vs_random_labels():
    rng = np.random.default_rng(0)
    n, d = 900, 20
    y = rng.integers(0, 3, size=n)
    X = rng.normal(size=(n, d))
    X[:, 0] += 4 * y                                   # the concept is linearly planted along one axis
    probe = LinearConceptProbe().fit(X, y)
    assert probe.score_ > 0.95 and probe.selectivity_ > 0.5
    chance = LinearConceptProbe().fit(rng.normal(size=(n, d)), y)
    assert abs(chance.score_ - 1 / 3) < 0.1


def test_linear_probe_degenerate_inputs_are_recorded():
    ctx = context(acts={"h": np.ones((P * P, 4))})
    res = LinearConceptProbe(concept="a", hook="h").compute(ctx)
    assert res.values["score"] is None and "constant" in res.reasons["score"]
    ctx = context(acts={"h": np.random.default_rng(0).normal(size=(P * P, 4))})
    ctx.concepts["one"] = np.zeros(P * P, dtype=int)
    res = LinearConceptProbe(concept="one", hook="h").compute(ctx)
    assert "single class" in res.reasons["score"]
