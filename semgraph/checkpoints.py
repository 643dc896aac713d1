"""Discover the runs in a folder, order their checkpoints by parsed step number, and read them."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from semgraph.errors import CheckpointError, CorruptCheckpointError
from semgraph.recorder import CHECKPOINT_DIR, RUN_FILE

CHECKPOINT_SUFFIXES = (".safetensors",)
# step_12, step-12, step12, checkpoint-12, iter_12, ...; otherwise a bare number (12.safetensors)
_STEP_PATTERNS = [re.compile(r"(?:^|[^a-z])(?:step|checkpoint|ckpt|iter|iteration)[_\-=]?0*(\d+)", re.I),
                  re.compile(r"^0*(\d+)$")]


def parse_step(name: str) -> int | None:
    """The training step encoded in a file or folder name, or None. Numeric, so 'step_9000' < 'step_10000'."""
    stem = name
    for suffix in CHECKPOINT_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    for pattern in _STEP_PATTERNS:
        m = pattern.search(stem)
        if m:
            return int(m.group(1))
    return None


@dataclass(frozen=True)
class CheckpointRef:
    run: str
    step: int
    path: Path

    def sha256(self) -> str:
        return file_sha256(self.path)


@dataclass
class Run:
    """One ordered series of checkpoints plus what the run folder says about itself."""

    name: str
    path: Path
    info: dict[str, Any]
    checkpoints: list[CheckpointRef]
    problems: list[str] = field(default_factory=list)

    @property
    def steps(self) -> list[int]:
        return [c.step for c in self.checkpoints]


def discover(root: str | Path) -> list[Run]:
    """All runs under ``root``: the folder itself if it holds ``run.json``, else each sub-folder that does."""
    root = Path(root)
    if not root.exists():
        raise CheckpointError("folder does not exist", path=root, stage="discover",
                              fix="pass the run folder written by `semgraph train` or the Recorder")
    if not root.is_dir():
        raise CheckpointError("is a file, not a run folder", path=root, stage="discover",
                              fix="pass the folder that holds run.json")
    if (root / RUN_FILE).exists():
        runs = [discover_run(root)]
    else:
        runs = [discover_run(d) for d in sorted(root.iterdir()) if (d / RUN_FILE).exists()]
    if not runs:
        raise CheckpointError(f"no semgraph run found (no {RUN_FILE} here or in sub-folders)", path=root,
                              stage="discover",
                              fix="train with `semgraph train ... --out DIR` or record with semgraph.Recorder")
    empty = [r for r in runs if not r.checkpoints]
    if len(empty) == len(runs):
        raise CheckpointError("run folder holds no checkpoints", path=empty[0].path / CHECKPOINT_DIR,
                              stage="discover", fix="let training reach its first scheduled step, then re-run")
    return runs


def discover_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    try:
        info = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {RUN_FILE}: {exc}", path=run_dir / RUN_FILE, stage="discover",
                              fix="restore run.json (it holds the model spec) or re-record the run") from exc
    refs: dict[int, CheckpointRef] = {}
    problems: list[str] = []
    ckpt_dir = run_dir / CHECKPOINT_DIR
    files = sorted(ckpt_dir.iterdir()) if ckpt_dir.is_dir() else []
    for f in files:
        if f.name.startswith(".") or not f.name.endswith(CHECKPOINT_SUFFIXES):
            continue
        step = parse_step(f.name)
        if step is None:
            problems.append(f"{f}: no step number in the name; skipped")
        elif step in refs:
            problems.append(f"{f}: step {step} also in {refs[step].path.name}; kept the first")
        else:
            refs[step] = CheckpointRef(run=run_dir.name, step=step, path=f)
    return Run(name=run_dir.name, path=run_dir, info=info,
               checkpoints=[refs[s] for s in sorted(refs)], problems=problems)


def read_state_dict(ref: CheckpointRef) -> dict[str, torch.Tensor]:
    """Read one checkpoint's tensors on CPU, classifying failures (truncated / unreadable)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = ref.path
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        size = path.stat().st_size if path.exists() else 0
        kind = "truncated" if size < 16 or "incomplete" in str(exc).lower() or "eof" in str(exc).lower() \
            else "unreadable"
        raise CorruptCheckpointError(f"step {ref.step}: cannot read checkpoint ({kind}: {exc})", kind=kind,
                                     path=path, stage="load checkpoint",
                                     fix="re-save this checkpoint or delete it; the other steps are analysed"
                                     ) from exc


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
