"""Stage: run the probes on each stored checkpoint; one result row per (run, step), cached on disk."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from probes.base import Probe, ProbeContext, ProbeResult
from semgraph.io import atomic_write_json
from semgraph.parallel import Executor, SerialExecutor
from semgraph.store import ActivationStore, read_group
from semgraph.tasks.base import ProbeSet


def probe_signature(probes: Sequence[Probe]) -> str:
    parts = []
    for p in probes:
        params = p.get_params() if hasattr(p, "get_params") else vars(p)
        parts.append(f"{p.name}:{sorted((k, repr(v)) for k, v in params.items())}")
    return "|".join(parts)


def context_for(store: ActivationStore, run: str, step: int, probe_set: ProbeSet, task: dict[str, Any]
                ) -> ProbeContext:
    with store.open(run, step) as fh:
        return ProbeContext(run=run, step=step, inputs=probe_set.inputs, labels=probe_set.labels,
                            split=probe_set.split, concepts=probe_set.concepts,
                            activations=read_group(fh, "acts"), logits=fh["logits"][()],
                            params=read_group(fh, "params"), task=task)


@dataclass(frozen=True)
class ProbeJob:
    """One checkpoint's probe work; everything a worker process needs, picklable."""
    store_root: str
    run: str
    step: int
    probe_set: ProbeSet
    task: dict[str, Any]
    probes: tuple[Probe, ...]
    cache: str
    source_id: str
    signature: str
    identical_to_step: int | None = None


def probe_checkpoint(job: ProbeJob) -> dict[str, Any]:
    """Run every probe on one stored checkpoint and write its row to the cache (atomically); return the row."""
    store = ActivationStore(job.store_root, read_manifest=False)
    ctx = context_for(store, job.run, job.step, job.probe_set, job.task)
    merged = ProbeResult()
    for probe in job.probes:
        r = probe.compute(ctx).prefixed(probe.name.split("[")[0])
        merged.values.update(r.values)
        merged.reasons.update(r.reasons)
        merged.present.update(r.present)
    row = {"run": job.run, "step": int(job.step), **merged.values, "present": merged.present,
           "reasons": merged.reasons, "_source_id": job.source_id, "_probes": job.signature}
    if job.identical_to_step is not None:
        row["identical_to_step"] = job.identical_to_step
    atomic_write_json(Path(job.cache), row)
    return row


def run_probes(run: str, steps: Sequence[int], probe_set: ProbeSet, task: dict[str, Any],
               store: ActivationStore, probes: Sequence[Probe], cache_dir: Path, *, progress: bool = True,
               executor: Executor | None = None) -> list[dict[str, Any]]:
    """Rows {run, step, values..., present, reasons} in step order; reuses a cached row when the store file
    and the probes match. ``executor`` (semgraph.parallel) spreads the uncached checkpoints over worker
    processes; each worker writes its own cache file, so a kill loses only the checkpoints in flight."""
    sig = probe_signature(probes)
    by_step: dict[int, dict[str, Any]] = {}
    jobs: list[ProbeJob] = []
    for step in steps:
        entry = store.manifest["entries"][store.key(run, step)]
        cache = cache_dir / run / f"step_{step:08d}.json"
        row = _cached_row(cache)
        if row is not None and row.get("_source_id") == entry["source_id"] and row.get("_probes") == sig:
            by_step[int(step)] = row
            continue
        jobs.append(ProbeJob(store_root=str(store.root), run=run, step=int(step), probe_set=probe_set, task=task,
                             probes=tuple(probes), cache=str(cache), source_id=entry["source_id"], signature=sig,
                             identical_to_step=entry.get("identical_to_step")))
    executor = executor or SerialExecutor()
    with tqdm(total=len(jobs), desc=f"probes {run}", unit="ckpt", disable=not progress or not jobs) as bar:
        for job, row in executor.map_unordered(probe_checkpoint, jobs):
            by_step[job.step] = row
            bar.update()
    return [by_step[int(s)] for s in steps]


def _cached_row(cache: Path) -> dict[str, Any] | None:
    """A cached probe row, or None when there is none or it is damaged (cut short, emptied, hand-edited): the
    rows are written atomically, so damage comes from outside, and recomputing the row is the cure."""
    try:
        row = json.loads(cache.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        warnings.warn(f"{cache}: cached probe results are damaged ({exc}); computing them again", stacklevel=3)
        return None
    if not isinstance(row, dict):
        warnings.warn(f"{cache}: cached probe results are not a row; computing them again", stacklevel=3)
        return None
    return row


def numeric(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])
