"""Careless-user input found by a new-user trial: each is one line on stderr, exit 2, and no lost work."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from semgraph.analyze import analyze
from semgraph.cli import main


def one_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not ln.startswith("warning:")]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_analyze_out_that_is_a_file(tiny_run_master, tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    assert main(["analyze", str(tiny_run_master), "--out", str(target)]) == 2
    assert str(target) in one_line(capsys) and target.read_text() == "keep me"
    # a folder below a file: refused before any work, naming the --out folder
    assert main(["analyze", str(tiny_run_master), "--out", str(target / "sub")]) == 2
    msg = one_line(capsys)
    assert msg.startswith(f"semgraph: error: [analyze] {target / 'sub'}: --out cannot be written") and "Fix:" in msg


def _read_only(folder) -> list[str]:
    """A command prefix under which ``folder`` cannot be written: a read-only bind mount in a private mount
    namespace for root (whom permissions do not stop), else mode 0o555."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    prefix = ["unshare", "--mount", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(folder)]
    probe = subprocess.run([*prefix, "touch", str(folder / "x")], capture_output=True, text=True)
    if shutil.which("unshare") is None or "Read-only file system" not in probe.stderr:
        pytest.skip("running as root where no read-only mount can be made")
    return prefix


def test_analyze_into_a_read_only_folder_names_it(tiny_run_master, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    prefix = _read_only(out)
    try:
        res = subprocess.run([*prefix, sys.executable, "-m", "semgraph.cli", "analyze", str(tiny_run_master),
                              "--out", str(out)], capture_output=True, text=True, timeout=300)
    finally:
        out.chmod(0o755)
    err = [ln for ln in res.stderr.strip().splitlines() if not ln.startswith("warning:")]
    assert res.returncode == 2 and len(err) == 1, res.stderr
    assert err[0].startswith(f"semgraph: error: [analyze] {out}: --out cannot be written (Read-only file system)") \
        or err[0].startswith(f"semgraph: error: [analyze] {out}: --out cannot be written (Permission denied)"), err
    assert list(out.iterdir()) == []


def test_damaged_pairs_file_is_named_as_a_pairs_file(tiny_run_master, tmp_path, capsys):
    import torch
    pairs = tmp_path / "train_data.pth"
    torch.save(torch.tensor([[0, 1], [2, 3], [4, 5]]), pairs)
    with open(pairs, "r+b") as fh:
        fh.truncate(100)
    bad_json = tmp_path / "test_pairs.json"
    bad_json.write_text("[[0, 1], [2,")
    for bad in (pairs, bad_json):
        assert main(["analyze", str(tiny_run_master), "--out", str(tmp_path / "out"), "--task", "modular-addition",
                     "--p", "23", "--train-pairs", str(bad)]) == 2
        msg = one_line(capsys)
        assert msg.startswith(f"semgraph: error: [run spec] {bad}: cannot read the pairs file"), msg
        assert "train/test split" in msg and "load checkpoint" not in msg


def test_export_never_replaces_the_analysis_graph_and_observe_reads_typed_conversions(tiny_reference, tmp_path,
                                                                                      capsys):
    folder = tmp_path / "analysis"
    shutil.copytree(tiny_reference, folder)
    original = (folder / "landscape.json").read_bytes()
    assert main(["export", str(folder / "landscape.graphml"), "--format", "json"]) == 2
    assert "already exists" in one_line(capsys)
    assert (folder / "landscape.json").read_bytes() == original
    # forced on purpose: run_info and trajectories now come back as JSON text from GraphML; observe decodes it
    assert main(["observe", str(folder)]) == 0
    expected = json.loads((folder / "observables.json").read_text())
    assert main(["export", str(folder / "landscape.graphml"), "--format", "json",
                 "--out", str(folder / "landscape.json")]) == 0
    assert main(["observe", str(folder)]) == 0
    got = json.loads((folder / "observables.json").read_text())
    assert got["runs"] == expected["runs"] and got["grokking_probability"] == expected["grokking_probability"]


def test_inspect_and_observe_on_the_wrong_kind_of_path(tiny_reference, tmp_path, capsys):
    assert main(["inspect", str(tiny_reference)]) == 2
    assert "output folder of `semgraph analyze`" in one_line(capsys)
    afile = tmp_path / "a.txt"
    afile.write_text("x")
    assert main(["observe", str(afile)]) == 2
    assert "not an analysis folder" in one_line(capsys)


def test_factories_that_analyze_could_not_import_are_refused_with_the_reason():
    import pytest
    import torch

    from semgraph.errors import ConfigError
    from semgraph.models import call_factory, factory_spec

    def make_mlp(hidden: int = 4) -> torch.nn.Module:
        return torch.nn.Linear(2, hidden)
    make_mlp.__module__, make_mlp.__qualname__ = "__main__", "make_mlp"   # as defined in a training script
    with pytest.raises(ConfigError, match="script being run"):
        factory_spec(make_mlp)
    with pytest.raises(ConfigError, match="has no 'nope'"):
        call_factory("json:nope", {})                                    # the module imports; the name is wrong
    with pytest.raises(ConfigError, match="cannot import the module"):
        call_factory("no_such_module_for_semgraph:make", {})


def test_model_kwargs_flag_is_parsed_and_applied_or_refused(tmp_path):
    import pytest

    from semgraph.cli import build_parser
    from semgraph.errors import ConfigError
    from semgraph.runspec import from_args

    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"model": {"builder": "factory", "factory": "m:f", "kwargs": {"h": 1}},
                                     "task": {"name": "digits"}}))

    def spec(*flags):
        return from_args(build_parser().parse_args(["analyze", str(tmp_path), "--out", str(tmp_path / "o"), *flags]))
    assert spec("--run-spec", str(spec_file), "--model-kwargs", '{"h": 2}')["model"]["kwargs"] == {"h": 2}
    with pytest.raises(ConfigError, match="not JSON"):
        spec("--run-spec", str(spec_file), "--model-kwargs", "{h: 2}")
    with pytest.raises(ConfigError, match="needs --model"):
        spec("--model-kwargs", '{"h": 2}')


def test_linear_hook_probes_the_task_concept():
    from semgraph.runspec import analysis_settings
    from semgraph.tasks import Digits, ModularAddition

    info = {"analysis": {"hooks": ["1"], "probes": [["output", {}], ["linear", {"concept": None, "hook": "1"}]]}}
    digits = dict(analysis_settings(Digits().analysis_defaults(), info)["probes"])
    assert digits["linear"] == {"concept": "digit", "hook": "1"}
    modadd = dict(analysis_settings(ModularAddition(p=7).analysis_defaults(), info)["probes"])
    assert modadd["linear"]["concept"] == "a+b mod p"


def test_inspect_reads_wrapper_prefixed_state_dicts_as_the_same_model(tmp_path, capsys):
    """Theory: `module.` on every key is a DataParallel wrapper; analyze strips it, so inspect must not call it
    another model. A key that is really missing still is one."""
    import torch

    from semgraph.faithful import common_wrapper_prefixes

    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for step in (2, 10, 20):
        state = net.state_dict()
        if step == 10:
            state = {f"module.{k}": v for k, v in state.items()}
        if step == 20:
            state = {k: v for k, v in state.items() if k != "2.bias"}
        torch.save(state, folder / f"step{step}.pt")
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "wrapper prefix 'module.' on every key at steps 10" in out
    problems = [ln for ln in out.splitlines() if "problem:" in ln]
    assert len(problems) == 1 and "step 20 has a different model signature" in problems[0]
    assert "2.bias: [3] -> absent" in problems[0]
    assert common_wrapper_prefixes(["module.model.a", "module.model.b"])[1] == ["module.", "model."]
    assert common_wrapper_prefixes(["module.a", "b"])[1] == []          # not on every key: not a wrapper


def test_observe_on_a_damaged_checkpoints_table_is_one_line(tiny_reference, tmp_path, capsys):
    for name, damage in (("binary", b"garbage\x00\xff{{"), ("text", b"garbage {{\n")):
        folder = tmp_path / name
        shutil.copytree(tiny_reference, folder)
        (folder / "checkpoints.csv").write_bytes(damage)
        assert main(["observe", str(folder)]) == 2
        msg = one_line(capsys)
        assert f"[observe] {folder / 'checkpoints.csv'}: checkpoints table" in msg and "semgraph analyze" in msg


def test_files_of_two_analyses_in_one_folder_are_named_not_mixed(tiny_run_master, tiny_reference, tmp_path, capsys):
    """A kill while analyze rewrote its outputs one by one can leave files of two analyses side by side."""
    other = tmp_path / "other"
    analyze(tiny_run_master, other, progress=False, states="hmm", compare_states=[])
    nodes = lambda d: set(json.loads((d / "summary.json").read_text())["nodes"])  # noqa: E731
    assert nodes(other) != nodes(tiny_reference)           # the two analyses found different node sets
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_reference, mixed)
    for name in ("landscape.json", "landscape.graphml", "landscape.gexf"):   # the new graph got written...
        shutil.copy(other / name, mixed / name)              # ...then the kill: the old table and summary remain
    assert main(["observe", str(mixed)]) == 2
    msg = one_line(capsys)
    assert "files from different analyses" in msg and "checkpoints.csv assigns checkpoints" in msg
    assert main(["report", str(mixed)]) == 0          # the report is written, and says what does not fit
    err = capsys.readouterr().err
    assert re.search(r"warning: \S+report\.html: (checkpoints\.csv assigns|summary\.json lists) .*\(files "
                     r"from different analyses", err), err
    assert "files from different analyses" in (mixed / "report.html").read_text()
    assert main(["observe", str(tiny_reference)]) == 0     # one analysis: nothing to say
