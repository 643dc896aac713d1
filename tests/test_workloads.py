"""Workloads 2 and 3 end to end: `semgraph train induction|digits` then `semgraph analyze`.

Fast tier: tiny runs through the CLI. Slow tier: the real runs and the acceptance checks of issue 7.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from semgraph.analyze import analyze
from semgraph.checkpoints import discover
from semgraph.cli import main
from semgraph.recorder import read_metrics
from semgraph.tasks.induction import load_corpus
from semgraph.tasks.train_induction import InductionRecipe, train_induction, training_batch


def test_corpus_is_the_stdlib_split_by_file():
    train, test, names = load_corpus()
    assert len(names) > 20 and "os.py" in names
    assert len(train) > 5 * len(test) > 0 and train.max() < 128


def test_training_batch_repeats_a_real_chunk_with_a_random_period():
    train, _, _ = load_corpus()
    recipe = InductionRecipe(batch_size=8, n_ctx=64, repeat_fraction=0.5)
    b = training_batch(train, recipe, np.random.default_rng(0))
    assert b.shape == (8, 65)

    def periods(w):  # periods P (8..32) with which the window's last 2P tokens repeat
        return [p for p in range(8, 33) if np.array_equal(w[-p:], w[-2 * p:-p])]

    found = [periods(w) for w in b[:4]]
    assert all(found)                                        # every repeated window repeats
    assert len({f[0] for f in found}) > 1                    # with different periods: no fixed offset
    assert not any(periods(w) for w in b[4:])                # plain real text does not
    b2, copy = training_batch(train, recipe, np.random.default_rng(0), with_mask=True)
    np.testing.assert_array_equal(b2, b)                     # the mask does not change the batch
    assert not copy[4:].any() and copy[:4].any(axis=1).all()
    for w, m, p in zip(b[:4], copy[:4], (f[0] for f in found)):
        t = np.flatnonzero(m)                                # the copies: contiguous up to the end, w[t] = w[t-P']
        assert t[-1] == len(w) - 1 and np.array_equal(t, np.arange(t[0], len(w)))
        assert any(np.array_equal(w[t], w[t - q]) for q in range(8, 33))


def test_cli_train_digits_then_analyze(tmp_path, capsys):
    run = tmp_path / "digits"
    assert main(["train", "digits", "--out", str(run), "--steps", "40", "--schedule", "every:20"]) == 0
    assert discover(run)[0].steps == [0, 20, 40]
    assert main(["analyze", str(run), "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "checkpoints.csv").read_text()
    for hook in ("fc1", "act1", "fc2", "act2"):            # hooks by module name, linear probe per layer
        assert f"linear_per_layer.{hook}.score" in table
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # accuracy recomputed by the analysis from the checkpoints equals the one the training loop logged
    assert summary["runs"]["digits"]["max |recomputed - logged| test acc"] < 1e-6


def test_tiny_induction_run_analyses_with_patterns_at_every_position(tmp_path):
    run = train_induction(tmp_path / "ind", InductionRecipe(steps=6, d_model=16, n_heads=2, n_ctx=40,
                                                             batch_size=4, schedule=[0, 6]), progress=False)
    res = analyze(run, tmp_path / "out", progress=False)
    logged = read_metrics(run)
    assert {"train_loss", "train_loss_copy", "train_loss_plain"} <= set(logged[5])   # logged between checkpoints
    assert {"heldout_loss", "heldout_icl", "icl_score"} <= set(logged[6])
    last = {r["step"]: r for r in res.rows}[6]
    assert last["induction_scores.icl_score"] == pytest.approx(logged[6]["icl_score"], abs=1e-4)
    for row in res.rows:
        # analysis (stored patterns/logits) agrees with the training loop's live capture
        assert row["induction_scores.induction_max"] == pytest.approx(logged[row["step"]]["induction_max"], abs=1e-5)
        assert row["induction_scores.repeat_loss"] == pytest.approx(logged[row["step"]]["repeat_loss"], abs=1e-4)
        assert len(row["induction_scores.induction_L1"]) == 2
        # untrained-ish model: attention near uniform, so the induction score is near the uniform value
        assert row["induction_scores.induction_max"] < 0.3


@pytest.mark.slow
def test_digits_real_run_nodes(tmp_path):
    from semgraph.tasks.train_digits import DigitsRecipe, train_digits
    run = train_digits(tmp_path / "digits", DigitsRecipe(), threads=1)
    res = analyze(run, tmp_path / "out", progress=False)
    G = res.graph
    assert G.number_of_nodes() >= 2
    last = max(res.rows, key=lambda r: r["step"])
    assert last["output.test_acc"] >= 0.95
    assert last["linear_per_layer.act2.score"] >= 0.9
    for n in G.nodes:
        print(n, G.nodes[n]["label"], G.nodes[n]["member_steps"][0], G.nodes[n]["member_steps"][-1])


@pytest.mark.slow
def test_induction_phase_change_matches_a_landscape_transition(tmp_path):
    from semgraph.tasks.induction_report import phase_change_report
    torch.set_num_threads(1)
    run = train_induction(tmp_path / "ind", InductionRecipe(), progress=False)
    res = analyze(run, tmp_path / "out", progress=False)
    rep = phase_change_report(res.rows, res.graph, read_metrics(run))
    print(json.dumps(rep, indent=1))
    assert rep["node_before"] != rep["node_after"]
    assert rep["induction_last"] >= 0.3 > rep["induction_first"]           # an induction head formed
    assert rep["induction_max_after"] >= 2 * rep["induction_max_before"]   # ... between the two nodes
    # the landscape's transition, the induction score's half-way rise and the fall of the loss on repeated
    # sequences are at the same checkpoint (within one checkpoint interval)
    assert abs(rep["transition_step"] - rep["induction_half_rise_step"]) <= rep["checkpoint_interval"]
    assert abs(rep["transition_step"] - rep["repeat_loss_drop_step"]) <= rep["checkpoint_interval"]
    # the training loss has the phase change's bump against log(step), and the transition lies inside it;
    # the in-context-learning score on held-out text falls inside it too
    assert rep["loss_bump_step"] is not None
    assert rep["loss_bump"]["onset"] <= rep["transition_step"] <= rep["loss_bump"]["end"]
    assert rep["loss_bump"]["onset"] <= rep["icl_drop_step"] <= rep["loss_bump"]["end"]
    assert rep["icl_last"] < rep["icl_at_skip"] - 0.1
