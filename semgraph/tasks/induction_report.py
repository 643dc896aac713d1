"""Where the induction-head phase change happens in an analysed run, from four kinds of signal.

- induction jump: the checkpoint that ends the largest rise of the best induction score between two
  consecutive checkpoints (attention patterns, ``induction_scores`` probe), the first checkpoint at
  which the score passes half-way from its first to its last value, and the step of its steepest rise
  against log(step) (``induction_steepest_rise_step``, on the same axis as the loss bump);
- loss bump (Olsson et al. 2022): ``loss_bump_step`` is the step of the steepest fall of the training loss
  against log(step) inside the bump found by ``semgraph.bumps.loss_bump`` -- a stretch after ``skip_until``
  where the loss falls significantly faster against log(step) than in the window before it (the local
  extremum of d loss / d ln step; a smooth power law has none, then it is None). It reads the ``train_loss``
  the loop logged (mean over the ``loss_every`` updates before each log line). The same detector on the
  parts of that loss on the in-context copies and on plain-text windows gives ``copy_loss_bump_step`` and
  ``plain_loss_bump_step``, on the held-out text loss ``heldout_loss_bump_step``.
  ``repeat_loss_drop_step``: the checkpoint ending the largest fall of the loss on repeated random sequences
  (probe);
- in-context learning: ``icl_drop_step`` is the steepest fall against log(step) of the ICL score (loss at
  late minus loss at early positions of held-out text windows, ``probes.induction.icl_score``) the loop
  logged on ``n_ctx``-byte windows (``heldout_icl``); ``icl_drop_step_probe`` the same from the probe's
  ``icl_score`` on the probe set's shorter text windows;
- landscape transition: the change of node (Ward states of the probe signatures) nearest to the half-way
  rise (robust when the rise is gradual; the largest single-interval rise is noisier and reported too).

``python -m semgraph.tasks.induction_report RUN_DIR OUT`` analyses the run into ``OUT`` (reusing what is
there) and writes ``OUT/phase_change.json``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import networkx as nx
import numpy as np

from semgraph.bumps import loss_bump, steepest_fall_step

IND = "induction_scores.induction_max"


def _largest_change(steps: np.ndarray, values: np.ndarray, sign: float) -> int | None:
    if len(values) < 2 or not np.all(np.isfinite(values)):
        return None
    return int(steps[1:][int(np.argmax(sign * np.diff(values)))])


def phase_change_report(rows: Sequence[dict[str, Any]], graph: nx.DiGraph,
                        metrics: Mapping[int, Mapping[str, float]] | None = None, *, skip_until: int = 200
                        ) -> dict[str, Any]:
    """Steps of the phase change (module docstring) from the analysis rows, the landscape and the metrics
    the training loop logged (``read_metrics``)."""
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
        "induction_steepest_rise_step": steepest_fall_step(steps, -ind, skip_until=skip_until),
    }
    icl_rows = [(r["step"], r["induction_scores.icl_score"]) for r in rows
                if r.get("induction_scores.icl_score") is not None]
    if icl_rows:
        out["icl_drop_step_probe"] = steepest_fall_step(*zip(*icl_rows), skip_until=skip_until)
    if metrics:
        out.update(_from_metrics(metrics, skip_until))
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


def _series(metrics: Mapping[int, Mapping[str, float]], key: str) -> tuple[list[int], list[float]]:
    pts = sorted((int(s), float(m[key])) for s, m in metrics.items() if m.get(key) is not None)
    return [p[0] for p in pts], [p[1] for p in pts]


def _centred(steps: list[int]) -> list[float]:
    """A training loss logged at step s is the mean over the updates since the previous log line: centre it."""
    return [(a + b) / 2 for a, b in zip([0] + steps[:-1], steps)]


def _from_metrics(metrics: Mapping[int, Mapping[str, float]], skip_until: int) -> dict[str, Any]:
    """Loss bump of the logged training loss and held-out loss, ICL drop of the logged ICL score."""
    out: dict[str, Any] = {}
    steps, loss = _series(metrics, "train_loss")
    if steps:
        bump = loss_bump(_centred(steps), loss, skip_until=skip_until)
        out["train_loss_points"] = len(steps)
        out["loss_bump_step"] = None if bump is None else bump.step
        if bump is not None:
            out["loss_bump"] = {"onset": bump.onset, "end": bump.end, "slope": bump.slope,
                                "reference_slope": bump.reference_slope, "z": bump.z}
    for key, name in (("train_loss_copy", "copy_loss_bump_step"), ("train_loss_plain", "plain_loss_bump_step"),
                      ("heldout_loss", "heldout_loss_bump_step")):
        steps, values = _series(metrics, key)
        if steps:
            bump = loss_bump(_centred(steps) if key.startswith("train") else steps, values, skip_until=skip_until)
            out[name] = None if bump is None else bump.step
    steps, icl = _series(metrics, "heldout_icl")
    if steps:
        out["icl_drop_step"] = steepest_fall_step(steps, icl, skip_until=skip_until)
        late = [v for s, v in zip(steps, icl) if s >= skip_until]
        out["icl_first"], out["icl_last"] = float(icl[0]), float(icl[-1])
        out["icl_at_skip"] = float(late[0]) if late else None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import json
    from pathlib import Path

    from semgraph.analyze import analyze
    from semgraph.io import atomic_write_json
    from semgraph.recorder import read_metrics

    ap = argparse.ArgumentParser(description="phase-change report of an induction run")
    ap.add_argument("run_dir")
    ap.add_argument("out")
    ap.add_argument("--skip-until", type=int, default=200)
    args = ap.parse_args(argv)
    res = analyze(args.run_dir, args.out, progress=False)
    rep = phase_change_report(res.rows, res.graph, read_metrics(args.run_dir), skip_until=args.skip_until)
    atomic_write_json(Path(args.out) / "phase_change.json", rep)
    print(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
