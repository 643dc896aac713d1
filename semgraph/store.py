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
import re
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

from semgraph.errors import StoreError
from semgraph.io import atomic_write_json, pid_exists

STORE_FORMAT = "semgraph-store/1"
MANIFEST = "manifest.json"
# temporary names: ".<final name>.<pid>.tmp" (semgraph.io) or ".<final name>.<host>@<pid>.tmp" (store files)
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:(?P<host>[A-Za-z0-9_\-]+)@)?(?P<pid>\d+)\.tmp$")
FOREIGN_TEMP_AGE_S = 24 * 3600  # a temp file of another host untouched this long belongs to a dead worker


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_\-]", "_", socket.gethostname()) or "host"


def _pid_alive(pid: int) -> bool:
    """Whether the writer with this pid may still be writing (our own pid: leftovers of an earlier call)."""
    return pid != os.getpid() and pid_exists(pid)


def clean_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temporary files left by killed writers under ``folder``; returns what was removed.

    A temp file is stale when the process that wrote it (pid in the name) is gone on this host, or when it
    comes from another host and has not been touched for a day. Call only from the orchestrating process
    before it starts workers: live writers of this host are kept anyway.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    here, now = _host(), time.time()
    for path in folder.rglob(".*.tmp"):
        m = _TEMP.match(path.name)
        if not m or not path.is_file():
            continue
        host = m.group("host")
        if host in (None, here):
            stale = not _pid_alive(int(m.group("pid")))
        else:
            stale = now - path.stat().st_mtime > FOREIGN_TEMP_AGE_S
        if stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _unreadable(path: Path) -> str | None:
    """Why HDF5 cannot open ``path`` (truncated, overwritten, not HDF5), or None. semgraph never leaves such
    a file (temp name + rename), but a copy cut short or a full disk elsewhere can; opening costs ~0.1 ms."""
    try:
        with h5py.File(path, "r"):
            return None
    except OSError as exc:
        return None if _is_lock_error(exc) else str(exc)  # locked by another program: readable later


def _h5_name(name: str) -> str:
    """``group/leaf`` -> HDF5 path; a '/' inside the leaf (a module name) is escaped as '|'."""
    group, sep, leaf = name.partition("/")
    return f"{group}/{leaf.replace('/', '|')}" if sep else name


class ActivationStore:
    MANIFEST_EVERY_S = 2.0  # ``record(..., flush=False)`` rewrites the manifest at most this often

    def __init__(self, root: str | Path, *, read_manifest: bool = True):
        self.root = Path(root)
        self._unsaved = False
        self._saved_at = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.root / MANIFEST
        # workers (read_manifest=False) only write their own files; the orchestrator owns the manifest
        self.manifest = self._read_manifest() if read_manifest else {"format": STORE_FORMAT, "entries": {}}

    # ---- manifest -------------------------------------------------------------------------------------
    def _read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"format": STORE_FORMAT, "entries": {}}
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
                raise ValueError("no 'entries' table")
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
            # Never half-written by semgraph (atomic rename), but a crash of the machine or a hand edit can
            # leave it so: the finished .h5 files carry their own provenance, so the manifest is rebuilt.
            warnings.warn(f"{self.manifest_path}: manifest is unreadable ({exc}); rebuilding it from the "
                          f"finished .h5 files", stacklevel=3)
            return {"format": STORE_FORMAT, "entries": {}}
        except OSError as exc:
            raise StoreError(f"manifest is unreadable: {exc}", path=self.manifest_path, stage="store",
                             fix="check the folder's permissions; finished .h5 files are kept") from exc
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

    def record(self, run: str, step: int, entry: Mapping[str, Any], *, flush: bool = True) -> None:
        """Add one finished (or failed) checkpoint to the manifest, which is rewritten atomically.

        ``flush=False`` (a capture loop) rewrites it at most every ``MANIFEST_EVERY_S`` seconds, so a run of
        n checkpoints does not rewrite an n-entry file n times; call ``flush()`` at the end. A kill in
        between loses no work: ``recover()`` adopts finished files the manifest does not list yet.
        """
        self.manifest["entries"][self.key(run, step)] = dict(entry)
        self._unsaved = True
        if flush or time.monotonic() - self._saved_at >= self.MANIFEST_EVERY_S:
            self.flush()

    def flush(self) -> None:
        """Write the manifest if entries were recorded since it was last written."""
        if self._unsaved:
            atomic_write_json(self.manifest_path, self.manifest)
            self._unsaved = False
            self._saved_at = time.monotonic()

    def recover(self) -> list[str]:
        """Make the manifest agree with the files after a kill; returns the keys adopted.

        Removes stale temporary files, adopts finished files the manifest does not list (killed between
        the rename and the manifest update, or a manifest rebuilt after damage) and forgets ``done`` entries
        whose file is gone, or damaged (deleted with a warning, so the checkpoint is captured again). Only the
        orchestrating process calls this, before it starts workers.
        """
        clean_stale_temps(self.root)
        entries = self.manifest["entries"]
        changed = False
        for key, entry in list(entries.items()):
            if entry.get("status") != "done":
                continue
            path = self.root / entry.get("file", "")
            problem = "missing" if not path.is_file() else _unreadable(path)
            if problem:
                if problem != "missing":
                    warnings.warn(f"{path}: stored activations are damaged ({problem}); deleting the file and "
                                  f"capturing this checkpoint again", stacklevel=3)
                    path.unlink()
                del entries[key]
                changed = True
        listed = {self.root / e["file"] for e in entries.values() if e.get("status") == "done" and e.get("file")}
        adopted = []
        for path in sorted(self.root.glob("*/step_*.h5")):
            if path in listed:  # checked just above
                continue
            entry = self._entry_from_file(path)
            if entry is None:
                continue
            key = self.key(entry.pop("run"), entry.pop("step"))
            if entries.get(key, {}).get("status") == "done":
                continue
            entries[key] = entry
            adopted.append(key)
            changed = True
        if changed or not self.manifest_path.exists():
            self._unsaved = True
            self.flush()
        return adopted

    def _entry_from_file(self, path: Path) -> dict[str, Any] | None:
        """The manifest entry a finished file describes (None for files that carry no provenance)."""
        try:
            with h5py.File(path, "r") as fh:
                a = dict(fh.attrs)
        except OSError:
            return None
        if "source_id" not in a or "run" not in a or "step" not in a:
            return None
        run, step = str(a["run"]), int(a["step"])
        if path != self.path_for(run, step):
            return None
        entry = {"run": run, "step": step, "status": "done", "source": str(a.get("checkpoint", "")),
                 "source_id": str(a["source_id"]), "weights_sha256": str(a.get("weights_sha256", "")),
                 "file": str(path.relative_to(self.root))}
        if "format" in a:  # what the loader did and the metrics stored in the checkpoint (semgraph.extract)
            entry.update(format=str(a["format"]), notes=json.loads(a["notes"]), stored=json.loads(a["stored"]))
        return entry

    # ---- files ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self, run: str, step: int, attrs: Mapping[str, Any], *, compression: str | None = "auto",
               rows: int | None = None) -> Iterator["CheckpointWriter"]:
        """Write one checkpoint's file under a temporary name; renamed into place only on success.

        ``rows``: how many rows each appended dataset will hold (the probe set's size), when known; it lets
        the chunks tile the data with almost no padding."""
        final = self.path_for(run, step)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{_host()}@{os.getpid()}.tmp")
        try:
            with _open_h5(tmp, "w") as fh:  # tmp is ours alone; the finished file is never opened to write
                for k, v in attrs.items():
                    fh.attrs[k] = _attr(v)
                yield CheckpointWriter(fh, compression, rows=rows)
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
    """Appends batches to resizable, chunked datasets (chunks of whole rows, at most ``CHUNK_BYTES``).

    Chunks stay well under HDF5's default 1 MiB chunk cache: a chunk that does not fit the cache is written
    around it, which made a 1 MiB-chunk file 2-3x slower to write than one with 512 KiB chunks (measured in
    benchmarks/README.md). With ``rows`` known, the chunk height divides the rows into equal chunks, so the
    last chunk is not mostly padding (a 2,809-row dataset in 1,024-row chunks stores 3,072 rows).

    ``compression="auto"`` compresses (LZF + byte shuffle) a dataset whose first batch is at least half zero
    bytes: activations upcast from bf16/fp16 or sparse ReLU outputs shrink 2x or more for little CPU, while
    dense float32 activations shrink by under 10% at a cost close to the forward pass itself, so those are
    stored plain. ``"lzf"``, ``"gzip"`` or ``None`` force a choice; h5py reads all of them without plugins.
    """

    CHUNK_BYTES = 512 * 1024

    def __init__(self, fh: h5py.File, compression: str | None = "auto", *, rows: int | None = None):
        self.fh = fh
        self.compression = compression
        self.rows = rows

    def chunk_rows(self, first_batch: np.ndarray) -> int:
        """Rows per chunk: at most CHUNK_BYTES, split evenly over ``rows`` when known, else a batch at most."""
        per_chunk = max(1, self.CHUNK_BYTES // max(1, first_batch[0].nbytes))
        if not self.rows:
            return max(1, min(len(first_batch), per_chunk))
        n_chunks = -(-self.rows // per_chunk)
        return max(1, -(-self.rows // n_chunks))

    def append(self, name: str, batch: np.ndarray) -> None:
        name = _h5_name(name)
        batch = np.ascontiguousarray(batch)
        if name not in self.fh:
            self.fh.create_dataset(name, data=batch, maxshape=(None, *batch.shape[1:]),
                                   chunks=(self.chunk_rows(batch), *batch.shape[1:]),
                                   **_filters(batch, self.compression))
            return
        ds = self.fh[name]
        n = ds.shape[0]
        ds.resize(n + len(batch), axis=0)
        ds[n:] = batch

    def put(self, name: str, array: np.ndarray) -> None:
        array = np.asarray(array)
        self.fh.create_dataset(_h5_name(name), data=array, **_filters(array, self.compression))


def _filters(batch: np.ndarray, compression: str | None) -> dict[str, Any]:
    if compression == "auto":
        raw = batch.view(np.uint8) if batch.size else batch
        compression = "lzf" if batch.size and np.count_nonzero(raw == 0) >= raw.size / 2 else None
    if compression is None:
        return {}
    if compression not in ("lzf", "gzip"):
        raise StoreError(f"unknown compression {compression!r}", stage="store",
                         fix="use 'auto', 'lzf', 'gzip' or None")
    return {"compression": compression, "shuffle": True}


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


# HDF5's locking errors ("unable to lock file", "file locking disabled ..."); a whole word, so a truncated
# file's "sblock->base_addr" is not taken for one
_LOCK_MESSAGE = re.compile(r"\block(ing|ed)?\b", re.IGNORECASE)


def _is_lock_error(exc: OSError) -> bool:
    """HDF5 file locking refused the open (another process holds the file, or a network filesystem)."""
    return isinstance(exc, BlockingIOError) or bool(_LOCK_MESSAGE.search(str(exc)))


def _open_h5(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode)
    except OSError as exc:
        if _is_lock_error(exc):
            raise StoreError(f"HDF5 file lock refused ({exc})", path=path, stage="store",
                             fix="close other programs that hold the file, or on network filesystems set "
                                 "HDF5_USE_FILE_LOCKING=FALSE") from exc
        raise StoreError(f"cannot open HDF5 file: {exc}", path=path, stage="store",
                         fix="delete the file; `semgraph analyze` recomputes it") from exc
