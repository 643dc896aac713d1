"""Stage: write the landscape as GraphML, GEXF, node-link JSON and DOT, and read any of them back.

One sanitising rule for formats with typed scalar attributes (GraphML, GEXF, DOT):
- None: the attribute is left out (a reader sees it missing, i.e. None);
- numpy scalars become Python scalars; bool, int, float and str stay;
- lists, tuples, sets, dicts and arrays become JSON text (``json.loads`` gives them back);
- a key whose values mix int and float becomes float; any other mix becomes str for every element.
Graph-level attributes follow the same rule. Node-link JSON keeps lists and dicts as they are, writes the
edges under an explicit ``"edges"`` key with a ``"semgraph_format"`` version, and reading accepts ``"links"``
(networkx < 3.4 files) too, so a graph never loads with zero edges silently.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import networkx as nx
import numpy as np

from semgraph.errors import SemgraphError
from semgraph.io import atomic_path, _json_default

JSON_FORMAT = "semgraph-graph/1"
FORMATS = {"graphml": ".graphml", "gexf": ".gexf", "json": ".json", "dot": ".dot"}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _scalar(value: Any) -> Any:
    value = _plain(value)
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        return json.dumps(sorted(value) if isinstance(value, (set, frozenset)) else value,
                          default=_json_default)
    return value


def _sanitise_dicts(dicts: Iterable[dict[str, Any]]) -> None:
    dicts = list(dicts)
    for d in dicts:
        for k in list(d):
            if d[k] is None:
                del d[k]
            else:
                d[k] = _scalar(d[k])
    keys = {k for d in dicts for k in d}
    for k in keys:
        types = {type(d[k]) for d in dicts if k in d}
        if len(types) <= 1:
            continue
        to = float if types <= {int, float} else str
        for d in dicts:
            if k in d:
                d[k] = to(d[k])


def sanitise(G: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``G`` whose attributes follow the module's rule (for GraphML, GEXF, DOT)."""
    H = G.copy()
    _sanitise_dicts(d for _, d in H.nodes(data=True))
    _sanitise_dicts(d for _, _, d in H.edges(data=True))
    _sanitise_dicts([H.graph])
    return H


def write_graph(G: nx.DiGraph, path: str | Path, fmt: str | None = None) -> Path:
    path = Path(path)
    fmt = fmt or _format_of(path)
    with atomic_path(path) as tmp:
        if fmt == "graphml":
            nx.write_graphml(sanitise(G), tmp)
        elif fmt == "gexf":
            H = sanitise(G)
            H.graph.pop("mode", None)
            nx.write_gexf(H, tmp)
        elif fmt == "json":
            data = nx.node_link_data(G, edges="edges")
            data["semgraph_format"] = JSON_FORMAT
            tmp.write_text(json.dumps(data, indent=1, default=_json_default), encoding="utf-8")
        elif fmt == "dot":
            tmp.write_text(to_dot(sanitise(G)), encoding="utf-8")
        else:
            raise SemgraphError(f"unknown graph format {fmt!r}", path=path, stage="export",
                                fix=f"use one of {sorted(FORMATS)}")
    return path


def read_graph(path: str | Path, fmt: str | None = None) -> nx.DiGraph:
    path = Path(path)
    fmt = fmt or _format_of(path)
    if not path.exists():
        raise SemgraphError("graph file does not exist", path=path, stage="read graph",
                            fix="pass a file written by `semgraph analyze` or `semgraph export`")
    try:
        if fmt == "graphml":
            return nx.DiGraph(nx.read_graphml(path))
        if fmt == "gexf":
            return nx.DiGraph(nx.read_gexf(path))
        if fmt == "json":
            data = json.loads(path.read_text(encoding="utf-8"))
            key = "edges" if "edges" in data else "links" if "links" in data else None
            if key is None:
                raise SemgraphError("node-link JSON has neither 'edges' nor 'links'", path=path,
                                    stage="read graph", fix="write it with networkx.node_link_data")
            return nx.DiGraph(nx.node_link_graph(data, edges=key, directed=True))
    except SemgraphError:
        raise
    except Exception as exc:  # parser errors of the various formats
        raise SemgraphError(f"cannot parse {fmt} graph: {exc}", path=path, stage="read graph",
                            fix="re-export the graph with `semgraph export`") from exc
    raise SemgraphError(f"cannot read format {fmt!r}", path=path, stage="read graph",
                        fix="read .graphml, .gexf or .json")


def to_dot(G: nx.DiGraph) -> str:
    """Graphviz DOT text (no pydot/pygraphviz needed); attributes quoted and escaped."""
    def attrs(d: dict[str, Any]) -> str:
        return ", ".join(f'"{k}"={_dot_value(v)}' for k, v in d.items())
    lines = [f"digraph {_dot_value(G.graph.get('name', 'landscape'))} {{"]
    for n, d in G.nodes(data=True):
        lines.append(f"  {_dot_value(n)} [{attrs(d)}];")
    for u, v, d in G.edges(data=True):
        lines.append(f"  {_dot_value(u)} -> {_dot_value(v)} [{attrs(d)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_value(v: Any) -> str:
    if isinstance(v, bool):
        return f'"{str(v).lower()}"'
    if isinstance(v, (int, float)):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _format_of(path: Path) -> str:
    for fmt, suffix in FORMATS.items():
        if path.name.endswith(suffix):
            return fmt
    raise SemgraphError(f"cannot tell the graph format from the name {path.name!r}", path=path,
                        stage="export", fix=f"use a suffix among {sorted(FORMATS.values())} or pass --format")
