"""Shared fixtures: a tiny real modular-addition run trained through the Recorder (a few seconds)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from semgraph.tasks.train_modular_addition import ModAddRecipe, train_modular_addition

torch.set_num_threads(2)

TINY = dict(p=11, train_fraction=0.5, seed=0, steps=300, d_model=32, n_heads=2, d_mlp=64)


@pytest.fixture(scope="session")
def tiny_run_master(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    train_modular_addition(out, ModAddRecipe(**TINY), progress=False)
    return out


@pytest.fixture
def tiny_run(tiny_run_master, tmp_path) -> Path:
    """A private copy of the tiny run, so a test may damage it."""
    dst = tmp_path / "tiny"
    shutil.copytree(tiny_run_master, dst)
    return dst


@pytest.fixture(scope="session")
def tiny_reference(tiny_run_master, tmp_path_factory) -> Path:
    """An uninterrupted serial `analyze` of the (unmodified) tiny run, to compare other ways of running it with."""
    from semgraph.analyze import analyze

    out = tmp_path_factory.mktemp("reference") / "out"
    analyze(tiny_run_master, out, progress=False, workers=1)
    return out
