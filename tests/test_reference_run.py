"""Slow tier: the full reference grokking run, trained through the Recorder and analysed (about 6 minutes)."""
from __future__ import annotations

import numpy as np
import pytest

from semgraph.analyze import analyze
from semgraph.export import read_graph
from semgraph.landscape import node_path
from semgraph.tasks.train_modular_addition import ModAddRecipe, train_modular_addition

pytestmark = pytest.mark.slow


def test_reference_run_memorises_then_groks_into_distinct_nodes(tmp_path):
    run = train_modular_addition(tmp_path / "modadd-p53", ModAddRecipe(), progress=False)
    res = analyze(run, tmp_path / "out", progress=False)
    G = read_graph(tmp_path / "out" / "landscape.graphml")
    assert G.number_of_nodes() >= 3
    path = node_path(res.graph, "modadd-p53")
    acc = {n: (res.graph.nodes[n]["train_acc"], res.graph.nodes[n]["test_acc"]) for n in path}
    mem = [i for i, n in enumerate(path) if acc[n][0] >= 0.99 and acc[n][1] <= 0.5]
    gen = [i for i, n in enumerate(path) if acc[n][1] >= 0.95]
    assert mem and gen and mem[0] < gen[-1], (path, acc)
    rows = sorted(res.rows, key=lambda r: r["step"])
    final = rows[-1]
    assert 1 <= len(final["fourier.key_freqs"]) <= 12
    first_mem = next(r for r in rows if r["output.train_acc"] >= 0.99)
    assert final["fourier.restricted_loss"] < first_mem["output.test_loss"]
    assert np.isfinite([r["output.test_loss"] for r in rows]).all()
