"""Recorder -> checkpoint folder -> analyze -> graph files, on a real (tiny) trained transformer."""
from __future__ import annotations

import json
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest
import torch

from semgraph.analyze import analyze
from semgraph.checkpoints import discover
from semgraph.export import read_graph
from semgraph.models import build_model, load_weights
from semgraph.checkpoints import read_state_dict
from semgraph.recorder import read_metrics
from semgraph.tasks import ModularAddition


def test_recorder_writes_scheduled_checkpoints_in_numeric_order(tiny_run):
    run = discover(tiny_run)[0]
    info = json.loads((tiny_run / "run.json").read_text())
    assert run.steps == sorted(info["schedule"])            # every scheduled step, numerically ordered
    assert run.steps[0] == 0 and run.steps[-1] == 300
    assert info["task"] == {"name": "modular-addition", "p": 11, "train_fraction": 0.5, "seed": 0}


def test_checkpoint_round_trips_into_rebuilt_model(tiny_run):
    run = discover(tiny_run)[0]
    ref = run.checkpoints[-1]
    state = read_state_dict(ref)
    model = build_model(run.info["model"])
    load_weights(model, state, source=str(ref.path))
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    # the rebuilt model reproduces the accuracy the training loop logged at that step
    task = ModularAddition(p=11, train_fraction=0.5, seed=0)
    ps = task.probe_set()
    with torch.no_grad():
        pred = model(torch.as_tensor(ps.inputs))[:, -1].argmax(-1).numpy()
    logged = read_metrics(tiny_run)[ref.step]
    assert np.isclose((pred == ps.labels)[ps.mask("train")].mean(), logged["train_acc"])


def test_analyze_end_to_end_and_reuse(tiny_run, tmp_path):
    out = tmp_path / "out"
    res = analyze(tiny_run, out, progress=False)
    n_ckpt = len(discover(tiny_run)[0].checkpoints)
    assert len(res.extract.captured) == n_ckpt and not res.extract.failed
    # recomputed accuracies agree with those the training loop logged
    logged = read_metrics(tiny_run)
    for row in res.rows:
        assert abs(row["output.test_acc"] - logged[row["step"]]["test_acc"]) < 1e-6
        assert abs(row["output.train_loss"] - logged[row["step"]]["train_loss"]) < 1e-4
    G = res.graph
    assert G.number_of_nodes() >= 2
    # every checkpoint belongs to exactly one node
    assert sum(G.nodes[n]["n_members"] for n in G) == n_ckpt
    for fmt in ("graphml", "gexf", "json"):
        H = read_graph(out / f"landscape.{fmt}")
        assert set(H.nodes) == set(G.nodes)
        assert set(H.edges) == set(G.edges)
        for n in G.nodes:
            assert H.nodes[n]["label"] == G.nodes[n]["label"]
            assert np.isclose(float(H.nodes[n]["F_test"]), G.nodes[n]["F_test"])
        for u, v in G.edges:
            assert int(H[u][v]["count"]) == G[u][v]["count"]
    assert (out / "landscape_tiny.png").stat().st_size > 10_000
    # second run: the store is reused, no forward pass repeated
    res2 = analyze(tiny_run, out, progress=False)
    assert res2.extract.captured == [] and len(res2.extract.reused) == n_ckpt
    assert nx.utils.graphs_equal(res.graph, res2.graph) or set(res.graph.edges) == set(res2.graph.edges)


def test_corrupt_checkpoint_is_skipped_with_warning(tiny_run, tmp_path):
    run = discover(tiny_run)[0]
    victim = run.checkpoints[5].path
    victim.write_bytes(victim.read_bytes()[:200])  # truncated, as by a killed job
    with pytest.warns(UserWarning, match="truncated|unreadable"):
        res = analyze(tiny_run, tmp_path / "out", progress=False)
    assert [s for _, s, _ in res.extract.failed] == [run.checkpoints[5].step]
    assert len(res.rows) == len(run.checkpoints) - 1
    manifest = json.loads((tmp_path / "out" / "store" / "manifest.json").read_text())
    assert manifest["entries"][f"tiny/{run.checkpoints[5].step}"]["status"] == "failed"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "semgraph.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("case", ["missing", "empty", "no-checkpoints"])
def test_bad_folders_give_one_line_error(tmp_path, case):
    target = tmp_path / "run"
    if case != "missing":
        target.mkdir()
    if case == "no-checkpoints":
        (target / "run.json").write_text(json.dumps({"model": {}, "task": {"name": "modular-addition"}}))
    r = _cli("analyze", target, "--out", tmp_path / "out")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(target) in lines[0] and "Fix:" in lines[0]


def test_strict_makes_corrupt_checkpoint_fatal(tiny_run, tmp_path):
    ref = discover(tiny_run)[0].checkpoints[3].path
    ref.write_bytes(b"not a safetensors file at all")
    r = _cli("analyze", tiny_run, "--out", tmp_path / "out", "--strict")
    assert r.returncode == 2
    assert str(ref) in r.stderr and "Traceback" not in r.stderr
