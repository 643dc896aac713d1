"""One exception hierarchy. Every message names the file, the step and the fix."""
from __future__ import annotations

from pathlib import Path


class SemgraphError(Exception):
    """Base class: the CLI prints ``str(err)`` (no traceback) and exits non-zero."""

    def __init__(self, message: str, *, path: str | Path | None = None, stage: str | None = None,
                 fix: str | None = None):
        self.path = None if path is None else str(path)
        self.stage = stage
        self.fix = fix
        self.message = message
        parts = []
        if stage:
            parts.append(f"[{stage}]")
        if self.path:
            parts.append(f"{self.path}:")
        parts.append(message)
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__(" ".join(parts))


class CheckpointError(SemgraphError):
    """A checkpoint folder or file cannot be discovered or loaded faithfully."""


class CorruptCheckpointError(CheckpointError):
    """One checkpoint file is unreadable (truncated, bad header, unpickling) or does not fit the model."""

    def __init__(self, message: str, *, kind: str, **kw):
        self.kind = kind  # truncated | unpickling | shape | keys | unreadable
        super().__init__(message, **kw)


class StoreError(SemgraphError):
    """The HDF5 activation store cannot be read or written."""


class ProbeError(SemgraphError):
    """A probe was configured wrongly (not: a probe that could not compute; that is a recorded result)."""


class ConfigError(SemgraphError):
    """A run's stored configuration or a user option is invalid."""
