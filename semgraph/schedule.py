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


# ---- open-ended schedules for any training loop (the total step count need not be known) ---------------

class Every:
    """Steps 0, k, 2k, ..."""

    def __init__(self, k: int):
        if int(k) < 1:
            raise ValueError("Every(k) needs k >= 1")
        self.k = int(k)

    def __contains__(self, step: object) -> bool:
        return int(step) >= 0 and int(step) % self.k == 0  # type: ignore[call-overload]

    def describe(self) -> dict:
        return {"every": self.k}


class LogSpaced:
    """Step 0 and the steps round(10 ** (i / per_decade)) for i = 0, 1, ...: dense early, sparse late."""

    def __init__(self, per_decade: int = 10):
        if int(per_decade) < 1:
            raise ValueError("LogSpaced(per_decade) needs per_decade >= 1")
        self.per_decade = int(per_decade)

    def __contains__(self, step: object) -> bool:
        s = int(step)  # type: ignore[call-overload]
        if s <= 1:
            return s >= 0
        i = self.per_decade * np.log10(s)
        return any(int(round(10 ** (j / self.per_decade))) == s for j in (int(np.floor(i)), int(np.ceil(i))))

    def describe(self) -> dict:
        return {"log_per_decade": self.per_decade}


class LogPlusEvery:
    """The default: ``n_log`` log-spaced steps up to ``every``, then every ``every`` steps (open-ended
    version of :func:`log_plus_linear`, which also adds the last step when the total is known)."""

    def __init__(self, every: int = 100, n_log: int = 20):
        self.every = int(every)
        self.n_log = int(n_log)
        self._early = frozenset(int(round(s)) for s in np.geomspace(1, self.every, self.n_log)) \
            if self.every > 1 else frozenset()

    def __contains__(self, step: object) -> bool:
        s = int(step)  # type: ignore[call-overload]
        return s >= 0 and (s % self.every == 0 or s in self._early)

    def describe(self) -> dict:
        return {"log": self.n_log, "every": self.every}


class Steps:
    """An explicit list of steps."""

    def __init__(self, steps: Iterable[int]):
        self.steps = as_step_set(steps)

    def __contains__(self, step: object) -> bool:
        return int(step) in self.steps  # type: ignore[call-overload]

    def describe(self) -> list[int]:
        return sorted(self.steps)


DEFAULT_SCHEDULE = LogPlusEvery(every=100, n_log=20)


def as_schedule(schedule: object) -> "Every | LogSpaced | LogPlusEvery | Steps":
    """None (the default: log-spaced to 100, then every 100), a schedule object, a list of steps, or a
    string: ``"every:50"``, ``"log:10"`` (10 per decade), ``"log+100"``, ``"0,10,500"``."""
    if schedule is None:
        return DEFAULT_SCHEDULE
    if isinstance(schedule, (Every, LogSpaced, LogPlusEvery, Steps)):
        return schedule
    if isinstance(schedule, str):
        text = schedule.strip()
        if text.startswith("every:"):
            return Every(int(text[6:]))
        if text.startswith("log:"):
            return LogSpaced(int(text[4:]))
        if text.startswith("log+"):
            return LogPlusEvery(every=int(text[4:]))
        return Steps(int(s) for s in text.split(",") if s.strip())
    if isinstance(schedule, Iterable):
        return Steps(schedule)  # type: ignore[arg-type]
    raise ValueError(f"cannot use {schedule!r} as a schedule: pass a list of steps, 'every:K', 'log:N', "
                     "'log+K' or a semgraph.schedule object")
