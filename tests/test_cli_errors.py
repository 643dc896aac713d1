"""Careless-user input found by a new-user trial: each is one line on stderr, exit 2, and no lost work."""
from __future__ import annotations

import json
import shutil

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
    # a folder below a file: caught by the one-line fallback for paths semgraph did not check itself
    assert main(["analyze", str(tiny_run_master), "--out", str(target / "sub")]) == 2
    msg = one_line(capsys)
    assert str(target) in msg and "stage: analyze" in msg


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
