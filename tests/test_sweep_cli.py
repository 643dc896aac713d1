"""A tiny real sweep (2 seeds x 2 fractions, p = 11) analysed into one landscape, and the CLI's errors."""
from __future__ import annotations

import csv
import json

import pytest

from semgraph.analyze import analyze
from semgraph.cli import main
from semgraph.errors import ConfigError
from semgraph.sweep import SweepConfig, parse_list, run_sweep


def test_tiny_sweep_shares_nodes_and_writes_observables(tmp_path):
    cfg = SweepConfig(seeds=(0, 1), fractions=(0.4, 0.7), sizes=(16,), p=11, steps=60, every=20)
    report = run_sweep(tmp_path / "sweep", cfg, jobs=2, progress=False)
    assert len(report["trained"]) == 4 and not report["failed"]
    res = analyze(tmp_path / "sweep", tmp_path / "out", progress=False, compare_states=["concepts"])
    G = res.graph
    runs = {r["name"] for r in report["trained"]}
    assert set(G.graph["runs"]) == runs
    # one state space: every node's member checkpoints come from the pooled runs, each run's path uses them
    assert set().union(*(set(G.nodes[n]["runs"]) for n in G.nodes)) == runs
    assert sum(G.nodes[n]["n_members"] for n in G.nodes) == len(res.rows)
    obs = json.loads((tmp_path / "out" / "observables.json").read_text())
    assert set(obs["grokking_probability"]["by_fraction"]) == {"0.4", "0.7"}
    with open(tmp_path / "out" / "observables_runs.csv") as fh:
        table = list(csv.DictReader(fh))
    assert {r["run"] for r in table} == runs and {r["train_fraction"] for r in table} == {"0.4", "0.7"}
    agree = json.loads((tmp_path / "out" / "states_agreement.json").read_text())
    assert agree["chosen"] == "gmm" and agree["pairs"][0]["b"] in ("gmm", "concepts")
    # resuming the sweep trains nothing new (every run is complete)
    again = run_sweep(tmp_path / "sweep", cfg, jobs=1, progress=False)
    assert len(again["trained"]) == 4


def test_sweep_config_errors():
    with pytest.raises(ConfigError, match="fractions"):
        SweepConfig(fractions=(0.0, 1.5)).validate()
    with pytest.raises(ConfigError, match="divisible"):
        SweepConfig(sizes=(30,)).validate()
    with pytest.raises(ConfigError, match="comma-separated"):
        parse_list("0.3,abc", float)


def test_observe_on_missing_analysis_is_one_line_error(tmp_path, capsys):
    assert main(["observe", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "observe" in err[0] and "Fix:" in err[0]
