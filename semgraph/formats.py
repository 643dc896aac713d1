"""Checkpoint file formats: read one checkpoint (any common layout) into a plain CPU state dict.

Formats (``CheckpointRef.format``):

- ``safetensors``: one ``.safetensors`` file (semgraph's own, HF ``model.safetensors``).
- ``safetensors-sharded`` / ``torch-sharded``: an HF index (``model.safetensors.index.json``,
  ``pytorch_model.bin.index.json``) naming shards; every shard must be there.
- ``torch``: a ``.pt/.pth/.bin/.ckpt`` pickle (zip or legacy), holding a state dict, a training container
  (``{model|state_dict|model_state_dict|ema, optimizer, epoch, ...}``) or a Lightning checkpoint.
- ``torch-multi``: one torch file holding several steps (a list or a dict of state dicts / containers);
  ``CheckpointRef.key`` selects the entry.

Torch pickles are opened with ``weights_only=True`` and a small explicit allowlist (numpy scalars, arrays and
dtypes, ``argparse.Namespace``); anything else needs ``trust=True`` (``--trust-checkpoints``), never silently.
Failures raise :class:`~semgraph.errors.CorruptCheckpointError` with a ``kind``
(truncated / unpickling / keys / shape / unreadable), naming the file and the fix.
"""
from __future__ import annotations

import argparse
import json
import pickle
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from semgraph.errors import CorruptCheckpointError

SAFETENSORS = "safetensors"
SAFETENSORS_SHARDED = "safetensors-sharded"
TORCH = "torch"
TORCH_SHARDED = "torch-sharded"
TORCH_MULTI = "torch-multi"
FORMATS = (SAFETENSORS, SAFETENSORS_SHARDED, TORCH, TORCH_SHARDED, TORCH_MULTI)

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
WEIGHT_SUFFIXES = (".safetensors",) + TORCH_SUFFIXES
#: keys of a training container that may hold the model's weights, in the order they are named in errors
PAYLOAD_KEYS = ("model", "state_dict", "model_state_dict", "model_state", "ema", "ema_state_dict",
                "module", "net", "network", "weights", "params")
#: scalar container entries that say which step a checkpoint is
STEP_KEYS = ("global_step", "step", "iteration", "iter", "epoch")
TRUST_FIX = "if you trust where this file came from, re-run with --trust-checkpoints (full unpickling)"


def _safe_globals() -> list[Any]:
    """The explicit allowlist for ``weights_only`` loading: numpy scalars/arrays/dtypes, argparse.Namespace."""
    out: list[Any] = [np.dtype, np.ndarray, argparse.Namespace]
    for mod_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            mod = __import__(mod_name, fromlist=["scalar"])
        except ImportError:
            continue
        out += [getattr(mod, n) for n in ("scalar", "_reconstruct") if hasattr(mod, n)]
        break
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return out


SAFE_GLOBALS = _safe_globals()


@dataclass
class Loaded:
    """One checkpoint read from disk: its tensors, the scalars stored next to them, and what was done."""

    state: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---- torch pickles -------------------------------------------------------------------------------------
def torch_load(path: str | Path, *, trust: bool = False, mmap: bool = False) -> Any:
    """``torch.load`` on CPU with ``weights_only=True`` and the allowlist; full unpickling only if ``trust``."""
    path = Path(path)
    _check_torch_file(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and _is_zip(path))
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise _classify(path, exc) from exc
        refused = _unsafe_globals(path)
        text = str(exc)
        tail = text[text.find("WeightsUnpickler error:") + len("WeightsUnpickler error:"):] \
            if "WeightsUnpickler error:" in text else ""
        reason = next((ln.strip() for ln in tail.splitlines() if ln.strip()), "")
        if not refused and "unsupported global" not in reason.lower():  # not an allowlist matter: damaged
            raise CorruptCheckpointError(f"cannot unpickle the checkpoint ({reason[:200] or 'invalid pickle'})",
                                         kind="unpickling", path=path, stage="load checkpoint",
                                         fix="the file is damaged or not a torch checkpoint: re-save or delete it"
                                         ) from None
        if not trust:
            raise CorruptCheckpointError(
                f"safe loading (weights_only) refused the pickled objects {refused or reason[:200]}",
                kind="unpickling", path=path, stage="load checkpoint", fix=TRUST_FIX) from None
    except Exception as exc:  # noqa: BLE001  (torch raises RuntimeError, EOFError, ValueError, OSError...)
        raise _classify(path, exc) from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise _classify(path, exc, trusted=True) from exc


def _unsafe_globals(path: Path) -> list[str]:
    try:
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}
        return [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) if g not in allowed]
    except Exception:  # noqa: BLE001  (legacy non-zip files: the message from torch is all there is)
        return []


def _is_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _check_torch_file(path: Path) -> None:
    if not path.exists():
        raise CorruptCheckpointError("file is missing", kind="unreadable", path=path, stage="load checkpoint",
                                     fix="restore the file or remove it from the folder")
    size = path.stat().st_size
    if size == 0:
        raise CorruptCheckpointError("truncated: file is empty (0 bytes)", kind="truncated", path=path,
                                     stage="load checkpoint", fix="re-save this checkpoint or delete it")
    if _is_zip(path) and not zipfile.is_zipfile(path):
        raise CorruptCheckpointError(f"truncated: zip archive is cut short ({size} bytes, no central directory)",
                                     kind="truncated", path=path, stage="load checkpoint",
                                     fix="the save was interrupted (killed job, full disk): re-save or delete it")


def _classify(path: Path, exc: BaseException, trusted: bool = False) -> CorruptCheckpointError:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    low = text.lower()
    if isinstance(exc, EOFError) or any(s in low for s in ("truncated", "eof", "central directory",
                                                           "incomplete", "unexpected end", "failed reading")):
        kind, fix = "truncated", "the save was interrupted (killed job, full disk): re-save or delete it"
    elif isinstance(exc, (pickle.UnpicklingError, AttributeError, ModuleNotFoundError, ImportError)) \
            or "unpickl" in low or "pickle" in low:
        kind = "unpickling"
        fix = ("make the classes it pickles importable, or re-save it as a plain state dict" if trusted
               else "re-save it as a plain state dict (or safetensors)")
    else:
        kind, fix = "unreadable", "re-save this checkpoint or delete it (without --strict the other steps are analysed)"
    return CorruptCheckpointError(f"cannot read checkpoint ({kind}: {text})", kind=kind, path=path,
                                  stage="load checkpoint", fix=fix)


# ---- safetensors -----------------------------------------------------------------------------------------
def safetensors_load(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and the string metadata of one safetensors file, on CPU."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = dict(fh.metadata() or {})
            return {k: fh.get_tensor(k) for k in fh.keys()}, meta
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        size = path.stat().st_size if path.exists() else 0
        low = str(exc).lower()
        kind = "truncated" if size < 16 or "incomplete" in low or "eof" in low or "buffer" in low \
            or "too small" in low else "unreadable"
        if not path.exists():
            kind = "unreadable"
        raise CorruptCheckpointError(f"cannot read checkpoint ({kind}: {exc})", kind=kind, path=path,
                                     stage="load checkpoint",
                                     fix="re-save this checkpoint or delete it (without --strict the other steps are analysed)"
                                     ) from exc


def safetensors_header(path: str | Path) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict[str, str]]:
    """``{name: (shape, dtype)}`` and metadata from the header alone (no tensor byte is read)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            size = path.stat().st_size
            if n <= 0 or n > size - 8:
                raise ValueError(f"header length {n} does not fit in {size} bytes")
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as exc:
        kind = "truncated" if path.exists() and path.stat().st_size < 16 else "unreadable"
        raise CorruptCheckpointError(f"cannot read safetensors header ({kind}: {exc})", kind=kind, path=path,
                                     stage="inspect", fix="re-save this checkpoint or delete it") from exc
    meta = header.pop("__metadata__", None) or {}
    end = max((v["data_offsets"][1] for v in header.values()), default=0)
    if 8 + n + end > path.stat().st_size:
        raise CorruptCheckpointError(
            f"truncated: header promises {8 + n + end} bytes, file has {path.stat().st_size}",
            kind="truncated", path=path, stage="inspect",
            fix="the save was interrupted (killed job, full disk): re-save or delete it")
    return {k: (tuple(v["shape"]), v["dtype"]) for k, v in header.items()}, meta


# ---- sharded (HF index) ----------------------------------------------------------------------------------
def read_index(path: str | Path) -> dict[str, str]:
    """``weight name -> shard file name`` from an HF ``*.index.json``; missing shards are an error."""
    path = Path(path)
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CorruptCheckpointError(f"cannot read shard index ({exc})", kind="unreadable", path=path,
                                     stage="load checkpoint", fix="restore the index file written with the shards"
                                     ) from exc
    missing = sorted({s for s in weight_map.values() if not (path.parent / s).exists()})
    if missing:
        names = sorted(k for k, s in weight_map.items() if s in missing)
        raise CorruptCheckpointError(
            f"shards named by the index are missing: {missing} (they hold {_few(names)})", kind="keys",
            path=path, stage="load checkpoint", fix="copy the missing shard files next to the index")
    return dict(weight_map)


def load_sharded(path: Path, *, torch_shards: bool, trust: bool) -> Loaded:
    weight_map = read_index(path)
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        part = (to_state_dict(torch_load(path.parent / shard, trust=trust), path.parent / shard).state
                if torch_shards else safetensors_load(path.parent / shard)[0])
        state.update(part)
    absent = sorted(set(weight_map) - set(state))
    if absent:
        raise CorruptCheckpointError(f"the index names weights no shard holds: {_few(absent)}", kind="keys",
                                     path=path, stage="load checkpoint",
                                     fix="the shards do not belong to this index; re-save the checkpoint")
    return Loaded(state, notes=[f"{len(set(weight_map.values()))} shards"])


# ---- containers --------------------------------------------------------------------------------------------
def is_state_dict(obj: Any) -> bool:
    """A non-empty mapping of string keys to tensors (numpy arrays accepted)."""
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) for k in obj)
            and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in obj.values()))


def _scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, torch.Tensor) and v.numel() == 1 and v.dim() == 0:
        return v.item()
    if isinstance(v, (bool, int, float, str)):
        return v
    return None


def scalars(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar entries of a container (epoch, losses, accuracies), as plain Python values."""
    out = {}
    for k, v in obj.items():
        s = _scalar(v)
        if s is not None and isinstance(k, str):
            out[k] = s
    return out


def to_state_dict(obj: Any, path: Path, *, payload: str | None = None) -> Loaded:
    """Unpack a state dict, a training container or a Lightning checkpoint; never guess between payloads."""
    if payload is not None:
        if not isinstance(obj, Mapping) or payload not in obj:
            keys = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise CorruptCheckpointError(f"no entry {payload!r} in the checkpoint (it holds {keys})", kind="keys",
                                         path=path, stage="load checkpoint",
                                         fix="pass the right --payload or drop it")
        inner = to_state_dict(obj[payload], path)
        return Loaded(inner.state, {**scalars(obj), **inner.meta}, [f"payload {payload!r}"] + inner.notes)
    if is_state_dict(obj):
        return Loaded(_tensors(obj))
    if isinstance(obj, torch.nn.Module):  # torch.save(model): only reachable with --trust-checkpoints
        return Loaded(dict(obj.state_dict()), notes=[f"pickled {type(obj).__name__} object: used its state_dict()"])
    if isinstance(obj, Mapping):
        candidates = [k for k in obj if isinstance(k, str) and is_state_dict(obj[k])]
        if not candidates:  # one more level: {"model": {"state_dict": {...}}}
            nested = [k for k in obj if isinstance(obj[k], Mapping) and any(
                isinstance(kk, str) and is_state_dict(obj[k][kk]) for kk in obj[k])]
            if len(nested) == 1 and not _is_optimizer(obj[nested[0]]):
                inner = to_state_dict(obj[nested[0]], path)
                return Loaded(inner.state, {**scalars(obj), **inner.meta}, [f"payload {nested[0]!r}"] + inner.notes)
        if len(candidates) == 1:
            return Loaded(_tensors(obj[candidates[0]]), scalars(obj), [f"payload {candidates[0]!r}"])
        if len(candidates) > 1:
            raise CorruptCheckpointError(
                f"several entries could be the model's weights: {candidates}; semgraph does not guess",
                kind="keys", path=path, stage="load checkpoint",
                fix=f"pass --payload NAME (one of {candidates})")
        if _is_optimizer(obj) or set(obj) & {"optimizer", "optimizer_states", "optimizer_state_dict"}:
            raise CorruptCheckpointError("holds optimizer state only, no model weights", kind="keys", path=path,
                                         stage="load checkpoint",
                                         fix="point semgraph at the model checkpoints (not optimizer.pt)")
        raise CorruptCheckpointError(
            f"no state dict found (top-level entries: {_few(sorted(map(str, obj)))})", kind="keys", path=path,
            stage="load checkpoint", fix="save model.state_dict(), or pass --payload NAME")
    raise CorruptCheckpointError(f"holds a {type(obj).__name__}, not a state dict", kind="keys", path=path,
                                 stage="load checkpoint", fix="save model.state_dict() (not the model object)")


def _is_optimizer(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "param_groups" in obj and "state" in obj


def _tensors(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {k: (torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v)
            for k, v in obj.items()}


def multi_entries(obj: Any) -> list[tuple[str, Any]] | None:
    """If ``obj`` holds several checkpoints (a list, or a dict keyed by step), ``[(key, entry), ...]``."""
    def loadable(v: Any) -> bool:
        if is_state_dict(v):
            return True
        return isinstance(v, Mapping) and sum(isinstance(k, str) and is_state_dict(v[k]) for k in v) == 1
    if isinstance(obj, (list, tuple)) and len(obj) > 1 and all(loadable(v) for v in obj):
        return [(str(i), v) for i, v in enumerate(obj)]
    if isinstance(obj, Mapping) and len(obj) > 1 and not is_state_dict(obj) \
            and all(loadable(v) for v in obj.values()) and all(_as_int(k) is not None for k in obj):
        return [(str(k), v) for k, v in obj.items()]
    return None


def entry_step(key: str, entry: Any, keyed_by_step: bool) -> int | None:
    """The step of one entry of a multi-step file: a step field inside it, else its dict key."""
    if isinstance(entry, Mapping) and not is_state_dict(entry):
        s = step_from_meta(scalars(entry))
        if s is not None:
            return s
    return _as_int(key) if keyed_by_step else None


def step_from_meta(meta: Mapping[str, Any]) -> int | None:
    for k in STEP_KEYS:
        v = meta.get(k)
        if isinstance(v, (int, np.integer)) or (isinstance(v, str) and v.isdigit()):
            return int(v)
    return None


def _as_int(k: Any) -> int | None:
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
        return int(k)
    if isinstance(k, str) and k.strip().isdigit():
        return int(k)
    return None


@lru_cache(maxsize=2)
def _multi_file(path: str, mtime_ns: int, trust: bool) -> dict[str, Any]:
    entries = multi_entries(torch_load(path, trust=trust)) or []
    return dict(entries)


# ---- one entry point -----------------------------------------------------------------------------------------
def load(path: str | Path, fmt: str, *, key: str | None = None, trust: bool = False,
         payload: str | None = None) -> Loaded:
    """Read one checkpoint of format ``fmt`` as a plain CPU state dict, scalars stored with it, and notes."""
    path = Path(path)
    if fmt == SAFETENSORS:
        state, meta = safetensors_load(path)
        loaded = Loaded(state, dict(meta))
    elif fmt == SAFETENSORS_SHARDED:
        loaded = load_sharded(path, torch_shards=False, trust=trust)
    elif fmt == TORCH_SHARDED:
        loaded = load_sharded(path, torch_shards=True, trust=trust)
    elif fmt == TORCH:
        loaded = to_state_dict(torch_load(path, trust=trust), path, payload=payload)
    elif fmt == TORCH_MULTI:
        entries = _multi_file(str(path), path.stat().st_mtime_ns, trust)
        if key not in entries:
            raise CorruptCheckpointError(f"entry {key!r} is not in this multi-step file", kind="keys", path=path,
                                         stage="load checkpoint", fix="run `semgraph inspect` on the folder again")
        loaded = to_state_dict(entries[key], path, payload=payload)
        loaded.notes.insert(0, f"entry {key}")
    else:
        raise CorruptCheckpointError(f"unknown checkpoint format {fmt!r}", kind="unreadable", path=path,
                                     stage="load checkpoint", fix=f"one of {FORMATS}")
    bad = [k for k, v in loaded.state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CorruptCheckpointError(f"entries are not tensors: {_few(bad)}", kind="keys", path=path,
                                     stage="load checkpoint", fix="save model.state_dict()")
    return loaded


def shape_signature(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """A short hash of the sorted (name, shape) pairs: equal for checkpoints of one architecture."""
    import hashlib
    text = ";".join(f"{k}:{tuple(shapes[k])}" for k in sorted(shapes))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _few(items: list[str], n: int = 5) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(map(str, items[:n])) + more


_METRIC_ALIASES = {"train_acc": ("train_acc", "train_accuracy", "acc_train"),
                   "test_acc": ("test_acc", "test_accuracy", "val_acc", "val_accuracy", "acc_test"),
                   "train_loss": ("train_loss", "loss_train"),
                   "test_loss": ("test_loss", "val_loss", "loss_test")}


def metric_names(meta: Mapping[str, Any]) -> dict[str, float]:
    """Metrics stored in a checkpoint under common names, renamed to semgraph's (train_acc, test_loss...)."""
    out = {}
    for name, aliases in _METRIC_ALIASES.items():
        for a in aliases:
            v = meta.get(a)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[name] = float(v)
                break
    return out
