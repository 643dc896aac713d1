"""Landscape layout shared by the static plots and the HTML report (no plotting library needed).

x: nodes in order of first visit (ties by name); y: log10 of the mean test fallibility per input, so a
fitter node (lower F) sits lower, like a valley in an energy landscape. A node without F sits at the
bottom of the F range, marked ``has_F = False`` by :func:`landscape_positions`' caller if it cares.
"""
from __future__ import annotations

import math
from typing import Any

import networkx as nx

F_KEY = "F_test_mean"


def node_order(G: nx.DiGraph) -> list[Any]:
    """Nodes in order of first visit (``first_entry_step``), then by name."""
    return sorted(G.nodes, key=lambda n: (_num(G.nodes[n].get("first_entry_step"), math.inf), str(n)))


def log_fallibility(G: nx.DiGraph, n: Any, key: str = F_KEY) -> float | None:
    f = _num(G.nodes[n].get(key), None)
    return None if f is None or not math.isfinite(f) else math.log10(max(f, 1e-6))


def landscape_positions(G: nx.DiGraph, key: str = F_KEY) -> dict[Any, tuple[float, float]]:
    """node -> (x, y): x = rank of first visit, y = log10 F (lower F lower); nodes without F at the bottom."""
    order = node_order(G)
    ys = {n: log_fallibility(G, n, key) for n in order}
    known = [y for y in ys.values() if y is not None]
    floor = (min(known) - 0.5) if known else 0.0
    return {n: (float(i), ys[n] if ys[n] is not None else floor) for i, n in enumerate(order)}


def _num(v: Any, default: Any) -> Any:
    try:
        return default if v is None else float(v)
    except (TypeError, ValueError):
        return default
