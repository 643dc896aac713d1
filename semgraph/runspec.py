"""Run specs for folders semgraph did not write: which model to build, which task, which hooks and probes.

A run spec is the part of ``run.json`` a foreign folder lacks::

    {"model": {"builder": "factory", "factory": "pkg.module:function", "kwargs": {...}},
     "task": {"name": "modular-addition", "p": 23, "train_pairs": [[a, b], ...]},
     "analysis": {"hooks": [...], "params": [...], "probes": [[name, {params}], ...], "signature": [...]}}

It comes from a JSON file (``--run-spec FILE``) and/or command-line flags (``--model``, ``--task``, ``--p``,
``--train-pairs``, ``--hooks``, ``--fourier-param`` ...); flags override the file. ``analysis`` entries
override the task's defaults key by key.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from semgraph.errors import CheckpointError, ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``analyze`` and ``inspect`` for folders without semgraph's run.json."""
    g = p.add_argument_group("folders without run.json (checkpoints written by other code)")
    g.add_argument("--run-spec", help="JSON file with 'model', 'task' and optional 'analysis' entries")
    g.add_argument("--model", help="model factory package.module:function returning a torch.nn.Module")
    g.add_argument("--model-kwargs", help="JSON object of keyword arguments for the model factory")
    g.add_argument("--task", choices=["modular-addition", "induction", "digits"],
                   help="the task the run was trained on (induction: a causal LM on bytes, vocab >= 128; "
                        "digits: scikit-learn's 8x8 digits)")
    g.add_argument("--p", type=int, help="modulus of the modular-addition task")
    g.add_argument("--train-fraction", type=float, help="train fraction (when the split is seeded)")
    g.add_argument("--seed", type=int, help="split seed (when the split is seeded)")
    g.add_argument("--train-pairs", help="file with the training (a, b) pairs (.pth/.pt list, or .json)")
    g.add_argument("--test-pairs", help="file with the test (a, b) pairs (.pth/.pt list, or .json)")
    g.add_argument("--hooks", help="comma-separated hook points or module names to capture")
    g.add_argument("--params", help="comma-separated weight names to store for probes")
    g.add_argument("--fourier-param", help="weight whose token axis the Fourier probe reads (e.g. mlp.W_in)")
    g.add_argument("--fourier-token-axis", type=int, default=None, help="token axis of --fourier-param")
    g.add_argument("--neuron-hook", help="hook/module whose outputs are the neurons for the Fourier probe")
    g.add_argument("--linear-hook", help="hook/module for the linear probe of the task's concept (a+b mod p, "
                                         "the digit; slow; off by default with --hooks)")
    g.add_argument("--payload", help="container entry holding the weights when several could (e.g. ema)")
    g.add_argument("--trust-checkpoints", action="store_true",
                   help="allow full unpickling of torch checkpoints (only for files you trust)")


def read_pairs(path: str | Path) -> list[list[int]]:
    """(a, b) pairs from a torch file (weights_only) or JSON: a list of pairs, or a (n, 2) tensor/array."""
    from semgraph.formats import torch_load

    path = Path(path)
    if not path.exists():
        raise ConfigError("pairs file does not exist", path=path, stage="run spec",
                          fix="pass the train/test split file the run was trained with")
    try:
        obj = json.loads(path.read_text(encoding="utf-8")) if path.suffix == ".json" else torch_load(path)
    except (CheckpointError, UnicodeDecodeError, json.JSONDecodeError) as exc:  # the file's reason, the pairs' fix
        reason = exc.message if isinstance(exc, CheckpointError) else str(exc)
        raise ConfigError(f"cannot read the pairs file ({reason})", path=path, stage="run spec",
                          fix="pass an intact copy of the train/test split file the run was trained with") from exc
    try:
        import numpy as np
        arr = np.asarray([[int(v) for v in pair] for pair in (obj.tolist() if hasattr(obj, "tolist") else obj)])
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"shape {arr.shape}")
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"does not hold a list of (a, b) pairs ({exc})", path=path, stage="run spec",
                          fix="pass a file holding [(a, b), ...]") from exc
    return arr.tolist()


def _split(text: str | None) -> list[str] | None:
    return None if not text else [s.strip() for s in text.split(",") if s.strip()]


def from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """The run spec the flags (and ``--run-spec`` file) describe, or None when none were given."""
    spec: dict[str, Any] = {}
    if getattr(args, "run_spec", None):
        path = Path(args.run_spec)
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read run spec: {exc}", path=path, stage="run spec",
                              fix="write a JSON object with 'model', 'task' and optional 'analysis'") from exc
        if not isinstance(spec, dict):
            raise ConfigError("run spec is not a JSON object", path=path, stage="run spec",
                              fix="write a JSON object with 'model', 'task' and optional 'analysis'")
    kwargs = None
    if getattr(args, "model_kwargs", None):
        try:
            kwargs = json.loads(args.model_kwargs)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--model-kwargs is not JSON: {exc}", stage="run spec",
                              fix="""pass e.g. --model-kwargs '{"p": 23, "d_mlp": 512}'""") from exc
    if getattr(args, "model", None):
        spec["model"] = {"builder": "factory", "factory": args.model, "kwargs": kwargs or {}}
    elif kwargs is not None:  # flags win over the --run-spec file, key by key
        if spec.get("model", {}).get("builder") != "factory":
            raise ConfigError("--model-kwargs needs --model (or a --run-spec whose model is a factory)",
                              stage="run spec", fix="pass --model package.module:function as well")
        spec["model"] = {**spec["model"], "kwargs": kwargs}
    task = dict(spec.get("task") or {})
    if getattr(args, "task", None):
        task["name"] = args.task
    for flag in ("p", "train_fraction", "seed"):
        if getattr(args, flag, None) is not None:
            task[flag] = getattr(args, flag)
    for flag in ("train_pairs", "test_pairs"):
        if getattr(args, flag, None):
            task[flag] = read_pairs(getattr(args, flag))
    if task:
        spec["task"] = task
    analysis = dict(spec.get("analysis") or {})
    hooks, params = _split(getattr(args, "hooks", None)), _split(getattr(args, "params", None))
    fparam = getattr(args, "fourier_param", None)
    if hooks:
        analysis["hooks"] = hooks
    if fparam:
        params = (params or []) + ([fparam] if fparam not in (params or []) else [])
    if params or hooks:  # own probes: the task's default weights (e.g. embed.weight) are not needed
        analysis["params"] = params or []
    if hooks or fparam or getattr(args, "linear_hook", None):
        probes = [["output", {}]]
        neuron = getattr(args, "neuron_hook", None)
        if fparam:
            fourier = {"embedding_param": fparam, "neuron_hook": neuron}
            if getattr(args, "fourier_token_axis", None) is not None:
                fourier["token_axis"] = args.fourier_token_axis
            probes.append(["fourier", fourier])
            per_neuron = {"param": fparam, **({"token_axis": fourier["token_axis"]} if "token_axis" in fourier else {})}
            probes.append(["neuron_fourier", per_neuron])  # one frequency per neuron (probes/neuron_fourier.py)
        if getattr(args, "linear_hook", None):
            probes.append(["linear", {"concept": None, "hook": args.linear_hook}])  # None: the task's concept
        analysis["probes"] = probes
    if analysis:
        spec["analysis"] = analysis
    return spec or None


def analysis_settings(defaults: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """Task defaults with a run's ``analysis`` overrides applied (hooks, params, probes, signature)."""
    out = dict(defaults)
    for key, value in (info.get("analysis") or {}).items():
        if value is not None:
            out[key] = [tuple(v) if isinstance(v, list) and key == "probes" else v for v in value] \
                if key == "probes" else value
    if any(name == "linear" and kw.get("concept") is None for name, kw in out.get("probes", [])):
        concept = next((kw["concept"] for name, kw in defaults.get("probes", [])
                        if name in ("linear", "linear_per_layer") and kw.get("concept")), "a+b mod p")
        out["probes"] = [(name, {**kw, "concept": concept} if name == "linear" and kw.get("concept") is None
                          else kw) for name, kw in out["probes"]]
    missing_params = [p for name, kw in out.get("probes", []) if name in ("fourier", "neuron_fourier")
                      for p in [kw.get("embedding_param" if name == "fourier" else "param", "embed.weight")]
                      if p not in out.get("params", [])]
    if missing_params:
        out["params"] = list(out.get("params", [])) + missing_params
    return out
