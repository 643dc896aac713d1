"""Where the per-checkpoint jobs run: in this process, a local process pool, or a dask.distributed cluster.

All three offer ``map_unordered(fn, items)`` yielding ``(item, fn(item))`` as results arrive, so the caller
(the one process that writes the manifest) records each finished checkpoint at once. ``make_executor``
picks one from the CLI options ``--workers N`` and ``--scheduler {local,tcp://HOST:PORT}``.

SLURM / PBS / SGE clusters: start a dask-jobqueue cluster (``SLURMCluster(...).scale(jobs=N)``) and pass
its ``scheduler_address`` as ``--scheduler``; the workers must see the run folder and ``--out`` on a
shared filesystem.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

from semgraph.errors import ConfigError, SemgraphError
from semgraph.io import pid_exists

_WORKER_DIED = dict(stage="parallel", fix="re-run the same command: finished checkpoints are kept; if memory ran "
                    "out, use fewer --workers")

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    workers: int

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]: ...

    def close(self) -> None: ...


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask, so containers and taskset are respected)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch
        torch.set_num_threads(threads)


def _init_worker(threads: int | None, parent_pid: int) -> None:
    """Pool worker start: torch threads, and a watch that ends this worker once its parent is gone."""
    _set_threads(threads)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid, os.getppid()), name="semgraph-parent-watch",
                     daemon=True).start()


def _exit_when_orphaned(parent_pid: int, first_ppid: int, every_s: float = 0.5) -> None:
    """Exit (mid-job too) when the orchestrating process dies, e.g. SIGKILLed by a job scheduler.

    A pool worker otherwise outlives it, blocked on the pipe of jobs and holding its memory. Either sign
    counts: this process was re-parented (its parent, the orchestrator or the forkserver that exits with it,
    died), or the orchestrator's pid is gone. A file being written is left under its temporary name, which
    the next run deletes.
    """
    while True:
        time.sleep(every_s)
        if os.getppid() != first_ppid or not pid_exists(parent_pid):
            os._exit(1)


def _call_with_threads(fn: Callable[[T], R], item: T, threads: int | None) -> R:
    _set_threads(threads)
    return fn(item)


class SerialExecutor:
    """Runs every job here, in order."""

    workers = 1

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        for item in items:
            yield item, fn(item)

    def close(self) -> None:
        pass


class _PoolStart:
    """One background start of a process pool: the thread, its outcome, and whether anyone still wants it."""

    def __init__(self, workers: int, threads: int, preload: Iterable[str], method: str = "forkserver"):
        self.workers, self.threads, self.preload, self.method = workers, threads, list(preload), method
        self.pool: ProcessPoolExecutor | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()      # set when every worker has answered, or the start failed
        self.abandoned = False
        self.finished = threading.Event()   # set when _run has returned (an abandoned pool is shut down)
        self.lock = threading.Lock()
        if method == "fork":    # fork from this (calling) thread: milliseconds, so no background thread
            self._run()
        else:
            threading.Thread(target=self._run, name="semgraph-pool-start", daemon=True).start()

    def _run(self) -> None:
        try:
            self._start_pool()
        finally:
            self.finished.set()

    def _start_pool(self) -> None:
        pool = None
        try:
            ctx = multiprocessing.get_context(self.method)
            if self.method == "fork":
                import importlib
                for name in self.preload:   # imported once here; the forked workers inherit them
                    importlib.import_module(name)
            else:
                ctx.set_forkserver_preload(self.preload)
            pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                       initargs=(self.threads, os.getpid()))
            # one no-op per worker: each returns once its process exists and has run the initializer
            for fut in [pool.submit(os.getpid) for _ in range(self.workers)]:
                fut.result()
        except BaseException as exc:  # reported in the calling thread by PoolExecutor.pool()
            self.error = exc
        with self.lock:
            if self.abandoned:      # closed while starting: nobody will use these workers
                if pool is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
                return
            self.pool = pool
            self.ready.set()

    def abandon_or_take(self) -> ProcessPoolExecutor | None:
        """The started pool (the caller shuts it down), or None after marking a start in progress abandoned."""
        with self.lock:
            if not self.ready.is_set():
                self.abandoned = True
                return None
            return self.pool


class PoolExecutor:
    """A local process pool whose start costs milliseconds, or overlaps with work done here.

    Each worker uses cores/workers torch threads. With one thread per worker (e.g. 2 workers on 2 cores) the
    workers are forked from this process after it has imported semgraph, torch and TransformerLens, so they
    start in milliseconds; a single-threaded worker never enters an OpenMP parallel region, so the fork is
    safe even after this process has run multi-threaded torch code (as DataLoader workers rely on). With
    more threads per worker they are forked from a server process that has imported those modules once (no
    fork of a process whose thread pools may be running). That import takes several seconds, so such a pool
    starts in a background thread (``start``, also called by the first ``map_unordered``) and, until its
    workers answer, this process works through the jobs itself (``help_while_starting``). Once they answer,
    the jobs not yet begun go to the pool and this process only collects results. ``close`` never waits
    for a start in progress.
    """

    PRELOAD = ("semgraph.extract", "semgraph.probing", "probes", "transformer_lens.model_bridge.sources.native")

    def __init__(self, workers: int, threads: int | None = None, *, help_while_starting: bool = True,
                 start_method: str | None = None):
        self.workers = workers
        self.threads = threads or max(1, available_cores() // workers)
        self.help_while_starting = help_while_starting
        fork_ok = "fork" in multiprocessing.get_all_start_methods()
        self.start_method = start_method or ("fork" if fork_ok and self.threads == 1 else "forkserver")
        self.jobs_done_here = 0           # jobs this process ran while the pool was starting
        self.jobs_sent = 0                # jobs the worker processes ran
        self._start: _PoolStart | None = None

    def start(self) -> "PoolExecutor":
        """Start the workers (idempotent): forked at once, or a forkserver start in the background."""
        if self._start is None:
            self._start = _PoolStart(self.workers, self.threads, self.PRELOAD, self.start_method)
        return self

    @property
    def ready(self) -> bool:
        return self._start is not None and self._start.ready.is_set()

    def pool(self) -> ProcessPoolExecutor:
        """The started pool, waiting for it if need be."""
        self.start()
        assert self._start is not None
        self._start.ready.wait()
        if self._start.error is not None:
            raise SemgraphError(f"the worker processes did not start ({self._start.error!r})",
                                **_WORKER_DIED) from self._start.error
        assert self._start.pool is not None
        return self._start.pool

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        pending = list(items)
        if len(pending) < 2:  # not worth starting processes for
            yield from SerialExecutor().map_unordered(fn, pending)
            return
        self.start()
        if self.help_while_starting and not self.ready:
            yield from self._help_until_ready(fn, pending)
            if not pending:
                return
        pool = self.pool()
        futures = {pool.submit(fn, item): item for item in pending}
        self.jobs_sent += len(futures)
        try:
            for fut in as_completed(futures):
                try:
                    result = fut.result()
                except BrokenProcessPool as exc:
                    raise SemgraphError(f"a worker process died while working on checkpoints ({exc})",
                                        **_WORKER_DIED) from exc
                yield futures[fut], result
        finally:
            for fut in futures:
                fut.cancel()

    def _help_until_ready(self, fn: Callable[[T], R], pending: list[T]) -> Iterator[tuple[T, R]]:
        """Run jobs here, with the workers' thread count, until the pool is up; consumes ``pending``."""
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            while pending and not self.ready:
                item = pending.pop(0)
                result = fn(item)
                self.jobs_done_here += 1
                yield item, result
        finally:
            torch.set_num_threads(before)

    def close(self) -> None:
        """Stop the workers (a start still in progress stops itself once up)."""
        start, self._start = self._start, None
        if start is not None:
            pool = start.abandon_or_take()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """Jobs on a dask.distributed cluster: ``"local"`` starts a LocalCluster of ``workers`` processes,
    anything else is a scheduler address (``tcp://host:8786``, e.g. from dask-jobqueue's SLURMCluster)."""

    def __init__(self, scheduler: str, workers: int | None = None, *, timeout: str = "30s"):
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise ConfigError("--scheduler needs dask.distributed, which is not installed", stage="parallel",
                              fix="pip install 'semgraph[dask]'") from exc
        self._cluster = None
        self._threads: int | None = None
        if scheduler == "local":
            import logging
            n = workers or available_cores()
            self._cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                         dashboard_address=None, silence_logs=logging.CRITICAL)
            self._threads = max(1, available_cores() // n)
            self.client = Client(self._cluster)
        else:
            try:
                _check_address(scheduler)  # before Client, whose event loop a malformed address can leave broken
                self.client = Client(scheduler, timeout=timeout)
            except (OSError, TimeoutError, ValueError) as exc:  # ValueError: not an address (no port, ...)
                raise ConfigError(f"cannot reach the dask scheduler {scheduler!r}: {exc}", stage="parallel",
                                  fix="start it (dask scheduler, or a dask-jobqueue cluster) and pass its "
                                      "address as tcp://HOST:PORT, or use --scheduler local") from exc
        self.workers = max(1, len(self.client.scheduler_info().get("workers", {}))) if workers is None \
            else workers

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        from distributed import KilledWorker
        from distributed import as_completed as dask_completed

        items = list(items)
        if not items:
            return
        futures = [self.client.submit(_call_with_threads, fn, item, self._threads, pure=False) for item in items]
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for fut in dask_completed(futures):
                try:
                    result = fut.result()
                except KilledWorker as exc:
                    raise SemgraphError(f"dask workers died while working on checkpoints ({exc})", **_WORKER_DIED) from exc
                yield items[index[fut.key]], result
        finally:
            self.client.cancel(futures)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()


def _check_address(address: str) -> None:
    """ValueError for a tcp/tls scheduler address without host or port (``bogus``, ``localhost``, ``tcp://``)."""
    from distributed.comm import get_address_host_port
    from distributed.comm.addressing import parse_address

    if parse_address(address, strict=False)[0] in ("tcp", "tls"):
        get_address_host_port(address)


def start_early(executor: Executor) -> Executor:
    """Start a process pool's workers now, in the background (a no-op for other executors)."""
    if isinstance(executor, PoolExecutor):
        executor.start()
    return executor


def make_executor(workers: int | None = 1, scheduler: str | None = None) -> Executor:
    """``scheduler`` (dask) wins; else ``workers`` > 1 gives a process pool; ``workers=None`` means the cores."""
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}", stage="parallel",
                          fix="pass --workers 1 for a serial run")
    if scheduler:
        return DaskExecutor(scheduler, workers)
    n = available_cores() if workers is None else workers
    return PoolExecutor(n) if n > 1 else SerialExecutor()
