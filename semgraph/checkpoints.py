"""Discover the runs in a folder, order their checkpoints by parsed step number, and read them.

A folder is either semgraph's own run (``run.json`` + ``checkpoints/step_N.safetensors``), a folder of such
runs, or a folder someone else wrote: ``step_1000.pt`` files, bare ``1000.pth`` numbers, HF Trainer
``checkpoint-N/`` folders (optimizer/scheduler/rng files ignored), Lightning ``epoch=E-step=S.ckpt``, one file
holding a list/dict of state dicts, and several runs (seeds, sizes) in sub-folders or name patterns.
Steps come from names, else from ``trainer_state.json``, else from metadata inside the file; order is
numeric. Names without a step and duplicate steps are reported in ``Run.problems``, never guessed.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from semgraph import formats
from semgraph.errors import CheckpointError, CorruptCheckpointError
from semgraph.recorder import CHECKPOINT_DIR, RUN_FILE

CHECKPOINT_SUFFIXES = formats.WEIGHT_SUFFIXES
# step_12, step-12, step12, step=12, checkpoint-12, iter_12, global_step12 ... (epoch=E-step=S: the step)
_STEP_PATTERNS = [re.compile(r"(?:^|[^a-z])(?:global_step|step|checkpoint|ckpt|iter|iteration)[_\-=]?0*(\d+)",
                             re.I),
                  re.compile(r"^0*(\d+)$"),            # a bare number: 12.pth
                  re.compile(r"[_\-]0*(\d+)$")]        # a trailing number: model_12.pth, run-0012.pt
_EPOCH = re.compile(r"(epoch[_\-=]?)\d+", re.I)
_SHARD = re.compile(r"-\d+-of-\d+$")
#: files in HF checkpoint folders (and next to training scripts' checkpoints) that are not model weights
NOT_WEIGHTS = re.compile(r"^(optimizer|scheduler|scaler|rng_state.*|training_args|trainer_state|"
                         r"train_data|test_data|val_data|optim.*)$", re.I)
HF_WEIGHTS = (("model.safetensors.index.json", formats.SAFETENSORS_SHARDED),
              ("model.safetensors", formats.SAFETENSORS),
              ("pytorch_model.bin.index.json", formats.TORCH_SHARDED),
              ("pytorch_model.bin", formats.TORCH))
MAX_DEPTH = 4


def _stem(name: str) -> str:
    for suffix in CHECKPOINT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _step_match(stem: str) -> re.Match | None:
    for pattern in _STEP_PATTERNS:
        m = pattern.search(stem)
        if m:
            return m
    return None


def parse_step(name: str) -> int | None:
    """The training step encoded in a file or folder name, or None. Numeric, so 'step_9000' < 'step_10000'."""
    m = _step_match(_stem(name))
    return int(m.group(1)) if m else None


def name_pattern(name: str) -> str:
    """The name with its step (and epoch) digits replaced by '#': checkpoints of one run share it."""
    stem = _stem(name)
    m = _step_match(stem)
    if m:
        start = m.start(1)
        while start > 0 and stem[start - 1] == "0":  # zero padding belongs to the step
            start -= 1
        stem = stem[:start] + "#" + stem[m.end(1):]
    return _EPOCH.sub(r"\1#", stem)


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint: where it is, in which format, and (for multi-step files) which entry."""

    run: str
    step: int
    path: Path
    format: str = formats.SAFETENSORS
    key: str | None = None          # entry inside a multi-step file
    trust: bool = False             # full unpickling allowed (--trust-checkpoints)
    payload: str | None = None      # container entry holding the weights (--payload)

    def sha256(self) -> str:
        return file_sha256(self.path)

    @property
    def files(self) -> list[Path]:
        """Every file this checkpoint reads (an index and its shards, or one file)."""
        if self.format in (formats.SAFETENSORS_SHARDED, formats.TORCH_SHARDED):
            try:
                shards = sorted(set(json.loads(self.path.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError):
                shards = []
            return [self.path] + [self.path.parent / s for s in shards]
        return [self.path]

    @property
    def label(self) -> str:
        return f"{self.path}" + (f"[{self.key}]" if self.key is not None else "")


@dataclass
class Run:
    """One ordered series of checkpoints plus what the run folder says about itself."""

    name: str
    path: Path
    info: dict[str, Any]
    checkpoints: list[CheckpointRef]
    problems: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)   # files recognised as not being weights

    @property
    def steps(self) -> list[int]:
        return [c.step for c in self.checkpoints]

    @property
    def formats(self) -> list[str]:
        return sorted({c.format for c in self.checkpoints})


def discover(root: str | Path, spec: Mapping[str, Any] | None = None, *, trust: bool = False,
             payload: str | None = None) -> list[Run]:
    """All runs under ``root``.

    semgraph runs (``run.json``) are read as recorded; other folders are scanned for checkpoints. ``spec``
    (``{"model": ..., "task": ..., "analysis": ...}``) supplies or overrides what a run folder does not say.
    """
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
            runs = scan(root, trust=trust)
    if not runs and (root / "landscape.json").exists() and (root / "checkpoints.csv").exists():
        raise CheckpointError("this is the output folder of `semgraph analyze`, not a checkpoint folder",
                              path=root, stage="discover",
                              fix="pass the folder of checkpoints it was made from (its "
                                  "store/manifest.json lists their files)")
    if not runs:
        raise CheckpointError(f"no checkpoints found (no {RUN_FILE}, no checkpoint files or checkpoint-N/ "
                              f"folders here or in sub-folders)", path=root, stage="discover",
                              fix="train with `semgraph train ... --out DIR`, or pass the folder holding the "
                                  "checkpoints (.pt/.pth/.bin/.ckpt/.safetensors)")
    empty = [r for r in runs if not r.checkpoints]
    if len(empty) == len(runs):
        where = empty[0].path / CHECKPOINT_DIR if (empty[0].path / RUN_FILE).exists() else empty[0].path
        detail = f" ({'; '.join(empty[0].problems[:3])})" if empty[0].problems else ""
        raise CheckpointError(f"run folder holds no checkpoints{detail}", path=where,
                              stage="discover", fix="let training reach its first scheduled step, then re-run")
    runs = [r for r in runs if r.checkpoints]
    if trust or payload:
        for run in runs:
            run.checkpoints = [CheckpointRef(c.run, c.step, c.path, c.format, c.key, trust, payload)
                               for c in run.checkpoints]
    if spec:
        for run in runs:
            run.info = {**run.info, **{k: v for k, v in dict(spec).items() if v is not None}}
    from semgraph.hf_bridge import attach_specs, complete_task
    attach_specs(runs)  # an HF config.json next to the weights is the model spec (unless --model gave one)
    for run in runs:
        complete_task(run.info)
    return runs


def discover_run(run_dir: str | Path) -> Run:
    """A semgraph run folder: ``run.json`` and ``checkpoints/step_N.safetensors``."""
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
        if f.name.startswith(".") or not f.name.endswith(".safetensors"):
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


# ---- folders someone else wrote ------------------------------------------------------------------------------
@dataclass
class _Candidate:
    name: str
    path: Path
    format: str
    step: int | None
    pattern: str
    key: str | None = None
    note: str | None = None


def hf_weights(folder: Path) -> tuple[Path, str] | None:
    """The weights file (or index) of an HF-style checkpoint folder, with its format; None if none."""
    for name, fmt in HF_WEIGHTS:
        if (folder / name).is_file():
            return folder / name, fmt
    return None


def _trainer_state_step(folder: Path) -> int | None:
    try:
        step = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8")).get("global_step")
        return int(step) if step is not None else None
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def scan(root: Path, *, trust: bool = False) -> list[Run]:
    """Runs in a folder without ``run.json``: the folder itself, name-pattern groups, and sub-folders."""
    runs: list[Run] = []
    _scan(root, root.name, 0, runs, trust)
    return runs


def _scan(folder: Path, name: str, depth: int, runs: list[Run], trust: bool) -> None:
    problems: list[str] = []
    ignored: list[str] = []
    cands: list[_Candidate] = []
    subfolders: list[Path] = []
    own = hf_weights(folder) if depth == 0 else None
    if own is not None:  # the folder itself is one HF checkpoint
        step = parse_step(folder.name)
        if step is None:
            step = _trainer_state_step(folder)
        cands.append(_Candidate(folder.name, own[0], own[1], step, "#"))
    else:
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                weights = hf_weights(entry)
                if weights is None:
                    subfolders.append(entry)
                    continue
                step = parse_step(entry.name)
                note = None
                state_step = _trainer_state_step(entry)
                if step is None:
                    step = state_step
                elif state_step is not None and state_step != step:
                    note = f"{entry}: name says step {step}, trainer_state.json says {state_step}; used the name"
                cands.append(_Candidate(entry.name, weights[0], weights[1], step, name_pattern(entry.name), note=note))
                for extra in ("pytorch_model.bin", "model.safetensors"):
                    if (entry / extra).exists() and entry / extra != weights[0]:
                        ignored.append(f"{entry / extra} (used {weights[0].name})")
                ignored += [str(f) for f in sorted(entry.iterdir())
                            if f.name.endswith(CHECKPOINT_SUFFIXES) and NOT_WEIGHTS.match(_stem(f.name))]
            elif entry.name.endswith(CHECKPOINT_SUFFIXES):
                stem = _stem(entry.name)
                if NOT_WEIGHTS.match(stem):
                    ignored.append(str(entry))
                elif _SHARD.search(stem):
                    continue  # read through its index
                else:
                    cands.append(_Candidate(entry.name, entry, _file_format(entry), parse_step(entry.name),
                                            name_pattern(entry.name)))
            elif entry.name.endswith(".index.json"):
                continue
    resolved: list[_Candidate] = []
    for c in cands:
        if c.note:
            problems.append(c.note)
        if c.step is not None:
            resolved.append(c)
            continue
        resolved += _step_from_inside(c, problems, trust)
    groups: dict[str, list[_Candidate]] = {}
    for c in resolved:
        groups.setdefault(c.pattern, []).append(c)
    if len(groups) > 1:
        biggest = max(len(g) for g in groups.values())
        for pattern in [p for p, g in groups.items() if len(g) == 1 and biggest > 1]:
            problems.append(f"{groups[pattern][0].path}: a lone checkpoint named unlike the others; skipped "
                            f"(rename it like the series, or analyse it on its own)")
            del groups[pattern]
    for pattern, group in sorted(groups.items()):
        run_name = name if len(groups) == 1 else f"{name}/{pattern}"
        by_step: dict[int, list[_Candidate]] = {}
        for c in group:
            by_step.setdefault(int(c.step), []).append(c)
        refs = []
        run_problems = list(problems)
        for step in sorted(by_step):
            same = by_step[step]
            if len(same) > 1:
                run_problems.append(f"step {step} appears {len(same)} times ({', '.join(_label(c) for c in same)});"
                                    f" all skipped, semgraph does not guess (remove the extra files)")
                continue
            c = same[0]
            refs.append(CheckpointRef(run=run_name, step=step, path=c.path, format=c.format, key=c.key))
        runs.append(Run(name=run_name, path=folder, info={"format": "foreign"}, checkpoints=refs,
                        problems=run_problems, ignored=ignored))
    if not groups and (problems or ignored) and not subfolders:
        runs.append(Run(name=name, path=folder, info={"format": "foreign"}, checkpoints=[], problems=problems,
                        ignored=ignored))
    if depth < MAX_DEPTH:
        for sub in subfolders:
            _scan(sub, sub.name if depth == 0 else f"{name}/{sub.name}", depth + 1, runs, trust)
    elif subfolders:
        problems.append(f"{folder}: sub-folders deeper than {MAX_DEPTH} levels were not searched")


def _label(c: _Candidate) -> str:
    return f"{c.path.name}[{c.key}]" if c.key is not None else c.path.name


def _file_format(path: Path) -> str:
    return formats.SAFETENSORS if path.name.endswith(".safetensors") else formats.TORCH


def _step_from_inside(c: _Candidate, problems: list[str], trust: bool) -> list[_Candidate]:
    """Steps for a checkpoint whose name has none: a multi-step file's entries, or metadata in the file."""
    try:
        if c.format == formats.SAFETENSORS:
            _, meta = formats.safetensors_header(c.path)
            step = formats.step_from_meta(meta)
            if step is not None:
                return [_Candidate(c.name, c.path, c.format, step, "#metadata")]
        elif c.format == formats.TORCH:
            obj = formats.torch_load(c.path, trust=trust, mmap=True)
            entries = formats.multi_entries(obj)
            if entries:
                keyed = isinstance(obj, Mapping)
                out = []
                for key, entry in entries:
                    step = formats.entry_step(key, entry, keyed)
                    if step is None:
                        step = int(key)
                        if key == entries[0][0]:
                            problems.append(f"{c.path}: holds {len(entries)} checkpoints without step numbers; "
                                            f"their list positions 0..{len(entries) - 1} are used as steps")
                    out.append(_Candidate(c.name, c.path, formats.TORCH_MULTI, step, f"{c.pattern}[#]", key=key))
                return out
            if isinstance(obj, Mapping) and not formats.is_state_dict(obj):
                step = formats.step_from_meta(formats.scalars(obj))
                if step is not None:
                    return [_Candidate(c.name, c.path, c.format, step, "#metadata")]
    except CorruptCheckpointError as exc:
        problems.append(f"{c.path}: no step number in the name, and the file cannot be opened to look inside "
                        f"({exc.kind}); skipped")
        return []
    problems.append(f"{c.path}: no step number in the name or inside the file; skipped "
                    f"(rename it step_N{Path(c.name).suffix} if it is a checkpoint)")
    return []


# ---- reading ----------------------------------------------------------------------------------------------------
def load_checkpoint(ref: CheckpointRef) -> formats.Loaded:
    """Tensors, stored scalars (metrics, epoch) and notes of one checkpoint, whatever its format."""
    return formats.load(ref.path, ref.format, key=ref.key, trust=ref.trust, payload=ref.payload)


def read_state_dict(ref: CheckpointRef) -> dict[str, torch.Tensor]:
    """Read one checkpoint's tensors on CPU, classifying failures (truncated / unpickling / keys / unreadable)."""
    return load_checkpoint(ref).state


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as fh:  # file_digest reads into one reused buffer (no fresh memory per chunk)
        return hashlib.file_digest(fh, "sha256").hexdigest()
