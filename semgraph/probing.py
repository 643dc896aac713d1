"""Stage: run the probes on each stored checkpoint; one result row per (run, step), cached on disk."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from probes.base import Probe, ProbeContext, ProbeResult
from semgraph.io import atomic_write_json
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


def run_probes(run: str, steps: Sequence[int], probe_set: ProbeSet, task: dict[str, Any],
               store: ActivationStore, probes: Sequence[Probe], cache_dir: Path, *, progress: bool = True
               ) -> list[dict[str, Any]]:
    """Rows {run, step, values..., present, reasons}; reuses a cached row when store file and probes match."""
    sig = probe_signature(probes)
    rows = []
    for step in tqdm(steps, desc=f"probes {run}", unit="ckpt", disable=not progress):
        entry = store.manifest["entries"][store.key(run, step)]
        cache = cache_dir / run / f"step_{step:08d}.json"
        if cache.exists():
            row = json.loads(cache.read_text(encoding="utf-8"))
            if row.get("_source_id") == entry["source_id"] and row.get("_probes") == sig:
                rows.append(row)
                continue
        ctx = context_for(store, run, step, probe_set, task)
        merged = ProbeResult()
        for probe in probes:
            r = probe.compute(ctx).prefixed(probe.name.split("[")[0])
            merged.values.update(r.values)
            merged.reasons.update(r.reasons)
            merged.present.update(r.present)
        row = {"run": run, "step": int(step), **merged.values, "present": merged.present,
               "reasons": merged.reasons, "_source_id": entry["source_id"], "_probes": sig}
        if "identical_to_step" in entry:
            row["identical_to_step"] = entry["identical_to_step"]
        atomic_write_json(cache, row)
        rows.append(row)
    return rows


def numeric(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])
