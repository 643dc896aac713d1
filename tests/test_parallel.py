"""Process pool and dask.distributed runs give exactly the serial result; only the parent writes the manifest."""
from __future__ import annotations

import pytest
from analysis_compare import assert_same_analysis

from semgraph.analyze import analyze
from semgraph.errors import ConfigError
from semgraph.export import read_graph
from semgraph.parallel import DaskExecutor, PoolExecutor, SerialExecutor, make_executor

pytest.importorskip("distributed")


def test_dask_local_cluster_gives_the_serial_result(tiny_run_master, tiny_reference, tmp_path):
    dask = analyze(tiny_run_master, tmp_path / "dask", progress=False, workers=2, scheduler="local")
    assert len(dask.extract.captured) == len(dask.rows) > 0 and dask.extract.reused == []
    assert_same_analysis(tiny_reference, tmp_path / "dask")
    G, H = read_graph(tiny_reference / "landscape.json"), read_graph(tmp_path / "dask" / "landscape.json")
    assert set(G.nodes) == set(H.nodes) and set(G.edges) == set(H.edges)
    assert [G.nodes[n]["member_steps"] for n in G] == [H.nodes[n]["member_steps"] for n in G]


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_process_pool_gives_the_serial_result(tiny_run_master, tiny_reference, tmp_path, start_method):
    # help_while_starting=False: every job goes to the worker processes, none is run here
    pool = PoolExecutor(2, threads=1, help_while_starting=False, start_method=start_method)
    try:
        pooled = analyze(tiny_run_master, tmp_path / "pool", progress=False, executor=pool)
    finally:
        pool.close()
    assert pooled.extract.failed == [] and len(pooled.extract.captured) == len(pooled.rows) > 0
    # capture and probes: one job per checkpoint each, all of them in the workers
    assert pool.jobs_done_here == 0 and pool.jobs_sent == 2 * len(pooled.rows)
    assert_same_analysis(tiny_reference, tmp_path / "pool")


def test_pool_that_is_still_starting_lends_this_process_and_gives_the_serial_result(
        tiny_run_master, tiny_reference, tmp_path):
    pool = PoolExecutor(2, threads=1, start_method="forkserver")   # its server imports torch: seconds
    try:
        pooled = analyze(tiny_run_master, tmp_path / "pool", progress=False, executor=pool)
    finally:
        pool.close()
    assert pool.jobs_done_here > 0 and pool.jobs_done_here + pool.jobs_sent == 2 * len(pooled.rows)
    assert_same_analysis(tiny_reference, tmp_path / "pool")


def test_close_during_a_start_returns_at_once():
    import time
    pool = PoolExecutor(2, threads=1, start_method="forkserver").start()
    start = pool._start
    t = time.perf_counter()
    pool.close()
    assert time.perf_counter() - t < 1.0
    assert start.finished.wait(120)         # the abandoned start then shuts its workers down itself
    assert start.abandoned and start.pool is None


FORK_AFTER_THREADS = """
import torch
from semgraph.parallel import PoolExecutor
torch.set_num_threads(2)
a = torch.randn(512, 512)
for _ in range(20):
    a = torch.tanh(a @ a / 512)          # this process's OpenMP pool has run with 2 threads
def job(i):
    x = torch.randn(256, 256, generator=torch.Generator().manual_seed(i))
    return float((x @ x).sum())
pool = PoolExecutor(2, threads=1)
assert pool.start_method == "fork", pool.start_method
got = dict(pool.map_unordered(job, range(8)))
pool.close()
torch.set_num_threads(1)                  # the workers' thread count, for bit-equal sums
assert got == {i: job(i) for i in range(8)} and pool.jobs_sent == 8, (got, pool.jobs_sent)
print("ok")
"""


def test_forked_one_thread_workers_run_torch_after_this_process_used_threads(tmp_path):
    import subprocess
    import sys
    script = tmp_path / "fork_after_threads.py"
    script.write_text(FORK_AFTER_THREADS)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_executor_options():
    assert isinstance(make_executor(1), SerialExecutor)
    with pytest.raises(ConfigError, match="at least 1"):
        make_executor(0)
    with pytest.raises(ConfigError, match="dask scheduler"):
        DaskExecutor("tcp://127.0.0.1:9", timeout="1s")  # nothing listens there
