"""What a task gives the rest of semgraph: a fixed probe set with labels and a train/test split."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ProbeSet:
    """Inputs every checkpoint is run on, with ground truth.

    ``split`` holds one of ``"train"``, ``"test"``, ``"unseen"`` per input; ``concepts`` holds labelled
    concepts (name -> integer label per input) for linear probes.
    """

    inputs: np.ndarray                 # (n, seq) int64 tokens
    labels: np.ndarray                 # (n,) int64 correct next token at the answer position
    split: np.ndarray                  # (n,) str
    concepts: dict[str, np.ndarray] = field(default_factory=dict)
    answer_position: int = -1

    def mask(self, part: str) -> np.ndarray:
        return self.split == part

    @property
    def parts(self) -> list[str]:
        return [p for p in ("train", "test", "unseen") if np.any(self.split == p)]


class Task:
    """A reference task: ``probe_set()`` for analysis, ``model_config()`` and ``train()`` for recipes."""

    name: str = "task"

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this task (stored in run.json)."""
        raise NotImplementedError

    def probe_set(self) -> ProbeSet:
        raise NotImplementedError
