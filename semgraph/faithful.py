"""Make a state dict from disk fit its model exactly, or say precisely why it cannot.

- Wrapper prefixes (``module.`` from DataParallel/DDP, ``_orig_mod.`` from torch.compile, ``model.`` from
  Lightning, nested in any order) are stripped only when stripping makes the keys match the model.
- Legacy HookedTransformer state dicts (``embed.W_E``, ``blocks.0.attn.W_Q``...) are converted with
  transformer-lens 4.x's own ``convert_tl_checkpoint`` when the model is a TransformerBridge.
- Tied weights (two names sharing one tensor in the model) absent from the file under one name are
  re-tied from the other and named in the notes; tied names holding different values are an error.
- Anything else missing or unexpected is an error naming the keys (``kind="keys"``).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch

from semgraph.errors import CorruptCheckpointError

WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
LEGACY_TL_SUFFIXES = (".W_E", ".W_pos", ".W_Q", ".W_K", ".W_V", ".W_O", ".W_U", ".W_in", ".W_out")


def tied_groups(model: torch.nn.Module) -> list[list[str]]:
    """Groups of state-dict names that share one tensor in ``model`` (e.g. tied embedding/unembedding)."""
    return tied_groups_of(model.state_dict(keep_vars=True))


def tied_groups_of(named: Mapping[str, torch.Tensor]) -> list[list[str]]:
    """Groups of names (of a name -> tensor mapping) that share one tensor."""
    groups: dict[tuple, list[str]] = {}
    for name, t in named.items():
        if t.numel() == 0:
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        groups.setdefault(key, []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def _covers(keys: set[str], expected: set[str], ties: list[list[str]]) -> bool:
    if not keys <= expected:
        return False
    missing = expected - keys
    return all(any(m in g and any(o in keys for o in g) for g in ties) for m in missing)


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor] | None:
    if not any(k.startswith(prefix) for k in state):
        return None
    out = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
    return out if len(out) == len(state) else None  # stripping must not merge two keys


def common_wrapper_prefixes(names: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Strip wrapper prefixes that every name carries (repeatedly): {original: stripped}, prefixes removed.

    Without a model to match against (``semgraph inspect``) this is the safe reading: a prefix on every key
    is a wrapper, as ``load_weights`` will find when it fits the file to the model."""
    mapping = {n: n for n in names}
    chain: list[str] = []
    while mapping:
        prefix = next((p for p in WRAPPER_PREFIXES if all(v.startswith(p) for v in mapping.values())), None)
        stripped = {k: v[len(prefix):] for k, v in mapping.items()} if prefix else None
        if not prefix or len(set(stripped.values())) != len(mapping) or "" in stripped.values():
            break
        mapping, chain = stripped, chain + [prefix]
    return mapping, chain


def align_prefixes(state: Mapping[str, torch.Tensor], expected: set[str], ties: list[list[str]]
                   ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Strip wrapper prefixes (breadth-first over sequences, up to 4 deep) until the keys match."""
    frontier: list[tuple[dict[str, torch.Tensor], list[str]]] = [(dict(state), [])]
    for _ in range(5):
        nxt = []
        for cand, chain in frontier:
            if _covers(set(cand), expected, ties):
                return cand, chain
            for p in WRAPPER_PREFIXES:
                stripped = _strip(cand, p)
                if stripped is not None:
                    nxt.append((stripped, chain + [p]))
        frontier = nxt
        if not frontier:
            break
    return dict(state), []


def is_legacy_tl(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.endswith(LEGACY_TL_SUFFIXES) for k in state) and any(".W_" in k for k in state)


def convert_legacy_tl(state: Mapping[str, torch.Tensor], model: torch.nn.Module, source: str
                      ) -> dict[str, torch.Tensor]:
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise CorruptCheckpointError("holds a legacy HookedTransformer state dict but the model is not a "
                                     "TransformerBridge", kind="keys", path=source, stage="load weights",
                                     fix="build the model from a transformer-lens config (run spec 'model')")
    try:
        return convert_tl_checkpoint(dict(state), cfg)
    except ValueError as exc:
        raise CorruptCheckpointError(f"legacy HookedTransformer state dict does not convert: {exc}",
                                     kind="shape", path=source, stage="load weights",
                                     fix="the model config (n_heads, d_head, d_model) must be the one it was "
                                         "trained with") from exc


def fit_to_model(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "checkpoint",
                 named: Mapping[str, torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A state dict with exactly the model's keys (prefixes stripped, legacy converted, ties filled) + notes.

    ``named`` (name -> tensor, e.g. a bridge's tensors under their HF names) replaces ``model.state_dict()``
    as the key space to fit."""
    named = model.state_dict(keep_vars=True) if named is None else named
    expected = set(named)
    ties = tied_groups_of(named)
    notes: list[str] = []
    state = dict(state)
    if not _covers(set(state), expected, ties):
        state, chain = align_prefixes(state, expected, ties)
        if chain:
            notes.append("stripped key prefixes " + " then ".join(repr(p) for p in chain))
    if not _covers(set(state), expected, ties) and is_legacy_tl(state):
        for p in WRAPPER_PREFIXES:  # a legacy dict may itself be wrapped
            while all(k.startswith(p) for k in state):
                state = {k[len(p):]: v for k, v in state.items()}
                notes.append(f"stripped key prefix {p!r}")
        state = convert_legacy_tl(state, model, source)
        notes.append("converted a legacy HookedTransformer state dict (transformer-lens convert_tl_checkpoint)")
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    still_missing = []
    for m in missing:
        group = next((g for g in ties if m in g), None)
        present = [o for o in (group or []) if o in state]
        if present:
            state[m] = state[present[0]]
            notes.append(f"re-tied {m} to {present[0]} (tied in the model, stored once)")
        else:
            still_missing.append(m)
    if still_missing or unexpected:
        hint = _prefix_hint(unexpected, still_missing)
        raise CorruptCheckpointError(
            f"keys do not match the model: missing {_few(still_missing)}, unexpected {_few(unexpected)}{hint}",
            kind="keys", path=source, stage="load weights",
            fix="check that the model spec/factory matches the checkpoint (or pass the right --model)")
    for g in ties:
        vals = [state[n] for n in g if n in state]
        if any(v.shape != vals[0].shape or not torch.equal(v.to(vals[0].dtype), vals[0]) for v in vals[1:]):
            raise CorruptCheckpointError(f"tied weights {g} hold different values in the file", kind="keys",
                                         path=source, stage="load weights",
                                         fix="the model ties these weights but the checkpoint does not: use a "
                                             "model factory without weight tying")
    return state, notes


def _prefix_hint(unexpected: list[str], missing: list[str]) -> str:
    if not unexpected or not missing:
        return ""
    return f" (file keys look like {unexpected[0]!r}, model keys like {missing[0]!r})"


def _few(items: list[str], n: int = 5) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more
