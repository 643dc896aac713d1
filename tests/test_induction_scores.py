"""The induction probe (registry name ``induction_scores``) on hand-constructed attention patterns and logits
(ground truth by construction)."""
from __future__ import annotations

import numpy as np
import pytest

from probes import make_probe
from probes.base import ProbeContext
from probes.induction import (icl_positions, icl_score, induction_scores, next_token_nll, previous_token_scores,
                              repeated_tokens)
from semgraph.tasks.induction import InductionText, VOCAB

L = 5
T = 2 * L


def constructed_patterns(n: int = 3) -> np.ndarray:
    """Head 0: perfect induction head; head 1: perfect previous-token head; head 2: uniform (causal)."""
    pat = np.zeros((n, 3, T, T))
    for i in range(T):
        pat[:, 0, i, i - L + 1 if i >= L else 0] = 1.0
        pat[:, 1, i, max(i - 1, 0)] = 1.0
        pat[:, 2, i, : i + 1] = 1.0 / (i + 1)
    return pat


def test_scores_of_constructed_heads():
    pat = constructed_patterns()
    tokens = repeated_tokens(20, L, n=3, seed=0)          # distinct tokens: the only target of i >= L is i-L+1
    ind = induction_scores(pat, tokens)
    prev = previous_token_scores(pat)
    uniform_ind = np.mean([1.0 / (i + 1) for i in range(L, 2 * L)])
    uniform_prev = np.mean([1.0 / (i + 1) for i in range(1, T)])
    np.testing.assert_allclose(ind, [1.0, 0.0, uniform_ind])
    # the induction head attends to i-1 only at query i = 1 (key 0, its fallback) -> 1 of T-1 queries
    np.testing.assert_allclose(prev, [1.0 / (T - 1), 1.0, uniform_prev])


def test_next_token_nll_matches_constructed_probabilities():
    tokens = np.array([[1, 2, 3, 1, 2, 3]])
    logits = np.zeros((1, 6, 4))
    logits[0, np.arange(5), tokens[0, 1:]] = np.log(3.0)  # correct token gets prob 3/(3+3) = 1/2
    np.testing.assert_allclose(next_token_nll(logits, tokens), np.log(2.0) * np.ones((1, 5)))


def _ctx(pat: np.ndarray, logits: np.ndarray | None, inputs: np.ndarray, split: np.ndarray) -> ProbeContext:
    acts = {"blocks.0.attn.hook_pattern": pat[:, :2], "blocks.1.attn.hook_pattern": pat[:, 2:]}
    if logits is not None:
        acts["unembed.hook_out"] = logits
    return ProbeContext(run="r", step=0, inputs=inputs, labels=inputs[:, 0], split=split, concepts={},
                        activations=acts, logits=np.zeros((len(inputs), VOCAB)), task={"repeat_len": L})


def test_probe_reports_per_head_scores_losses_and_concepts():
    inputs = repeated_tokens(20, L, n=4, seed=0)
    split = np.array(["unseen", "unseen", "test", "test"])
    pat = np.concatenate([constructed_patterns(4), constructed_patterns(4)[:, :1]], axis=1)  # 4 heads
    # logits: a perfect copier in the second repeat (prob 0.9 on the right token), uniform elsewhere
    logits = np.zeros((4, T, 20))
    for i in range(L, T - 1):
        logits[np.arange(4), i, inputs[:, i + 1]] = np.log(0.9 * 19 / 0.1)
    res = make_probe("induction_scores", logits_hook="unembed.hook_out").compute(_ctx(pat, logits, inputs, split))
    v = res.values
    assert v["induction_L0"][0] == pytest.approx(1.0) and v["induction_L1"][1] == pytest.approx(1.0)
    assert v["induction_max"] == pytest.approx(1.0) and v["prev_token_max"] == pytest.approx(1.0)
    assert v["repeat_loss"] == pytest.approx(-np.log(0.9))
    assert v["first_repeat_loss"] == pytest.approx(np.log(20))
    assert v["text_loss"] == pytest.approx((4 * np.log(20) + 4 * -np.log(0.9) + np.log(20)) / (T - 1))
    # text rows: early target (column 0) uniform, late targets (columns 6..8, all in the second repeat) copied
    assert v["icl_score"] == pytest.approx(-np.log(0.9) - np.log(20))
    assert res.present["induction head L0H0"] and res.present["previous-token head L0H1"]
    assert res.present["induction head"]


def test_probe_gives_reasons_instead_of_numbers_when_inputs_are_missing():
    inputs = np.zeros((2, T), dtype=int)
    pat = constructed_patterns(2)
    res = make_probe("induction_scores").compute(_ctx(pat[:, :, :4, :4], None, inputs, np.array(["unseen"] * 2)))
    assert res.values["induction_max"] is None and "position=None" in res.reasons["induction_max"]
    res = make_probe("induction_scores", logits_hook="unembed.hook_out").compute(
        _ctx(pat, None, repeated_tokens(20, L, n=2), np.array(["unseen"] * 2)))
    assert res.values["repeat_loss"] is None and "logits" in res.reasons["repeat_loss"]
    assert res.values["icl_score"] is None and "logits" in res.reasons["icl_score"]


def test_induction_probe_set_repeats_and_answers():
    task = InductionText(repeat_len=8, n_repeat=5, n_text=4)
    ps = task.probe_set()
    rep = ps.split == "unseen"
    assert ps.inputs.shape == (9, 16) and rep.sum() == 5 and (ps.split == "test").sum() == 4
    np.testing.assert_array_equal(ps.inputs[rep, :8], ps.inputs[rep, 8:])
    np.testing.assert_array_equal(ps.labels[rep], ps.inputs[rep, 0])   # what an induction head predicts
    assert ps.inputs.max() < VOCAB and ps.inputs.min() >= 0


def test_icl_positions_are_the_first_eighth_and_the_last_third():
    early, late = icl_positions(63)                          # windows of T = 64 tokens
    np.testing.assert_array_equal(early, np.arange(8))       # targets 1..8
    np.testing.assert_array_equal(late, np.arange(42, 63))   # targets 43..63 (ceil(128/3) = 43)
    nll = np.zeros((2, 63))
    nll[:, early] = 3.0
    nll[:, late] = 1.0
    nll[:, 8:42] = 100.0                                     # middle positions do not count
    assert icl_score(nll) == pytest.approx(-2.0)
    with pytest.raises(ValueError):
        icl_score(np.zeros((2, 2)))


def test_both_registry_names_are_the_same_probe():
    from probes import REGISTRY
    from probes.induction import InductionProbe
    assert issubclass(REGISTRY["induction_scores"], REGISTRY["induction"]) and REGISTRY["induction"] is InductionProbe
    assert make_probe("induction").repeat_split is None and make_probe("induction_scores").repeat_split == "unseen"
