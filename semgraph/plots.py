"""Stage: a PNG a person can read at a glance: loss/accuracy curves coloured by node, and the graph."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402


def node_colours(nodes: Sequence[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10" if len(nodes) <= 10 else "tab20")
    return {n: cmap(i % cmap.N) for i, n in enumerate(nodes)}


def landscape_layout(G: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """x: first entry (order of discovery); y: log10 of test fallibility per input (lower F lower)."""
    order = sorted(G.nodes, key=lambda n: (G.nodes[n].get("first_entry_step") or 0, n))
    pos = {}
    for i, n in enumerate(order):
        f = G.nodes[n].get("F_test_mean")
        pos[n] = (float(i), float(np.log10(max(f, 1e-6))) if f is not None else 0.0)
    return pos


def plot_run(G: nx.DiGraph, rows: Sequence[dict[str, Any]], run: str, path: str | Path) -> Path:
    rows = sorted((r for r in rows if r["run"] == run), key=lambda r: r["step"])
    nodes = list(G.nodes)
    colours = node_colours(nodes)
    steps = np.array([r["step"] for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    for ax, keys, ylabel, log in ((axes[0], ("output.train_loss", "output.test_loss", "fourier.restricted_loss"),
                                   "loss (cross-entropy)", True),
                                  (axes[1], ("output.train_acc", "output.test_acc"), "accuracy", False)):
        for key, style in zip(keys, ("-", "--", ":")):
            vals = np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)
            if np.all(np.isnan(vals)):
                continue
            ax.plot(steps, vals, style, color="0.6", lw=1, label=key.split(".", 1)[1], zorder=1)
            ax.scatter(steps, vals, c=[colours[r["node"]] for r in rows], s=14, zorder=2)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    axes[0].set_title(f"run {run}: curves coloured by node")
    ax = axes[2]
    pos = landscape_layout(G)
    sizes = [200 + 60 * G.nodes[n].get("n_members", 1) for n in nodes]
    widths = [1 + G[u][v].get("count", 1) for u, v in G.edges]
    nx.draw_networkx_edges(G, pos, ax=ax, width=widths, arrowsize=15, edge_color="0.4",
                           connectionstyle="arc3,rad=0.15", node_size=sizes)
    nx.draw_networkx_nodes(G, pos, ax=ax, node_color=[colours[n] for n in nodes], node_size=sizes)
    nx.draw_networkx_labels(G, pos, ax=ax, font_size=9)
    for n, (x, y) in pos.items():
        ax.annotate(G.nodes[n].get("label", ""), (x, y), xytext=(0, -16), textcoords="offset points",
                    ha="center", fontsize=7, wrap=True)
    ax.set_ylabel("log10 F_test per input (lower = fitter)")
    ax.set_xlabel("nodes in order of first visit")
    ax.set_title("landscape graph")
    ax.tick_params(left=True, labelleft=True)
    ax.margins(0.2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
