"""The induction phase-change report on a constructed run: every signal planted at step 1000."""
from __future__ import annotations

import networkx as nx
import numpy as np

from semgraph.tasks.induction_report import IND, phase_change_report

AT = 1000


def _sigmoid_in_log_step(t: np.ndarray, width: float = 0.08) -> np.ndarray:
    return 1 / (1 + np.exp(-(np.log(t) - np.log(AT)) / width))


def constructed_run():
    ckpts = np.array([0, 1, 2, 5, 10, 20, 50, *range(100, 2001, 40)])
    score = 0.03 + 0.5 * _sigmoid_in_log_step(np.maximum(ckpts, 1))
    rows = [{"step": int(s), IND: float(v), "induction_scores.repeat_loss": 5.0 - 4 * float(v),
             "node": "before" if s < AT else "after"} for s, v in zip(ckpts, score)]
    G = nx.DiGraph()
    G.add_node("before", label="no induction head")
    G.add_node("after", label="induction head")
    logged = np.arange(5, 2001, 5)
    loss = 3.0 * logged ** -0.3 + 1.0 + 0.2 * (1 - _sigmoid_in_log_step(logged.astype(float)))
    metrics = {int(s): {"train_loss": float(v)} for s, v in zip(logged, loss)}
    icl = 0.1 - 0.2 * _sigmoid_in_log_step(np.maximum(ckpts, 1))
    for s, v in zip(ckpts, icl):
        metrics.setdefault(int(s), {})["heldout_icl"] = float(v)
    return rows, G, metrics


def test_report_finds_every_planted_signal_at_its_step():
    rows, G, metrics = constructed_run()
    rep = phase_change_report(rows, G, metrics)
    # the planted loss is the mean over 5 updates logged at their last step: within one log interval + window
    assert abs(np.log(rep["loss_bump_step"] / AT)) <= 0.05, rep
    assert rep["loss_bump"]["onset"] <= AT <= rep["loss_bump"]["end"]
    for key in ("induction_half_rise_step", "transition_step", "icl_drop_step", "induction_steepest_rise_step",
                "induction_jump_step", "repeat_loss_drop_step"):
        assert abs(rep[key] - AT) <= 40, (key, rep[key])
    assert (rep["node_before"], rep["node_after"]) == ("before", "after")


def test_report_without_a_bump_says_none():
    rows, G, metrics = constructed_run()
    for s, m in metrics.items():
        if "train_loss" in m:
            m["train_loss"] = 3.0 * s ** -0.3 + 1.0
    assert phase_change_report(rows, G, metrics)["loss_bump_step"] is None
