"""Recorder: the three lines a training loop calls to write a semgraph run folder.

    rec = Recorder("checkpoints/my-run", model_spec=spec, schedule=range(0, 5001, 100))
    for step in ...:
        ...; rec.record(step, model, metrics={"train_loss": loss})

A run folder holds ``run.json`` (model spec, task spec, schedule, metadata), ``checkpoints/step_N.safetensors``
and ``metrics.jsonl``. ``semgraph analyze`` reads exactly this, so live runs and old folders are analysed alike.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors.torch import save_file

from semgraph.errors import ConfigError
from semgraph.io import atomic_write_json, atomic_path

RUN_FORMAT = "semgraph-run/1"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.safetensors"


class Recorder:
    """Write checkpoints (safetensors) and metrics on a schedule; resumable when the script restarts."""

    def __init__(self, run_dir: str | Path, *, model_spec: Mapping[str, Any],
                 schedule: Iterable[int] | None = None, task_spec: Mapping[str, Any] | None = None,
                 metadata: Mapping[str, Any] | None = None, resume: bool = True):
        self.run_dir = Path(run_dir)
        self.schedule = None if schedule is None else frozenset(int(s) for s in schedule)
        self.run_info = {
            "format": RUN_FORMAT,
            "model": dict(model_spec),
            "task": None if task_spec is None else dict(task_spec),
            "schedule": None if self.schedule is None else sorted(self.schedule),
            "metadata": dict(metadata or {}),
        }
        run_file = self.run_dir / RUN_FILE
        if run_file.exists():
            old = json.loads(run_file.read_text())
            same = all(old.get(k) == self.run_info[k] for k in ("model", "task"))
            if not resume or not same:
                raise ConfigError(
                    "a different run already lives here" if not same else "the run folder already exists",
                    path=run_file, stage="record",
                    fix="choose another --out folder, delete this one, or resume with the same settings")
        (self.run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        self.run_info["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(run_file, self.run_info)

    def should_record(self, step: int) -> bool:
        return self.schedule is None or int(step) in self.schedule

    def checkpoint_path(self, step: int) -> Path:
        return self.run_dir / CHECKPOINT_DIR / checkpoint_name(step)

    def recorded_steps(self) -> list[int]:
        from semgraph.checkpoints import discover_run
        return [c.step for c in discover_run(self.run_dir).checkpoints]

    def record(self, step: int, model: torch.nn.Module, metrics: Mapping[str, float] | None = None,
               *, force: bool = False) -> Path | None:
        """Write a checkpoint for ``step`` if the schedule asks (or ``force``); returns its path or None."""
        if not (force or self.should_record(step)):
            return None
        path = self.checkpoint_path(step)
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata={"step": str(int(step)), "format": RUN_FORMAT})
        if metrics:
            row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
            with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        return path


def read_metrics(run_dir: str | Path) -> dict[int, dict[str, float]]:
    """Metrics the training loop logged, keyed by step (the last line wins after a resume)."""
    path = Path(run_dir) / METRICS_FILE
    rows: dict[int, dict[str, float]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill; the checkpoint itself is what counts
            rows[int(row.pop("step"))] = row
    return rows
