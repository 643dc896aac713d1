"""Bounded capture (stop after the last requested layer, per-batch CPU float32) and hook hygiene mid-sweep."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import semgraph.extract as extract
from semgraph.capture import capture, check_fired, forward, hook_count
from semgraph.checkpoints import discover
from semgraph.extract import CaptureConfig, extract_run, release_model
from semgraph.models import build_model
from semgraph.store import ActivationStore, CheckpointWriter
from semgraph.tasks import ModularAddition, task_from_spec


class _TupleOut(torch.nn.Module):
    """Returns (hidden, attention-like extra), as many HF / attention modules do."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x):
        h = self.lin(x)
        return h, h.sum(-1)


class _ModelOutputOut(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x):
        from transformers.modeling_outputs import BaseModelOutput
        return BaseModelOutput(last_hidden_state=self.lin(x))


@pytest.mark.parametrize("module_cls", [_TupleOut, _ModelOutputOut])
def test_tuple_and_model_output_are_normalised(module_cls):
    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.add_module("block", module_cls())
    x = torch.randn(5, 2, 4)
    expected = net.block.lin(x)[:, -1]                   # independent: the inner Linear, last position
    with torch.no_grad(), capture(net, ["block"], position=-1) as acts:
        net(x)
        check_fired(acts, ["block"])
        got = acts.pop_batch()["block"]
    assert got.dtype == torch.float32 and not got.requires_grad
    assert torch.allclose(got, expected.detach())
    assert hook_count(net) == 0


def test_half_precision_activations_are_upcast_on_cpu():
    lin = torch.nn.Linear(4, 4).to(torch.bfloat16)
    net = torch.nn.Sequential(lin, torch.nn.ReLU())
    x = torch.randn(3, 4, dtype=torch.bfloat16)
    with torch.no_grad(), capture(net, ["0"], position=None) as acts:
        net(x)
        got = acts.pop_batch()["0"]
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), lin(x).detach().float().numpy())  # bf16 -> f32 is exact


def test_stop_early_skips_the_layers_after_the_last_requested_hook():
    task = ModularAddition(p=7)
    m = build_model(task.model_spec(d_model=16, n_heads=2, d_mlp=32))
    x = torch.as_tensor(task.probe_set().inputs)
    ran = []
    user = m.unembed.register_forward_hook(lambda *a: ran.append(1))  # a user's hook on a later layer
    names = ["blocks.0.hook_resid_mid", "blocks.0.mlp.hook_post"]
    with torch.no_grad(), capture(m, names) as full:
        m(x)  # (the bridge wires its own permanent hooks on its first forward pass: baseline after it)
        want = full.pop_batch()
    baseline = hook_count(m)
    assert len(ran) == 1
    with torch.no_grad(), capture(m, names, stop_early=True) as acts:
        out = forward(m, x)
        check_fired(acts, names)
        got = acts.pop_batch()
    assert out is None and len(ran) == 1                 # unembed did not run the second time
    for n in names:
        assert torch.equal(got[n], want[n])
    assert hook_count(m) == baseline
    user.remove()


def test_no_logits_capture_stores_only_the_requested_hook(tiny_run, tmp_path):
    run = discover(tiny_run)[0]
    run.checkpoints = run.checkpoints[-2:]
    task = task_from_spec(run.info["task"])
    full = ActivationStore(tmp_path / "full")
    cut = ActivationStore(tmp_path / "cut")
    extract_run(run, task.probe_set(), CaptureConfig(hooks=["blocks.0.hook_resid_post"]), full, progress=False)
    extract_run(run, task.probe_set(), CaptureConfig(hooks=["blocks.0.hook_resid_post"], logits=False), cut,
                progress=False)
    for ref in run.checkpoints:
        with h5py.File(full.path_for(run.name, ref.step)) as a, h5py.File(cut.path_for(run.name, ref.step)) as b:
            assert "logits" not in b and list(b["acts"]) == ["blocks.0.hook_resid_post"]
            np.testing.assert_array_equal(a["acts/blocks.0.hook_resid_post"][()],
                                          b["acts/blocks.0.hook_resid_post"][()])


def test_exception_in_a_hook_mid_sweep_leaves_no_hooks_and_loses_no_finished_work(tiny_run, tmp_path,
                                                                                  monkeypatch):
    run = discover(tiny_run)[0]
    task = task_from_spec(run.info["task"])
    defaults = task.analysis_defaults()
    cfg = CaptureConfig(hooks=defaults["hooks"], params=defaults["params"])
    model = build_model(run.info["model"])
    calls = {"n": 0}
    fail_at = 4  # the user's hook raises during the 5th checkpoint's forward pass

    def user_hook(_module, _inputs, _output):
        calls["n"] += 1
        if calls["n"] == fail_at + 1:
            raise RuntimeError("user hook failed")

    with torch.no_grad():
        model(torch.as_tensor(task.probe_set().inputs))  # the bridge wires its own hooks on the first pass
    handle = model.hook_dict["blocks.0.hook_resid_post"].register_forward_hook(user_hook)
    baseline = hook_count(model)
    release_model()
    monkeypatch.setattr(extract, "build_model", lambda spec: model)
    store = ActivationStore(tmp_path / "store")
    with pytest.raises(RuntimeError, match="user hook failed"):
        extract_run(run, task.probe_set(), cfg, store, progress=False)
    assert hook_count(model) == baseline                  # semgraph's hooks are gone, the user's is not
    assert list(model.hook_dict["blocks.0.hook_resid_post"]._forward_hooks.values()) == [user_hook]
    done = sorted(int(k.split("/")[1]) for k in json.loads(store.manifest_path.read_text())["entries"])
    assert done == run.steps[:fail_at]
    assert sorted(p.name for p in store.root.rglob("*") if p.is_file()) == \
        sorted([f"step_{s:08d}.h5" for s in done] + ["manifest.json"])  # no temp file of the failed one
    # the sweep resumes where it stopped: the finished checkpoints are not captured again
    report = extract_run(run, task.probe_set(), cfg, ActivationStore(tmp_path / "store"), progress=False)
    assert [s for _, s in report.reused] == run.steps[:fail_at]
    assert [s for _, s in report.captured] == run.steps[fail_at:]
    assert hook_count(model) == baseline
    handle.remove()


def test_store_compresses_only_where_it_pays(tmp_path):
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((600, 64)).astype(np.float32)
    upcast = torch.from_numpy(dense).to(torch.bfloat16).float().numpy()     # half of its bytes are zero
    store = ActivationStore(tmp_path)
    with store.writer("r", 1, {"run": "r"}) as w:
        for part in np.array_split(np.arange(600), 3):
            w.append("acts/dense", dense[part])
            w.append("acts/upcast", upcast[part])
    with h5py.File(store.path_for("r", 1)) as fh:
        assert fh["acts/dense"].compression is None
        assert fh["acts/upcast"].compression == "lzf" and fh["acts/upcast"].shuffle
        np.testing.assert_array_equal(fh["acts/dense"][()], dense)
        np.testing.assert_array_equal(fh["acts/upcast"][()], upcast)
        assert fh["acts/upcast"].id.get_storage_size() < 0.6 * upcast.nbytes


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 20_000), width=st.integers(1, 3000))
def test_chunks_tile_the_known_rows_under_the_chunk_cache(rows, width):
    """Theory: with the row count known, ceil(rows / n) rows per chunk for the fewest n chunks that fit."""
    row_bytes = 4 * width
    fit = max(1, CheckpointWriter.CHUNK_BYTES // row_bytes)        # rows that fit one chunk
    n_chunks = -(-rows // fit)
    chunk = CheckpointWriter(None, rows=rows).chunk_rows(np.zeros((min(rows, 1024), width), np.float32))
    assert chunk <= fit                                             # a chunk never outgrows the target
    assert -(-rows // chunk) == n_chunks                            # no more chunks than needed
    assert chunk * n_chunks - rows < n_chunks                       # padding: under one row per chunk


def test_known_row_count_leaves_no_padded_chunk(tmp_path):
    """2,809 rows of 512 floats (the reference probe set's MLP): stored in 11 chunks of 256 rows, not 6 of 512."""
    acts = np.random.default_rng(0).standard_normal((2809, 512)).astype(np.float32)
    store = ActivationStore(tmp_path)
    with store.writer("r", 1, {"run": "r"}, rows=len(acts), compression=None) as w:
        for start in range(0, len(acts), 1024):
            w.append("acts/mlp", acts[start:start + 1024])
    with h5py.File(store.path_for("r", 1)) as fh:
        ds = fh["acts/mlp"]
        assert ds.chunks == (256, 512)
        np.testing.assert_array_equal(ds[()], acts)
        assert ds.id.get_storage_size() == 11 * 256 * 512 * 4      # 2,816 rows stored for 2,809


def test_deferred_manifest_loses_nothing_to_a_kill(tmp_path):
    """record(flush=False) may leave the manifest behind the files; a new process adopts the finished file."""
    store = ActivationStore(tmp_path)
    store.record("r", 0, {"status": "done", "file": "r/step_00000000.h5", "source_id": "a"})  # written now
    with store.writer("r", 1, {"run": "r", "step": 1, "source_id": "b"}) as w:
        w.append("logits", np.ones((3, 2), np.float32))
    store.MANIFEST_EVERY_S = 3600.0
    store.record("r", 1, {"status": "done", "file": "r/step_00000001.h5", "source_id": "b"}, flush=False)
    on_disk = json.loads(store.manifest_path.read_text())["entries"]
    assert list(on_disk) == ["r/0"]                                 # the kill would come here
    with store.writer("r", 0, {"run": "r", "step": 0, "source_id": "a"}) as w:
        w.append("logits", np.ones((3, 2), np.float32))
    again = ActivationStore(tmp_path)                               # the re-run after the kill
    assert again.recover() == ["r/1"]
    assert again.is_done("r", 1, "b") and again.is_done("r", 0, "a")
    store.flush()
    assert set(json.loads(store.manifest_path.read_text())["entries"]) == {"r/0", "r/1"}


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(st.integers(1, 40), min_size=1, max_size=8), block_rows=st.integers(1, 50),
       width=st.integers(1, 9), dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]))
def test_block_buffer_stores_exactly_the_batches_in_order(batches, block_rows, width, dtype):
    """Whatever the block size and batch sizes: the file holds the batches' float32 values, concatenated, and
    two checkpoints written through the same reused blocks do not leak into each other."""
    import tempfile

    rows, pool = sum(batches), {}
    gen = torch.Generator().manual_seed(rows * 31 + width)
    with tempfile.TemporaryDirectory() as tmp:
        store = ActivationStore(tmp)
        for step in (0, 1):
            parts = [torch.randn(b, 3, width, generator=gen).to(dtype)[:, 1] for b in batches]  # strided views
            with store.writer("r", step, {"run": "r"}, rows=rows) as w:
                buf = extract.BlockBuffer(w, rows, pool)
                buf.BLOCK_BYTES = block_rows * width * 4
                for t in parts:
                    buf.add("acts/x", t)
                buf.close()
            with store.open("r", step) as fh:
                np.testing.assert_array_equal(fh["acts/x"][()],
                                              np.concatenate([t.to(torch.float32).numpy() for t in parts]))
        for block in pool.values():  # bounded: one block, or one batch when a batch is larger
            assert block.nbytes <= max(block_rows, max(batches)) * width * 4


def test_capture_sink_sees_each_output_once_and_keeps_nothing():
    task = ModularAddition(p=7)
    m = build_model(task.model_spec(d_model=16, n_heads=2, d_mlp=32)).eval()
    x = torch.as_tensor(task.probe_set().inputs)
    names = ["blocks.0.hook_resid_post", "blocks.0.mlp.hook_post"]
    _, cache = m.run_with_cache(x, names_filter=lambda n: n in names)
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    baseline = hook_count(m)
    with torch.no_grad(), capture(m, names, position=-1, sink=lambda n, t: seen[n].append(t.clone())) as acts:
        for start in range(0, len(x), 20):
            m(x[start:start + 20])
            check_fired(acts, names)
        assert acts.pop_batch() == {}
    assert hook_count(m) == baseline
    for n in names:
        torch.testing.assert_close(torch.cat(seen[n]), cache[n][:, -1])
