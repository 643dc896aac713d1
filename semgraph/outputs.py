"""Read what `semgraph analyze` wrote in OUT_DIR back into Python values (for plots and the report).

Every reader is tolerant: a missing file gives an empty value, and a file that cannot be parsed is
reported in ``AnalysisOutputs.problems`` rather than stopping the report.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from semgraph.errors import SemgraphError

GRAPH_FILES = ("landscape.json", "landscape.graphml", "landscape.gexf", "landscape.cyjs")
KNOWN_FILES = {"summary.json", "checkpoints.csv", "trajectories.json", *GRAPH_FILES}


@dataclass
class Table:
    """A named table: column names and rows (lists of plain values)."""
    name: str
    columns: list[str]
    rows: list[list[Any]]
    source: str = ""


@dataclass
class AnalysisOutputs:
    out: Path
    graph: nx.DiGraph
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    trajectories: dict[str, list[list[Any]]] = field(default_factory=dict)
    observables: list[Table] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def load_outputs(out: str | Path) -> AnalysisOutputs:
    """The graph (required), checkpoint rows, summary, trajectories and any observables tables."""
    from semgraph.export import decode_json_text, read_graph

    out = Path(out)
    if not out.is_dir():
        raise SemgraphError("analysis folder does not exist", path=out, stage="report",
                            fix="pass the --out folder of `semgraph analyze`")
    graph_file = next((out / f for f in GRAPH_FILES if (out / f).exists()), None)
    if graph_file is None:
        raise SemgraphError("no landscape graph in the analysis folder", path=out, stage="report",
                            fix=f"run `semgraph analyze RUN --out {out}` first (it writes landscape.json)")
    res = AnalysisOutputs(out=out, graph=read_graph(graph_file))
    decode_json_text(res.graph.graph)  # typed formats hold run_info, trajectories... as JSON text
    res.summary = _json(out / "summary.json", res.problems, {})
    res.trajectories = _json(out / "trajectories.json", res.problems, None) or \
        res.graph.graph.get("trajectories") or {}
    if (out / "checkpoints.csv").exists():
        try:
            res.rows = read_rows(out / "checkpoints.csv")
        except (OSError, csv.Error, ValueError) as exc:
            res.problems.append(f"checkpoints.csv: {exc}")
    res.observables = read_observables(out, res.problems)
    res.problems += [f"{m} ({MIXED}; re-run it on the same --out to rewrite them)"
                     for m in mismatches(res.graph, res.rows, res.summary, res.trajectories)]
    return res


MIXED = "files from different analyses, e.g. after a kill while `semgraph analyze` wrote them"


def mismatches(graph: nx.DiGraph, rows: list[dict[str, Any]], summary: dict[str, Any] | None = None,
               trajectories: dict[str, Any] | None = None) -> list[str]:
    """Ways the folder's table, summary and trajectories disagree with its landscape graph (``MIXED``: a kill
    while `semgraph analyze` rewrote them one by one leaves some from the earlier analysis); empty when they
    describe one analysis. Malformed values are left to the readers that use them."""
    nodes = {str(n) for n in graph.nodes}
    found = []
    row_nodes = {str(r["node"]) for r in rows if r.get("node") not in (None, "")}
    if rows and row_nodes != nodes:
        found.append(f"checkpoints.csv assigns checkpoints to nodes {sorted(row_nodes)} but the graph has "
                     f"{sorted(nodes)}")
    if isinstance(summary, dict) and isinstance(summary.get("nodes"), dict) and set(summary["nodes"]) != nodes:
        found.append(f"summary.json lists nodes {sorted(summary['nodes'])} but the graph has {sorted(nodes)}")
    if isinstance(trajectories, dict) and rows:
        try:
            visited = {(str(run), int(step), str(node)) for run, path in trajectories.items() for step, node in path}
            table = {(str(r["run"]), int(r["step"]), str(r["node"])) for r in rows
                     if r.get("node") not in (None, "") and r.get("step") is not None}
        except (KeyError, TypeError, ValueError):
            return found
        if visited != table:
            found.append(f"trajectories.json and checkpoints.csv disagree on {len(visited ^ table)} "
                         f"(run, step, node) entries")
    return found


def read_rows(path: Path) -> list[dict[str, Any]]:
    """checkpoints.csv -> rows with numbers, booleans, key frequency lists and concept lists."""
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k, v in raw.items():
                if k == "key_freqs":
                    row["fourier.key_freqs"] = [int(x) for x in v.split()] if v else []
                elif k == "concepts_present":
                    row["concepts_present"] = [c for c in v.split("; ") if c]
                elif k == "not_computed":
                    row["reasons"] = json.loads(v) if v else {}
                elif k in ("run", "node"):
                    row[k] = v
                else:
                    row[k] = parse_cell(v)
            if isinstance(row.get("step"), float):
                row["step"] = int(row["step"])
            rows.append(row)
    return rows


def parse_cell(v: str) -> Any:
    if v == "":
        return None
    if v in ("True", "False"):
        return v == "True"
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def read_observables(out: Path, problems: list[str]) -> list[Table]:
    """Tables from ``observables*.json|csv`` in OUT and any ``*.json|csv`` under ``OUT/observables/``."""
    files = sorted(p for p in out.glob("observables*") if p.suffix in (".json", ".csv") and p.is_file())
    if (out / "observables").is_dir():
        files += sorted(p for p in (out / "observables").rglob("*") if p.suffix in (".json", ".csv"))
    tables = []
    for p in files:
        try:
            tables += _tables_from(p, out)
        except (OSError, ValueError, csv.Error, TypeError) as exc:
            problems.append(f"{p.relative_to(out)}: cannot read ({exc})")
    return tables


def _tables_from(p: Path, out: Path) -> list[Table]:
    name = str(p.relative_to(out))
    if p.suffix == ".csv":
        with open(p, newline="", encoding="utf-8") as fh:
            data = list(csv.reader(fh))
        if not data:
            return []
        return [Table(name, data[0], [[parse_cell(c) for c in r] for r in data[1:]], name)]
    return json_tables(json.loads(p.read_text(encoding="utf-8")), name)


def json_tables(obj: Any, name: str) -> list[Table]:
    """A list of records -> one table; a dict of lists -> columns; other dicts -> key/value rows,
    with nested record lists becoming tables of their own."""
    if isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        cols: list[str] = []
        for r in obj:
            cols += [k for k in r if k not in cols]
        return [Table(name, cols, [[r.get(c) for c in cols] for r in obj], name)]
    if isinstance(obj, dict):
        if obj and all(isinstance(v, list) for v in obj.values()) and \
                len({len(v) for v in obj.values()}) == 1 and not any(
                    isinstance(x, dict) for v in obj.values() for x in v):
            cols = list(obj)
            return [Table(name, cols, [list(r) for r in zip(*obj.values())], name)]
        tables, flat = [], []
        for k, v in obj.items():
            if isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
                tables += json_tables(v, f"{name}: {k}")
            elif isinstance(v, dict) and v and all(isinstance(r, dict) for r in v.values()):
                cols = ["key"]
                for r in v.values():
                    cols += [c for c in r if c not in cols]
                tables.append(Table(f"{name}: {k}", cols, [[rk] + [r.get(c) for c in cols[1:]]
                                                            for rk, r in v.items()], name))
            else:
                flat.append([k, v])
        if flat:
            tables.insert(0, Table(name, ["name", "value"], flat, name))
        return tables
    return [Table(name, ["value"], [[obj]], name)]


def _json(path: Path, problems: list[str], default: Any) -> Any:
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name}: cannot read ({exc})")
        return default
