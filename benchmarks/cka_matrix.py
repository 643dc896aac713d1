"""Checkpoint x checkpoint CKA matrix from an HDF5 store: the batched, thread-capped ``cka_matrix`` vs a
plain pairwise loop over ``linear_cka`` holding the same checkpoints, side by side (same numbers).

    python benchmarks/cka_matrix.py STORE RUN [--hook blocks.0.hook_resid_post] [--n 16]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from probes.similarity import cka_matrix, linear_cka, store_loader
from semgraph.store import ActivationStore


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("run")
    ap.add_argument("--hook", default="blocks.0.hook_resid_post")
    ap.add_argument("--n", type=int, default=16, help="checkpoints (the last n) to compare")
    args = ap.parse_args()
    store = ActivationStore(args.store)
    steps = sorted(int(k.split("/")[-1]) for k, e in json.loads((Path(args.store) / "manifest.json").read_text())
                   ["entries"].items() if k.startswith(f"{args.run}/") and e.get("status") == "done")[-args.n:]
    load = store_loader(store, args.run, args.hook)
    t = time.perf_counter()
    fast, _ = cka_matrix(steps, load)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    acts = {s: load(s) for s in steps}
    slow = np.array([[linear_cka(acts[a], acts[b]) for b in steps] for a in steps])
    t_slow = time.perf_counter() - t
    print(f"{len(steps)} checkpoints of {args.hook} {acts[steps[0]].shape}: cka_matrix {t_fast:.2f} s, "
          f"pairwise linear_cka {t_slow:.2f} s, ratio {t_slow / t_fast:.1f}x, "
          f"max |difference| {np.nanmax(np.abs(fast - slow)):.2e}")


if __name__ == "__main__":
    main()
