"""A real HF-Trainer-style folder (checkpoint-N/ with config.json + safetensors, one sharded) analysed without
--model: the config.json is the model spec, booted offline as a transformer-lens TransformerBridge."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from ckpt_fixtures import hf_extras  # noqa: E402
from semgraph.checkpoints import discover, read_state_dict  # noqa: E402
from semgraph.models import build_model, load_weights  # noqa: E402
from semgraph.tasks.induction import InductionText, load_corpus, random_windows  # noqa: E402

STEPS = (0, 4, 8)
SHARDED_STEP = 8
N_LAYER = 2


def _cli(*args) -> tuple[int, str]:
    from semgraph.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in args])
    return code, err.getvalue()


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """Offline as the code path demands, and any connection attempt fails loudly."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*_a, **_k):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory) -> tuple[Path, list[float]]:
    """A tiny GPT-2 (2 layers, d 32, byte vocab 128) trained a few real AdamW steps on the induction task's
    data (repeated random sequences + stdlib text), saved with save_pretrained as an HF Trainer does."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf") / "gpt2-run"
    task = InductionText(n_layers=N_LAYER)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_positions=64, n_embd=32, n_layer=N_LAYER, n_head=4,
                                       bos_token_id=0, eos_token_id=0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    train, _, _ = load_corpus()
    rng = np.random.default_rng(0)
    losses = []
    for step in range(max(STEPS) + 1):
        if step in STEPS:
            ck = root / f"checkpoint-{step}"
            model.save_pretrained(ck, **({"max_shard_size": "20KB"} if step == SHARDED_STEP else {}))
            hf_extras(ck, step)  # optimizer.pt, scheduler.pt, trainer_state.json ...: not weights
        if step == max(STEPS):
            break
        x = torch.as_tensor(np.concatenate([task.repeated_sequences(8, rng), random_windows(train, 8, 40, rng)]))
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return root, losses


def _saved(ck: Path) -> dict[str, torch.Tensor]:
    """The tensors in a checkpoint folder, read with safetensors directly (not with semgraph)."""
    from safetensors.torch import load_file
    out = {}
    for f in sorted(ck.glob("model*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_config_json_is_the_model_spec_and_weights_load_exactly(hf_run):
    root, losses = hf_run
    assert losses[-1] < losses[0]  # it really trained
    run = discover(root)[0]
    assert run.steps == list(STEPS)
    assert run.formats == ["safetensors", "safetensors-sharded"]
    spec = run.info["model"]
    assert spec["builder"] == "hf-bridge" and spec["config_file"].endswith("checkpoint-0/config.json")
    model = build_model(spec)
    from transformer_lens import TransformerBridge
    assert isinstance(model, TransformerBridge)
    for ref in run.checkpoints:
        notes = load_weights(model, read_state_dict(ref))
        ck = root / f"checkpoint-{ref.step}"
        saved = _saved(ck)
        assert len(saved) == 28 and "lm_head.weight" not in saved  # GPT-2 stores the tied unembedding once
        # every saved tensor is in the bridge, under its HF name with the bridge's wrappers removed
        raw = {k.replace("._original_component", ""): v for k, v in model.original_model.state_dict().items()}
        for k, v in saved.items():
            assert torch.equal(raw[k], v), (ref.step, k)
        assert torch.equal(raw["lm_head.weight"], saved["transformer.wte.weight"])
        assert any("re-tied lm_head.weight" in n for n in notes)
        # the forward pass reads them: logits equal transformers' own loading of the folder
        reference = transformers.GPT2LMHeadModel.from_pretrained(ck, attn_implementation="eager").eval()
        x = torch.as_tensor(InductionText().probe_set().inputs[:8])
        with torch.no_grad():
            assert torch.allclose(model(x), reference(x).logits, atol=1e-5)
    assert (root / f"checkpoint-{SHARDED_STEP}" / "model.safetensors.index.json").exists()
    # a run spec may name the config folder instead (any folder holding config.json)
    named = discover(root, {"model": {"builder": "hf-bridge", "config_dir": str(root / "checkpoint-4")}})[0]
    assert named.info["model"]["config_file"].endswith("checkpoint-4/config.json")
    assert named.info["model"]["config"] == json.loads((root / "checkpoint-4" / "config.json").read_text())
    from semgraph.inspect_cmd import format_report, inspect_folder
    report = inspect_folder(root)
    assert report["runs"][0]["model_source"]["config_file"] == spec["config_file"]
    assert f"model: {spec['config_file']} (gpt2, GPT2LMHeadModel" in format_report(report)


def test_analyze_hf_folder_without_model_flag(hf_run, tmp_path):
    import h5py

    root, _ = hf_run
    out = tmp_path / "out"
    code, err = _cli("analyze", root, "--out", out, "--workers", 1)  # the model is known, the task is not
    assert code == 2 and err.count("\n") == 1 and "Fix: pass --task" in err, err
    code, err = _cli("analyze", root, "--out", out, "--task", "induction", "--workers", 1,
                     "--compare-states", "none")
    assert code == 0, err
    graph = json.loads((out / "landscape.json").read_text())
    assert len(graph["nodes"]) >= 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"]["gpt2-run"]["checkpoints analysed"] == len(STEPS)
    manifest = json.loads((out / "store" / "manifest.json").read_text())
    entries = manifest["entries"]
    assert len(entries) == len(STEPS) and all(e["status"] == "done" for e in entries.values())
    assert all(any("TransformerBridge" in n and "checkpoint-0/config.json" in n for n in e["notes"])
               for e in entries.values())
    # the attention patterns stored are those transformers computes from the saved folder
    last = max(STEPS)
    reference = transformers.GPT2LMHeadModel.from_pretrained(root / f"checkpoint-{last}",
                                                             attn_implementation="eager").eval()
    x = torch.as_tensor(InductionText().probe_set().inputs)
    with torch.no_grad():
        attn = reference(x, output_attentions=True).attentions
    with h5py.File(out / "store" / "gpt2-run" / f"step_{last:08d}.h5") as fh:
        for layer in range(N_LAYER):  # n_layers of the induction task came from config.json
            stored = fh[f"acts/blocks.{layer}.attn.hook_pattern"][()]
            assert stored.shape == (64, 4, 40, 40)
            assert np.allclose(stored, attn[layer].numpy(), atol=1e-5)
    code, err = _cli("inspect", root)
    assert code == 0, err


def test_config_that_does_not_fit_the_weights_fails_in_one_line(hf_run, tmp_path):
    root, _ = hf_run
    bad = tmp_path / "bad-run"
    for step in STEPS:
        shutil.copytree(root / f"checkpoint-{step}", bad / f"checkpoint-{step}")
        cfg = json.loads((bad / f"checkpoint-{step}" / "config.json").read_text())
        cfg["n_embd"] = 48  # the config says a wider model than the weights hold
        (bad / f"checkpoint-{step}" / "config.json").write_text(json.dumps(cfg))
    code, err = _cli("analyze", bad, "--out", tmp_path / "out", "--task", "induction", "--workers", 1)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("semgraph: error:") and "checkpoint-0/config.json" in lines[0]
    assert "Fix:" in lines[0] and "(32," in lines[0] and "48" in lines[0]
    assert not (tmp_path / "out" / "store" / "gpt2-run").exists()  # failed before any capture
    # loading one checkpoint directly also refuses, naming the config and the file
    run = discover(bad)[0]
    model = build_model(run.info["model"])
    from semgraph.errors import CorruptCheckpointError
    with pytest.raises(CorruptCheckpointError) as exc:
        load_weights(model, read_state_dict(run.checkpoints[0]), source=str(run.checkpoints[0].path))
    assert exc.value.kind == "shape" and "config.json" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("kind", ["llama", "biogpt"])
def test_fallbacks_folder_without_tokenizer_and_architecture_without_adapter(kind, tmp_path):
    """Llama: boot_transformers cannot load a tokenizer from a Trainer folder without one, so the bridge is
    assembled with build_bridge_from_module. BioGPT: transformer-lens has no adapter, so the plain
    transformers model is used, hooked by module name. Both load strictly and compute what transformers does."""
    from semgraph.capture import capture

    torch.manual_seed(1)
    if kind == "llama":
        cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    else:
        cfg = transformers.BioGptConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=4, max_position_embeddings=64)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "run" / "checkpoint-3")
    run = discover(tmp_path / "run")[0]
    model = build_model(run.info["model"])
    load_weights(model, read_state_dict(run.checkpoints[0]))
    saved = _saved(tmp_path / "run" / "checkpoint-3")
    base = getattr(model, "original_model", model)
    raw = {k.replace("._original_component", ""): v for k, v in base.state_dict().items()}
    assert all(torch.equal(raw[k], v) for k, v in saved.items())
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "checkpoint-3",
                                                                  attn_implementation="eager").eval()
    x = torch.randint(0, 128, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = reference(x).logits
        if kind == "llama":
            assert "build_bridge_from_module" in model.semgraph_source
            assert torch.allclose(model(x), ref, atol=1e-5)
        else:
            assert "no transformer-lens adapter" in model.semgraph_source
            with capture(model, ["biogpt.layers.0.fc2"], position=None) as acts:
                out = model(x)
            assert torch.allclose(out.logits, ref, atol=1e-5)
            assert acts["biogpt.layers.0.fc2"][0].shape == (3, 12, 32)


def test_keys_transformers_ignores_are_left_out_others_refused(tmp_path):
    """Older transformers saved GPT-2's causal masks (``attn.bias``); the class declares them ignorable on load,
    so they are left out (named in the notes). Any other extra tensor is refused, naming it."""
    from safetensors.torch import load_file, save_file

    from semgraph.errors import CorruptCheckpointError

    torch.manual_seed(2)
    cfg = transformers.GPT2Config(vocab_size=128, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    ck = tmp_path / "run" / "checkpoint-1"
    transformers.GPT2LMHeadModel(cfg).save_pretrained(ck)
    state = load_file(str(ck / "model.safetensors"))
    mask = torch.tril(torch.ones(16, 16, dtype=torch.bool)).view(1, 1, 16, 16)
    save_file({**state, "transformer.h.0.attn.bias": mask}, str(ck / "model.safetensors"), metadata={"format": "pt"})
    run = discover(tmp_path / "run")[0]
    model = build_model(run.info["model"])
    notes = load_weights(model, read_state_dict(run.checkpoints[0]))
    assert any("transformer.h.0.attn.bias" in n and "ignores on load" in n for n in notes)
    save_file({**state, "transformer.h.0.attn.extra": mask.float()}, str(ck / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(CorruptCheckpointError) as exc:
        load_weights(model, read_state_dict(run.checkpoints[0]), source=str(ck / "model.safetensors"))
    assert exc.value.kind == "keys" and "transformer.h.0.attn.extra" in str(exc.value)
