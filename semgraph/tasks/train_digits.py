"""Training recipe for workload 3: a plain PyTorch loop on the digits images, with the Recorder added.

Mini-batch SGD with momentum on the training split; the two Recorder lines are the only semgraph code.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from semgraph.models import build_model
from semgraph.recorder import Recorder
from semgraph.tasks.digits import Digits


@dataclass
class DigitsRecipe:
    steps: int = 1500
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    hidden: tuple[int, int] = (64, 32)
    seed: int = 0
    schedule: str = "log+50"


def train_digits(out: str | Path, recipe: DigitsRecipe, *, resume: bool = True, threads: int | None = None
                 ) -> Path:
    if threads:
        torch.set_num_threads(threads)
    task = Digits(seed=recipe.seed)
    spec = task.model_spec(hidden=recipe.hidden, seed=recipe.seed)
    model = build_model(spec)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    ps = task.probe_set()
    x, y = torch.as_tensor(ps.inputs), torch.as_tensor(ps.labels)
    tr = torch.as_tensor(ps.mask("train"))
    xtr, ytr = x[tr], y[tr]
    rec = Recorder(out, model_spec=spec, task_spec=task, schedule=recipe.schedule,     # semgraph line 1
                   metadata={"recipe": asdict(recipe)}, resume=resume)
    start = rec.resume(model, opt)
    for step in range(start, recipe.steps + 1):
        if rec.should_record(step) or step == recipe.steps:
            with torch.no_grad():
                logits = model(x)
                nll = torch.nn.functional.cross_entropy(logits, y, reduction="none")
                acc = (logits.argmax(-1) == y).float()
            rec.record(step, model, {"train_loss": nll[tr].mean().item(), "test_loss": nll[~tr].mean().item(),  # line 2
                                     "train_acc": acc[tr].mean().item(), "test_acc": acc[~tr].mean().item()},
                       force=True)
            rec.save_train_state(step, opt)
        if step == recipe.steps:
            break
        idx = torch.as_tensor(np.random.default_rng((recipe.seed, step)).integers(0, len(xtr), recipe.batch_size))
        loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return rec.run_dir
