"""Sweeps: train the reference task over seeds x data fractions (x model sizes) in parallel, one run folder
each under one sweep folder, so that `semgraph analyze SWEEP_DIR` places every run in ONE state space.

Each run is trained in its own process (``concurrent.futures.ProcessPoolExecutor``) with one torch thread,
through the Recorder, so a killed sweep resumes: finished runs are skipped and interrupted ones continue
from their last checkpoint. A run that fails is reported with its error and does not stop the others.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from semgraph.errors import ConfigError
from semgraph.io import atomic_write_json

SWEEP_FILE = "sweep.json"


@dataclass
class SweepConfig:
    """The grid: every combination of ``seeds`` x ``fractions`` x ``sizes`` is one run."""

    seeds: Sequence[int] = (0, 1, 2, 3)
    fractions: Sequence[float] = (0.4, 0.6, 0.8)
    sizes: Sequence[int] = (64,)  # d_model; d_mlp = 4 * d_model, n_heads = 4
    p: int = 31
    steps: int = 1500
    every: int = 100  # checkpoint every N steps after a log-spaced start
    lr: float = 3e-3  # 3x the reference lr: p = 31 groks in ~1000 steps at 60-80% data (measured)
    weight_decay: float = 1.0
    n_heads: int = 4

    def runs(self) -> list[dict[str, Any]]:
        out = []
        for d_model in self.sizes:
            for frac in self.fractions:
                for seed in self.seeds:
                    name = f"p{self.p}-d{d_model}-f{frac:.3f}-s{seed}"
                    out.append({"name": name, "p": self.p, "train_fraction": float(frac), "seed": int(seed),
                                "steps": self.steps, "lr": self.lr, "weight_decay": self.weight_decay,
                                "d_model": int(d_model), "n_heads": self.n_heads, "d_mlp": 4 * int(d_model),
                                "every": self.every})
        return out

    def validate(self) -> None:
        if not self.seeds or not self.fractions or not self.sizes:
            raise ConfigError("a sweep needs at least one seed, one data fraction and one size", stage="sweep",
                              fix="pass e.g. --seeds 0,1,2,3 --fractions 0.3,0.45,0.6 --sizes 64")
        bad = [f for f in self.fractions if not 0 < f < 1]
        if bad:
            raise ConfigError(f"data fractions must lie in (0, 1), got {bad}", stage="sweep",
                              fix="give training fractions such as 0.3,0.45,0.6")
        bad = [d for d in self.sizes if d % self.n_heads]
        if bad:
            raise ConfigError(f"d_model {bad} is not divisible by n_heads={self.n_heads}", stage="sweep",
                              fix="choose sizes that are multiples of the number of heads")


def _train_one(out: str, run: dict[str, Any]) -> dict[str, Any]:
    """Worker: train one run with one torch thread; returns timing and the final logged metrics."""
    import torch

    from semgraph.recorder import read_metrics
    from semgraph.schedule import log_plus_linear
    from semgraph.tasks.train_modular_addition import ModAddRecipe, train_modular_addition

    torch.set_num_threads(1)
    t0 = time.time()
    recipe = ModAddRecipe(p=run["p"], train_fraction=run["train_fraction"], seed=run["seed"],
                          steps=run["steps"], lr=run["lr"], weight_decay=run["weight_decay"],
                          d_model=run["d_model"], n_heads=run["n_heads"], d_mlp=run["d_mlp"],
                          schedule=log_plus_linear(run["steps"], every=run["every"]))
    run_dir = train_modular_addition(Path(out) / run["name"], recipe, resume=True, progress=False, threads=1)
    metrics = read_metrics(run_dir)
    last = metrics[max(metrics)] if metrics else {}
    return {"name": run["name"], "seconds": round(time.time() - t0, 1), "final": last}


def run_sweep(out: str | Path, config: SweepConfig, *, jobs: int | None = None, progress: bool = True
              ) -> dict[str, Any]:
    """Train every run of the grid into ``out/<run>`` with ``jobs`` processes; returns a report."""
    config.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = config.runs()
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(runs)))
    atomic_write_json(out / SWEEP_FILE, {"config": asdict(config) | {"seeds": list(config.seeds),
                                                                     "fractions": list(config.fractions),
                                                                     "sizes": list(config.sizes)},
                                         "runs": [r["name"] for r in runs]})
    report: dict[str, Any] = {"trained": [], "failed": []}
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_train_one, str(out), r): r["name"] for r in runs}
        for fut in as_completed(futures):
            name = futures[fut]
            try:
                res = fut.result()
            except Exception as exc:  # one failed run must not stop the others; reported below
                report["failed"].append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
                if progress:
                    print(f"  run {name} FAILED: {exc}", flush=True)
                continue
            report["trained"].append(res)
            if progress:
                fin = res["final"]
                print(f"  run {name}: {res['seconds']:.0f} s, final train acc {fin.get('train_acc', float('nan')):.3f}"
                      f" test acc {fin.get('test_acc', float('nan')):.3f}", flush=True)
    report["seconds"] = round(time.time() - t0, 1)
    report["jobs"] = jobs
    atomic_write_json(out / "sweep_report.json", report)
    return report


def parse_list(text: str, kind: type) -> list[Any]:
    """'0,1,2' -> [0, 1, 2]; 'a:b:n' for floats is not supported on purpose (explicit values only)."""
    try:
        return [kind(s) for s in str(text).split(",") if s.strip()]
    except ValueError as exc:
        raise ConfigError(f"cannot parse {text!r} as a comma-separated list of {kind.__name__}", stage="sweep",
                          fix="write values like 0,1,2,3 or 0.3,0.45,0.6") from exc


def read_sweep(out: str | Path) -> dict[str, Any]:
    path = Path(out) / SWEEP_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


__all__ = ["SweepConfig", "run_sweep", "parse_list", "read_sweep"]
