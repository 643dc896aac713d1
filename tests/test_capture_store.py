"""Hook hygiene and the atomic HDF5 store."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from semgraph.capture import capture, check_fired, hook_count
from semgraph.errors import SemgraphError
from semgraph.models import build_model
from semgraph.store import ActivationStore
from semgraph.tasks import ModularAddition


@pytest.fixture
def model():
    task = ModularAddition(p=7)
    return build_model(task.model_spec(d_model=16, n_heads=2, d_mlp=32)), torch.as_tensor(task.probe_set().inputs)


def test_capture_matches_run_with_cache(model):
    m, x = model
    names = ["blocks.0.hook_resid_post", "blocks.0.mlp.hook_post"]
    _, cache = m.run_with_cache(x, names_filter=lambda n: n in names)
    with torch.no_grad(), capture(m, names, position=-1) as acts:
        m(x)
        got = acts.pop_batch()
    for n in names:
        assert torch.allclose(got[n], cache[n][:, -1])
        assert not got[n].requires_grad


def test_hooks_removed_after_exception_and_user_hooks_survive(model):
    m, x = model
    user = m.hook_dict["blocks.0.hook_resid_post"].register_forward_hook(lambda *a: None)
    baseline = hook_count(m)
    with pytest.raises(RuntimeError, match="boom"):
        with capture(m, ["blocks.0.hook_resid_post", "blocks.0.mlp.hook_post"]):
            assert hook_count(m) == baseline + 2
            raise RuntimeError("boom")
    assert hook_count(m) == baseline
    assert len(m.hook_dict["blocks.0.hook_resid_post"]._forward_hooks) == 1
    user.remove()


def test_module_called_twice_is_refused():
    relu = torch.nn.ReLU()
    net = torch.nn.Sequential()
    net.lin = torch.nn.Linear(4, 4)
    net.act = relu

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.act = torch.nn.Linear(4, 4), torch.nn.ReLU()

        def forward(self, x):
            return self.act(self.lin(self.act(x)))

    m = Twice()
    with capture(m, ["act"], position=None) as acts, pytest.raises(SemgraphError, match="2 times"):
        m(torch.randn(2, 4))
    assert hook_count(m) == 0


def test_hook_that_never_fires_is_an_error():
    m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    unused = torch.nn.Linear(3, 3)
    m.add_module("unused", unused)
    with capture(m, ["0", "unused"], position=None) as acts:
        torch.nn.Sequential(m[0], m[1])(torch.randn(2, 3))
        with pytest.raises(SemgraphError, match="never fired"):
            check_fired(acts, ["0", "unused"])


def test_store_write_is_atomic_and_utf8(tmp_path):
    store = ActivationStore(tmp_path / "store")
    with pytest.raises(RuntimeError):
        with store.writer("run", 5, {"run": "run"}) as w:
            w.append("acts/x", np.ones((3, 2), dtype=np.float32))
            raise RuntimeError("killed mid-write")
    assert not store.path_for("run", 5).exists()
    assert list((tmp_path / "store" / "run").iterdir()) == []           # no temp file left behind
    with store.writer("rün-ß", 7, {"label": "größe ∑", "hooks": ["a", "b"]}) as w:
        for _ in range(3):
            w.append("acts/x", np.arange(8, dtype=np.float32).reshape(4, 2))
    store.record("rün-ß", 7, {"status": "done", "source_id": "s"})
    with h5py.File(store.path_for("rün-ß", 7), "r") as fh:
        assert fh["acts/x"].shape == (12, 2)
        assert fh.attrs["label"] == "größe ∑"
    assert ActivationStore(tmp_path / "store").is_done("rün-ß", 7, "s")
