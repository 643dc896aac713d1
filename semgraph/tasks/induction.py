"""Induction heads on real text (Olsson et al. 2022, "In-context Learning and Induction Heads").

The corpus is the Python standard library's own ``.py`` sources, read from the running interpreter's stdlib
folder (present offline on every machine), as bytes: tokens are byte values, non-ASCII bytes become token 0,
so the vocabulary is 128. Files are split into train/test by a fixed rule on their sorted names.

The probe set holds two kinds of inputs of the same length ``2 * repeat_len``:

- ``unseen``: repeated random tokens ``[r_1..r_L, r_1..r_L]`` (printable ASCII). The answer read at the last
  position is ``r_1`` -- exactly what an induction head predicts (after ``r_L`` came ``r_1`` last time).
- ``test``: windows of held-out real text; the answer is the byte that follows the window.

Analysis captures the attention patterns of every layer and the logits at every position, and runs the
``induction_scores`` probe (``probes.induction``: induction and previous-token score per head, loss on
repeated sequences and on text, in-context-learning score).
"""
from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from semgraph.errors import ConfigError
from semgraph.tasks.base import ProbeSet, Task

VOCAB = 128
PRINTABLE = np.arange(32, 127)


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


@lru_cache(maxsize=4)
def load_corpus(max_bytes: int = 8_000_000, test_every: int = 10) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(train tokens, test tokens, file names) from the stdlib's top-level ``.py`` files, sorted by name.

    Every ``test_every``-th file (by sorted name) is held out for testing. At most ``max_bytes`` are read.
    """
    root = stdlib_dir()
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    if not files:
        raise ConfigError("no .py files in the Python standard library folder", path=root, stage="corpus",
                          fix="run with a CPython whose stdlib sources are installed")
    train, test, names, total = [], [], [], 0
    for i, f in enumerate(files):
        data = np.frombuffer(f.read_bytes(), dtype=np.uint8)
        if total + len(data) > max_bytes:
            break
        total += len(data)
        names.append(f.name)
        (test if i % test_every == 0 else train).append(data)
    tok = [np.where(np.concatenate(x) < VOCAB, np.concatenate(x), 0).astype(np.int64) for x in (train, test)]
    return tok[0], tok[1], names


def random_windows(tokens: np.ndarray, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` windows of ``length`` consecutive tokens starting at random offsets."""
    starts = rng.integers(0, len(tokens) - length, size=n)
    return tokens[starts[:, None] + np.arange(length)[None, :]]


@dataclass
class InductionText(Task):
    repeat_len: int = 20
    n_repeat: int = 32
    n_text: int = 32
    n_layers: int = 2
    seed: int = 0

    name = "induction"

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "repeat_len": self.repeat_len, "n_repeat": self.n_repeat,
                "n_text": self.n_text, "n_layers": self.n_layers, "seed": self.seed}

    def repeated_sequences(self, n: int, rng: np.random.Generator) -> np.ndarray:
        half = rng.choice(PRINTABLE, size=(n, self.repeat_len))
        return np.concatenate([half, half], axis=1).astype(np.int64)

    def probe_set(self) -> ProbeSet:
        rng = np.random.default_rng(self.seed + 12345)
        rep = self.repeated_sequences(self.n_repeat, rng)
        _, test, _ = load_corpus()
        win = random_windows(test, self.n_text, 2 * self.repeat_len + 1, rng)
        inputs = np.concatenate([rep, win[:, :-1]]).astype(np.int64)
        labels = np.concatenate([rep[:, 0], win[:, -1]]).astype(np.int64)
        split = np.array(["unseen"] * self.n_repeat + ["test"] * self.n_text)
        return ProbeSet(inputs=inputs, labels=labels, split=split,
                        concepts={"repeated": (split == "unseen").astype(np.int64)})

    @staticmethod
    def model_spec(n_layers: int = 2, d_model: int = 64, n_heads: int = 4, n_ctx: int = 64, seed: int = 0
                   ) -> dict[str, Any]:
        """A 2-layer attention-only transformer (TransformerBridge.boot_native, attn_only=True)."""
        return {"builder": "transformer-lens-native", "config": {
            "d_model": d_model, "d_head": d_model // n_heads, "n_heads": n_heads, "n_layers": n_layers,
            "n_ctx": n_ctx, "d_vocab": VOCAB, "attn_only": True, "normalization_type": "LN", "seed": seed,
        }}

    def analysis_defaults(self) -> dict[str, Any]:
        return {
            "hooks": [f"blocks.{layer}.attn.hook_pattern" for layer in range(self.n_layers)] + ["unembed.hook_out"],
            "params": [],
            "position": None,  # attention patterns and logits at every position
            "probes": [("output", {}), ("induction_scores", {"logits_hook": "unembed.hook_out"})],
            "signature": ["induction_scores.induction_max", "induction_scores.prev_token_max",
                          "induction_scores.repeat_loss", "induction_scores.text_loss"],
        }
