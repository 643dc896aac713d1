"""Where the induction-head phase change happens in an analysed run, from three independent signals.

- induction jump: the checkpoint that ends the largest rise of the best induction score between two
  consecutive checkpoints (attention patterns, ``induction_scores`` probe), and the first checkpoint at
  which the score passes half-way from its first to its last value;
- loss bump: the checkpoint that ends the largest fall of the loss on repeated random sequences (probe), and
  of the training loss the loop logged (mean since the previous checkpoint), after ``skip_until`` (the
  initial fall from chance dominates the first steps);
- landscape transition: the change of node (Ward states of the probe signatures) nearest to the half-way
  rise (robust when the rise is gradual; the largest single-interval rise is noisier and reported too).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import networkx as nx
import numpy as np

IND = "induction_scores.induction_max"


def _largest_change(steps: np.ndarray, values: np.ndarray, sign: float) -> int | None:
    if len(values) < 2 or not np.all(np.isfinite(values)):
        return None
    return int(steps[1:][int(np.argmax(sign * np.diff(values)))])


def phase_change_report(rows: Sequence[dict[str, Any]], graph: nx.DiGraph,
                        metrics: Mapping[int, Mapping[str, float]] | None = None, *, skip_until: int = 200
                        ) -> dict[str, Any]:
    rows = sorted(rows, key=lambda r: r["step"])
    steps = np.array([r["step"] for r in rows])
    ind = np.array([r[IND] for r in rows], dtype=float)
    jump = _largest_change(steps, ind, +1)
    half = ind[0] + 0.5 * (ind[-1] - ind[0])
    half_step = next((int(s) for s, v in zip(steps, ind) if v >= half), None) if ind[-1] > ind[0] else None
    late = steps >= skip_until
    rep = np.array([r.get("induction_scores.repeat_loss", np.nan) for r in rows], dtype=float)
    out: dict[str, Any] = {
        "induction_jump_step": jump, "induction_half_rise_step": half_step,
        "induction_first": float(ind[0]), "induction_last": float(ind[-1]),
        "repeat_loss_drop_step": _largest_change(steps[late], rep[late], -1),
    }
    if metrics:
        tl_steps = np.array([s for s in steps if s >= skip_until and "train_loss" in metrics.get(int(s), {})])
        tl = np.array([metrics[int(s)]["train_loss"] for s in tl_steps])
        out["train_loss_bump_step"] = _largest_change(tl_steps, tl, -1)
    nodes = [r["node"] for r in rows]
    transitions = [int(steps[i]) for i in range(1, len(rows)) if nodes[i] != nodes[i - 1]]
    out["node_path"] = [n for i, n in enumerate(nodes) if i == 0 or n != nodes[i - 1]]
    out["transitions"] = transitions
    anchor = half_step if half_step is not None else jump
    if anchor is not None and transitions:
        t = min(transitions, key=lambda s: (abs(s - anchor), s))
        i = int(np.searchsorted(steps, t))
        before, after = nodes[i - 1], nodes[i]
        out.update(transition_step=t, node_before=before, node_after=after,
                   label_before=graph.nodes[before].get("label"), label_after=graph.nodes[after].get("label"),
                   induction_max_before=float(np.mean([r[IND] for r in rows if r["node"] == before])),
                   induction_max_after=float(np.mean([r[IND] for r in rows if r["node"] == after])),
                   checkpoint_interval=int(steps[i] - steps[i - 1]))
    return out
