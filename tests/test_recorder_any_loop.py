"""The Recorder in a plain PyTorch loop: three lines, any nn.Module, schedules, resume, torch.compile, online."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from semgraph.analyze import analyze
from semgraph.capture import capture, check_fired
from semgraph.checkpoints import discover, read_state_dict
from semgraph.errors import ConfigError, SemgraphError
from semgraph.models import build_model, factory_spec, load_weights
from semgraph.online import OnlineAnalysis
from semgraph.recorder import Recorder, eager_module, read_metrics
from semgraph.schedule import Every, LogPlusEvery, LogSpaced, as_schedule, log_plus_linear
from semgraph.tasks.digits import Digits, make_mlp

HIDDEN = [16, 8]


def _data():
    ps = Digits().probe_set()
    tr = ps.mask("train")
    return ps, torch.as_tensor(ps.inputs[tr]), torch.as_tensor(ps.labels[tr])


def plain_loop(run_dir, steps: int = 40, *, model=None, recorder_kwargs=None, start_model=None):
    """A user's ordinary training loop; the lines marked `# semgraph` are all it takes."""
    ps, x, y = _data()
    model = model if model is not None else make_mlp(hidden=HIDDEN)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder(run_dir, model_spec=factory_spec(make_mlp, hidden=HIDDEN), task_spec=Digits(),  # semgraph
                   schedule="every:10", **(recorder_kwargs or {}))
    for step in range(steps + 1):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        rec.record(step, model, {"train_loss": loss.item()})                                         # semgraph
        if step == steps:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, rec


def test_plain_loop_in_three_lines_then_analyze(tmp_path):
    run_dir = tmp_path / "run"
    model, _ = plain_loop(run_dir)
    run = discover(run_dir)[0]
    assert run.steps == [0, 10, 20, 30, 40]
    # the last checkpoint is the trained model, and it loads into the model rebuilt from the spec
    rebuilt = build_model(run.info["model"])
    load_weights(rebuilt, read_state_dict(run.checkpoints[-1]))
    # 5 checkpoints: BIC (the gmm default) prefers one state on so few points; Ward + silhouette splits them
    res = analyze(run_dir, tmp_path / "out", progress=False, states="ward")
    assert [r["step"] for r in sorted(res.rows, key=lambda r: r["step"])] == run.steps
    assert res.graph.number_of_nodes() >= 2
    # the analysis recomputes, from the stored checkpoints, the training loss the loop logged
    logged = read_metrics(run_dir)
    for row in res.rows:
        ps = Digits().probe_set()
        assert row["output.train_loss"] == pytest.approx(logged[row["step"]]["train_loss"], abs=1e-5)
        for hook in ("fc1", "act1", "fc2", "act2"):        # hooks by module name, a linear probe per layer
            assert 0.0 <= row[f"linear_per_layer.{hook}.score"] <= 1.0
    assert {"linear_per_layer.act2.score", "output.test_acc"} <= set(res.graph.graph["signature_features"])


def test_default_schedule_matches_log_plus_linear():
    # LogPlusEvery is the open-ended form of log_plus_linear (which adds the known last step)
    for total in (100, 250, 5000):
        steps = {s for s in range(total + 1) if s in as_schedule(None)}
        assert steps | {total} == set(log_plus_linear(total, every=100))


@given(st.integers(1, 6), st.integers(0, 5000))
@settings(max_examples=60, deadline=None)
def test_log_spaced_schedule_is_rounded_powers(per_decade, step):
    expected = step == 0 or any(round(10 ** (i / per_decade)) == step for i in range(0, 4 * per_decade + 1))
    assert (step in LogSpaced(per_decade)) == expected


@given(st.integers(1, 50), st.integers(0, 10_000))
def test_every_k(k, step):
    assert (step in Every(k)) == (step % k == 0)
    assert (step in as_schedule(f"every:{k}")) == (step % k == 0)


def test_explicit_schedule_and_bad_schedule():
    sched = as_schedule([0, 7, 1000])
    assert [s for s in range(2000) if s in sched] == [0, 7, 1000]
    assert as_schedule("0,5") .describe() == [0, 5]
    with pytest.raises(ValueError):
        as_schedule(3.5)


def test_resume_after_a_kill_continues_exactly(tmp_path):
    """Train 25 steps and 'crash'; restart: the second half reproduces an uninterrupted run bit for bit."""
    ps, x, y = _data()

    def train(run_dir, stop_at, total=40):
        torch.manual_seed(0)
        model = make_mlp(hidden=HIDDEN)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        rec = Recorder(run_dir, model_spec=factory_spec(make_mlp, hidden=HIDDEN), task_spec=Digits(),
                       schedule=Every(10))
        start = rec.resume(model, opt)
        for step in range(start, total + 1):
            if rec.should_record(step):
                rec.record(step, model)
                rec.save_train_state(step, opt)
            if step == stop_at:
                return model, start
            idx = torch.as_tensor(np.random.default_rng(step).integers(0, len(x), 32))
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model, start

    straight, _ = train(tmp_path / "a", stop_at=40)
    train(tmp_path / "b", stop_at=25)              # killed at step 25: last saved state is step 20
    resumed, start = train(tmp_path / "b", stop_at=40)
    assert start == 20
    for (k, v), (_, w) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(v, w), k


def test_a_different_run_in_the_same_folder_is_refused(tmp_path):
    Recorder(tmp_path / "r", model_spec=factory_spec(make_mlp, hidden=HIDDEN), task_spec=Digits())
    with pytest.raises(ConfigError, match="different run"):
        Recorder(tmp_path / "r", model_spec=factory_spec(make_mlp, hidden=[4, 4]), task_spec=Digits())
    with pytest.raises(ConfigError, match="lambda or a local"):
        factory_spec(lambda: make_mlp())


def test_compiled_model_records_eager_keys_and_analyses(tmp_path):
    model = make_mlp(hidden=HIDDEN)
    compiled = torch.compile(model, backend="eager")
    assert eager_module(compiled) is model
    plain_loop(tmp_path / "run", steps=10, model=compiled,
               recorder_kwargs={"online": OnlineAnalysis(probes=[])})
    ref = discover(tmp_path / "run")[0].checkpoints[-1]
    state = read_state_dict(ref)
    assert set(state) == set(model.state_dict())       # no "_orig_mod." prefix
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v.detach())        # the step-10 checkpoint is the trained model
    # online capture ran on an eager module rebuilt from the spec: every hook fired, activations stored
    assert sorted(r["step"] for r in json.loads("[" + ",".join(
        (tmp_path / "run" / "online" / "rows.jsonl").read_text().split("\n")[:-1]) + "]")) == [0, 10]


def test_a_hook_that_never_fires_is_an_error():
    model = torch.nn.ModuleDict({"used": torch.nn.Linear(3, 3), "unused": torch.nn.Linear(3, 3)})
    with capture(model, ["used", "unused"]) as acts:
        model["used"](torch.zeros(1, 3))
        with pytest.raises(SemgraphError, match="never fired"):
            check_fired(acts, ["used", "unused"])


def test_online_analysis_follows_the_landscape_and_agrees_with_analyze(tmp_path):
    online = OnlineAnalysis()
    plain_loop(tmp_path / "run", steps=30, recorder_kwargs={"online": online})
    assert [r["step"] for r in online.rows] == [0, 10, 20, 30]
    G = online.landscape()
    assert sum(G.nodes[n]["n_members"] for n in G) == 4
    offline = {r["step"]: r for r in analyze(tmp_path / "run", tmp_path / "out", progress=False).rows}
    for row in online.rows:
        for key in ("output.train_loss", "output.test_acc", "linear_per_layer.act1.score"):
            assert row[key] == pytest.approx(offline[row["step"]][key], abs=1e-9), key
