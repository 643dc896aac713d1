"""Build a model from a stored spec and load weights into it with full key coverage."""
from __future__ import annotations

import importlib
from typing import Any, Mapping

import torch

from semgraph.errors import ConfigError, CorruptCheckpointError

TL_NATIVE = "transformer-lens-native"


def build_model(spec: Mapping[str, Any]) -> torch.nn.Module:
    """Rebuild an (untrained) model from ``spec`` as stored in a run's ``run.json``.

    ``{"builder": "transformer-lens-native", "config": {...TransformerBridgeConfig fields...}}`` boots a
    TransformerBridge with ``boot_native`` (no hub, no network); ``{"builder": "factory",
    "factory": "package.module:function", "kwargs": {...}}`` calls a user function returning any
    ``torch.nn.Module``; ``{"builder": "hf-bridge", "config_dir": ..., "config": {...config.json...}}`` boots a
    TransformerBridge from a local HF config.json (semgraph.hf_bridge; no hub).
    """
    builder = spec.get("builder")
    if builder == TL_NATIVE:
        return boot_native(spec["config"])
    if builder == "hf-bridge":
        from semgraph.hf_bridge import build
        return build(spec)
    if builder == "factory":
        return call_factory(spec["factory"], spec.get("kwargs") or {})
    raise ConfigError(f"unknown model builder {builder!r}", stage="build model",
                      fix=f"use {TL_NATIVE!r}, 'hf-bridge' or 'factory' in run.json's model entry")


def boot_native(config: Mapping[str, Any]) -> torch.nn.Module:
    import transformer_lens.model_bridge.sources.native  # noqa: F401  (attaches boot_native)
    from transformer_lens import TransformerBridge
    from transformer_lens.config import TransformerBridgeConfig

    return TransformerBridge.boot_native(TransformerBridgeConfig(**dict(config)))


def call_factory(target: str, kwargs: Mapping[str, Any]) -> torch.nn.Module:
    """Import ``package.module:function`` and call it with ``kwargs``."""
    if ":" not in target:
        raise ConfigError(f"model factory {target!r} is not of the form package.module:function",
                          stage="build model", fix="pass e.g. --model mypkg.models:make_mlp")
    module_name, fn_name = target.split(":", 1)
    try:
        fn = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import the module of model factory {target!r}: {exc}", stage="build model",
                          fix=f"run from the folder holding {module_name.replace('.', '/')}.py, add it to "
                              f"PYTHONPATH, or pip install -e your package") from exc
    try:
        for part in fn_name.split("."):
            fn = getattr(fn, part)
    except AttributeError as exc:
        raise ConfigError(f"module {module_name!r} has no {fn_name!r} (model factory {target!r})",
                          stage="build model", fix=f"check the name after ':' in {target!r}") from exc
    model = fn(**dict(kwargs))
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model factory {target!r} returned {type(model).__name__}, not a torch.nn.Module",
                          stage="build model", fix="return an nn.Module from the factory")
    return model


def load_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "checkpoint",
                 dtype: torch.dtype = torch.float32) -> list[str]:
    """Copy ``state`` into ``model`` demanding exact coverage of parameters and buffers.

    Missing keys, unexpected keys and shape mismatches are errors naming the keys: a model left partly
    random would otherwise be analysed silently. Wrapper prefixes, legacy HookedTransformer keys and tied
    weights are handled by :func:`semgraph.faithful.fit_to_model`. Floating tensors are upcast to ``dtype``
    (fp16/bf16 on CPU). Returns notes on what was done (prefixes stripped, weights re-tied, dtype upcast).
    """
    from semgraph.faithful import fit_to_model

    if hasattr(model, "semgraph_hf_names"):  # built from an HF config.json: HF names, mapped by the bridge
        from semgraph.hf_bridge import load_hf_weights
        return load_hf_weights(model, state, source=source, config_file=getattr(model, "semgraph_config_file", None),
                               dtype=dtype)
    state, notes = fit_to_model(model, state, source=source)
    expected = model.state_dict()
    bad = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
           for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise CorruptCheckpointError(f"shape mismatch: {_few(bad)}", kind="shape", path=source,
                                     stage="load weights",
                                     fix="the checkpoint was saved from a different model size; fix the model spec")
    low = sorted({str(v.dtype).replace("torch.", "") for v in state.values()
                  if v.is_floating_point() and v.dtype != dtype})
    if low:
        notes.append(f"{'/'.join(low)} weights computed in {str(dtype).replace('torch.', '')}")
    converted = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    model.load_state_dict(converted, strict=True)
    return notes


def _few(items: list[str], n: int = 5) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def factory_spec(factory: Any, **kwargs: Any) -> dict[str, Any]:
    """Model spec for any ``torch.nn.Module``: the importable function (or class) that builds it, and its
    keyword arguments (JSON-serialisable), e.g. ``factory_spec(make_mlp, hidden=64)``."""
    module, qualname = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
    if not module or not qualname or "<" in qualname:
        raise ConfigError(f"{factory!r} cannot be imported by name (a lambda or a local function)",
                          stage="record", fix="define the model factory at module level")
    if module == "__main__":  # the running script: `semgraph analyze` (another process) cannot import it
        raise ConfigError(f"model factory {qualname!r} is defined in the script being run (__main__), which "
                          f"`semgraph analyze` cannot import", stage="record",
                          fix=f"move {qualname} into a module (e.g. mymodels.py), import it from there, and run "
                              f"analyze where that module is importable (same folder, PYTHONPATH or pip install -e)")
    return {"builder": "factory", "factory": f"{module}:{qualname}", "kwargs": dict(kwargs)}
