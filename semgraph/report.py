"""Stage: one self-contained HTML report of an analysis folder (no CDN, no network: everything inline).

`write_report(OUT_DIR)` reads what `semgraph analyze` wrote (landscape graph, summary.json,
checkpoints.csv, trajectories.json, any observables tables, the activation store for the similarity
matrix), draws the figures (PNG + SVG under ``OUT_DIR/plots/``), and writes ``OUT_DIR/report.html`` with
the summary, the figures (PNG inlined as data URIs), an interactive graph view (vanilla JS + SVG:
pan, zoom, hover a node for its label, F, members and concepts; click a node or a run to highlight the
run's path) and tables of nodes, edges, observables and checkpoints.

Every text that comes from a file (labels, run names, file names, cell values) is HTML-escaped in the
tables, and reaches the graph view as JSON inside a ``<script type="application/json">`` element with
``<``, ``>`` and ``&`` written as ``\\u003c``-style escapes, where the script sets it with ``textContent``.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import warnings
from pathlib import Path
from typing import Any, Sequence

from semgraph.errors import SemgraphError
from semgraph.export import json_safe
from semgraph.io import atomic_path
from semgraph.outputs import AnalysisOutputs, Table, load_outputs

ASSETS = Path(__file__).with_name("assets")
MAX_TABLE_ROWS = 2000
MAX_SIMILARITY_RUNS = 6


def write_report(out_dir: str | Path, path: str | Path | None = None, *, plots: bool = True) -> Path:
    """Write ``OUT_DIR/report.html`` (or ``path``) from an analysis folder; returns the file."""
    outputs = load_outputs(out_dir)
    path = Path(path) if path else outputs.out / "report.html"
    figures = make_figures(outputs) if plots else []
    text = render(outputs, figures)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    for problem in outputs.problems:   # also listed in the report; said here so a script or a user sees them
        warnings.warn(f"{path}: {problem}", stacklevel=2)
    return path


# ---- figures ---------------------------------------------------------------------------------------------
def make_figures(o: AnalysisOutputs) -> list[dict[str, Any]]:
    """Draw the figures under OUT/plots; each: {title, caption, png (Path), files, wide}."""
    from semgraph import plots

    folder = o.out / "plots"
    G = o.graph
    figs: list[dict[str, Any]] = []

    def add(title: str, caption: str, files: list[Path], wide: bool = False) -> None:
        figs.append({"title": title, "caption": caption, "files": files, "wide": wide,
                     "png": next(p for p in files if p.suffix == ".png")})

    add("Landscape", "Nodes laid out by fallibility: lower F_test per input is lower on the page. Node size "
        "grows with visits, arrow width with the number of transitions.",
        plots.plot_landscape(G, folder / "landscape"), wide=G.number_of_nodes() > 4)
    runs = [r for r in _runs(o) if any(row.get("run") == r for row in o.rows)]
    store = o.out / "store"
    if (store / "manifest.json").exists():
        from semgraph.similarity import checkpoint_similarity
        by_step = {(r.get("run"), r.get("step")): r.get("node") for r in o.rows}
        colours = plots.node_colours(list(G.nodes))
        for run in runs[:MAX_SIMILARITY_RUNS]:
            try:
                steps, S = checkpoint_similarity(store, run)
            except SemgraphError as exc:
                o.problems.append(f"similarity matrix for run {run}: {exc}")
                continue
            add(f"Run {run}: checkpoint similarity", "Cosine similarity of the checkpoints' output fingerprints "
                "(logits on the whole probe set, centred per input); strips show each checkpoint's node.",
                plots.plot_similarity(steps, S, folder / f"similarity_{_slug(run)}",
                                      nodes=[by_step.get((run, s)) for s in steps], colours=colours,
                                      title=f"run {run}: checkpoint × checkpoint similarity"))
    for run in runs:
        add(f"Run {run}: loss and accuracy", "Train (solid) and test (dashed) curves; points and background "
            "bands coloured by the node the checkpoint belongs to.",
            plots.plot_timeline(G, o.rows, run, folder / f"timeline_{_slug(run)}"), wide=True)
        panels = plots.probe_panels([r for r in o.rows if r.get("run") == run])
        if panels:
            add(f"Run {run}: probes", "Key Fourier frequencies over training, restricted loss (key frequencies "
                "only) and excluded loss (key frequencies removed), and induction scores where measured.",
                plots.plot_probe_timeline(G, o.rows, run, folder / f"probes_{_slug(run)}"), wide=len(panels) > 1)
    return figs


# ---- data for the graph view -----------------------------------------------------------------------------
def graph_view_data(o: AnalysisOutputs) -> dict[str, Any]:
    """Nodes (with layout and colour), edges and each run's node path, as plain JSON values."""
    from matplotlib.colors import to_hex
    from semgraph.landscape import visits
    from semgraph.layout import landscape_positions
    from semgraph.plots import node_colours

    G = o.graph
    pos = landscape_positions(G)
    colours = node_colours(list(G.nodes))
    nodes = []
    for n, d in G.nodes(data=True):
        nodes.append({"id": str(n), "label": str(d.get("label", n)), "x": pos[n][0], "y": pos[n][1],
                      "color": to_hex(colours[n]), "F": _num(d.get("F_test_mean")),
                      "F_train": _num(d.get("F_train_mean")), "train_acc": _num(d.get("train_acc")),
                      "test_acc": _num(d.get("test_acc")), "visits": _num(d.get("visits")),
                      "members": [str(m) for m in _list(d.get("members"))],
                      "concepts": [str(c) for c in _list(d.get("concepts"))],
                      "runs": [str(r) for r in _list(d.get("runs"))]})
    edges = [{"source": str(u), "target": str(v), "count": _num(d.get("count")),
              "jump_probability": _num(d.get("jump_probability")), "first_step": _num(d.get("first_step")),
              "delta_F": _num(d.get("delta_F_test_mean")), "runs": [str(r) for r in _list(d.get("runs"))]}
             for u, v, d in G.edges(data=True)]
    paths = {}
    for run, traj in (o.trajectories or {}).items():
        try:
            paths[str(run)] = [str(v["node"]) for v in visits([(int(s), str(n)) for s, n in traj])]
        except (TypeError, ValueError):
            o.problems.append(f"trajectory of run {run} is malformed")
    return json_safe({"graph": {"nodes": nodes, "edges": edges}, "paths": paths})


def script_json(obj: Any) -> str:
    """JSON safe to place inside a <script> element: no '<', '>', '&' or line separators appear raw."""
    text = json.dumps(json_safe(obj), ensure_ascii=False, allow_nan=False)
    for raw, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                     ("\u2029", "\\u2029")):
        text = text.replace(raw, esc)
    return text


# ---- HTML ------------------------------------------------------------------------------------------------
def render(o: AnalysisOutputs, figures: Sequence[dict[str, Any]]) -> str:
    e = html.escape
    G = o.graph
    css = (ASSETS / "report.css").read_text(encoding="utf-8")
    js = (ASSETS / "report.js").read_text(encoding="utf-8")
    if "</script" in js.lower() or "</style" in css.lower():
        raise SemgraphError("report assets contain a closing tag", path=ASSETS, stage="report",
                            fix="remove '</script' / '</style' from semgraph/assets")
    title = f"semgraph report: {o.out.name}"
    n_ckpt = len(o.rows)
    runs = _runs(o)
    parts = [f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{e(title)}</title>
<style>{css}</style></head>
<body>
<header><h1>{e(title)}</h1>
<div class="sub">{e(str(o.out.resolve()))} · generated {e(_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))}</div></header>
<nav><a href="#summary">Summary</a><a href="#graph-section">Graph</a><a href="#figures">Figures</a>
<a href="#nodes">Nodes</a><a href="#edges">Edges</a><a href="#observables">Observables</a><a href="#checkpoints">Checkpoints</a></nav>
<main>
<section id="summary"><h2>Summary</h2>
<div class="stats">{_stat(G.number_of_nodes(), "nodes")}{_stat(G.number_of_edges(), "transitions")}{_stat(len(runs), "runs")}{_stat(n_ckpt, "checkpoints analysed")}</div>
{_summary_tables(o)}
{_problems(o.problems)}
</section>
<section id="graph-section"><h2>Landscape graph</h2>
<p class="muted">Lower fallibility (F_test per input) is lower on the page. Drag to pan, scroll or use the buttons to
zoom, hover a node or an arrow for details, click a node or a run to highlight that run's path.</p>
<div class="toolbar"><button type="button" id="zoom-in" aria-label="zoom in">+</button>
<button type="button" id="zoom-out" aria-label="zoom out">−</button>
<button type="button" id="zoom-reset">reset view</button>
<span class="muted">runs:</span><span id="runs"></span><span id="path-status"></span></div>
<div class="graph-wrap" id="graph"><div id="tooltip" role="tooltip" hidden></div></div>
</section>
<section id="figures"><h2>Figures</h2><div class="figs">"""]
    for f in figures:
        data = base64.b64encode(f["png"].read_bytes()).decode("ascii")
        files = ", ".join(e(p.name) for p in f["files"])
        parts.append(f"""<figure class="{'wide' if f['wide'] else ''}"><img alt="{e(f['title'])}" src="data:image/png;base64,{data}">
<figcaption><b>{e(f['title'])}.</b> {e(f['caption'])} <span class="muted">(plots/{files})</span></figcaption></figure>""")
    if not figures:
        parts.append('<p class="muted">No figures were drawn.</p>')
    parts.append("</div></section>")
    parts.append(f'<section id="nodes"><h2>Nodes</h2>{_nodes_table(o)}</section>')
    parts.append(f'<section id="edges"><h2>Edges (transitions)</h2>{_edges_table(o)}</section>')
    parts.append('<section id="observables"><h2>Observables</h2>')
    if o.observables:
        for t in o.observables:
            parts.append(f"<h3>{e(t.name)}</h3>{_table(t.columns, t.rows)}")
    else:
        parts.append('<p class="muted">No observables table in this analysis folder '
                     '(files named observables*.json / observables*.csv or under observables/).</p>')
    parts.append("</section>")
    parts.append(f'<section id="checkpoints"><h2>Checkpoints</h2>{_checkpoints_table(o)}</section>')
    parts.append(f"""</main><footer>semgraph · self-contained report: no network access needed</footer>
<script type="application/json" id="semgraph-data">{script_json(graph_view_data(o))}</script>
<script>{js}</script>
</body></html>
""")
    return "\n".join(parts)


def _stat(value: Any, label: str) -> str:
    return f'<div class="stat"><b>{html.escape(_fmt(value))}</b><span>{html.escape(label)}</span></div>'


def _summary_tables(o: AnalysisOutputs) -> str:
    s = o.summary or {}
    out = []
    runs = s.get("runs")
    if isinstance(runs, dict) and runs:
        cols: list[str] = []
        for info in runs.values():
            if isinstance(info, dict):
                cols += [k for k in info if k not in cols]
        rows = [[run] + [(" → ".join(map(str, info.get(c))) if isinstance(info.get(c), list) else info.get(c))
                         for c in cols] for run, info in runs.items() if isinstance(info, dict)]
        out.append("<h3>Runs</h3>" + _table(["run"] + cols, rows))
    store = s.get("store")
    if isinstance(store, dict) and store:
        rows = [[k, (f"{len(v)}: " + "; ".join(map(str, v)) if v else "0") if isinstance(v, list) else v]
                for k, v in store.items()]
        out.append("<h3>Activation store</h3>" + _table(["checkpoints", ""], rows, sortable=False))
    other = {k: v for k, v in s.items() if k not in ("runs", "store", "nodes")}
    if other:
        out.append("<h3>Other</h3>" + _table(["key", "value"], [[k, v] for k, v in other.items()], sortable=False))
    if not out:
        out.append('<p class="muted">No summary.json in this folder.</p>')
    return "\n".join(out)


def _problems(problems: Sequence[str]) -> str:
    if not problems:
        return ""
    items = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
    return f'<div class="problems"><b>Could not use everything:</b><ul>{items}</ul></div>'


NODE_COLUMNS = (("label", "label"), ("F_test_mean", "F_test / input"), ("F_train_mean", "F_train / input"),
                ("train_acc", "train acc"), ("test_acc", "test acc"), ("visits", "visits"), ("dwell", "dwell"),
                ("n_members", "members"), ("first_entry_step", "first entry"), ("key_freqs", "key freqs"),
                ("concepts", "concepts"), ("runs", "runs"))


def _nodes_table(o: AnalysisOutputs) -> str:
    from matplotlib.colors import to_hex
    from semgraph.plots import node_colours

    G = o.graph
    colours = node_colours(list(G.nodes))
    rows = []
    for n, d in G.nodes(data=True):
        members = _list(d.get("members"))
        span = f" ({members[0]} … {members[-1]})" if members else ""
        row = [_Cell(str(n), f'<span class="swatch" style="background:{to_hex(colours[n])}"></span>'
                              f"{html.escape(str(n))}")]
        for key, _ in NODE_COLUMNS:
            v = d.get(key)
            if key == "n_members":
                v = f"{_fmt(v)}{span}" if v is not None else None
            row.append(v)
        rows.append(row)
    extra = sorted({k for _, d in G.nodes(data=True) for k in d} - {k for k, _ in NODE_COLUMNS}
                   - {"members", "member_steps", "first_entry_by_run"})
    note = f'<p class="muted">More attributes in the graph files: {html.escape(", ".join(extra))}.</p>' if extra else ""
    return _table(["node"] + [h for _, h in NODE_COLUMNS], rows) + note


def _edges_table(o: AnalysisOutputs) -> str:
    cols = (("count", "count"), ("jump_probability", "jump prob."), ("rate", "rate / step"),
            ("mean_waiting_time", "mean wait"), ("first_step", "first step"), ("delta_F_test_mean", "ΔF_test"),
            ("runs", "runs"))
    rows = [[str(u), str(v)] + [d.get(k) for k, _ in cols] for u, v, d in o.graph.edges(data=True)]
    if not rows:
        return '<p class="muted">No transitions: every run stayed in one node.</p>'
    return _table(["from", "to"] + [h for _, h in cols], rows)


def _checkpoints_table(o: AnalysisOutputs) -> str:
    if not o.rows:
        return '<p class="muted">No checkpoints.csv in this folder.</p>'
    cols: list[str] = []
    for r in o.rows:
        cols += [k for k in r if k not in cols and k != "reasons"]
    first = [c for c in ("run", "step", "node") if c in cols]
    cols = first + [c for c in cols if c not in first]
    rows = [[r.get(c) for c in cols] for r in o.rows]
    return (f"<details><summary>{len(rows)} checkpoints × {len(cols)} columns (from checkpoints.csv)</summary>"
            f"{_table(cols, rows)}</details>")


class _Cell:
    """A cell whose HTML is already safe (built here from escaped parts)."""

    def __init__(self, sort_value: str, safe_html: str):
        self.sort_value, self.safe_html = sort_value, safe_html


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _table(columns: Sequence[Any], rows: Sequence[Sequence[Any]], sortable: bool = True) -> str:
    """An HTML table; every value escaped. Columns whose values are all numbers are right-aligned."""
    e = html.escape
    shown = rows[:MAX_TABLE_ROWS]
    numeric = [sortable and any(_is_num(r[i]) for r in shown if i < len(r)) and
               all(_is_num(r[i]) or r[i] is None for r in shown if i < len(r)) for i in range(len(columns))]
    head = "".join(f'<th{" class=num" if numeric[i] else ""}>{e(str(c))}</th>' for i, c in enumerate(columns))
    body = []
    for r in shown:
        cells = []
        for i, v in enumerate(r):
            if isinstance(v, _Cell):
                cells.append(f'<td data-v="{e(v.sort_value)}">{v.safe_html}</td>')
                continue
            text = _fmt(v)
            sort = repr(float(v)) if _is_num(v) and math.isfinite(float(v)) else text
            num = i < len(numeric) and numeric[i]
            cells.append(f'<td{" class=num" if num else ""} data-v="{e(sort)}">{e(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f'<p class="muted">{len(rows) - MAX_TABLE_ROWS} more rows not shown.</p>' if len(rows) > MAX_TABLE_ROWS else ""
    cls = ' class="sortable"' if sortable else ' class="kv"'
    return (f'<div class="table-wrap"><table{cls}><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>{more}')


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(json_safe(v), ensure_ascii=False)
    return str(v)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _list(v: Any) -> list[Any]:
    """A list attribute, also when a typed format stored it as JSON text."""
    if v is None:
        return []
    if isinstance(v, str):
        try:
            parsed = json.loads(v)
        except json.JSONDecodeError:
            return [v]
        return parsed if isinstance(parsed, list) else [parsed]
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _runs(o: AnalysisOutputs) -> list[str]:
    runs = _list(o.graph.graph.get("runs")) or list(o.trajectories or {}) or \
        sorted({str(r.get("run")) for r in o.rows if r.get("run") is not None})
    return [str(r) for r in runs]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))[:80] or "run"
