"""Stage: per-run trajectories through nodes -> one networkx DiGraph (the landscape).

Node attributes: label, concepts, member checkpoints, fallibility (F_train / F_test sums and means averaged
over members), accuracies, key frequencies, visits, dwell time, first entry step. Edge attributes: count of
transitions, first step, jump probability (count / all transitions out of the source), rate (count / total
dwell time in the source, per step) and mean waiting time (1 / rate). Dwell of a visit = step of the first
checkpoint in the next node minus step of entry; the last visit of a run is cut by the end of training
(censored) and counted in ``dwell`` but flagged in ``censored_dwell``.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import networkx as nx
import numpy as np

NODE_MEANS = ("output.train_acc", "output.test_acc", "output.train_loss", "output.test_loss",
              "output.F_train", "output.F_test", "output.F_unseen", "output.F_train_mean", "output.F_test_mean",
              "output.F_unseen_mean", "fourier.restricted_loss", "fourier.excluded_loss", "fourier.gini",
              "linear.score")


def trajectories(rows: Sequence[dict[str, Any]]) -> dict[str, list[tuple[int, str]]]:
    """run -> [(step, node), ...] in step order."""
    out: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: (r["run"], r["step"])):
        out[r["run"]].append((int(r["step"]), r["node"]))
    return dict(out)


def visits(path: Sequence[tuple[int, str]]) -> list[dict[str, Any]]:
    """Consecutive stays in one node: node, entry step, exit step (entry of the next node), censored."""
    out = []
    for i, (step, node) in enumerate(path):
        if i == 0 or path[i - 1][1] != node:
            out.append({"node": node, "entry": step, "exit": None, "censored": True})
        if i + 1 < len(path) and path[i + 1][1] != node:
            out[-1].update(exit=path[i + 1][0], censored=False)
    if out and out[-1]["censored"]:
        out[-1]["exit"] = path[-1][0]
    return out


def build_landscape(rows: Sequence[dict[str, Any]], node_info: dict[str, dict[str, Any]],
                    run_info: dict[str, dict[str, Any]] | None = None) -> nx.DiGraph:
    """Rows carry 'run', 'step', 'node' and probe values; ``node_info`` maps node -> {label, concepts}."""
    G = nx.DiGraph(name="semantic landscape")
    paths = trajectories(rows)
    by_node: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_node[r["node"]].append(r)
    for node in sorted(by_node, key=lambda n: int(n.lstrip("N")) if n.lstrip("N").isdigit() else n):
        members = sorted(by_node[node], key=lambda r: (r["run"], r["step"]))
        attrs: dict[str, Any] = dict(node_info.get(node, {}))
        attrs["members"] = [f"{r['run']}@{r['step']}" for r in members]
        attrs["member_steps"] = [int(r["step"]) for r in members]
        attrs["n_members"] = len(members)
        for key in NODE_MEANS:
            vals = [r.get(key) for r in members if r.get(key) is not None]
            if vals:
                attrs[key.split(".", 1)[1]] = float(np.mean(vals))
        freqs = [tuple(r.get("fourier.key_freqs") or []) for r in members]
        attrs["key_freqs"] = list(max(set(freqs), key=freqs.count)) if freqs else []
        attrs["runs"] = sorted({r["run"] for r in members})
        G.add_node(node, **attrs)
    dwell = defaultdict(float)
    censored = defaultdict(float)
    n_visits = defaultdict(int)
    first_entry: dict[str, dict[str, int]] = defaultdict(dict)
    for run, path in paths.items():
        vs = visits(path)
        for v in vs:
            n_visits[v["node"]] += 1
            first_entry[v["node"]].setdefault(run, v["entry"])
            (censored if v["censored"] else dwell)[v["node"]] += v["exit"] - v["entry"]
        for prev, nxt in zip(vs, vs[1:]):
            u, w = prev["node"], nxt["node"]
            if G.has_edge(u, w):
                G[u][w]["count"] += 1
                G[u][w]["first_step"] = min(G[u][w]["first_step"], nxt["entry"])
                G[u][w]["runs"] = sorted(set(G[u][w]["runs"]) | {run})
            else:
                G.add_edge(u, w, count=1, first_step=nxt["entry"], runs=[run])
    for node in G.nodes:
        G.nodes[node].update(visits=n_visits[node], dwell=dwell[node], censored_dwell=censored[node],
                             first_entry_step=min(first_entry[node].values()) if first_entry[node] else None,
                             first_entry_by_run=dict(first_entry[node]))
    for u in G.nodes:
        out_total = sum(d["count"] for _, _, d in G.out_edges(u, data=True))
        for _, w, d in G.out_edges(u, data=True):
            d["jump_probability"] = d["count"] / out_total
            d["rate"] = d["count"] / dwell[u] if dwell[u] > 0 else None
            d["mean_waiting_time"] = dwell[u] / d["count"] if dwell[u] > 0 else None
            fu, fw = G.nodes[u].get("F_test_mean"), G.nodes[w].get("F_test_mean")
            d["delta_F_test_mean"] = None if fu is None or fw is None else fw - fu
    G.graph["runs"] = sorted(paths)
    G.graph["trajectories"] = {run: [[s, n] for s, n in path] for run, path in paths.items()}
    G.graph["run_info"] = run_info or {}
    return G


def node_path(G: nx.DiGraph, run: str) -> list[str]:
    """The sequence of nodes a run visited (consecutive repeats collapsed)."""
    path = G.graph["trajectories"][run]
    return [v["node"] for v in visits([(int(s), n) for s, n in path])]
