"""Workload 3: an MLP on scikit-learn's bundled digits images (8x8 pixels, 1,797 samples, 10 classes).

Not a transformer: the model is a plain ``torch.nn.Sequential`` built by :func:`make_mlp` (a model-spec
factory), activations are captured by module name (``fc1``, ``act1``, ``fc2``, ``act2``), and a linear probe
for the digit class runs on each of them. Pixels are scaled to [0, 1]; the split is a seeded permutation.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from semgraph.tasks.base import ProbeSet, Task

LAYERS = ("fc1", "act1", "fc2", "act2")


def make_mlp(n_in: int = 64, hidden: Sequence[int] = (64, 32), n_classes: int = 10, seed: int = 0
             ) -> torch.nn.Module:
    """``fc1 -> act1 -> fc2 -> act2 -> out``: a two-hidden-layer ReLU MLP with named modules."""
    torch.manual_seed(seed)
    h1, h2 = hidden
    return torch.nn.Sequential(OrderedDict([
        ("fc1", torch.nn.Linear(n_in, h1)), ("act1", torch.nn.ReLU()),
        ("fc2", torch.nn.Linear(h1, h2)), ("act2", torch.nn.ReLU()),
        ("out", torch.nn.Linear(h2, n_classes)),
    ]))


@dataclass
class Digits(Task):
    train_fraction: float = 0.7
    seed: int = 0

    name = "digits"

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "train_fraction": self.train_fraction, "seed": self.seed}

    def probe_set(self) -> ProbeSet:
        from sklearn.datasets import load_digits

        data = load_digits()
        x = (data.data / 16.0).astype(np.float32)
        y = data.target.astype(np.int64)
        split = np.full(len(y), "test", dtype=object)
        n_train = int(round(self.train_fraction * len(y)))
        split[np.random.default_rng(self.seed).permutation(len(y))[:n_train]] = "train"
        return ProbeSet(inputs=x, labels=y, split=split.astype(str), concepts={"digit": y})

    @staticmethod
    def model_spec(hidden: Sequence[int] = (64, 32), seed: int = 0) -> dict[str, Any]:
        from semgraph.models import factory_spec
        return factory_spec(make_mlp, n_in=64, hidden=list(hidden), n_classes=10, seed=seed)

    def analysis_defaults(self) -> dict[str, Any]:
        return {
            "hooks": list(LAYERS),
            "params": [],
            "probes": [("output", {}), ("linear_per_layer", {"concept": "digit", "hooks": list(LAYERS)})],
            "signature": ["output.train_acc", "output.test_acc", "output.train_loss", "output.test_loss"]
                         + [f"linear_per_layer.{h}.score" for h in LAYERS],
        }
