"""Linear probe cost per checkpoint at the reference size (p = 53: 2809 inputs, d = 128, 53 classes),
with BLAS/OpenMP threads capped at 1 (the probe's default) vs left to the libraries, side by side.

    python benchmarks/linear_probe_threads.py [--repeats 2]

The ratio depends on the machine's load: capping matters most on a shared machine with few cores.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from probes.linear import LinearConceptProbe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    y = np.arange(53 * 53) % 53
    X = rng.normal(size=(len(y), 128))
    X[:, :2] += 3 * np.c_[np.cos(2 * np.pi * y / 53), np.sin(2 * np.pi * y / 53)]
    times = {}
    for label, threads in (("1 thread", 1), ("library default", None)):
        best = np.inf
        for _ in range(args.repeats):
            t = time.perf_counter()
            probe = LinearConceptProbe(n_threads=threads).fit(X, y)
            best = min(best, time.perf_counter() - t)
        times[label] = best
        print(f"{label:>16}: {best:6.2f} s per checkpoint (score {probe.score_:.3f}, C={probe.penalty_})")
    print(f"library default / 1 thread = {times['library default'] / times['1 thread']:.1f}x")


if __name__ == "__main__":
    main()
