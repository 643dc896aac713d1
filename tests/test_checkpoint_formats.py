"""Every generated checkpoint folder (one per format and hazard kind) loads exactly what was saved, or fails
with a one-line message naming the file and the fix. No fixture loads a wrong model silently."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ckpt_fixtures import BUILDERS, P, mlp_state, prefixed
from semgraph.checkpoints import discover, load_checkpoint, name_pattern, parse_step
from semgraph.errors import CheckpointError, CorruptCheckpointError
from semgraph.formats import safetensors_header
from semgraph.inspect_cmd import inspect_folder
from semgraph.models import load_weights


@pytest.fixture(scope="module")
def fixtures_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ckpt-fixtures")


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_fixture_loads_faithfully_or_fails_clearly(name, fixtures_root):
    fx = BUILDERS[name](fixtures_root / name)
    runs = discover(fx.folder, trust=fx.trust, payload=fx.payload)
    problems = [p for r in runs for p in r.problems]
    for expected in fx.problems:
        assert any(expected in p for p in problems), (expected, problems)
    want = {run: set(steps) | set(fx.fails.get(run, {})) for run, steps in fx.expected.items()}
    for run, fails in fx.fails.items():
        want.setdefault(run, set()).update(fails)
    got = {r.name: set(r.steps) for r in runs}
    assert got == want, (got, want)
    for run in runs:
        assert run.steps == sorted(run.steps)
        for ref in run.checkpoints:
            model = fx.model()
            try:
                notes = load_weights(model, load_checkpoint(ref).state, source=ref.label)
            except CheckpointError as exc:
                assert ref.step in fx.fails.get(run.name, {}), f"{ref.label} failed unexpectedly: {exc}"
                kind, fname = fx.fails[run.name][ref.step]
                msg = str(exc)
                assert isinstance(exc, CorruptCheckpointError) and exc.kind == kind, (exc.kind, kind, msg)
                assert "\n" not in msg and fname in msg and "Fix:" in msg, msg
                continue
            assert ref.step not in fx.fails.get(run.name, {}), f"{ref.label} loaded but must fail"
            saved = fx.expected[run.name][ref.step]
            state = model.state_dict()
            assert set(state) == set(saved)
            for k, v in saved.items():
                assert torch.equal(state[k], v.float()), (ref.label, k)
            assert all(isinstance(n, str) for n in notes)


def test_prefix_stripping_and_retie_are_reported(fixtures_root):
    from ckpt_fixtures import TiedModel, mlp_model
    fx = BUILDERS["pt-prefixes"](fixtures_root / "notes-prefixes")
    ref = {r.step: r for r in discover(fx.folder)[0].checkpoints}[9000]
    notes = load_weights(mlp_model(), load_checkpoint(ref).state, source=ref.label)
    assert any("'module.' then '_orig_mod.'" in n for n in notes), notes
    tied = BUILDERS["tied"](fixtures_root / "notes-tied")
    ref = discover(tied.folder)[0].checkpoints[0]
    notes = load_weights(TiedModel(), load_checkpoint(ref).state, source=ref.label)
    assert any("re-tied unembed.weight to embed.weight" in n for n in notes), notes


def test_prefix_is_not_stripped_when_the_model_expects_it():
    """A model whose own keys start with 'model.': nothing is stripped, and a state without the prefix is
    not silently accepted by adding or removing it in the wrong place."""
    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Linear(2, 2)
    s = {"model.weight": torch.randn(2, 2), "model.bias": torch.randn(2)}
    m = Wrapped()
    assert load_weights(m, s) == []
    assert torch.equal(m.model.weight, s["model.weight"])
    with pytest.raises(CorruptCheckpointError) as err:
        load_weights(Wrapped(), {"module.weight": s["model.weight"], "module.bias": s["model.bias"]})
    assert err.value.kind == "keys" and "model.weight" in str(err.value)


def test_steps_from_names():
    assert parse_step("epoch=3-step=1200.ckpt") == 1200
    assert parse_step("iter-0042.pt") == 42 and parse_step("step7.pth") == 7
    assert parse_step("model_12.pth") == 12 and parse_step("00500.safetensors") == 500
    assert parse_step("checkpoint-1500") == 1500 and parse_step("best.pt") is None
    assert name_pattern("epoch=3-step=1200.ckpt") == name_pattern("epoch=10-step=5000.ckpt")
    assert name_pattern("seed0_step_100.pt") != name_pattern("seed1_step_100.pt")


def test_step_from_metadata_when_the_name_has_none(tmp_path):
    for i, step in enumerate([300, 20, 1000]):
        save_file(mlp_state(i), str(tmp_path / f"snapshot_{'abc'[i]}.safetensors"), metadata={"step": str(step)})
    run = discover(tmp_path)[0]
    assert run.steps == [20, 300, 1000]


def test_inspect_reports_signatures_problems_and_identical(fixtures_root):
    fx = BUILDERS["shape-change"](fixtures_root / "inspect-shape")
    rep = inspect_folder(fx.folder)["runs"][0]
    assert len(rep["signatures"]) == 2 and any("different model signature" in p for p in rep["problems"])
    fx = BUILDERS["duplicates"](fixtures_root / "inspect-dup")
    rep = inspect_folder(fx.folder, hash_files=True)["runs"][0]
    assert rep["identical"] == [[100, 200]]
    assert any("step 300 appears 2 times" in p for p in rep["problems"])
    fx = BUILDERS["corrupt"](fixtures_root / "inspect-corrupt")
    rep = inspect_folder(fx.folder)["runs"][0]
    assert {f["step"]: f["kind"] for f in rep["failed"]} == {1: "truncated", 2: "truncated", 3: "truncated",
                                                            4: "truncated", 5: "unpickling"}
    fx = BUILDERS["hf-sharded-safetensors"](fixtures_root / "inspect-hf")
    rep = inspect_folder(fx.folder)["runs"][0]
    assert rep["steps"] == [500, 1000, 1500] and rep["formats"] == ["safetensors-sharded"]
    assert rep["signatures"][0]["parameters"] == 2 * 8 * P + P * P


def _sparse_safetensors(path: Path, n_values: int, step: int) -> None:
    """A valid safetensors file whose single tensor is ``n_values`` float32 of holes (no disk used)."""
    header = {"__metadata__": {"step": str(step)},
              "w": {"dtype": "F32", "shape": [n_values], "data_offsets": [0, 4 * n_values]}}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little"))
        fh.write(raw)
        fh.truncate(8 + len(raw) + 4 * n_values)


def test_inspect_200_checkpoints_reads_headers_only(tmp_path):
    """200 checkpoints of 1 GiB each (sparse files): reading their weights would take minutes and 200 GiB of
    memory traffic; inspect returns in seconds because it reads only headers."""
    n = 1 << 28  # 2^28 float32 = 1 GiB per file
    for step in range(0, 2000, 10):
        _sparse_safetensors(tmp_path / f"step_{step}.safetensors", n, step)
    t0 = time.perf_counter()
    report = inspect_folder(tmp_path)
    seconds = time.perf_counter() - t0
    run = report["runs"][0]
    assert run["checkpoints"] == 200 and run["steps"] == list(range(0, 2000, 10))
    assert run["signatures"][0]["parameters"] == n and run["signatures"][0]["steps"] == run["steps"]
    assert seconds < 10, seconds
    assert safetensors_header(tmp_path / "step_0.safetensors")[0] == {"w": ((n,), "F32")}


def test_cli_inspect_json_and_one_line_errors(fixtures_root, tmp_path, capsys):
    from semgraph.cli import main
    fx = BUILDERS["hf-safetensors"](fixtures_root / "cli-hf")
    assert main(["inspect", str(fx.folder), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["runs"][0]["steps"] == [500, 1000, 1500]
    assert any("optimizer.pt" in f for f in rep["runs"][0]["ignored"])
    # no model spec for a foreign folder: one line, names the folder and the fix
    assert main(["analyze", str(fx.folder), "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(fx.folder) in lines[0] and "--model" in lines[0], lines
    # a truncated checkpoint with --strict: fatal, one line naming the file
    fx = BUILDERS["corrupt"](fixtures_root / "cli-corrupt")
    code = main(["analyze", str(fx.folder), "--out", str(tmp_path / "out2"), "--strict", "--model",
                 "semgraph.tasks.mlp_modadd:onehot_mlp", "--model-kwargs", json.dumps({"p": P, "d_mlp": 8}),
                 "--task", "modular-addition", "--p", str(P), "--hooks", "mlp.hook_post"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "step_1.pt" in lines[-1] and "truncated" in lines[-1] and "Fix:" in lines[-1], lines


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["module.", "_orig_mod.", "model."]), max_size=4), st.integers(0, 10**6))
def test_any_nesting_of_wrapper_prefixes_is_undone_exactly(chain, seed):
    from ckpt_fixtures import mlp_model
    saved = mlp_state(seed % 1000)
    state = saved
    for p in reversed(chain):
        state = prefixed(state, p)
    model = mlp_model()
    load_weights(model, state)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k])
