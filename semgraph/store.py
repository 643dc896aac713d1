"""HDF5 activation store: one file per checkpoint, written atomically, plus a manifest of finished work.

Layout: ``STORE/<run>/step_<N>.h5`` with datasets ``acts/<hook name>`` (n_inputs, ...), ``logits``, and
``params/<name>`` (weights the probes need), provenance as attributes (run, step, hook names, dtype,
checkpoint and weights hashes). A file is written under a temporary name and renamed when complete, so a
reader (a notebook during a sweep) never sees partial data and a kill loses at most the checkpoint in
flight. ``manifest.json`` lists finished and failed checkpoints; only the orchestrating process writes it.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

from semgraph.errors import StoreError
from semgraph.io import atomic_write_json

STORE_FORMAT = "semgraph-store/1"
MANIFEST = "manifest.json"


def _h5_name(name: str) -> str:
    """``group/leaf`` -> HDF5 path; a '/' inside the leaf (a module name) is escaped as '|'."""
    group, sep, leaf = name.partition("/")
    return f"{group}/{leaf.replace('/', '|')}" if sep else name


class ActivationStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.root / MANIFEST
        self.manifest = self._read_manifest()

    # ---- manifest -------------------------------------------------------------------------------------
    def _read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"format": STORE_FORMAT, "entries": {}}
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"manifest is unreadable: {exc}", path=self.manifest_path, stage="store",
                             fix="delete manifest.json; finished .h5 files are found again and reused") from exc
        if data.get("format") != STORE_FORMAT:
            raise StoreError(f"manifest format {data.get('format')!r} is not {STORE_FORMAT!r}",
                             path=self.manifest_path, stage="store", fix="analyze into a new --out folder")
        return data

    @staticmethod
    def key(run: str, step: int) -> str:
        return f"{run}/{int(step)}"

    def path_for(self, run: str, step: int) -> Path:
        return self.root / run / f"step_{int(step):08d}.h5"

    def is_done(self, run: str, step: int, source_id: str) -> bool:
        """True when this checkpoint's file is complete and was made from the same checkpoint file."""
        entry = self.manifest["entries"].get(self.key(run, step))
        return bool(entry and entry.get("status") == "done" and entry.get("source_id") == source_id
                    and self.path_for(run, step).exists())

    def failed(self, run: str, step: int, source_id: str) -> dict[str, Any] | None:
        entry = self.manifest["entries"].get(self.key(run, step))
        if entry and entry.get("status") == "failed" and entry.get("source_id") == source_id:
            return entry
        return None

    def record(self, run: str, step: int, entry: Mapping[str, Any]) -> None:
        """Add one finished (or failed) checkpoint to the manifest; rewritten atomically each time."""
        self.manifest["entries"][self.key(run, step)] = dict(entry)
        atomic_write_json(self.manifest_path, self.manifest)

    # ---- files ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self, run: str, step: int, attrs: Mapping[str, Any]) -> Iterator["CheckpointWriter"]:
        """Write one checkpoint's file under a temporary name; renamed into place only on success."""
        final = self.path_for(run, step)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            with _open_h5(tmp, "w") as fh:  # tmp is ours alone; the finished file is never opened to write
                for k, v in attrs.items():
                    fh.attrs[k] = _attr(v)
                yield CheckpointWriter(fh)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()

    def open(self, run: str, step: int) -> h5py.File:
        path = self.path_for(run, step)
        if not path.exists():
            raise StoreError(f"no stored activations for step {step}", path=path, stage="read store",
                             fix="run `semgraph analyze` again to capture the missing checkpoints")
        return _open_h5(path, "r")


class CheckpointWriter:
    """Appends batches to resizable, chunked, compressed datasets."""

    def __init__(self, fh: h5py.File):
        self.fh = fh

    def append(self, name: str, batch: np.ndarray) -> None:
        name = _h5_name(name)
        batch = np.ascontiguousarray(batch)
        if name not in self.fh:
            chunk_rows = max(1, min(len(batch), max(1, (1 << 20) // max(1, batch[0].nbytes))))
            self.fh.create_dataset(name, data=batch, maxshape=(None, *batch.shape[1:]),
                                   chunks=(chunk_rows, *batch.shape[1:]), compression="lzf", shuffle=True)
            return
        ds = self.fh[name]
        n = ds.shape[0]
        ds.resize(n + len(batch), axis=0)
        ds[n:] = batch

    def put(self, name: str, array: np.ndarray) -> None:
        self.fh.create_dataset(_h5_name(name), data=np.asarray(array), compression="lzf")


def read_group(fh: h5py.File, group: str) -> dict[str, np.ndarray]:
    """All datasets of a group as arrays, with the original (unescaped) names."""
    if group not in fh:
        return {}
    return {k.replace("|", "/"): v[()] for k, v in fh[group].items()}


def _attr(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return np.array([str(v) for v in value], dtype=h5py.string_dtype("utf-8"))
    if isinstance(value, dict):
        return json.dumps(value)
    return value


def _open_h5(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode)
    except BlockingIOError as exc:  # HDF5 file locking (network filesystems, another process holds it)
        raise StoreError(f"HDF5 file lock refused ({exc})", path=path, stage="store",
                         fix="close other programs that hold the file, or on network filesystems set "
                             "HDF5_USE_FILE_LOCKING=FALSE") from exc
    except OSError as exc:
        if "lock" in str(exc).lower():
            raise StoreError(f"HDF5 file lock refused ({exc})", path=path, stage="store",
                             fix="close other programs that hold the file, or on network filesystems set "
                                 "HDF5_USE_FILE_LOCKING=FALSE") from exc
        raise StoreError(f"cannot open HDF5 file: {exc}", path=path, stage="store",
                         fix="delete the file; `semgraph analyze` recomputes it") from exc
