"""Hugging Face Trainer integration: ``Trainer(..., callbacks=[SemgraphCallback(recorder)])``.

Needs ``transformers`` (installed with transformer-lens; or ``pip install semgraph[hf]``). The callback
records a checkpoint at every scheduled ``state.global_step`` (step 0 before the first update included) and
appends the Trainer's logged numbers (loss, learning rate, eval metrics) to ``metrics.jsonl``.
:func:`hf_model_spec` stores the model's config so analysis rebuilds it with ``from_config`` (no hub access).
"""
from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback

from semgraph.recorder import Recorder


def hf_model_spec(model: Any, auto_class: str = "AutoModelForCausalLM") -> dict[str, Any]:
    """Model spec rebuilding ``model`` from its config with ``transformers.<auto_class>.from_config``."""
    config = model.config.to_dict()
    return {"builder": "factory", "factory": "semgraph.hf:model_from_config",
            "kwargs": {"config": config, "auto_class": auto_class}}


def model_from_config(config: dict[str, Any], auto_class: str = "AutoModelForCausalLM") -> torch.nn.Module:
    """Rebuild an (untrained) Hugging Face model from a stored config dict, offline."""
    import transformers

    cfg = dict(config)
    cfg_obj = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    return getattr(transformers, auto_class).from_config(cfg_obj)


class SemgraphCallback(TrainerCallback):
    """Record checkpoints on the Recorder's schedule and the Trainer's logs while ``Trainer.train`` runs."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        if model is not None and self.recorder.should_record(state.global_step):
            self.recorder.record(state.global_step, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        if model is not None and self.recorder.should_record(state.global_step):
            self.recorder.record(state.global_step, model)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        numbers = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            self.recorder.log(state.global_step, numbers)
