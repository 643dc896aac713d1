"""Stage: figures a person can read at a glance (matplotlib; every figure as PNG and SVG).

- :func:`plot_landscape`: the graph laid out by fallibility (lower F lower, like an energy landscape),
  node size by visits, edge width by transition count;
- :func:`plot_timeline`: one run's train/test loss and accuracy, coloured by node;
- :func:`plot_probe_timeline`: key frequencies, restricted/excluded loss, induction scores (what exists);
- :func:`plot_similarity`: the checkpoint x checkpoint similarity matrix;
- :func:`plot_run`: the three-panel overview PNG `semgraph analyze` writes per run.
"""
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
    from semgraph.layout import landscape_positions
    return landscape_positions(G)


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


# ---- figures for the report ------------------------------------------------------------------------------
FIGURE_FORMATS = ("png", "svg")
STYLE = {"axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25,
         "axes.titleweight": "bold", "axes.titlesize": 11, "font.size": 9, "legend.frameon": False,
         "svg.fonttype": "none", "figure.dpi": 110}


def save(fig: plt.Figure, stem: str | Path, formats: Sequence[str] = FIGURE_FORMATS) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` (atomically) and close the figure."""
    from semgraph.io import atomic_path
    stem = Path(stem)
    paths = []
    for fmt in formats:
        path = stem.with_name(stem.name + "." + fmt)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=130, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _step_axis(ax: plt.Axes, steps: Sequence[float]) -> None:
    pos = [s for s in steps if s > 0]
    if pos and max(pos) / min(pos) > 100:
        ax.set_xscale("symlog", linthresh=max(1.0, min(pos)), linscale=0.5)
    ax.set_xlabel("training step" + (" (symlog)" if pos and max(pos) / min(pos) > 100 else ""))


def _wrap(text: str, width: int = 24) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def _node_legend(ax: plt.Axes, G: nx.DiGraph, nodes: Sequence[str], colours: dict[str, Any], **kw: Any) -> None:
    from matplotlib.patches import Patch
    handles = [Patch(color=colours[n], label=f"{n}: {G.nodes[n].get('label', '')}"[:60]) for n in nodes]
    ax.legend(handles=handles, fontsize=8, **kw)


def plot_landscape(G: nx.DiGraph, stem: str | Path, formats: Sequence[str] = FIGURE_FORMATS) -> list[Path]:
    """The landscape: x = order of first visit, y = log10 F_test per input; size ~ visits, width ~ count."""
    from matplotlib.ticker import FuncFormatter
    from semgraph.layout import landscape_positions, node_order

    nodes = node_order(G)
    colours = node_colours(list(G.nodes))
    pos = landscape_positions(G)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(6.5, 1.9 * len(nodes) + 2), 5.2))
        vmax = max([int(G.nodes[n].get("visits") or 1) for n in nodes] or [1])
        sizes = {n: 500 + 1300 * (int(G.nodes[n].get("visits") or 1) / vmax) for n in nodes}
        cmax = max([float(d.get("count") or 1) for _, _, d in G.edges(data=True)] or [1])
        for u, v, d in G.edges(data=True):
            w = 1.2 + 3.3 * float(d.get("count") or 1) / cmax
            nx.draw_networkx_edges(G, pos, edgelist=[(u, v)], ax=ax, width=w, arrowsize=12 + 2 * w,
                                   edge_color="#555555", alpha=0.75, connectionstyle="arc3,rad=0.18",
                                   node_size=[sizes[u], sizes[v]], nodelist=[u, v])
            (x0, y0), (x1, y1) = pos[u], pos[v]
            ax.annotate(f"×{d.get('count', 1)}", ((x0 + x1) / 2, (y0 + y1) / 2), xytext=(0, 7),
                        textcoords="offset points", ha="center", fontsize=7, color="#555555")
        nx.draw_networkx_nodes(G, pos, nodelist=nodes, ax=ax, node_color=[colours[n] for n in nodes],
                               node_size=[sizes[n] for n in nodes], edgecolors="white", linewidths=1.5)
        nx.draw_networkx_labels(G, pos, labels={n: str(n) for n in nodes}, ax=ax, font_size=9,
                                font_color="white", font_weight="bold")
        for n in nodes:
            x, y = pos[n]
            f = G.nodes[n].get("F_test_mean")
            sub = f"F={float(f):.3g}, visits {G.nodes[n].get('visits', '?')}" if f is not None else ""
            ax.annotate(_wrap(G.nodes[n].get("label", "")) + ("\n" + sub if sub else ""), (x, y),
                        xytext=(0, -np.sqrt(sizes[n]) / 2 - 6), textcoords="offset points", ha="center",
                        va="top", fontsize=7.5, color="#222222")
        ax.tick_params(left=True, labelleft=True, bottom=True, labelbottom=True)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{10 ** v:.3g}"))
        ax.set_ylabel("F_test per input (log scale; lower = fitter)")
        ax.set_xticks(range(len(nodes)))
        ax.set_xticklabels([str(n) for n in nodes])
        ax.set_xlabel("nodes in order of first visit")
        ne = G.number_of_edges()
        ax.set_title(f"{G.graph.get('name', 'landscape')}: {G.number_of_nodes()} nodes, "
                     f"{ne} transition{'s' if ne != 1 else ''}")
        ax.grid(axis="x", visible=False)
        ax.margins(x=0.25, y=0.3)
        ys = [p[1] for p in pos.values()]
        if ys and max(ys) - min(ys) < 0.2:
            ax.set_ylim(min(ys) - 0.4, max(ys) + 0.3)
        return save(fig, stem, formats)


def _run_rows(rows: Sequence[dict[str, Any]], run: str) -> list[dict[str, Any]]:
    return sorted((r for r in rows if r.get("run") == run), key=lambda r: r["step"])


def _series(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], dtype=float)


def _node_bands(ax: plt.Axes, rows: Sequence[dict[str, Any]], colours: dict[str, Any]) -> None:
    """Shade the x-range of each stay in a node in that node's colour."""
    steps = [r["step"] for r in rows]
    for i, r in enumerate(rows):
        if r.get("node") not in colours:
            continue
        left = steps[i] if i == 0 else (steps[i - 1] + steps[i]) / 2
        right = steps[i] if i == len(rows) - 1 else (steps[i] + steps[i + 1]) / 2
        ax.axvspan(left, right, color=colours[r["node"]], alpha=0.12, lw=0, zorder=0)


def plot_timeline(G: nx.DiGraph, rows: Sequence[dict[str, Any]], run: str, stem: str | Path,
                  formats: Sequence[str] = FIGURE_FORMATS) -> list[Path]:
    """Train/test loss and accuracy over training, points and background coloured by node."""
    rows = _run_rows(rows, run)
    colours = node_colours(list(G.nodes))
    steps = np.array([r["step"] for r in rows], dtype=float)
    point_colours = [colours.get(r.get("node"), "0.5") for r in rows]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharex=True)
        for ax, keys, ylabel, log in ((axes[0], ("output.train_loss", "output.test_loss"), "cross-entropy loss", True),
                                      (axes[1], ("output.train_acc", "output.test_acc"), "accuracy", False)):
            _node_bands(ax, rows, colours)
            for key, style in zip(keys, ("-", "--")):
                vals = _series(rows, key)
                if np.all(np.isnan(vals)):
                    continue
                ax.plot(steps, vals, style, color="#333333", lw=1.2, label=key.split(".", 1)[1], zorder=2)
                ax.scatter(steps, vals, c=point_colours, s=18, zorder=3, edgecolors="white", linewidths=0.4)
            if log:
                ax.set_yscale("log")
            ax.set_ylabel(ylabel)
            _step_axis(ax, steps)
            ax.legend(loc="best")
        _node_legend(axes[1], G, [n for n in G.nodes if any(r.get("node") == n for r in rows)], colours,
                     loc="upper left", bbox_to_anchor=(1.01, 1.0))
        axes[0].set_title(f"run {run}: loss, coloured by node")
        axes[1].set_title(f"run {run}: accuracy, coloured by node")
        return save(fig, stem, formats)


def probe_panels(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Which probe panels have data: 'key_freqs', 'fourier_loss', 'induction'."""
    panels = []
    if any(r.get("fourier.key_freqs") for r in rows):
        panels.append("key_freqs")
    if any(r.get("fourier.restricted_loss") is not None or r.get("fourier.excluded_loss") is not None for r in rows):
        panels.append("fourier_loss")
    if induction_keys(rows):
        panels.append("induction")
    return panels


def induction_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    keys = sorted({k for r in rows for k, v in r.items() if "induction" in k.lower() and isinstance(v, (int, float))
                   and not isinstance(v, bool)})
    return keys[:6]


def plot_probe_timeline(G: nx.DiGraph, rows: Sequence[dict[str, Any]], run: str, stem: str | Path,
                        formats: Sequence[str] = FIGURE_FORMATS) -> list[Path]:
    """Key frequencies over training, restricted/excluded loss, and induction scores when present."""
    rows = _run_rows(rows, run)
    panels = probe_panels(rows) or ["none"]
    colours = node_colours(list(G.nodes))
    steps = np.array([r["step"] for r in rows], dtype=float)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(5.8 * len(panels), 4.2), squeeze=False,
                                 layout="constrained")
        for ax, panel in zip(axes[0], panels):
            _node_bands(ax, rows, colours)
            _step_axis(ax, steps)
            if panel == "key_freqs":
                xs, ys, cs = [], [], []
                for r in rows:
                    for k in r.get("fourier.key_freqs") or []:
                        xs.append(r["step"]); ys.append(k); cs.append(colours.get(r.get("node"), "0.5"))
                ax.scatter(xs, ys, c=cs, s=26, marker="s", edgecolors="none", zorder=3)
                from matplotlib.ticker import MaxNLocator
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_ylim(0.5, max(ys or [1]) + 0.5)
                ax.set_ylabel("key frequency k (one mark per key frequency)")
                ax.set_title(f"run {run}: Fourier key frequencies")
            elif panel == "fourier_loss":
                for key, style, colour in (("fourier.restricted_loss", "-", "#1b9e77"),
                                           ("fourier.excluded_loss", "-", "#d95f02"),
                                           ("output.test_loss", "--", "#7570b3"),
                                           ("output.train_loss", ":", "#666666")):
                    vals = _series(rows, key)
                    if not np.all(np.isnan(vals)):
                        ax.plot(steps, vals, style, color=colour, lw=1.6, label=key.split(".", 1)[1], zorder=3)
                ax.set_yscale("log")
                ax.set_ylabel("cross-entropy loss")
                ax.set_title(f"run {run}: restricted / excluded loss")
                ax.legend(loc="best")
            elif panel == "induction":
                for key in induction_keys(rows):
                    ax.plot(steps, _series(rows, key), lw=1.6, label=key, zorder=3)
                ax.set_ylabel("score")
                ax.set_title(f"run {run}: induction scores")
                ax.legend(loc="best")
            else:
                ax.text(0.5, 0.5, "no probe timeline in this analysis", ha="center", va="center",
                        transform=ax.transAxes)
        return save(fig, stem, formats)


def plot_similarity(steps: Sequence[int], S: np.ndarray, stem: str | Path, *, nodes: Sequence[str] | None = None,
                    colours: dict[str, Any] | None = None, title: str = "checkpoint similarity",
                    measure: str = "cosine of centred logits", formats: Sequence[str] = FIGURE_FORMATS
                    ) -> list[Path]:
    """Heat map of S (checkpoints in step order) with a strip of node colours along both axes."""
    n = len(steps)
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig = plt.figure(figsize=(6.4, 5.6))
        gs = fig.add_gridspec(2, 3, width_ratios=[0.035, 1, 0.045], height_ratios=[0.035, 1],
                              wspace=0.015, hspace=0.012)
        ax = fig.add_subplot(gs[1, 1])
        im = ax.imshow(S, cmap="magma", vmin=float(np.nanmin(S)), vmax=1.0, interpolation="nearest",
                       aspect="auto")
        ticks = np.unique(np.linspace(0, n - 1, min(n, 8)).round().astype(int))
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(steps[i]) for i in ticks], rotation=45, ha="right")
        ax.set_yticks(ticks)
        ax.set_yticklabels([str(steps[i]) for i in ticks])
        ax.set_xlabel("checkpoint (step)")
        if nodes is not None and colours is not None:
            from matplotlib.colors import to_rgba
            strip = np.array([[to_rgba(colours.get(nd, "0.5")) for nd in nodes]])
            top = fig.add_subplot(gs[0, 1], sharex=ax)
            top.imshow(strip, aspect="auto", interpolation="nearest")
            top.axis("off")
            left = fig.add_subplot(gs[1, 0], sharey=ax)
            left.imshow(strip.transpose(1, 0, 2), aspect="auto", interpolation="nearest")
            left.set_xticks([])
            left.set_ylabel("checkpoint (step)")
            ax.tick_params(labelleft=False)
            for side in left.spines.values():
                side.set_visible(False)
        cax = fig.add_subplot(gs[1, 2])
        fig.colorbar(im, cax=cax, label=measure)
        fig.suptitle(title, fontweight="bold", fontsize=11, y=0.97)
        return save(fig, stem, formats)
