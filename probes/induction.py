"""Induction and previous-token heads (Olsson et al. 2022, "In-context Learning and Induction Heads").

Input: attention patterns A (n, heads, q, k) of each layer (TransformerLens hook ``blocks.L.attn.hook_pattern``,
captured at all positions) on sequences whose second half repeats the first (``repeated_tokens``).

Definitions, per head:

- previous-token score: mean over sequences and query positions i >= 1 of A[i, i-1];
- induction score: mean over sequences and query positions i that hold a token seen earlier of the
  attention mass on the positions right after its earlier occurrences, sum_{j < i, x_j = x_i} A[i, j+1].
  On a sequence [r_1..r_T, r_1..r_T] with distinct r this is A[i, i-T+1] for i >= T: an induction head
  ("find the earlier copy of my token, attend to what followed it") scores ~1, a uniform head ~1/i.

Concept presence: "induction head L.H" when its induction score >= ``present_at`` (0.4, Olsson et al.
call heads with high scores on repeated random tokens induction heads; random heads score ~1/T), and
"previous-token head L.H" when its previous-token score >= ``present_at``.
Degenerate input (patterns not captured or of the wrong shape, NaN/inf, rows that are not distributions,
sequences with no repeated token)
gives "not computed" with the reason.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from probes.base import ProbeContext, ProbeResult, finite_or_reason

if TYPE_CHECKING:
    import torch


def repeated_tokens(d_vocab: int, half: int, n: int, seed: int = 0, bos: int | None = None,
                    low: int = 0) -> np.ndarray:
    """``n`` sequences [bos?] r_1..r_half r_1..r_half of distinct random tokens in [low, d_vocab)."""
    if d_vocab - low < half:
        raise ValueError(f"need {half} distinct tokens but the vocabulary has {d_vocab - low}")
    rng = np.random.default_rng(seed)
    first = np.stack([rng.permutation(np.arange(low, d_vocab))[:half] for _ in range(n)])
    seqs = np.concatenate([first, first], axis=1)
    if bos is not None:
        seqs = np.concatenate([np.full((n, 1), bos), seqs], axis=1)
    return seqs.astype(np.int64)


def induction_targets(tokens: np.ndarray) -> np.ndarray:
    """(n, q, k) boolean mask: position j+1 for every earlier occurrence j < i of the token at query i."""
    tokens = np.asarray(tokens)
    n, t = tokens.shape
    same = tokens[:, :, None] == tokens[:, None, :]                  # (n, i, j)
    earlier = np.tril(np.ones((t, t), dtype=bool), k=-1)              # j < i
    occ = same & earlier
    target = np.zeros_like(occ)
    target[:, :, 1:] = occ[:, :, :-1]                                 # shift j -> j + 1
    return target & np.tril(np.ones((t, t), dtype=bool))[None]       # j + 1 <= i (causal)


def previous_token_scores(patterns: np.ndarray) -> np.ndarray:
    """(heads,) mean attention from each position i >= 1 to i - 1; ``patterns`` is (n, heads, q, k)."""
    diag = np.diagonal(patterns, offset=-1, axis1=-2, axis2=-1)       # (n, heads, q-1): A[i, i-1]
    return diag.mean(axis=(0, 2))


def induction_scores(patterns: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """(heads,) mean attention mass on induction targets over queries that have one (see module docstring)."""
    target = induction_targets(tokens)                                # (n, q, k)
    has = target.any(axis=-1)                                         # (n, q)
    if not has.any():
        raise ValueError("no query position holds a token seen earlier: not a repeated sequence")
    mass = (patterns * target[:, None]).sum(axis=-1)                  # (n, heads, q)
    return (mass * has[:, None]).sum(axis=(0, 2)) / has.sum()


def pattern_hooks(n_layers: int) -> list[str]:
    return [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]


def capture_patterns(model: "torch.nn.Module", tokens: np.ndarray, n_layers: int,
                     batch_size: int = 64) -> dict[str, np.ndarray]:
    """Attention patterns (n, heads, q, k) of every layer of a TransformerLens/TransformerBridge model,
    captured with ``semgraph.capture`` (hooks removed on exit)."""
    import torch

    from semgraph.capture import capture, check_fired

    hooks = pattern_hooks(n_layers)
    out: dict[str, list[np.ndarray]] = {h: [] for h in hooks}
    x = torch.as_tensor(tokens)
    with torch.no_grad(), capture(model, hooks, position=None) as acts:
        for start in range(0, len(x), batch_size):
            model(x[start:start + batch_size])
            check_fired(acts, hooks)
            for name, t in acts.pop_batch().items():
                out[name].append(t.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


class InductionProbe:
    """Induction and previous-token score per head, from stored attention patterns.

    Reads ``ctx.activations["blocks.L.attn.hook_pattern"]`` (n, heads, q, k) for L < ``n_layers`` and the
    token sequences ``ctx.inputs`` (use ``repeated_tokens`` as the probe set and capture with position=None,
    or ``capture_patterns``). Values: ``L.H.induction``, ``L.H.prev_token``, and per layer the best head's
    ``max_induction``.
    """

    name = "induction"

    def __init__(self, n_layers: int = 2, present_at: float = 0.4, layers: Sequence[int] | None = None):
        self.n_layers = n_layers
        self.present_at = present_at
        self.layers = layers

    def compute(self, ctx: ProbeContext) -> ProbeResult:
        res = ProbeResult()
        tokens = np.asarray(ctx.inputs)
        layers = list(self.layers) if self.layers is not None else list(range(self.n_layers))
        best = []
        for layer in layers:
            hook = f"blocks.{layer}.attn.hook_pattern"
            pat = ctx.activations.get(hook)
            if pat is None:
                reason = f"hook {hook!r} was not captured"
            else:
                pat = np.asarray(pat, dtype=np.float64)
                reason = finite_or_reason(pat, hook)
                if reason is None and (pat.ndim != 4 or pat.shape[0] != len(tokens) or
                                       pat.shape[2:] != (tokens.shape[1], tokens.shape[1])):
                    reason = (f"{hook} has shape {pat.shape}, not (n, heads, seq, seq) for inputs "
                              f"{tokens.shape} (capture it with position=None)")
                if reason is None and not np.allclose(pat.sum(-1), 1, atol=1e-3):
                    reason = f"{hook} is not an attention pattern (rows do not sum to 1)"
                if reason is None and not induction_targets(tokens).any():
                    reason = "no input repeats a token, so there is no induction target"
            if reason:
                res.not_computed(f"{layer}.max_induction", reason)
                res.not_computed(f"{layer}.max_prev_token", reason)
                continue
            ind = induction_scores(pat, tokens)
            prev = previous_token_scores(pat)
            for h in range(pat.shape[1]):
                res.values[f"{layer}.{h}.induction"] = float(ind[h])
                res.values[f"{layer}.{h}.prev_token"] = float(prev[h])
                res.present[f"induction head {layer}.{h}"] = bool(ind[h] >= self.present_at)
                res.present[f"previous-token head {layer}.{h}"] = bool(prev[h] >= self.present_at)
            res.values[f"{layer}.max_induction"] = float(ind.max())
            res.values[f"{layer}.max_prev_token"] = float(prev.max())
            best.append(float(ind.max()))
        if best:
            res.values["max_induction"] = max(best)
        else:
            res.not_computed("max_induction", "no layer's attention pattern could be scored")
        return res
