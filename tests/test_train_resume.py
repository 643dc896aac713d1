"""A training run killed with SIGKILL and started again ends where an uninterrupted run ends."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import torch

from semgraph.checkpoints import discover, read_state_dict
from conftest import TINY


def test_killed_training_resumes_to_the_same_weights(tiny_run_master, tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "semgraph.cli", "train", "modular-addition", "--out", str(out),
            "--threads", "2"] + [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "checkpoints").exists() and len(list((out / "checkpoints").glob("step_*"))) >= 22:
            break   # past step 100: some checkpoints written, more to come
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(list((out / "checkpoints").glob("step_*")))
    assert subprocess.run(args, capture_output=True, timeout=240).returncode == 0
    resumed, reference = discover(out)[0], discover(tiny_run_master)[0]
    assert resumed.steps == reference.steps and n_before < len(reference.steps) + 1
    for a, b in zip(resumed.checkpoints[-3:], reference.checkpoints[-3:]):
        sa, sb = read_state_dict(a), read_state_dict(b)
        for k in sb:
            assert torch.allclose(sa[k], sb[k], atol=1e-5, rtol=1e-4), (a.step, k)
