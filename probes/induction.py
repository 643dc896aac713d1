"""Induction heads (Olsson et al. 2022, "In-context Learning and Induction Heads", arXiv 2209.11895).

One probe, two registry names: ``induction`` scores every input; ``induction_scores`` (the name the induction
task's analyses use) scores the probe set's repeated-sequence split (``"unseen"``) and adds the losses.

Input: attention patterns A (n, heads, q, k) of each layer (TransformerLens hook ``blocks.L.attn.hook_pattern``,
captured at every position, ``position=None``), the token sequences ``ctx.inputs`` and, for the losses, the
logits at every position (``logits_hook``, e.g. ``unembed.hook_out``).

Definitions, per head, over the scored inputs:

- induction score: mean over query positions i whose token occurred earlier of the attention mass on the
  positions right after those earlier occurrences, sum_{j < i, x_j = x_i} A[i, j+1]. On repeated random
  tokens [r_1..r_L, r_1..r_L] with distinct r this is A[i, i-L+1] for i >= L: an induction head ("find the
  earlier copy of my token, attend to what followed it") scores ~1, a causal uniform head ~1/(i+1);
- previous-token score: mean over query positions i >= 1 of A[i, i-1].

Losses (need the logits; column j of ``next_token_nll`` predicts token j+1):

- ``repeat_loss``: on the repeated split, targets L+1..2L-1 (copyable by an induction head), L = the task's
  ``repeat_len``; ``first_repeat_loss``: targets 1..L-1 (not predictable);
- ``text_loss``: every position of the other inputs (real text);
- ``icl_score``: in-context-learning score on those other inputs, mean loss at the late positions
  (context >= 2/3 of the window) minus mean loss at the first positions (context <= 1/8 of it), see
  ``icl_positions``; it falls when the model starts to use the context (Olsson et al. 2022, section 2).

Concept presence: "induction head L{l}H{h}" when its induction score >= ``induction_at`` (0.3) and
"previous-token head L{l}H{h}" when its previous-token score >= ``prev_token_at`` (0.5); "induction head"
when any head is one. Degenerate input (patterns not captured or of the wrong shape, NaN/inf, rows that are
not distributions, inputs with no repeated token, no logits) gives "not computed" with the reason.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

import numpy as np

from probes.base import ProbeContext, ProbeResult, finite_or_reason
from probes.output import log_softmax

if TYPE_CHECKING:
    import torch

PATTERN_HOOK = re.compile(r"^blocks\.(\d+)\.attn\.hook_pattern$")


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
    """(heads,) mean attention mass on induction targets over queries that have one (module docstring)."""
    target = induction_targets(tokens)                                # (n, q, k)
    has = target.any(axis=-1)                                         # (n, q)
    if not has.any():
        raise ValueError("no query position holds a token seen earlier: not a repeated sequence")
    mass = (patterns * target[:, None]).sum(axis=-1)                  # (n, heads, q)
    return (mass * has[:, None]).sum(axis=(0, 2)) / has.sum()


def next_token_nll(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """(n, T-1) negative log-likelihood of token ``t+1`` given logits at ``t``; logits (n, T, V)."""
    logp = log_softmax(np.asarray(logits[:, :-1], dtype=np.float64))
    target = np.asarray(tokens)[:, 1:]
    return -np.take_along_axis(logp, target[..., None], axis=-1)[..., 0]


def icl_positions(n_targets: int) -> tuple[np.ndarray, np.ndarray]:
    """(early, late) column indices of an (n, T-1) next-token loss array (column j predicts token j+1).

    early: the first ``max(1, T // 8)`` targets (context of at most T/8 tokens); late: targets at positions
    ``>= ceil(2T/3)`` (context of at least two thirds of the window). T = ``n_targets + 1``.
    """
    T = n_targets + 1
    k = max(1, T // 8)
    late_from = -(-2 * T // 3)                      # ceil(2T/3): first late target position
    return np.arange(0, k), np.arange(late_from - 1, n_targets)


def icl_score(nll: np.ndarray) -> float:
    """In-context-learning score (Olsson et al. 2022, section 2): mean loss at the late positions of a window
    minus mean loss at its first positions (``icl_positions``); negative when later tokens are predicted
    better because of the context. ``nll`` is (n, T-1) from ``next_token_nll`` on real text."""
    nll = np.asarray(nll, dtype=np.float64)
    if nll.ndim != 2 or nll.shape[1] < 3:
        raise ValueError(f"need (n, T-1) losses of windows of >= 4 tokens for an ICL score, got {nll.shape}")
    early, late = icl_positions(nll.shape[1])
    return float(nll[:, late].mean() - nll[:, early].mean())


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


def _pattern_problem(pat: np.ndarray, hook: str, tokens: np.ndarray) -> str | None:
    bad = finite_or_reason(pat, hook)
    if bad:
        return bad
    if pat.ndim != 4 or pat.shape[0] != len(tokens) or pat.shape[2:] != (tokens.shape[1], tokens.shape[1]):
        return (f"{hook} has shape {pat.shape}, not (n, heads, seq, seq) for inputs {tokens.shape} "
                f"(capture it with position=None)")
    if not np.allclose(pat.sum(-1), 1, atol=1e-3):
        return f"{hook} is not an attention pattern (rows do not sum to 1)"
    return None


class InductionProbe:
    """Induction and previous-token score per head, and the losses that show an induction head at work.

    Values: ``induction_L{l}`` and ``prev_token_L{l}`` (one score per head), ``induction_max``,
    ``prev_token_max``; with ``logits_hook``: ``repeat_loss``, ``first_repeat_loss``, ``text_loss``,
    ``icl_score``. ``repeat_split``: the split whose inputs are scored (None: every input). ``n_layers`` /
    ``layers``: the layers expected (a missing one is reported); default: every captured pattern hook.
    """

    name = "induction"
    default_split: str | None = None

    def __init__(self, repeat_split: str | None = "default", repeat_len: int | None = None,
                 logits_hook: str | None = None, induction_at: float = 0.3, prev_token_at: float = 0.5,
                 n_layers: int | None = None, layers: Sequence[int] | None = None):
        self.repeat_split = self.default_split if repeat_split == "default" else repeat_split
        self.repeat_len = repeat_len
        self.logits_hook = logits_hook
        self.induction_at = induction_at
        self.prev_token_at = prev_token_at
        self.n_layers = n_layers
        self.layers = layers

    def get_params(self) -> dict:
        return dict(vars(self))

    def _layers(self, ctx: ProbeContext) -> list[int]:
        if self.layers is not None:
            return list(self.layers)
        if self.n_layers is not None:
            return list(range(self.n_layers))
        return sorted(int(m.group(1)) for k in ctx.activations if (m := PATTERN_HOOK.match(k)))

    def _rows(self, ctx: ProbeContext) -> np.ndarray:
        if self.repeat_split is None:
            return np.ones(len(ctx.inputs), dtype=bool)
        return np.asarray(ctx.split) == self.repeat_split

    def compute(self, ctx: ProbeContext) -> ProbeResult:
        res = ProbeResult()
        tokens = np.asarray(ctx.inputs)
        rows = self._rows(ctx)
        layers = self._layers(ctx)
        common = None
        if not layers:
            common = "no attention pattern hook (blocks.N.attn.hook_pattern) was captured"
        elif not rows.any():
            common = f"the probe set has no {self.repeat_split!r} (repeated-sequence) inputs"
        elif not induction_targets(tokens[rows]).any():
            common = "no scored input repeats a token, so there is no induction target"
        ind_all, prev_all = [], []
        for layer in layers if common is None else []:
            hook = f"blocks.{layer}.attn.hook_pattern"
            pat = ctx.activations.get(hook)
            reason = f"hook {hook!r} was not captured" if pat is None else None
            if reason is None:
                pat = np.asarray(pat, dtype=np.float64)
                reason = _pattern_problem(pat, hook, tokens)
            if reason:
                res.not_computed(f"induction_L{layer}", reason)
                res.not_computed(f"prev_token_L{layer}", reason)
                common = reason
                continue
            ind = induction_scores(pat[rows], tokens[rows])
            prev = previous_token_scores(pat[rows])
            res.values[f"induction_L{layer}"] = [float(x) for x in ind]
            res.values[f"prev_token_L{layer}"] = [float(x) for x in prev]
            for h, (s_ind, s_prev) in enumerate(zip(ind, prev)):
                res.present[f"induction head L{layer}H{h}"] = bool(s_ind >= self.induction_at)
                res.present[f"previous-token head L{layer}H{h}"] = bool(s_prev >= self.prev_token_at)
            ind_all.append(ind)
            prev_all.append(prev)
        if ind_all:
            res.values["induction_max"] = float(np.max(np.concatenate(ind_all)))
            res.values["prev_token_max"] = float(np.max(np.concatenate(prev_all)))
            res.present["induction head"] = res.values["induction_max"] >= self.induction_at
        else:
            for key in ("induction_max", "prev_token_max"):
                res.not_computed(key, common or "no layer's attention pattern could be scored")
        if self.logits_hook is not None:
            self._losses(ctx, rows, res)
        return res

    def _losses(self, ctx: ProbeContext, rep: np.ndarray, res: ProbeResult) -> None:
        L = self.repeat_len or ctx.task.get("repeat_len")
        keys = ("repeat_loss", "first_repeat_loss", "text_loss", "icl_score")
        logits = ctx.activations.get(self.logits_hook)
        reason = None
        if logits is None:
            reason = f"logits at every position were not captured (logits_hook={self.logits_hook!r})"
        elif np.asarray(logits).ndim != 3:
            reason = f"logits hook {self.logits_hook!r} is not (n, T, vocab): capture it with position=None"
        else:
            reason = finite_or_reason(np.asarray(logits), "logits")
        if reason:
            for k in keys:
                res.not_computed(k, reason)
            return
        nll = next_token_nll(np.asarray(logits), np.asarray(ctx.inputs))   # column j predicts token j+1
        if L and self.repeat_split is not None and rep.any():
            res.values["repeat_loss"] = float(nll[rep][:, L:2 * L - 1].mean())
            res.values["first_repeat_loss"] = float(nll[rep][:, :L - 1].mean())
        else:
            why = "the repeat length is unknown (task spec has no repeat_len)" if not L else \
                "no repeated-sequence split is scored (repeat_split)"
            res.not_computed("repeat_loss", why)
            res.not_computed("first_repeat_loss", why)
        text = ~rep
        if text.any() and nll.shape[1] >= 3:
            res.values["text_loss"] = float(nll[text].mean())
            res.values["icl_score"] = icl_score(nll[text])
        else:
            for k in ("text_loss", "icl_score"):
                res.not_computed(k, "the probe set has no real-text inputs (outside the repeated split)")


class InductionScoresProbe(InductionProbe):
    """``InductionProbe`` under the name the induction task's analyses use, scoring the ``"unseen"``
    (repeated random tokens) split by default."""

    name = "induction_scores"
    default_split = "unseen"
