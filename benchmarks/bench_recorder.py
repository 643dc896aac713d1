"""Recorder overhead at the default schedule on the reference grokking recipe, measured in one run.

The same training (modular addition p=53, full batch, AdamW; the reference recipe) runs twice in this
process, from the same initial weights: once bare, once with the Recorder writing checkpoints (and the
optimizer state) at the default schedule (log-spaced to step 100, then every 100). The two are interleaved
in blocks of ``--block`` steps (bare block, recorded block, ...) so that load changes on a shared machine
hit both alike. Reported: total seconds of each, the ratio recorded / bare, and the seconds spent inside
the Recorder calls as a fraction of the bare training time.

    python benchmarks/bench_recorder.py             # the reference length: 5000 steps, 71 checkpoints
    python benchmarks/bench_recorder.py --steps 1000
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch

from semgraph.recorder import Recorder
from semgraph.schedule import DEFAULT_SCHEDULE, log_plus_linear
from semgraph.tasks.modular_addition import ModularAddition
from semgraph.tasks.train_modular_addition import ModAddRecipe
from semgraph.models import build_model


class Trainer:
    def __init__(self, model: torch.nn.Module, recipe: ModAddRecipe, x: torch.Tensor, y: torch.Tensor):
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
                                     betas=tuple(recipe.betas))
        self.x, self.y = x, y

    def step(self) -> float:
        logits = self.model(self.x)[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--block", type=int, default=50, help="steps per interleaved block")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    recipe = ModAddRecipe(steps=args.steps)
    task = ModularAddition(p=recipe.p, train_fraction=recipe.train_fraction, seed=recipe.seed)
    spec = task.model_spec(d_model=recipe.d_model, n_heads=recipe.n_heads, d_mlp=recipe.d_mlp)
    ps = task.probe_set()
    tr = torch.as_tensor(ps.mask("train"))
    x, y = torch.as_tensor(ps.inputs)[tr], torch.as_tensor(ps.labels)[tr]
    base = build_model(spec)
    bare = Trainer(copy.deepcopy(base), recipe, x, y)
    recd = Trainer(copy.deepcopy(base), recipe, x, y)
    n_ckpt = sum(1 for s in range(args.steps + 1) if s in DEFAULT_SCHEDULE)
    assert n_ckpt <= len(log_plus_linear(args.steps, every=100))

    with tempfile.TemporaryDirectory() as tmp:
        rec = Recorder(tmp, model_spec=spec, task_spec=task)        # default schedule
        t_bare = t_recd = t_inside = 0.0
        for start in range(0, args.steps + 1, args.block):
            stop = min(start + args.block, args.steps + 1)
            t0 = time.perf_counter()
            for _ in range(start, stop):
                bare.step()
            t1 = time.perf_counter()
            inside = 0.0
            for step in range(start, stop):
                loss = recd.step()
                if rec.should_record(step):
                    r0 = time.perf_counter()
                    rec.record(step, recd.model, {"train_loss": loss})
                    rec.save_train_state(step, recd.opt)
                    inside += time.perf_counter() - r0
            t2 = time.perf_counter()
            t_bare += t1 - t0
            t_recd += t2 - t1
            t_inside += inside
        written = len(rec.recorded_steps())
    print(f"reference recipe p={recipe.p}, {args.steps} steps, default schedule: {written} checkpoints "
          f"(+ optimizer state each), blocks of {args.block} interleaved, {args.threads} thread(s)")
    print(f"  bare training      {t_bare:8.2f} s")
    print(f"  with the recorder  {t_recd:8.2f} s")
    print(f"  ratio recorded / bare            = {t_recd / t_bare:.4f}  (overhead {100 * (t_recd / t_bare - 1):+.2f}%)")
    print(f"  time inside Recorder calls / bare = {t_inside / t_bare:.4f}  ({100 * t_inside / t_bare:.2f}%, "
          f"{1000 * t_inside / max(written, 1):.1f} ms per checkpoint)")


if __name__ == "__main__":
    main()
