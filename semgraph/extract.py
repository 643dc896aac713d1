"""Stage: load each checkpoint into its model, run the probe set through it with hooks, stream to the store.

Resumable: a checkpoint whose store file is complete (manifest entry with the same source file) is skipped
without loading weights or running the model. One bad checkpoint is recorded as failed and skipped with a
warning (``strict=True`` makes it fatal); the others are analysed.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from semgraph.capture import capture, check_fired, output_tensor, select_position
from semgraph.checkpoints import CheckpointRef, Run, file_sha256, load_checkpoint
from semgraph.errors import CheckpointError, ConfigError, CorruptCheckpointError
from semgraph.models import build_model, load_weights
from semgraph.store import ActivationStore
from semgraph.tasks.base import ProbeSet

EXTRACT_VERSION = 1


@dataclass
class CaptureConfig:
    hooks: Sequence[str]
    params: Sequence[str] = ()
    batch_size: int = 1024
    position: int | None = -1


@dataclass
class ExtractReport:
    captured: list[tuple[str, int]] = field(default_factory=list)
    reused: list[tuple[str, int]] = field(default_factory=list)
    failed: list[tuple[str, int, str]] = field(default_factory=list)
    duplicates: list[tuple[str, int, int]] = field(default_factory=list)  # (run, step, same-as step)


def source_id(ref: CheckpointRef, cfg: CaptureConfig) -> str:
    """Identifies (checkpoint file state, capture settings) cheaply: size + mtime + settings."""
    st = os.stat(ref.path)
    settings = f"{list(cfg.hooks)}|{list(cfg.params)}|{cfg.position}|v{EXTRACT_VERSION}"
    return f"{st.st_size}:{st.st_mtime_ns}:{hashlib.sha1(settings.encode()).hexdigest()[:10]}"


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """Content hash of the tensors (names, dtypes, shapes, bytes), independent of file metadata."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def extract_run(run: Run, probe_set: ProbeSet, cfg: CaptureConfig, store: ActivationStore, *,
                strict: bool = False, report: ExtractReport | None = None, progress: bool = True
                ) -> ExtractReport:
    report = report or ExtractReport()
    model: torch.nn.Module | None = None
    seen_hashes = {e["weights_sha256"]: int(k.split("/")[-1]) for k, e in store.manifest["entries"].items()
                   if k.startswith(f"{run.name}/") and e.get("status") == "done" and "weights_sha256" in e}
    inputs = torch.as_tensor(probe_set.inputs)
    bar = tqdm(run.checkpoints, desc=f"capture {run.name}", unit="ckpt", disable=not progress)
    for ref in bar:
        sid = source_id(ref, cfg)
        if store.is_done(run.name, ref.step, sid):
            report.reused.append((run.name, ref.step))
            continue
        try:
            loaded = load_checkpoint(ref)
            state = loaded.state
            if model is None:
                model = build_model(run.info["model"])
                model.eval()
                _check_params(model, cfg, run)
            notes = loaded.notes + load_weights(model, state, source=ref.label)
        except CheckpointError as exc:
            kind = getattr(exc, "kind", "keys")
            if strict:
                raise
            warnings.warn(f"skipping {exc}", stacklevel=2)
            store.record(run.name, ref.step, {"status": "failed", "kind": kind, "error": str(exc),
                                              "source": str(ref.path), "source_id": sid})
            report.failed.append((run.name, ref.step, str(exc)))
            continue
        whash = weights_sha256(state)
        attrs = {"run": run.name, "step": ref.step, "hooks": list(cfg.hooks), "dtype": "float32",
                 "checkpoint": str(ref.path), "checkpoint_sha256": file_sha256(ref.path),
                 "weights_sha256": whash, "position": "all" if cfg.position is None else cfg.position,
                 "n_inputs": len(inputs)}
        with store.writer(run.name, ref.step, attrs) as w, torch.no_grad(), \
                capture(model, cfg.hooks, position=cfg.position) as acts:
            for start in range(0, len(inputs), cfg.batch_size):
                out = model(inputs[start:start + cfg.batch_size])
                check_fired(acts, cfg.hooks)
                logits = select_position(output_tensor(out).detach(), probe_set.answer_position)
                w.append("logits", logits.to("cpu", torch.float32).numpy())
                for name, t in acts.pop_batch().items():
                    w.append(f"acts/{name}", t.numpy())
            model_state = model.state_dict()
            for name in cfg.params:
                w.put(f"params/{name}", model_state[name].detach().to("cpu", torch.float32).numpy())
        entry = {"status": "done", "source": ref.label, "source_id": sid, "weights_sha256": whash,
                 "file": str(store.path_for(run.name, ref.step).relative_to(store.root)),
                 "format": ref.format, "notes": notes, "stored": loaded.meta}
        if whash in seen_hashes and seen_hashes[whash] != ref.step:
            entry["identical_to_step"] = seen_hashes[whash]
            report.duplicates.append((run.name, ref.step, seen_hashes[whash]))
            warnings.warn(f"{ref.path}: step {ref.step} has the same weights as step {seen_hashes[whash]}",
                          stacklevel=2)
        seen_hashes.setdefault(whash, ref.step)
        store.record(run.name, ref.step, entry)
        report.captured.append((run.name, ref.step))
    del model
    return report


def _check_params(model: torch.nn.Module, cfg: CaptureConfig, run: Run) -> None:
    """Weights the probes need must exist in the model (a wrong name is a config error, not a KeyError)."""
    names = set(model.state_dict())
    missing = [n for n in cfg.params if n not in names]
    if missing:
        raise ConfigError(f"the model has no weights named {missing} (it has e.g. {sorted(names)[:6]})",
                          path=run.path, stage="capture",
                          fix="pass --params / --fourier-param with names from the model's state dict")
