"""Stage: write the landscape as GraphML, GEXF, node-link JSON, Cytoscape JSON and DOT; read any of them back.

**The sanitising rule** (one pass, :func:`sanitise`, used by every format whose values are typed scalars:
GraphML, GEXF and DOT). For node, edge and graph attributes alike:

1. ``None`` is left out (a reader sees the attribute missing, i.e. ``None``);
2. numpy scalars become Python scalars; ``bool``, ``int``, ``float`` and ``str`` stay;
3. lists, tuples, sets (sorted), dicts and numpy arrays become JSON text (``json.loads`` gives them back);
4. text loses the characters XML 1.0 cannot hold (control characters other than tab and newline, lone
   surrogates, U+FFFE/U+FFFF become U+FFFD; a carriage return becomes a newline);
5. a key whose values mix ``int`` and ``float`` becomes ``float``; any other mix becomes ``str`` for every
   element that has the key (``True`` -> ``"True"``, a list -> its JSON text).

The JSON formats keep JSON's own types instead: **node-link JSON** (``.json``) and **Cytoscape JSON**
(``.cyjs``, the cytoscape.js ``elements`` format that Cytoscape desktop also imports) write ``None`` as
``null``, keep lists and dicts, turn numpy values into Python ones and non-finite floats into ``null``
(strict JSON has no NaN; :func:`json_safe`). Node-link JSON writes the edges under an explicit
``"edges"`` key with a ``"semgraph_format"`` version, and reading accepts ``"links"`` (networkx < 3.4
files) too, so a graph never loads with zero edges silently. Cytoscape ids are text, so node ids come
back as ``str``; each node also carries ``value`` (its id) and ``name`` (its label), as
``networkx.cytoscape_data`` writes them, so networkx and Cytoscape desktop read the file as well.

Keys a format reads as its own (node ``id`` in both JSON formats and GEXF; ``name``/``value`` and edge
``source``/``target`` in Cytoscape JSON; ``start``/``end``/``pid``/``viz``..., a non-text ``label`` and
a non-float edge ``weight`` in GEXF) are stored as ``attr:KEY`` and renamed back on reading (a key that
already starts with ``attr:`` gets one more prefix), so no attribute is swallowed by a viewer.

**GEXF** has no graph attributes of its own: they are stored as JSON text in the file's
``<meta><description>`` and restored on reading. **DOT** is untyped text; semgraph writes strings
quoted, ints and floats as bare numerals (a float always with a decimal point, never an exponent),
booleans as bare ``true``/``false``, so reading (with pydot) gives back the same types. Non-finite
floats have no DOT numeral: they are written as the quoted text ``nan``/``inf``/``-inf`` and read back
as that text.
"""
from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape as xml_escape
from pathlib import Path
from typing import Any, Iterable

import networkx as nx
import numpy as np

from semgraph.errors import SemgraphError
from semgraph.io import atomic_path, _json_default

JSON_FORMAT = "semgraph-graph/1"
CYTOSCAPE_FORMAT = "semgraph-cytoscape/1"
FORMATS = {"graphml": ".graphml", "gexf": ".gexf", "json": ".json", "cytoscape": ".cyjs", "dot": ".dot"}
_GEXF_META_KEY = "semgraph_graph_attributes"
_CY_RESERVED = {"nodes": ("id", "value", "name"), "edges": ("id", "source", "target")}
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def plain(value: Any) -> Any:
    """numpy scalars and arrays -> Python scalars and lists (recursively inside lists and dicts)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [plain(v) for v in sorted(value)]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


_plain = plain  # kept for callers of the first version


def _xml_text(s: str) -> str:
    return _XML_BAD.sub("\ufffd", s.replace("\r\n", "\n").replace("\r", "\n"))


def _scalar(value: Any) -> Any:
    value = plain(value)
    if isinstance(value, (list, dict)):
        value = json.dumps(value, default=_json_default, ensure_ascii=False)
    if isinstance(value, str):
        return _xml_text(value)
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


def json_safe(value: Any) -> Any:
    """:func:`plain`, and non-finite floats -> ``None`` (strict JSON, which browsers parse, has no NaN)."""
    value = plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return value


def decode_json_text(attrs: dict[str, Any]) -> dict[str, Any]:
    """Undo rule 3 for one attribute dict, in place: JSON text of a list or dict (as GraphML, GEXF and DOT
    hold them) back to the list or dict. Returns ``attrs``."""
    for key, value in attrs.items():
        if isinstance(value, str) and value[:1] in "[{":
            try:
                attrs[key] = json.loads(value)
            except ValueError:
                pass
    return attrs


def sanitise_json(G: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``G`` as the JSON formats keep it (:func:`json_safe` on every value)."""
    H = G.copy()
    for d in [H.graph, *(d for _, d in H.nodes(data=True)), *(d for _, _, d in H.edges(data=True))]:
        for k in list(d):
            d[k] = json_safe(d[k])
    return H


# ---- writing --------------------------------------------------------------------------------------------
def write_graph(G: nx.DiGraph, path: str | Path, fmt: str | None = None) -> Path:
    """Write ``G`` as ``fmt`` (default: from the file's suffix) atomically; returns the path."""
    path = Path(path)
    fmt = fmt or format_of(path)
    if fmt not in FORMATS:
        raise SemgraphError(f"unknown graph format {fmt!r}", path=path, stage="export",
                            fix=f"use one of {sorted(FORMATS)}")
    with atomic_path(path) as tmp:
        if fmt == "graphml":
            nx.write_graphml(sanitise(G), tmp)
        elif fmt == "gexf":
            _write_gexf(G, tmp)
        elif fmt == "json":
            data = nx.node_link_data(_escaped(sanitise_json(G), _NODE_LINK_RESERVED), edges="edges")
            data["semgraph_format"] = JSON_FORMAT
            tmp.write_text(json.dumps(data, indent=1, allow_nan=False, default=_json_default), encoding="utf-8")
        elif fmt == "cytoscape":
            tmp.write_text(json.dumps(to_cytoscape(G), indent=1, allow_nan=False, default=_json_default),
                           encoding="utf-8")
        elif fmt == "dot":
            tmp.write_text(to_dot(sanitise(G)), encoding="utf-8")
    return path


_GEXF_RESERVED = {"nodes": ("id", "pid", "start", "end", "viz", "parents", "slices", "spells"),
                  "edges": ("id", "key", "type", "start", "end", "slices", "spells", "networkx_key")}


def _escape_keys(d: dict[str, Any], reserved: tuple[str, ...], keep: dict[str, type]) -> dict[str, Any]:
    """Rename keys a format reads itself (``id`` ...) to ``attr:id``; ``keep`` = native keys by wanted type."""
    out = {}
    for k, v in d.items():
        native = k in keep and isinstance(v, keep[k]) and not isinstance(v, bool)
        out[f"attr:{k}" if (k in reserved or k.startswith("attr:") or (k in keep and not native)) else k] = v
    return out


_NODE_LINK_RESERVED = {"nodes": ("id",), "edges": ("source", "target", "key")}


def _escaped(G: nx.DiGraph, reserved: dict[str, tuple[str, ...]]) -> nx.DiGraph:
    H = nx.DiGraph()
    H.graph.update(G.graph)
    for n, d in G.nodes(data=True):
        H.add_node(n, **_escape_keys(d, reserved["nodes"], {}))
    for u, v, d in G.edges(data=True):
        H.add_edge(u, v, **_escape_keys(d, reserved["edges"], {}))
    return H


def _unescaped(G: nx.DiGraph) -> nx.DiGraph:
    for n in G.nodes:
        G.nodes[n].update(_unescape_keys({k: G.nodes[n].pop(k) for k in list(G.nodes[n])}))
    for u, v in G.edges:
        G[u][v].update(_unescape_keys({k: G[u][v].pop(k) for k in list(G[u][v])}))
    return G


def _unescape_keys(d: dict[str, Any]) -> dict[str, Any]:
    return {(k[5:] if k.startswith("attr:") else k): v for k, v in d.items()}


def _write_gexf(G: nx.DiGraph, tmp: Path) -> None:
    S = sanitise(G)
    H = nx.DiGraph()
    if "name" in S.graph:
        H.graph["name"] = S.graph["name"]
    for n, d in S.nodes(data=True):
        H.add_node(n, **_escape_keys(d, _GEXF_RESERVED["nodes"], {"label": str}))
    for u, v, d in S.edges(data=True):
        H.add_edge(u, v, **_escape_keys(d, _GEXF_RESERVED["edges"], {"label": str, "weight": float}))
    nx.write_gexf(H, tmp)
    extra = {_GEXF_META_KEY: {k: v for k, v in S.graph.items() if k not in ("mode", "name")},
             "semgraph_unlabelled_nodes": [str(n) for n, d in H.nodes(data=True) if "label" not in d]}
    text = tmp.read_text(encoding="utf-8")
    desc = "<description>" + xml_escape(json.dumps(extra, ensure_ascii=False)) + "</description>"
    if "</meta>" in text:
        text = text.replace("</meta>", desc + "</meta>", 1)
    else:
        text = re.sub(r"(<gexf[^>]*>)", lambda m: m.group(1) + "<meta>" + desc + "</meta>", text, count=1)
    tmp.write_text(text, encoding="utf-8")


def to_cytoscape(G: nx.DiGraph) -> dict[str, Any]:
    """The cytoscape.js ``elements`` document (as Cytoscape desktop writes ``.cyjs``), JSON types kept."""
    H = sanitise_json(G)

    # 'value' and 'name' as networkx.cytoscape_data writes them, so networkx.cytoscape_graph reads the file
    # too; 'name' is the column Cytoscape desktop labels nodes with, so it holds the node's label.
    nodes = [{"data": {"id": str(n), "value": str(n), "name": str(d.get("label", n)),
                       **_escape_keys(d, _CY_RESERVED["nodes"], {})}} for n, d in H.nodes(data=True)]
    edges = [{"data": {"id": f"e{i}", "source": str(u), "target": str(v),
                       **_escape_keys(d, _CY_RESERVED["edges"], {})}}
             for i, (u, v, d) in enumerate(H.edges(data=True))]
    return {"format_version": "1.0", "generated_by": "semgraph", "target_cytoscapejs_version": "~3",
            "semgraph_format": CYTOSCAPE_FORMAT, "directed": True, "data": dict(H.graph),
            "elements": {"nodes": nodes, "edges": edges}}


def from_cytoscape(doc: dict[str, Any]) -> nx.DiGraph:
    """Inverse of :func:`to_cytoscape`; also reads cytoscape.js ``cy.json()`` with a list of elements."""
    elements = doc.get("elements", doc)
    if isinstance(elements, list):  # cytoscape.js also accepts one flat array, with "group" on each
        elements = {"nodes": [e for e in elements if e.get("group", "nodes") == "nodes" and
                              "source" not in e.get("data", {})],
                    "edges": [e for e in elements if e.get("group") == "edges" or "source" in e.get("data", {})]}

    def attrs(d: dict[str, Any], kind: str) -> dict[str, Any]:
        return _unescape_keys({k: v for k, v in d.items() if k not in _CY_RESERVED[kind]})

    G = nx.DiGraph()
    data = doc.get("data", {})
    G.graph.update(dict(data) if isinstance(data, (dict, list)) else {})
    for el in elements.get("nodes", []):
        d = el["data"]
        G.add_node(d["id"], **attrs(d, "nodes"))
    for el in elements.get("edges", []):
        d = el["data"]
        G.add_edge(d["source"], d["target"], **attrs(d, "edges"))
    return G


def to_dot(G: nx.DiGraph) -> str:
    """Graphviz DOT text (no pydot/pygraphviz needed to write); see the module docstring for the typing."""
    def attrs(d: dict[str, Any]) -> str:
        return ", ".join(f"{_dot_value(str(k))}={_dot_value(v)}" for k, v in d.items())
    name = f"{_dot_value(str(G.graph['name']))} " if "name" in G.graph else ""
    lines = [f"digraph {name}{{"]
    graph_attrs = {k: v for k, v in G.graph.items() if k != "name"}
    if graph_attrs:
        lines.append(f"  graph [{attrs(graph_attrs)}];")
    for n, d in G.nodes(data=True):
        lines.append(f"  {_dot_value(n)} [{attrs(d)}];")
    for u, v, d in G.edges(data=True):
        lines.append(f"  {_dot_value(u)} -> {_dot_value(v)} [{attrs(d)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_value(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return f'"{v}"'
        return np.format_float_positional(v, unique=True, trim="0")
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# ---- reading --------------------------------------------------------------------------------------------
def read_graph(path: str | Path, fmt: str | None = None) -> nx.DiGraph:
    """Read any format :func:`write_graph` writes (DOT needs pydot: ``pip install semgraph[dot]``)."""
    path = Path(path)
    fmt = fmt or format_of(path)
    if not path.exists():
        raise SemgraphError("graph file does not exist", path=path, stage="read graph",
                            fix="pass a file written by `semgraph analyze` or `semgraph export`")
    if fmt not in FORMATS:
        raise SemgraphError(f"cannot read format {fmt!r}", path=path, stage="read graph",
                            fix=f"read one of {sorted(FORMATS)}")
    try:
        if fmt == "graphml":
            return _drop_defaults(nx.DiGraph(nx.read_graphml(path)))
        if fmt == "gexf":
            return _drop_defaults(_read_gexf(path))
        if fmt == "dot":
            return from_dot(path.read_text(encoding="utf-8"), path=path)
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise SemgraphError("graph JSON is not an object", path=path, stage="read graph",
                                fix="write it with `semgraph export`")
        if fmt == "cytoscape" or "elements" in data:
            return from_cytoscape(data)
        key = "edges" if "edges" in data else "links" if "links" in data else None
        if key is None:
            raise SemgraphError("node-link JSON has neither 'edges' nor 'links'", path=path,
                                stage="read graph", fix="write it with networkx.node_link_data")
        return _unescaped(nx.DiGraph(nx.node_link_graph(data, edges=key, directed=True)))
    except SemgraphError:
        raise
    except Exception as exc:  # parser errors of the various formats
        raise SemgraphError(f"cannot parse {fmt} graph: {exc}", path=path, stage="read graph",
                            fix="the file is damaged: re-run `semgraph analyze` on its --out folder to rewrite it, "
                                "or export an intact copy of the graph with `semgraph export`") from exc


def _drop_defaults(G: nx.DiGraph) -> nx.DiGraph:
    """networkx's XML readers add empty ``node_default``/``edge_default`` graph attributes; drop them."""
    for k in ("node_default", "edge_default"):
        if G.graph.get(k) == {}:
            del G.graph[k]
    return G


def _read_gexf(path: Path) -> nx.DiGraph:
    G = nx.DiGraph(nx.read_gexf(path))
    root = ET.parse(path).getroot()
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "description" and el.text:
            try:
                extra = json.loads(el.text)
            except json.JSONDecodeError:
                continue  # someone else's description
            if isinstance(extra, dict) and isinstance(extra.get(_GEXF_META_KEY), dict):
                G.graph.update(extra[_GEXF_META_KEY])
                for n in extra.get("semgraph_unlabelled_nodes", []):
                    if n in G:
                        G.nodes[n].pop("label", None)
    if G.graph.get("mode") == "static":
        del G.graph["mode"]
    for u, v in G.edges:
        G[u][v].pop("id", None)  # GEXF's own edge id (a user's 'id' was written as 'attr:id')
    return _unescaped(G)


def from_dot(text: str, path: str | Path | None = None) -> nx.DiGraph:
    """Parse DOT with pydot; values typed as :func:`to_dot` writes them (quoted -> str, numerals -> numbers)."""
    try:
        import pydot
    except ImportError as exc:
        raise SemgraphError("reading DOT needs the pydot package", path=path, stage="read graph",
                            fix="pip install 'semgraph[dot]' (or pydot), or read the .graphml/.json file") from exc
    graphs = pydot.graph_from_dot_data(text)
    if not graphs:
        raise SemgraphError("no graph found in the DOT text", path=path, stage="read graph",
                            fix="check the file is DOT written by `semgraph export --format dot`")
    P = graphs[0]
    G = nx.DiGraph()
    name = P.get_name()
    if name not in ("", None):
        G.graph["name"] = _dot_parse(name)
    G.graph.update({_dot_parse(k): _dot_parse(v) for k, v in P.get_attributes().items()})
    for sub in P.get_node_list():
        name = sub.get_name()
        if name in ("node", "edge", "graph"):  # default-attribute statements, not nodes
            if name == "graph":
                G.graph.update({_dot_parse(k): _dot_parse(v) for k, v in sub.get_attributes().items()})
            continue
        G.add_node(_dot_parse(name), **{_dot_parse(k): _dot_parse(v) for k, v in sub.get_attributes().items()})
    for e in P.get_edge_list():
        u, v = _dot_parse(e.get_source()), _dot_parse(e.get_destination())
        G.add_edge(u, v, **{_dot_parse(k): _dot_parse(val) for k, val in e.get_attributes().items()})
    return G


_NUMERAL = re.compile(r"-?(\.[0-9]+|[0-9]+(\.[0-9]*)?)")


def _dot_parse(raw: Any) -> Any:
    s = str(raw)
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        out, i, body = [], 0, s[1:-1]
        while i < len(body):
            c = body[i]
            if c == "\\" and i + 1 < len(body):
                nxt = body[i + 1]
                if nxt in '\\"':
                    out.append(nxt)
                    i += 2
                    continue
                if nxt == "n":
                    out.append("\n")
                    i += 2
                    continue
                if nxt == "\n":  # line continuation
                    i += 2
                    continue
            out.append(c)
            i += 1
        return "".join(out)
    if _NUMERAL.fullmatch(s):
        return float(s) if "." in s else int(s)
    if s in ("true", "false"):
        return s == "true"
    return s


def format_of(path: str | Path) -> str:
    """The format named by a file's suffix."""
    path = Path(path)
    for fmt, suffix in FORMATS.items():
        if path.name.endswith(suffix):
            return fmt
    raise SemgraphError(f"cannot tell the graph format from the name {path.name!r}", path=path,
                        stage="export", fix=f"use a suffix among {sorted(FORMATS.values())} or pass --format")


_format_of = format_of
