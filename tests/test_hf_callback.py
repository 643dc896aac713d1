"""SemgraphCallback on a real Hugging Face Trainer with a tiny GPT-2 built from a config (no hub access)."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from semgraph.checkpoints import discover, read_state_dict  # noqa: E402
from semgraph.models import build_model, load_weights  # noqa: E402
from semgraph.recorder import Recorder, read_metrics  # noqa: E402


def test_trainer_callback_records_schedule_and_logs(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    from semgraph.hf import SemgraphCallback, hf_model_spec

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": (x := torch.randint(0, 32, (16,), generator=g)), "labels": x} for _ in range(32)]
    rec = Recorder(tmp_path / "run", model_spec=hf_model_spec(model), schedule="every:3")
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=6, per_device_train_batch_size=8,
                             logging_steps=3, save_strategy="no", report_to=[], use_cpu=True,
                             disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=data, callbacks=[SemgraphCallback(rec)]).train()

    run = discover(tmp_path / "run")[0]
    assert run.steps == [0, 3, 6]
    logged = read_metrics(tmp_path / "run")
    assert {3, 6} <= set(logged) and "loss" in logged[3]
    # the last checkpoint is the trained model, loaded into a model rebuilt offline from the stored config
    rebuilt = build_model(run.info["model"])
    load_weights(rebuilt, read_state_dict(run.checkpoints[-1]))
    trained = model.state_dict()
    for k, v in rebuilt.state_dict().items():
        assert torch.equal(v, trained[k].detach().cpu()), k
    # step 0 is the untrained model: it differs from the trained one
    first = read_state_dict(run.checkpoints[0])
    assert not torch.equal(first["transformer.wte.weight"], trained["transformer.wte.weight"])
