"""Process pool and dask.distributed runs give exactly the serial result; only the parent writes the manifest."""
from __future__ import annotations

import pytest
from analysis_compare import assert_same_analysis

from semgraph.analyze import analyze
from semgraph.errors import ConfigError
from semgraph.export import read_graph
from semgraph.parallel import DaskExecutor, SerialExecutor, make_executor

pytest.importorskip("distributed")


def test_dask_local_cluster_gives_the_serial_result(tiny_run_master, tiny_reference, tmp_path):
    dask = analyze(tiny_run_master, tmp_path / "dask", progress=False, workers=2, scheduler="local")
    assert len(dask.extract.captured) == len(dask.rows) > 0 and dask.extract.reused == []
    assert_same_analysis(tiny_reference, tmp_path / "dask")
    G, H = read_graph(tiny_reference / "landscape.json"), read_graph(tmp_path / "dask" / "landscape.json")
    assert set(G.nodes) == set(H.nodes) and set(G.edges) == set(H.edges)
    assert [G.nodes[n]["member_steps"] for n in G] == [H.nodes[n]["member_steps"] for n in G]


def test_process_pool_gives_the_serial_result(tiny_run_master, tiny_reference, tmp_path):
    pooled = analyze(tiny_run_master, tmp_path / "pool", progress=False, workers=2)
    assert pooled.extract.failed == [] and len(pooled.extract.captured) == len(pooled.rows) > 0
    assert_same_analysis(tiny_reference, tmp_path / "pool")


def test_executor_options():
    assert isinstance(make_executor(1), SerialExecutor)
    with pytest.raises(ConfigError, match="at least 1"):
        make_executor(0)
    with pytest.raises(ConfigError, match="dask scheduler"):
        DaskExecutor("tcp://127.0.0.1:9", timeout="1s")  # nothing listens there
