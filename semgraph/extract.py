"""Stage: load each checkpoint into its model, run the probe set through it with hooks, stream to the store.

Resumable: a checkpoint whose store file is complete (manifest entry with the same source file) is skipped
without loading weights or running the model. Checkpoints are independent jobs (``capture_checkpoint``) that
a process pool or a dask cluster can run; each writes its own file and only the caller updates the manifest.
One bad checkpoint is recorded as failed and skipped with a warning (``strict=True`` makes it fatal); the
others are analysed.
"""
from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from semgraph.capture import capture, check_fired, forward, output_tensor, select_position
from semgraph.checkpoints import CheckpointRef, Run, file_sha256, load_checkpoint
from semgraph.errors import CheckpointError, ConfigError
from semgraph.models import build_model, load_weights
from semgraph.parallel import Executor, SerialExecutor
from semgraph.io import _json_default
from semgraph.store import ActivationStore
from semgraph.tasks.base import ProbeSet

EXTRACT_VERSION = 1


@dataclass
class CaptureConfig:
    hooks: Sequence[str]
    params: Sequence[str] = ()
    batch_size: int = 1024
    position: int | None = -1
    logits: bool = True  # False: no logits stored, and the forward pass stops after the last requested hook
    compression: str | None = "auto"  # see semgraph.store.CheckpointWriter


@dataclass
class ExtractReport:
    captured: list[tuple[str, int]] = field(default_factory=list)
    reused: list[tuple[str, int]] = field(default_factory=list)
    failed: list[tuple[str, int, str]] = field(default_factory=list)
    duplicates: list[tuple[str, int, int]] = field(default_factory=list)  # (run, step, same-as step)


def source_id(ref: CheckpointRef, cfg: CaptureConfig) -> str:
    """Identifies (checkpoint file state, capture settings) cheaply: size + mtime + settings."""
    st = os.stat(ref.path)
    settings = f"{list(cfg.hooks)}|{list(cfg.params)}|{cfg.position}|v{EXTRACT_VERSION}" + \
        ("" if cfg.logits else "|no-logits")
    return f"{st.st_size}:{st.st_mtime_ns}:{hashlib.sha1(settings.encode()).hexdigest()[:10]}"


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """Content hash of the tensors (names, dtypes, shapes, bytes), independent of file metadata."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():  # the tensor's own bytes, without a copy (hashlib reads any contiguous buffer)
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


@dataclass
class CaptureJob:
    """One checkpoint to capture: everything a worker process needs, picklable."""

    ref: CheckpointRef
    source_id: str
    model_spec: dict
    store_root: str

    @property
    def run(self) -> str:
        return self.ref.run

    @property
    def step(self) -> int:
        return self.ref.step


# One model per worker process, rebuilt only when the spec changes: weights are reloaded in place for each
# checkpoint, so memory stays that of one model however many checkpoints a worker handles.
_MODEL: dict[str, Any] = {"key": None, "model": None}


def _model_for(spec: dict) -> torch.nn.Module:
    key = json.dumps(spec, sort_keys=True, default=str)
    if _MODEL["key"] != key:
        release_model()
        model = build_model(spec)
        model.eval()
        _MODEL.update(key=key, model=model)
    return _MODEL["model"]


def release_model() -> None:
    """Drop the cached model of this process (called when a sweep ends).

    A model with reference cycles is only freed by a full collection, which costs ~0.25 s with torch and
    TransformerLens imported (their ~400k objects are traversed), so it runs only when a model was held."""
    held = _MODEL["model"] is not None
    _MODEL.update(key=None, model=None)
    _BLOCKS.clear()
    if held:
        gc.collect()


class BlockBuffer:
    """Gathers one checkpoint's rows per dataset in float32 blocks that are reused from checkpoint to checkpoint.

    Each hook's batch is copied once, straight from the module's output (any device or dtype) into a block,
    and a block goes to the store file in one write when full and at ``close()``. Copying every batch into
    a fresh tensor touched new memory for every batch, which costs most on VMs that hand freed memory back
    to their host (a fresh page ~0.4 GB/s there, against ~10 GB/s for memory held; benchmarks/README.md):
    capture became 11% faster per checkpoint. A block holds at most ``BLOCK_BYTES`` (or one batch, if that
    is larger), so memory is bounded by the number of hooks, not by the probe set or the checkpoints.
    """

    BLOCK_BYTES = 16 * 2**20

    def __init__(self, writer: Any, rows: int, pool: dict[tuple[str, tuple[int, ...]], np.ndarray]):
        self.writer = writer
        self.rows = rows
        self.pool = pool  # (dataset, row shape) -> block; kept by the caller across checkpoints
        self.filled: dict[tuple[str, tuple[int, ...]], int] = {}

    def add(self, name: str, t: torch.Tensor) -> None:
        key = (name, tuple(t.shape[1:]))
        block = self.pool.get(key)
        if block is None or len(block) < min(len(t), self.rows):
            self.flush(key)  # (a batch larger than the block: its rows so far go out first)
            row_bytes = 4 * int(np.prod(key[1], dtype=np.int64))
            cap = min(self.rows, max(len(t), self.BLOCK_BYTES // max(1, row_bytes)))
            block = self.pool[key] = np.empty((cap, *key[1]), dtype=np.float32)
        n = self.filled.get(key, 0)
        if n + len(t) > len(block):
            self.flush(key)
            n = 0
        torch.from_numpy(block[n:n + len(t)]).copy_(t)
        self.filled[key] = n + len(t)

    def flush(self, key: tuple[str, tuple[int, ...]]) -> None:
        n = self.filled.pop(key, 0)
        if n:
            self.writer.append(key[0], self.pool[key][:n])

    def close(self) -> None:
        for key in list(self.filled):
            self.flush(key)


_BLOCKS: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}


def capture_checkpoint(job: CaptureJob, inputs: np.ndarray, answer_position: int, cfg: CaptureConfig
                       ) -> dict[str, Any]:
    """Load one checkpoint, capture it batch by batch into its own store file; returns its manifest entry.

    Runs in the orchestrating process or in a worker (process pool, dask); it never touches the manifest.
    A checkpoint that cannot be loaded gives a ``failed`` entry instead of an exception.
    """
    ref = job.ref
    try:
        loaded = load_checkpoint(ref)
        state = loaded.state
        model = _model_for(job.model_spec)
        notes = loaded.notes + load_weights(model, state, source=ref.label)
    except CheckpointError as exc:
        return {"status": "failed", "kind": getattr(exc, "kind", "keys"), "error": str(exc),
                "source": ref.label, "source_id": job.source_id}
    model_state = model.state_dict() if cfg.params else {}
    _check_params(model_state, cfg, ref)
    whash = weights_sha256(state)
    del state
    store = ActivationStore(job.store_root, read_manifest=False)
    attrs = {"run": job.run, "step": job.step, "hooks": list(cfg.hooks), "dtype": "float32",
             "checkpoint": ref.label, "checkpoint_sha256": file_sha256(ref.path), "source_id": job.source_id,
             "weights_sha256": whash, "position": "all" if cfg.position is None else cfg.position,
             "n_inputs": len(inputs), "format": ref.format,
             "notes": json.dumps(notes), "stored": json.dumps(loaded.meta, default=_json_default, sort_keys=True)}
    x = torch.as_tensor(inputs)
    with store.writer(job.run, job.step, attrs, compression=cfg.compression, rows=len(inputs)) as w:
        blocks = BlockBuffer(w, len(inputs), _BLOCKS)
        with torch.no_grad(), capture(model, cfg.hooks, position=cfg.position, stop_early=not cfg.logits,
                                      sink=lambda name, t: blocks.add(f"acts/{name}", t)) as acts:
            for start in range(0, len(x), cfg.batch_size):
                out = forward(model, x[start:start + cfg.batch_size])
                check_fired(acts, cfg.hooks)
                if cfg.logits:
                    blocks.add("logits", select_position(output_tensor(out).detach(), answer_position))
                del out
        blocks.close()
        if cfg.params:
            for name in cfg.params:
                w.put(f"params/{name}", model_state[name].detach().to("cpu", torch.float32).numpy())
    return {"status": "done", "source": ref.label, "source_id": job.source_id, "weights_sha256": whash,
            "file": str(store.path_for(job.run, job.step).relative_to(store.root)),
            "format": ref.format, "notes": notes, "stored": loaded.meta}


def _check_params(model_state: dict[str, torch.Tensor], cfg: CaptureConfig, ref: CheckpointRef) -> None:
    """Weights the probes need must exist in the model (a wrong name is a config error, not a KeyError)."""
    names = set(model_state)
    missing = [n for n in cfg.params if n not in names]
    if missing:
        raise ConfigError(f"the model has no weights named {missing} (it has e.g. {sorted(names)[:6]})",
                          path=ref.path, stage="capture",
                          fix="pass --params / --fourier-param with names from the model's state dict")


def extract_run(run: Run, probe_set: ProbeSet, cfg: CaptureConfig, store: ActivationStore, *,
                strict: bool = False, report: ExtractReport | None = None, progress: bool = True,
                executor: Executor | None = None) -> ExtractReport:
    """Capture every checkpoint of ``run`` not already in ``store``; only this process writes the manifest.

    ``executor`` (semgraph.parallel) spreads checkpoints over worker processes or a dask cluster; each
    worker writes its own per-checkpoint file and the manifest is updated here as results arrive, so a kill
    at any moment loses at most the checkpoints in flight.
    """
    report = report or ExtractReport()
    store.recover()
    jobs: list[CaptureJob] = []
    for ref in run.checkpoints:
        sid = source_id(ref, cfg)
        if store.is_done(run.name, ref.step, sid):
            report.reused.append((run.name, ref.step))
        else:
            jobs.append(CaptureJob(ref=ref, source_id=sid, model_spec=dict(run.info["model"]),
                                   store_root=str(store.root)))
    own = executor is None
    executor = executor or SerialExecutor()
    fn = functools.partial(capture_checkpoint, inputs=np.asarray(probe_set.inputs),
                           answer_position=probe_set.answer_position, cfg=cfg)
    captured = []
    bar = tqdm(total=len(jobs), desc=f"capture {run.name}", unit="ckpt", disable=not progress or not jobs)
    try:
        for job, entry in executor.map_unordered(fn, jobs):
            bar.update()
            if entry["status"] == "failed":
                if strict:
                    raise CheckpointError(entry["error"])  # the message already names file, stage and fix
                warnings.warn(f"skipping {entry['error']}", stacklevel=2)
                report.failed.append((run.name, job.step, entry["error"]))
            else:
                captured.append(job.step)
            store.record(run.name, job.step, entry, flush=False)
    finally:
        store.flush()
        bar.close()  # before any error message, so the message is the last line
        if own:
            executor.close()
        release_model()
    report.captured += [(run.name, s) for s in sorted(captured)]
    report.failed.sort(key=lambda f: (f[0], f[1]))
    _mark_duplicates(run, store, report, warn_for=set(captured))
    store.flush()
    return report


def _mark_duplicates(run: Run, store: ActivationStore, report: ExtractReport, warn_for: set[int]) -> None:
    """Flag checkpoints whose weights equal an earlier step's, in step order (so any capture order agrees)."""
    first: dict[str, int] = {}
    for ref in run.checkpoints:
        entry = store.manifest["entries"].get(store.key(run.name, ref.step))
        if not entry or entry.get("status") != "done" or not entry.get("weights_sha256"):
            continue
        same = first.setdefault(entry["weights_sha256"], ref.step)
        want = same if same != ref.step else None
        if entry.get("identical_to_step") != want:
            entry = {k: v for k, v in entry.items() if k != "identical_to_step"}
            if want is not None:
                entry["identical_to_step"] = want
            store.record(run.name, ref.step, entry, flush=False)
        if want is not None:
            report.duplicates.append((run.name, ref.step, want))
            if ref.step in warn_for:
                warnings.warn(f"{ref.path}: step {ref.step} has the same weights as step {want}", stacklevel=3)
