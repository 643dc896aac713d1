"""Small file and process helpers: atomic writes (temp name + rename) so a kill never leaves a half-written
file, whether the process that owns a temp file or a pool still lives, and one writer per results folder."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # not POSIX (Windows): folders go unguarded
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto ``path``, on failure delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def pid_exists(pid: int) -> bool:
    """Whether a process with this pid exists on this host (one we may not signal counts as existing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default), encoding="utf-8")


def _json_default(obj: Any) -> Any:
    import numpy as np
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def exclusive_folder(folder: str | Path, *, stage: str) -> Iterator[None]:
    """Hold ``folder/.semgraph.lock`` so that one process at a time writes the folder's results and manifest.

    A POSIX record lock (``lockf``): released by the kernel when the holder dies, SIGKILL included, and not
    inherited by forked pool workers, so a re-run right after a kill is never refused. Where the filesystem
    has no locks the work goes on unguarded. A second process is refused with the holder's pid and host.
    """
    from semgraph.errors import ConfigError

    if fcntl is None:
        yield
        return
    path = Path(folder) / ".semgraph.lock"
    with open(path, "a+", encoding="utf-8") as fh:
        try:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                yield       # no locks on this filesystem (some network mounts)
                return
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise ConfigError(f"{holder} is already writing this folder", path=folder, stage=stage,
                              fix="wait for it to finish (re-running afterwards reuses its work), or pass another "
                                  "--out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"semgraph pid {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        yield
