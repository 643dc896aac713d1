"""Checkpoint schedules: which training steps get a checkpoint."""
from __future__ import annotations

from typing import Iterable

import numpy as np


def log_plus_linear(total_steps: int, *, every: int = 100, n_log: int = 20, first_dense: int | None = None
                    ) -> list[int]:
    """Steps 0, log-spaced points up to ``every`` (dense early, where training changes fastest), then every
    ``every`` steps, and the last step. Deterministic and sorted.
    """
    if total_steps < 0:
        raise ValueError("total_steps must be >= 0")
    dense_until = min(first_dense or every, total_steps)
    steps = {0, total_steps}
    if dense_until > 1:
        steps.update(int(round(s)) for s in np.geomspace(1, dense_until, n_log))
    steps.update(range(0, total_steps + 1, max(1, every)))
    return sorted(s for s in steps if 0 <= s <= total_steps)


def parse_schedule(text: str, total_steps: int) -> list[int]:
    """Parse a CLI schedule: ``"log+100"`` (log-spaced then every 100), ``"every:50"``, or ``"0,10,500"``."""
    text = text.strip()
    if text.startswith("log+"):
        return log_plus_linear(total_steps, every=int(text[4:]))
    if text.startswith("every:"):
        k = int(text[6:])
        return sorted(set(range(0, total_steps + 1, k)) | {total_steps})
    return sorted({int(s) for s in text.split(",") if s.strip()})


def as_step_set(schedule: Iterable[int]) -> frozenset[int]:
    return frozenset(int(s) for s in schedule)
