"""Induction and previous-token scores per attention head (Olsson et al. 2022, arXiv 2209.11895).

Inputs: attention patterns ``blocks.{l}.attn.hook_pattern`` of shape (n, heads, query, key), captured at
every position, on a probe set whose ``repeat_split`` inputs are repeated random tokens
``[r_1..r_L, r_1..r_L]`` (``L`` = the task's ``repeat_len``).

- induction score of a head: mean attention, over repeated sequences and query positions ``i`` in the
  second repeat (``L <= i < 2L``), to the token after the query token's previous occurrence, key ``i - L + 1``.
- previous-token score of a head: mean attention from position ``i >= 1`` to key ``i - 1``, over all inputs.
- repeat loss: cross-entropy of next-token predictions in the second repeat (targets ``L+1..2L-1``, which an
  induction head can copy); ``first_repeat_loss`` the same for targets ``1..L-1`` (unpredictable: about
  log(alphabet)); ``text_loss`` over all positions of the other inputs (real text). These need the logits
  at every position (``logits_hook``).

Uniform attention from position ``i`` gives ``1/(i+1)`` to each key, so both scores start small; an
induction head scores near 1. A head is reported as "induction head" at ``induction_at`` and as
"previous-token head" at ``prev_token_at``.
"""
from __future__ import annotations

import re

import numpy as np

from probes.base import ProbeContext, ProbeResult, finite_or_reason
from probes.output import log_softmax

PATTERN_HOOK = re.compile(r"^blocks\.(\d+)\.attn\.hook_pattern$")


def induction_score(pattern: np.ndarray, repeat_len: int) -> np.ndarray:
    """Per-head induction score of patterns (n, heads, T, T) on repeated sequences of half-length L."""
    L = int(repeat_len)
    queries = np.arange(L, 2 * L)
    return pattern[:, :, queries, queries - L + 1].mean(axis=(0, 2))


def previous_token_score(pattern: np.ndarray) -> np.ndarray:
    """Per-head mean attention from each position ``i >= 1`` to ``i - 1`` for patterns (n, heads, T, T)."""
    queries = np.arange(1, pattern.shape[-2])
    return pattern[:, :, queries, queries - 1].mean(axis=(0, 2))


def next_token_nll(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """(n, T-1) negative log-likelihood of token ``t+1`` given logits at ``t``; logits (n, T, V)."""
    logp = log_softmax(np.asarray(logits[:, :-1], dtype=np.float64))
    target = tokens[:, 1:]
    return -np.take_along_axis(logp, target[..., None], axis=-1)[..., 0]


class InductionScoresProbe:
    """Induction and previous-token score per head, and loss on repeated sequences."""

    name = "induction_scores"

    def __init__(self, repeat_split: str = "unseen", repeat_len: int | None = None,
                 logits_hook: str | None = None, induction_at: float = 0.3, prev_token_at: float = 0.5):
        self.repeat_split = repeat_split
        self.repeat_len = repeat_len
        self.logits_hook = logits_hook
        self.induction_at = induction_at
        self.prev_token_at = prev_token_at

    def get_params(self) -> dict:
        return dict(vars(self))

    def compute(self, ctx: ProbeContext) -> ProbeResult:
        res = ProbeResult()
        L = self.repeat_len or ctx.task.get("repeat_len")
        rep = np.asarray(ctx.split) == self.repeat_split
        layers = sorted((int(m.group(1)), k) for k in ctx.activations if (m := PATTERN_HOOK.match(k)))
        reason = None
        if not layers:
            reason = "no attention pattern hook (blocks.N.attn.hook_pattern) was captured"
        elif not L:
            reason = "the repeat length is unknown (task spec has no repeat_len)"
        elif not rep.any():
            reason = f"the probe set has no {self.repeat_split!r} (repeated-sequence) inputs"
        if reason is None:
            first = np.asarray(ctx.activations[layers[0][1]])
            if first.ndim != 4 or first.shape[-1] < 2 * L:
                reason = (f"attention patterns have shape {first.shape}, need (n, heads, T, T) with "
                          f"T >= {2 * L}: capture with position=None")
        ind_all, prev_all = [], []
        if reason is None:
            for layer, hook in layers:
                pat = np.asarray(ctx.activations[hook], dtype=np.float64)
                bad = finite_or_reason(pat, hook)
                if bad:
                    reason = bad
                    break
                ind = induction_score(pat[rep], L)
                prev = previous_token_score(pat)
                res.values[f"induction_L{layer}"] = [float(x) for x in ind]
                res.values[f"prev_token_L{layer}"] = [float(x) for x in prev]
                for h, (s_ind, s_prev) in enumerate(zip(ind, prev)):
                    if s_ind >= self.induction_at:
                        res.present[f"induction head L{layer}H{h}"] = True
                    if s_prev >= self.prev_token_at:
                        res.present[f"previous-token head L{layer}H{h}"] = True
                ind_all.append(ind)
                prev_all.append(prev)
        if reason:
            for key in ("induction_max", "prev_token_max"):
                res.not_computed(key, reason)
        else:
            res.values["induction_max"] = float(np.max(ind_all))
            res.values["prev_token_max"] = float(np.max(prev_all))
            res.present["induction head"] = res.values["induction_max"] >= self.induction_at
        self._losses(ctx, rep, L, res)
        return res

    def _losses(self, ctx: ProbeContext, rep: np.ndarray, L: int | None, res: ProbeResult) -> None:
        keys = ("repeat_loss", "first_repeat_loss", "text_loss")
        logits = ctx.activations.get(self.logits_hook) if self.logits_hook else None
        reason = None
        if logits is None:
            reason = f"logits at every position were not captured (logits_hook={self.logits_hook!r})"
        elif np.asarray(logits).ndim != 3 or not L:
            reason = "logits hook is not (n, T, vocab) or the repeat length is unknown"
        else:
            reason = finite_or_reason(np.asarray(logits), "logits")
        if reason:
            for k in keys:
                res.not_computed(k, reason)
            return
        nll = next_token_nll(np.asarray(logits), np.asarray(ctx.inputs))   # column j predicts token j+1
        res.values["repeat_loss"] = float(nll[rep][:, L:2 * L - 1].mean())
        res.values["first_repeat_loss"] = float(nll[rep][:, :L - 1].mean())
        if (~rep).any():
            res.values["text_loss"] = float(nll[~rep].mean())
        else:
            res.not_computed("text_loss", "the probe set has no real-text inputs")
