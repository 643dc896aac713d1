"""Recorder: the lines a training loop adds to write a semgraph run folder, for any ``torch.nn.Module``.

    rec = Recorder("checkpoints/my-run", model_spec=factory_spec(make_model, width=64), task_spec=MyTask())
    for step in ...:
        ...; rec.record(step, model, metrics={"train_loss": loss})

A run folder holds ``run.json`` (model spec, task spec, schedule, metadata), ``checkpoints/step_N.safetensors``
and ``metrics.jsonl``. ``semgraph analyze`` reads exactly this, so live runs and old folders are analysed alike.

- schedule: a list of steps, ``Every(k)``, ``LogSpaced(n)``, or a string (``"every:50"``, ``"log:10"``,
  ``"log+100"``); the default is log-spaced up to step 100, then every 100 steps.
- torch.compile'd (and DataParallel-wrapped) models are unwrapped: the eager module's state dict is saved,
  so keys carry no ``_orig_mod.`` prefix and load into the rebuilt model.
- resumable: ``save_train_state(step, optimizer)`` at a checkpoint and ``start = resume(model, optimizer)``
  when the script restarts.
- ``online=OnlineAnalysis(...)`` (semgraph.online) captures activations and runs the probes on the task's
  probe set at each checkpoint while training, so the landscape can be followed live.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import torch
from safetensors.torch import save_file

from semgraph.errors import ConfigError
from semgraph.io import atomic_write_json, atomic_path
from semgraph.schedule import as_schedule

if TYPE_CHECKING:
    from semgraph.online import OnlineAnalysis

RUN_FORMAT = "semgraph-run/1"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
TRAIN_STATE = "train_state.pt"


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.safetensors"


class Recorder:
    """Write checkpoints (safetensors) and metrics on a schedule; resumable when the script restarts."""

    def __init__(self, run_dir: str | Path, *, model_spec: Mapping[str, Any] | Callable[..., torch.nn.Module],
                 schedule: Any = None, task_spec: Any = None, metadata: Mapping[str, Any] | None = None,
                 resume: bool = True, online: "OnlineAnalysis | None" = None):
        self.run_dir = Path(run_dir)
        self.schedule = as_schedule(schedule)
        if callable(model_spec) and not isinstance(model_spec, Mapping):
            from semgraph.models import factory_spec
            model_spec = factory_spec(model_spec)
        if task_spec is not None and hasattr(task_spec, "spec"):
            task_spec = task_spec.spec()
        self.run_info = {
            "format": RUN_FORMAT,
            "model": dict(model_spec),
            "task": None if task_spec is None else dict(task_spec),
            "schedule": self.schedule.describe(),
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
        self.online = online
        if online is not None:
            online.attach(self)

    def should_record(self, step: int) -> bool:
        return int(step) in self.schedule

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
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in eager_module(model).state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata={"step": str(int(step)), "format": RUN_FORMAT})
        if metrics:
            self.log(step, metrics)
        if self.online is not None:
            self.online.after_checkpoint(int(step))
        return path

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Append metrics for ``step`` to metrics.jsonl (no checkpoint); flushed to disk at once."""
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def save_train_state(self, step: int, optimizer: torch.optim.Optimizer | None = None,
                         extra: Mapping[str, Any] | None = None) -> None:
        """Save what a restart needs besides the weights (optimizer, RNG) for the checkpoint at ``step``."""
        blob = {"step": int(step), "rng": torch.get_rng_state(), "extra": dict(extra or {}),
                "optimizer": None if optimizer is None else optimizer.state_dict()}
        with atomic_path(self.run_dir / TRAIN_STATE) as tmp:
            torch.save(blob, tmp)

    def resume(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
        """Load the last checkpoint saved with a train state into ``model`` (and ``optimizer``); returns the
        step to continue from (0 for a fresh run).

        A checkpoint of step ``s`` holds the weights after ``s`` updates, so the loop continues at ``s``: it
        records step ``s`` again (same weights) and then applies update ``s``.
        """
        from semgraph.checkpoints import discover_run, read_state_dict
        from semgraph.models import load_weights

        state_path = self.run_dir / TRAIN_STATE
        if not state_path.exists():
            return 0
        saved = torch.load(state_path, map_location="cpu", weights_only=True)
        refs = {c.step: c for c in discover_run(self.run_dir).checkpoints}
        if saved["step"] not in refs:
            return 0
        ref = refs[saved["step"]]
        load_weights(eager_module(model), read_state_dict(ref), source=str(ref.path))
        if optimizer is not None and saved.get("optimizer") is not None:
            optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        self.resumed_extra = saved.get("extra", {})
        return int(saved["step"])


def eager_module(model: torch.nn.Module) -> torch.nn.Module:
    """The eager module under torch.compile (``_orig_mod``) and DataParallel/DDP (``module``) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None and type(model).__name__ in ("DataParallel", "DistributedDataParallel"):
            inner = getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


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
            rows.setdefault(int(row.pop("step")), {}).update(row)
    return rows
