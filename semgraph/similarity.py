"""Checkpoint x checkpoint similarity from the activation store.

The default measure is the cosine similarity of *output fingerprints*: each checkpoint's logits on the
whole probe set, centred per input (so a constant shift of the logits does not count), flattened into
one vector. It is deliberately small and swappable: pass ``features=`` to compare another stored array
(e.g. ``"acts/blocks.0.hook_resid_post"``) and ``measure=`` to use another similarity (e.g. linear CKA
from probes/) with the signature ``measure(list_of_2d_arrays) -> (n, n) matrix``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from semgraph.errors import StoreError
from semgraph.store import ActivationStore, _h5_name

Measure = Callable[[Sequence[np.ndarray]], np.ndarray]


def cosine_fingerprints(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Cosine similarity of per-input centred, flattened arrays (a zero vector is similar only to itself)."""
    X = np.stack([(a - a.mean(axis=-1, keepdims=True)).ravel() for a in arrays]).astype(np.float64)
    norms = np.linalg.norm(X, axis=1)
    unit = X / np.where(norms > 0, norms, 1.0)[:, None]
    S = unit @ unit.T
    zero = norms == 0
    S[np.ix_(zero, zero)] = 1.0
    return np.clip(S, -1.0, 1.0)


def checkpoint_similarity(store_root: str | Path, run: str, steps: Sequence[int] | None = None, *,
                          features: str = "logits", measure: Measure = cosine_fingerprints
                          ) -> tuple[list[int], np.ndarray]:
    """(steps, S) for the run's stored checkpoints (all finished ones when ``steps`` is None)."""
    store = ActivationStore(store_root) if not isinstance(store_root, ActivationStore) else store_root
    if steps is None:
        steps = sorted(int(k.split("/")[-1]) for k, e in store.manifest["entries"].items()
                       if k.rsplit("/", 1)[0] == run and e.get("status") == "done")
    steps = [s for s in steps if store.path_for(run, s).exists()]
    if not steps:
        raise StoreError(f"no stored checkpoints for run {run!r}", path=store.root, stage="similarity",
                         fix="run `semgraph analyze` to fill the store")
    arrays = []
    for s in steps:
        with store.open(run, s) as fh:
            name = _h5_name(features)
            if name not in fh:
                raise StoreError(f"{features!r} is not stored for step {s}", path=store.path_for(run, s),
                                 stage="similarity", fix="use features='logits' or a captured hook name")
            arrays.append(np.asarray(fh[name][()], dtype=np.float32))
    return list(steps), measure(arrays)
