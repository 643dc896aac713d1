"""Process pool and dask.distributed runs give exactly the serial result; only the parent writes the manifest."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    for not_an_address in ("bogus", "localhost", "tcp://"):   # no port: distributed raises ValueError
        with pytest.raises(ConfigError, match="tcp://HOST:PORT"):
            DaskExecutor(not_an_address, timeout="1s")


POOL_BLOCKED_ON_JOBS = """
import sys, time
from semgraph.parallel import PoolExecutor
if __name__ == "__main__":
    pool = PoolExecutor(2, threads=1, help_while_starting=False, start_method=sys.argv[1])
    print(*pool.pool()._processes, flush=True)          # the workers' pids
    for _ in pool.map_unordered(time.sleep, [600] * 4):   # both workers busy, two jobs waiting in the pipe
        pass
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie lingers where PID 1 does not reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_pool_workers_exit_when_the_parent_is_sigkilled(tmp_path, start_method):
    """A job scheduler's SIGKILL of `semgraph analyze --workers N` must not leave N orphans holding memory."""
    script = tmp_path / "pool_blocked.py"
    script.write_text(POOL_BLOCKED_ON_JOBS)
    proc = subprocess.Popen([sys.executable, str(script), start_method], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        workers = [int(w) for w in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(_running(w) for w in workers)
        time.sleep(1.0)                                   # jobs handed out; the workers sit in time.sleep
        os.kill(proc.pid, signal.SIGKILL)                 # the parent only, not its process group
        proc.wait()
        deadline = time.monotonic() + 15
        while any(_running(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_running(w) for w in workers), f"orphaned workers {workers} still run"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


HOLD_FOLDER = """
import sys, time
from semgraph.io import exclusive_folder
with exclusive_folder(sys.argv[1], stage="test"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_second_orchestrator_on_the_same_out_is_refused_until_the_first_dies(tiny_run, tmp_path):
    """Only one process writes an --out folder's manifest; a SIGKILLed holder does not block the re-run."""
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "hold.py"
    script.write_text(HOLD_FOLDER)
    holder = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"semgraph pid {holder.pid} on \S+ is already writing this folder"):
            analyze(tiny_run, out, progress=False)
        assert not (out / "store").exists()               # refused before any work
    finally:
        holder.kill()                                      # SIGKILL: the kernel drops its lock
        holder.wait()
    assert analyze(tiny_run, out, progress=False).rows
