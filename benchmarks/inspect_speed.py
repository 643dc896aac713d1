"""`semgraph inspect` on a folder of 200 checkpoints vs loading every checkpoint's weights, side by side.

    python benchmarks/inspect_speed.py [--n 200] [--mib 8] [--format pt|safetensors|both]

Writes N real checkpoints of about MIB MiB each (torch .pt training containers and/or safetensors) to a
temporary folder, then times (a) ``inspect_folder`` (headers / pickle structure only, tensor data memory-mapped
and never read) and (b) reading every checkpoint's tensors with ``load_checkpoint`` (what analysis must do).
Prints both times and their ratio. Page cache is warm for both (the files were just written), so the ratio
understates the gap on a cold disk.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from semgraph.checkpoints import discover, load_checkpoint
from semgraph.inspect_cmd import inspect_folder


def write_folder(root: Path, n: int, mib: float, fmt: str) -> None:
    n_values = int(mib * (1 << 20) / 4)
    rows = max(1, n_values // 1024)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        state = {"mlp.W_in": torch.full((rows, 1024), float(i)), "mlp.W_out": torch.full((16, 16), float(i))}
        if fmt == "pt":
            torch.save({"model": state, "epoch": i * 10, "train_accuracy": 0.5}, root / f"step_{i * 10}.pt")
        else:
            save_file(state, str(root / f"step_{i * 10}.safetensors"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--mib", type=float, default=8.0)
    ap.add_argument("--format", choices=["pt", "safetensors", "both"], default="both")
    args = ap.parse_args()
    torch.set_num_threads(1)
    fmts = ["pt", "safetensors"] if args.format == "both" else [args.format]
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in fmts:
            root = Path(tmp) / fmt
            write_folder(root, args.n, args.mib, fmt)
            t0 = time.perf_counter()
            report = inspect_folder(root)
            t_inspect = time.perf_counter() - t0
            t0 = time.perf_counter()
            total = 0
            for ref in discover(root)[0].checkpoints:
                total += sum(v.numel() for v in load_checkpoint(ref).state.values())
            t_load = time.perf_counter() - t0
            run = report["runs"][0]
            print(f"{fmt:>11}: {run['checkpoints']} checkpoints x {args.mib:g} MiB | inspect {t_inspect:.2f} s | "
                  f"load all weights {t_load:.2f} s | ratio {t_load / t_inspect:.1f}x | "
                  f"signature {run['signatures'][0]['signature']} on {len(run['signatures'][0]['steps'])} steps")


if __name__ == "__main__":
    main()
