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
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

from semgraph.errors import ConfigError, SemgraphError

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


class PoolExecutor:
    """A local process pool. Workers are forked from a server process that has imported semgraph once
    (fast start, no fork of a process whose thread pools are running); each uses cores/workers threads."""

    def __init__(self, workers: int, threads: int | None = None):
        self.workers = workers
        self.threads = threads or max(1, available_cores() // workers)
        self._pool: ProcessPoolExecutor | None = None  # started on the first real use

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        items = list(items)
        if len(items) < 2:  # not worth starting processes for
            yield from SerialExecutor().map_unordered(fn, items)
            return
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["semgraph.extract", "semgraph.probing", "probes",
                                        "transformer_lens.model_bridge.sources.native"])
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_set_threads,
                                             initargs=(self.threads,))
        futures = {self._pool.submit(fn, item): item for item in items}
        try:
            for fut in as_completed(futures):
                try:
                    result = fut.result()
                except BrokenProcessPool as exc:
                    raise SemgraphError(f"a worker process died while working on checkpoints ({exc})", **_WORKER_DIED) from exc
                yield futures[fut], result
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


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
                self.client = Client(scheduler, timeout=timeout)
            except (OSError, TimeoutError) as exc:
                raise ConfigError(f"cannot reach the dask scheduler {scheduler!r}: {exc}", stage="parallel",
                                  fix="start it (dask scheduler, or a dask-jobqueue cluster) and pass its "
                                      "address, or use --scheduler local") from exc
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


def make_executor(workers: int | None = 1, scheduler: str | None = None) -> Executor:
    """``scheduler`` (dask) wins; else ``workers`` > 1 gives a process pool; ``workers=None`` means the cores."""
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}", stage="parallel",
                          fix="pass --workers 1 for a serial run")
    if scheduler:
        return DaskExecutor(scheduler, workers)
    n = available_cores() if workers is None else workers
    return PoolExecutor(n) if n > 1 else SerialExecutor()
