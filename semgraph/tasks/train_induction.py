"""Training recipe for workload 2: a 2-layer attention-only transformer on the stdlib's Python sources.

Byte-level next-token prediction on random windows of the training files, AdamW, constant learning rate.
In a fraction ``repeat_fraction`` of each batch's windows a real-text chunk repeats (from a random start, with
a random period; repeated passages, as duplicated code is in real corpora): on a 2-core machine this brings
the induction-head phase change within minutes, where plain windows of this small model need far more tokens
(with ``repeat_fraction=0``, 2,650 steps of 32 x 64 bytes showed no induction head: best score 0.014; with
a fixed period of 33 the model learnt a positional shortcut instead, best score 0.026 at 1,760 steps).
At every scheduled step the Recorder writes a checkpoint and the loop logs the held-out text loss, the loss
on repeated random sequences, the best induction and previous-token scores (computed on the live model with
``semgraph.capture`` and the ``probes.induction`` functions) and the in-context-learning score on held-out
text (``heldout_icl``: loss at late minus loss at early positions of ``n_ctx``-byte windows, Olsson et al.
2022). The training loss is logged every ``loss_every`` steps (and at every checkpoint) as ``train_loss``,
the mean over the updates since the previous log line, so its curve is dense enough to show the phase
change's bump (a steeper fall of the loss against log(step)); ``train_loss_copy`` is its part on the
repeated copies (predictable only from the context) and ``train_loss_plain`` on the plain-text windows.
Resumable: the optimizer state and the batch sampler's position are saved with each checkpoint.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from probes.induction import icl_score, induction_scores, next_token_nll, previous_token_scores
from semgraph.capture import capture, check_fired
from semgraph.models import build_model
from semgraph.recorder import Recorder
from semgraph.schedule import log_plus_linear
from semgraph.tasks.induction import InductionText, load_corpus, random_windows


@dataclass
class InductionRecipe:
    steps: int = 2000
    batch_size: int = 32
    n_ctx: int = 64
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    lr: float = 3e-3
    weight_decay: float = 0.01
    seed: int = 0
    repeat_len: int = 20
    repeat_fraction: float = 0.5
    every: int = 40
    loss_every: int = 5       # training-loss log interval (steps)
    n_icl: int = 64           # held-out windows of n_ctx bytes for the ICL score
    schedule: list[int] | None = field(default=None)  # default: log-spaced to `every`, then every `every`

    def checkpoint_steps(self) -> list[int]:
        return self.schedule if self.schedule is not None else \
            log_plus_linear(self.steps, every=self.every, n_log=10)


def train_induction(out: str | Path, recipe: InductionRecipe, *, resume: bool = True, progress: bool = True,
                    threads: int | None = None) -> Path:
    """Train (or resume) workload 2 into ``out``; returns the run folder."""
    if threads:
        torch.set_num_threads(threads)
    task = InductionText(repeat_len=recipe.repeat_len, n_layers=recipe.n_layers, seed=recipe.seed)
    spec = task.model_spec(n_layers=recipe.n_layers, d_model=recipe.d_model, n_heads=recipe.n_heads,
                           n_ctx=recipe.n_ctx, seed=recipe.seed)
    train_tokens, test_tokens, files = load_corpus()
    meta = {"recipe": {k: v for k, v in asdict(recipe).items() if k != "schedule"},
            "corpus": {"source": "python stdlib *.py (top level)", "files": len(files),
                       "train_bytes": int(len(train_tokens)), "test_bytes": int(len(test_tokens))}}
    rec = Recorder(out, model_spec=spec, task_spec=task.spec(), schedule=recipe.checkpoint_steps(),
                   metadata=meta, resume=resume)
    model = build_model(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
                            betas=(0.9, 0.99))
    start = rec.resume(model, opt)
    if start >= recipe.steps and rec.checkpoint_path(recipe.steps).exists():
        return rec.run_dir
    ps = task.probe_set()
    icl_windows = torch.as_tensor(random_windows(test_tokens, recipe.n_icl, recipe.n_ctx,
                                                 np.random.default_rng(recipe.seed + 777)))
    hooks = [f"blocks.{layer}.attn.hook_pattern" for layer in range(recipe.n_layers)]
    losses = LossLog()
    n_rep = int(round(recipe.repeat_fraction * recipe.batch_size))
    model.train()
    for step in tqdm(range(start, recipe.steps + 1), desc=f"train {Path(out).name}", unit="step",
                     disable=not progress, initial=start, total=recipe.steps + 1):
        if rec.should_record(step):
            metrics = evaluate(model, ps, hooks, recipe.repeat_len, icl_windows)
            if losses:
                metrics.update(losses.pop())
            rec.record(step, model, metrics)
            rec.save_train_state(step, opt)
        elif losses and recipe.loss_every and step % recipe.loss_every == 0:
            rec.log(step, losses.pop())
        if step == recipe.steps:
            break
        rng = np.random.default_rng((recipe.seed, step))  # a function of the step, so resume is exact
        tokens, copy = training_batch(train_tokens, recipe, rng, with_mask=True)
        batch = torch.as_tensor(tokens)
        logits = model(batch[:, :-1])
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                                reduction="none").reshape(batch.shape[0], -1)
        loss = nll.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.add(nll.detach(), copy[:, 1:], n_rep)
    return rec.run_dir


def training_batch(tokens: np.ndarray, recipe: InductionRecipe, rng: np.random.Generator, *,
                   with_mask: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(batch, n_ctx + 1) windows of real text. In the first ``repeat_fraction`` of them the text from a
    random start ``s`` on repeats with a random period ``P`` (8 <= P <= n_ctx // 2): ``w[t] = w[t - P]`` for
    ``t >= s + P``. Random periods and starts leave no fixed positional offset to exploit: only copying
    by content (an induction head) predicts the repeats. ``with_mask``: also the boolean mask of those
    copies (``t >= s + P`` in the repeated windows)."""
    windows = random_windows(tokens, recipe.batch_size, recipe.n_ctx + 1, rng)
    n_rep = int(round(recipe.repeat_fraction * recipe.batch_size))
    T = recipe.n_ctx + 1
    mask = np.zeros(windows.shape, dtype=bool)
    for w, m in zip(windows[:n_rep], mask[:n_rep]):
        period = int(rng.integers(8, max(9, recipe.n_ctx // 2 + 1)))
        start = int(rng.integers(0, max(1, T - 2 * period)))
        t = np.arange(start + period, T)
        w[t] = w[start + (t - start) % period]
        m[t] = True
    return (windows.astype(np.int64), mask) if with_mask else windows.astype(np.int64)


class LossLog:
    """Training-loss sums since the last log line: all targets, the copies in repeated windows (predictable
    only in context) and the plain-text windows."""

    KEYS = ("train_loss", "train_loss_copy", "train_loss_plain")

    def __init__(self) -> None:
        self.sums = {k: [0.0, 0] for k in self.KEYS}

    def add(self, nll: torch.Tensor, copy: np.ndarray, n_rep: int) -> None:
        copy_t = torch.as_tensor(copy)
        for key, part in zip(self.KEYS, (nll, nll[copy_t], nll[n_rep:])):
            self.sums[key][0] += float(part.sum())
            self.sums[key][1] += part.numel()

    def __bool__(self) -> bool:
        return self.sums["train_loss"][1] > 0

    def pop(self) -> dict[str, float]:
        out = {k: s / n for k, (s, n) in self.sums.items() if n}
        self.sums = {k: [0.0, 0] for k in self.KEYS}
        return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, ps, hooks: list[str], repeat_len: int,
             icl_windows: torch.Tensor | None = None) -> dict[str, Any]:
    """Probe-set losses, the best induction / previous-token score of the live model and, given held-out
    text windows, their loss (``heldout_loss``) and in-context-learning score (``heldout_icl``)."""
    was_training = model.training
    model.eval()
    x = torch.as_tensor(ps.inputs)
    with capture(model, hooks, position=None) as acts:
        logits = model(x)
        check_fired(acts, hooks)
        patterns = acts.pop_batch()
    extra = {}
    if icl_windows is not None:
        held = next_token_nll(model(icl_windows).float().numpy(), icl_windows.numpy())
        extra = {"heldout_loss": float(held.mean()), "heldout_icl": icl_score(held)}
    model.train(was_training)
    rep = ps.split == "unseen"
    nll = next_token_nll(logits.float().numpy(), ps.inputs)
    ind = [induction_scores(patterns[h].numpy()[rep], ps.inputs[rep]) for h in hooks]
    prev = [previous_token_scores(patterns[h].numpy()[rep]) for h in hooks]
    return {"text_loss": float(nll[~rep].mean()), "icl_score": icl_score(nll[~rep]),
            "repeat_loss": float(nll[rep][:, repeat_len:2 * repeat_len - 1].mean()),
            "induction_max": float(np.max(ind)), "prev_token_max": float(np.max(prev)), **extra}
