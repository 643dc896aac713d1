"""Models from a Hugging Face ``config.json`` on a local folder, booted as a transformer-lens 4.x TransformerBridge.

An HF Trainer folder (``checkpoint-N/config.json`` + ``model.safetensors`` or shards) describes its own model:
:func:`attach_specs` (called by ``semgraph.checkpoints.discover``) gives such a run the model spec
``{"builder": "hf-bridge", "config_dir": ..., "config_file": ..., "config": {...}}`` unless ``--model`` /
``--run-spec`` says otherwise, so ``semgraph analyze FOLDER --task ...`` needs no ``--model``.

:func:`build` boots the bridge with transformer-lens's own ``TransformerBridge.boot_transformers(config_dir,
load_weights=False)`` (architecture adapter, eager attention, canonical hook names such as
``blocks.0.attn.hook_pattern``). That function always loads a tokenizer from the folder
(``transformer_lens/model_bridge/sources/transformers/source.py``, ``boot``: ``AutoTokenizer.from_pretrained``);
Trainer folders often hold none, and for e.g. Llama configs that fails offline. Then the same bridge is assembled
with transformer-lens's loader-agnostic ``build_bridge_from_module`` (``model_bridge/sources/_bridge_builder.py``)
around ``AutoModelForCausalLM.from_config`` -- the tokenizer is not needed to run token ids. Architectures
transformer-lens has no adapter for fall back to the plain transformers model, hooked by module name. No path
touches the hub: the config is read from the local file, and building runs under :func:`offline`.

Weights are checked in the HF key space (the names ``save_pretrained`` writes), strictly: wrapper prefixes,
tied weights (GPT-2's ``lm_head.weight`` = ``transformer.wte.weight``) and fp16/bf16 are handled as for any
model (``semgraph.faithful``), then the bridge's own ``load_state_dict`` maps each HF name onto its modules.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from semgraph.errors import ConfigError, CorruptCheckpointError

HF_BRIDGE = "hf-bridge"
CONFIG_FILE = "config.json"
#: config.json entries that do not change the model's architecture or numerics
VOLATILE_KEYS = frozenset({"transformers_version", "_name_or_path", "dtype", "torch_dtype", "use_cache",
                           "output_attentions", "output_hidden_states", "return_dict"})
#: config entries giving the number of layers, for tasks whose hooks depend on it (induction)
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
POSITION_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "seq_length")


# ---- discovery ------------------------------------------------------------------------------------------------
def read_config(path: str | Path) -> dict[str, Any]:
    """The JSON object in an HF ``config.json`` (must name its ``model_type``)."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the model config: {exc}", path=path, stage="build model",
                          fix="restore the config.json written by save_pretrained, or pass --model") from exc
    if not isinstance(config, dict) or not config.get("model_type"):
        raise ConfigError("is not a Hugging Face model config (no 'model_type')", path=path, stage="build model",
                          fix="restore the config.json written by save_pretrained, or pass --model")
    return config


def model_spec(config_file: str | Path) -> dict[str, Any]:
    """The ``hf-bridge`` model spec for one local ``config.json``."""
    config_file = Path(config_file).resolve()
    return {"builder": HF_BRIDGE, "config_dir": str(config_file.parent), "config_file": str(config_file),
            "config": read_config(config_file)}


def config_files(run: Any) -> list[Path]:
    """``config.json`` next to each checkpoint's weights (step order), else the run folder's own."""
    found = [ref.path.parent / CONFIG_FILE for ref in run.checkpoints if (ref.path.parent / CONFIG_FILE).is_file()]
    if not found and (Path(run.path) / CONFIG_FILE).is_file():
        found = [Path(run.path) / CONFIG_FILE]
    return list(dict.fromkeys(found))


def architecture_of(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in VOLATILE_KEYS}


def attach_specs(runs: list[Any]) -> None:
    """Give foreign runs without a model spec the one their ``config.json`` describes (cheap: JSON only).

    Configs of one run that describe different models are reported in ``run.problems`` (the first, in step
    order, is used; checkpoints it does not fit fail to load with a message naming both files)."""
    for run in runs:
        given = run.info.get("model") or {}
        if given.get("builder") == HF_BRIDGE and "config" not in given:  # a run spec naming only the folder
            if not given.get("config_dir"):
                raise ConfigError("an 'hf-bridge' model spec needs 'config_dir'", stage="run spec",
                                  fix='write {"builder": "hf-bridge", "config_dir": "FOLDER/WITH/config.json"}')
            run.info = {**run.info, "model": model_spec(Path(given["config_dir"]) / CONFIG_FILE)}
            continue
        if run.info.get("format") != "foreign" or given:
            continue
        files = config_files(run)
        if not files:
            continue
        try:
            spec = model_spec(files[0])
        except ConfigError as exc:
            run.problems.append(str(exc))
            continue
        first = architecture_of(spec["config"])
        for other in files[1:]:
            try:
                cfg = architecture_of(read_config(other))
            except ConfigError as exc:
                run.problems.append(str(exc))
                continue
            diff = sorted(k for k in set(first) | set(cfg) if first.get(k) != cfg.get(k))
            if diff:
                run.problems.append(f"{other}: describes another model than {files[0]} (differs in "
                                    f"{', '.join(diff[:5])}); the model is built from {files[0]}")
        run.info = {**run.info, "model": spec}


def complete_task(info: dict[str, Any]) -> None:
    """Fill task fields a config.json answers (the induction task's ``n_layers``) when the user gave none."""
    spec, task = info.get("model") or {}, info.get("task")
    if spec.get("builder") != HF_BRIDGE or not isinstance(task, dict) or task.get("name") != "induction" \
            or "n_layers" in task:
        return
    layers = next((spec["config"][k] for k in LAYER_KEYS if isinstance(spec["config"].get(k), int)), None)
    if layers is not None:
        info["task"] = {**task, "n_layers": int(layers)}


# ---- building -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def offline() -> Iterator[None]:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set while the block runs (restored afterwards)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    hub_const = None
    try:
        import huggingface_hub.constants as hub_const  # read at import time: set it too
        old_const = hub_const.HF_HUB_OFFLINE
        hub_const.HF_HUB_OFFLINE = True
    except (ImportError, AttributeError):
        hub_const = None
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if hub_const is not None:
            hub_const.HF_HUB_OFFLINE = old_const


def _hf_config(config: Mapping[str, Any], where: str) -> Any:
    """A transformers config object from the config.json entries (no file or hub access)."""
    import transformers

    cfg = dict(config)
    try:
        return transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"transformers cannot read this config ({type(exc).__name__}: {exc})", path=where,
                          stage="build model", fix="use a config.json written by save_pretrained of a model type "
                                                   "the installed transformers knows, or pass --model") from exc


def build(spec: Mapping[str, Any]) -> torch.nn.Module:
    """A TransformerBridge (or, for architectures transformer-lens lacks, the plain HF model) from a local
    config.json, in float32, with random weights; ``load_hf_weights`` then fills in a checkpoint.

    The model records how it was built in ``semgraph_source`` and its HF parameter names in ``semgraph_hf_names``.
    """
    config = dict(spec["config"])
    where = spec.get("config_file") or "config.json"
    with offline(), tempfile.TemporaryDirectory() as tmp:
        config_dir = Path(spec.get("config_dir") or tmp)
        if not (config_dir / CONFIG_FILE).is_file() or read_config(config_dir / CONFIG_FILE) != config:
            config_dir = Path(tmp)  # the folder moved or changed: boot from the recorded config
            (config_dir / CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")
        hf_config = _hf_config(config, where)
        model, source = _boot(config_dir, hf_config, where)
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in model.parameters()):
        with contextlib.redirect_stdout(None):  # computed in float32 (the bridge's .to prints)
            model.to(torch.float32)
    model.eval()
    model.semgraph_source = source
    model.semgraph_config_file = where
    return model


def model_class(hf_config: Any) -> tuple[Any, str | None, str]:
    """(transformers class, transformer-lens architecture or None, why None) for a config."""
    import transformers
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES
    from transformer_lens.model_bridge.sources._hf_format import determine_architecture_from_hf_config
    from transformer_lens.model_bridge.sources.transformers.helpers import get_hf_model_class_for_architecture

    try:
        architecture = determine_architecture_from_hf_config(hf_config)
    except (ValueError, KeyError, AttributeError):  # its message lists every supported architecture
        named = "/".join(getattr(hf_config, "architectures", None) or [hf_config.model_type])
        return transformers.AutoModelForCausalLM, None, f"no transformer-lens adapter for {named}"
    if architecture not in SUPPORTED_ARCHITECTURES:
        return transformers.AutoModelForCausalLM, None, f"no transformer-lens adapter for {architecture}"
    return get_hf_model_class_for_architecture(architecture), architecture, ""


def _boot(config_dir: Path, hf_config: Any, where: str) -> tuple[torch.nn.Module, str]:
    from transformer_lens import TransformerBridge
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    cls, architecture, why = model_class(hf_config)
    names = list(_meta_model(cls, hf_config, where).state_dict())
    if architecture is None:  # the plain HF model, hooks by module name
        model = cls.from_config(hf_config, attn_implementation="eager")
        model.semgraph_hf_names = names
        return model, f"transformers {cls.__name__}.from_config ({why}; hooks by module name)"
    try:
        bridge = TransformerBridge.boot_transformers(str(config_dir), load_weights=False, device="cpu",
                                                     dtype=torch.float32)
        source = f"transformer-lens TransformerBridge.boot_transformers(load_weights=False) on {config_dir}"
    except (OSError, ValueError, TypeError) as exc:  # boot() always loads a tokenizer; the folder may hold none
        try:
            bridge = build_bridge_from_module(cls.from_config(hf_config, attn_implementation="eager"), architecture,
                                              hf_config=hf_config, model_name=str(config_dir))
        except Exception as exc2:  # noqa: BLE001  (adapter errors are not one class)
            raise ConfigError(f"transformer-lens cannot build {architecture} from this config "
                              f"({type(exc2).__name__}: {exc2})", path=where, stage="build model",
                              fix="pass --model package.module:function building the model") from exc2
        first = (str(exc).splitlines() or [""])[0][:100]
        source = (f"transformer-lens build_bridge_from_module({architecture}) around {cls.__name__}.from_config "
                  f"(boot_transformers could not load a tokenizer from the folder: {type(exc).__name__}: {first})")
    bridge.semgraph_hf_names = names
    return bridge, source


def _meta_model(cls: Any, hf_config: Any, where: str) -> torch.nn.Module:
    """The HF model a config describes, on the meta device (names and shapes, no memory)."""
    try:
        with offline(), torch.device("meta"):
            return cls.from_config(hf_config)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"transformers cannot build a model from this config ({type(exc).__name__}: {exc})",
                          path=where, stage="build model",
                          fix="use a config.json written by save_pretrained, or pass --model") from exc


# ---- weights --------------------------------------------------------------------------------------------------
def ignored_on_load(cls: Any, keys: Any, expected: Any) -> list[str]:
    """Keys not in the model that its transformers class declares ignorable when loading
    (``_keys_to_ignore_on_load_unexpected``, e.g. GPT-2's ``attn.bias`` causal masks older versions saved)."""
    import re

    patterns = getattr(cls, "_keys_to_ignore_on_load_unexpected", None) or []
    return sorted(k for k in keys if k not in expected and any(re.search(p, k) for p in patterns))


def hf_named(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors under the names ``save_pretrained`` writes (bridge wrappers removed)."""
    names = set(model.semgraph_hf_names)
    base = getattr(model, "original_model", None)
    raw = (base if base is not None else model).state_dict(keep_vars=True)
    out: dict[str, torch.Tensor] = {}
    for key, t in raw.items():
        clean = key.replace("._original_component", "")
        if clean in names and clean not in out:
            out[clean] = t
    return out


def load_hf_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, source: str,
                    config_file: str | None, dtype: torch.dtype = torch.float32) -> list[str]:
    """Copy an HF-named state dict into a model from :func:`build`, demanding exact coverage."""
    from semgraph.faithful import fit_to_model

    named = hf_named(model)
    where = config_file or "config.json"
    fix = (f"the weights were not saved from the model {where} describes: restore the config.json saved with "
           f"them (save_pretrained writes both), or pass --model")
    dropped = ignored_on_load(type(getattr(model, "original_model", model)), state, named)
    state = {k: v for k, v in state.items() if k not in dropped}
    try:
        state, notes = fit_to_model(model, state, source=source, named=named)
        notes.insert(0, f"model from {where}: {getattr(model, 'semgraph_source', 'hf')}")
        if dropped:
            notes.insert(1, f"left out {len(dropped)} tensors transformers ignores on load ({dropped[0]} ...)")
    except CorruptCheckpointError as exc:
        raise CorruptCheckpointError(f"{exc.message} (model from {where})",
                                     kind=exc.kind, path=source, stage="load weights", fix=fix) from None
    bad = [f"{k}: file {tuple(state[k].shape)} vs {where} {tuple(v.shape)}"
           for k, v in named.items() if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        from semgraph.models import _few
        raise CorruptCheckpointError(f"shape mismatch: {_few(bad)}", kind="shape", path=source,
                                     stage="load weights", fix=fix)
    low = sorted({str(v.dtype).replace("torch.", "") for v in state.values()
                  if v.is_floating_point() and v.dtype != dtype})
    if low:
        notes.append(f"{'/'.join(low)} weights computed in {str(dtype).replace('torch.', '')}")
    converted = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    if hasattr(model, "original_model"):  # the bridge maps HF names onto its modules (views share storage)
        result = model.load_state_dict(converted, strict=False)
        if result.unexpected_keys:
            raise CorruptCheckpointError(f"the bridge has no place for {sorted(result.unexpected_keys)[:5]}",
                                         kind="keys", path=source, stage="load weights", fix=fix)
    else:
        model.load_state_dict(converted, strict=True)
    unequal = [k for k, t in hf_named(model).items() if not torch.equal(t.detach(), converted[k])]
    if unequal:  # every HF-named tensor the forward pass reads must now hold the file's values
        raise CorruptCheckpointError(f"weights did not load into {unequal[:5]}", kind="keys", path=source,
                                     stage="load weights", fix="report this model type to semgraph; pass --model")
    return notes


# ---- before capture -----------------------------------------------------------------------------------------
def preflight(run: Any, inputs: Any) -> None:
    """Fail early, in one line, when the run's config.json fits none of its checkpoints or not the probe set.

    Expected names and shapes come from the HF model built on the meta device (no memory, no weights); the
    checkpoints' from their headers (safetensors) or memory-mapped pickles. One checkpoint that fits is enough:
    single bad checkpoints are skipped later with their own message."""
    import numpy as np

    spec = run.info.get("model") or {}
    if spec.get("builder") != HF_BRIDGE:
        return
    config, where = spec["config"], spec.get("config_file") or "config.json"
    vocab = config.get("vocab_size")
    top = int(np.max(inputs)) if np.size(inputs) else 0
    if isinstance(vocab, int) and top >= vocab:
        raise ConfigError(f"the task's inputs use token ids up to {top} but the model's vocab_size is {vocab}",
                          path=where, stage="analyze", fix="pass the --task the model was trained on")
    n_pos = next((config[k] for k in POSITION_KEYS if isinstance(config.get(k), int)), None)
    length = int(np.shape(inputs)[-1]) if np.ndim(inputs) >= 2 else 1
    if n_pos is not None and length > n_pos:
        raise ConfigError(f"the task's inputs are {length} tokens long but the model takes {n_pos} positions",
                          path=where, stage="analyze", fix="pass the --task (and its lengths) the model was trained on")
    expected = _meta_shapes(config, where)
    from semgraph.faithful import _covers, align_prefixes
    from semgraph.inspect_cmd import tensor_shapes

    names, ties, cls = expected
    first_problem = None
    for ref in run.checkpoints:
        try:
            shapes = tensor_shapes(ref)[0]
        except CorruptCheckpointError:
            continue  # reported when it is loaded
        skip = set(ignored_on_load(cls, shapes, names))
        keys = {k: k for k in shapes if k not in skip}
        aligned, _ = align_prefixes(keys, set(names), ties)
        if _covers(set(aligned), set(names), ties) and all(
                tuple(shapes[orig]) == names[k] for k, orig in aligned.items()):
            return
        if first_problem is None:
            missing = sorted(set(names) - set(aligned))
            unexpected = sorted(set(aligned) - set(names))
            shape = [f"{k}: file {tuple(shapes[o])} vs config {names[k]}" for k, o in aligned.items()
                     if k in names and tuple(shapes[o]) != names[k]]
            from semgraph.models import _few
            first_problem = (ref, "; ".join(x for x in (
                shape and f"shapes differ: {_few(shape, 3)}",
                missing and f"missing {_few(missing, 3)}",
                unexpected and f"unexpected {_few(unexpected, 3)}") if x))
    if first_problem is not None:
        ref, detail = first_problem
        raise ConfigError(f"describes a model none of the {len(run.checkpoints)} checkpoints fits (e.g. "
                          f"{ref.label}: {detail})", path=where, stage="analyze",
                          fix="restore the config.json saved with these weights (save_pretrained writes both), "
                              "or pass --model package.module:function")


def _meta_shapes(config: Mapping[str, Any], where: str) -> tuple[dict[str, tuple[int, ...]], list[list[str]], type]:
    """HF parameter names -> shapes, tied name groups, and the transformers class of the model a config
    describes (built on the meta device)."""
    with offline():
        hf_config = _hf_config(config, where)
    model = _meta_model(model_class(hf_config)[0], hf_config, where)
    named = model.state_dict(keep_vars=True)
    groups: dict[int, list[str]] = {}
    for k, t in named.items():
        groups.setdefault(id(t), []).append(k)
    return ({k: tuple(t.shape) for k, t in named.items()}, [g for g in groups.values() if len(g) > 1],
            type(model))
