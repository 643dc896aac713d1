"""Progress measures on a grokking run: are Nanda et al.'s claims true of this run?

    python examples/progress_measures.py RUN_DIR --store STORE [--out progress.json] [--level 0.5]

RUN_DIR is a recorded modular-addition run (run.json + checkpoints). STORE is the HDF5 activation store of a
`semgraph analyze` (OUT/store); checkpoints missing from it are captured into it first (resumable). Prints
one row per checkpoint and the three claims with the steps that decide them; definitions in
probes/progress.py.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from probes.progress import check_claims, measure_run
from probes.similarity import cka_matrix, store_loader
from semgraph.checkpoints import discover
from semgraph.errors import SemgraphError
from semgraph.extract import CaptureConfig, extract_run
from semgraph.io import atomic_write_json
from semgraph.store import ActivationStore
from semgraph.tasks import task_from_spec


def progress_measures(run_dir: str | Path, store_dir: str | Path, level: float = 0.5, cka_hook: str | None = None
                      ) -> tuple[list, dict]:
    run = discover(run_dir)[0]
    task = task_from_spec(run.info["task"])
    defaults = task.analysis_defaults()
    probe_set = task.probe_set()
    store = ActivationStore(store_dir)
    cfg = CaptureConfig(hooks=defaults["hooks"], params=defaults["params"])
    extract_run(run, probe_set, cfg, store, progress=False)
    steps = [c.step for c in run.checkpoints if store.path_for(run.name, c.step).exists()]
    rows = measure_run(store, run.name, steps, probe_set, task.spec())
    claims = check_claims(rows, level=level)
    if cka_hook:
        t0 = time.perf_counter()
        matrix, reasons = cka_matrix(steps, store_loader(store, run.name, cka_hook), max_bytes=64 << 20)
        for r, value in zip(rows, matrix[:, -1]):
            r[f"cka_to_final[{cka_hook}]"] = None if np.isnan(value) else float(value)
        claims["cka_matrix"] = {"hook": cka_hook, "seconds": round(time.perf_counter() - t0, 2),
                                "not_computed": {str(k): v for k, v in reasons.items()},
                                "min": float(np.nanmin(matrix)), "steps": steps,
                                "matrix": np.round(matrix, 4).tolist()}
    return rows, claims


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--store", required=True, help="HDF5 store folder (e.g. results/store)")
    ap.add_argument("--out", help="write rows and claims as JSON here")
    ap.add_argument("--level", type=float, default=0.5, help="event level (see probes/progress.py)")
    ap.add_argument("--cka-hook", default="blocks.0.hook_resid_post",
                    help="also compute the streamed checkpoint x checkpoint CKA matrix of this hook ('' to skip)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        rows, claims = progress_measures(args.run_dir, args.store, args.level, args.cka_hook or None)
    except SemgraphError as exc:
        print(f"progress_measures: error: {exc}", file=sys.stderr)
        return 2
    cka_key = f"cka_to_final[{args.cka_hook}]"
    print(f"{'step':>6} {'train':>8} {'test':>8} {'restr':>8} {'excl':>8} {'gini':>6} {'q':>5} {'cka':>5}  key freqs")
    for r in rows:
        def f(x, w=8, d=3):
            return f"{x:{w}.{d}f}" if x is not None else " " * (w - 1) + "-"
        print(f"{r['step']:>6} {f(r['train_loss'])} {f(r['test_loss'])} {f(r['restricted_loss'])} "
              f"{f(r['excluded_loss'])} {f(r['gini'], 6, 2)} {f(r['distance_irrelevance'], 5, 2)} {f(r.get(cka_key), 5, 2)}  {r['key_freqs']}")
    print(json.dumps({k: v for k, v in claims.items() if k != "cka_matrix"}, indent=2))
    if "cka_matrix" in claims:
        c = claims["cka_matrix"]
        print(f"CKA matrix of {c['hook']}: {len(c['steps'])}x{len(c['steps'])} in {c['seconds']} s, min {c['min']:.3f}")
    if args.out:
        atomic_write_json(args.out, {"rows": rows, "claims": claims})
    return 0


if __name__ == "__main__":
    sys.exit(main())
