"""Every graph format written and read back: same nodes, edges and values after the documented rule.

Expected values are written out by hand from the rule in semgraph/export.py's docstring (a constructed
ground truth), and a property test re-derives them with an independent, test-local implementation.
"""
from __future__ import annotations

import json
import math

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from semgraph.cli import main
from semgraph.export import FORMATS, from_cytoscape, from_dot, read_graph, to_cytoscape, to_dot, write_graph

TYPED = ("graphml", "gexf", "dot")      # scalars only: the sanitising rule
JSONS = ("json", "cytoscape")           # JSON types kept
ALL = TYPED + JSONS


def awkward() -> nx.DiGraph:
    G = nx.DiGraph(name="t", runs=["a", "b"], info={"x": 1}, nothing=None)
    G.add_node("N0", label="<script>alert(1)</script> ünï \"q\" \\ back", f=np.float32(1.5), k=np.int64(3),
               none=None, lst=[1, 2], dct={"a": [1]}, arr=np.arange(3), grid=np.arange(4).reshape(2, 2),
               flag=np.bool_(True), mixed=1, ratio=1, bi=True, tag=["x"], tup=(1, "z"), st={3, 1},
               ctrl="a\x01b\r\nc", id="own-id")
    G.add_node("N1", label="b", f=2.0, k=4, lst=[], dct={}, arr=np.zeros(0), grid=np.zeros((0, 2)),
               flag=False, mixed="one", ratio=0.5, bi=2, tag="y", tup=(), st=set(), ctrl="", id="x")
    G.add_node("N2", label="", f=-0.25)
    G.add_edge("N0", "N1", count=np.int64(2), rate=None, runs=["a"], source="s", weight=np.float64(0.125))
    G.add_edge("N1", "N2", count=1, rate=0.5, runs=["a", "b"], weight=1)
    return G


TYPED_NODES = {
    "N0": {"label": "<script>alert(1)</script> ünï \"q\" \\ back", "f": 1.5, "k": 3, "lst": "[1, 2]",
           "dct": '{"a": [1]}', "arr": "[0, 1, 2]", "grid": "[[0, 1], [2, 3]]", "flag": True, "mixed": "1",
           "ratio": 1.0, "bi": "True", "tag": '["x"]', "tup": '[1, "z"]', "st": "[1, 3]",
           "ctrl": "a\ufffdb\nc", "id": "own-id"},
    "N1": {"label": "b", "f": 2.0, "k": 4, "lst": "[]", "dct": "{}", "arr": "[]", "grid": "[]", "flag": False,
           "mixed": "one", "ratio": 0.5, "bi": "2", "tag": "y", "tup": "[]", "st": "[]", "ctrl": "", "id": "x"},
    "N2": {"label": "", "f": -0.25},
}
TYPED_EDGES = {("N0", "N1"): {"count": 2, "runs": '["a"]', "source": "s", "weight": 0.125},
               ("N1", "N2"): {"count": 1, "rate": 0.5, "runs": '["a", "b"]', "weight": 1.0}}
TYPED_GRAPH = {"name": "t", "runs": '["a", "b"]', "info": '{"x": 1}'}

JSON_NODES = {
    "N0": {"label": "<script>alert(1)</script> ünï \"q\" \\ back", "f": 1.5, "k": 3, "none": None,
           "lst": [1, 2], "dct": {"a": [1]}, "arr": [0, 1, 2], "grid": [[0, 1], [2, 3]], "flag": True,
           "mixed": 1, "ratio": 1, "bi": True, "tag": ["x"], "tup": [1, "z"], "st": [1, 3],
           "ctrl": "a\x01b\r\nc", "id": "own-id"},
    "N1": {"label": "b", "f": 2.0, "k": 4, "lst": [], "dct": {}, "arr": [], "grid": [], "flag": False,
           "mixed": "one", "ratio": 0.5, "bi": 2, "tag": "y", "tup": [], "st": [], "ctrl": "", "id": "x"},
    "N2": {"label": "", "f": -0.25},
}
JSON_EDGES = {("N0", "N1"): {"count": 2, "rate": None, "runs": ["a"], "source": "s", "weight": 0.125},
              ("N1", "N2"): {"count": 1, "rate": 0.5, "runs": ["a", "b"], "weight": 1}}
JSON_GRAPH = {"name": "t", "runs": ["a", "b"], "info": {"x": 1}, "nothing": None}


def same(got, want) -> bool:
    """Equal values of equal type (bool is not int; 1.0 is not 1)."""
    if isinstance(want, float):
        return type(got) is float and (got == want or (math.isnan(got) and math.isnan(want)))
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(same, got, want))
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(same(got[k], want[k]) for k in want)
    return type(got) is type(want) and got == want


def assert_graph(H: nx.DiGraph, nodes, edges, graph, fmt: str) -> None:
    assert set(H.nodes) == set(nodes), fmt
    assert set(H.edges) == set(edges), fmt
    for n, want in nodes.items():
        got = H.nodes[n]
        assert set(got) == set(want), (fmt, n, set(got) ^ set(want))
        for k, v in want.items():
            assert same(got[k], v), (fmt, n, k, got[k], v)
    for e, want in edges.items():
        got = H.edges[e]
        assert set(got) == set(want), (fmt, e, set(got) ^ set(want))
        for k, v in want.items():
            assert same(got[k], v), (fmt, e, k, got[k], v)
    assert set(H.graph) == set(graph), (fmt, set(H.graph) ^ set(graph))
    for k, v in graph.items():
        assert same(H.graph[k], v), (fmt, k, H.graph[k], v)


@pytest.mark.parametrize("fmt", ALL)
def test_round_trip_none_lists_dicts_numpy_and_mixed_types(tmp_path, fmt):
    path = write_graph(awkward(), tmp_path / f"g{FORMATS[fmt]}")
    H = read_graph(path)
    if fmt in TYPED:
        assert_graph(H, TYPED_NODES, TYPED_EDGES, TYPED_GRAPH, fmt)
    else:
        assert_graph(H, JSON_NODES, JSON_EDGES, JSON_GRAPH, fmt)


def test_json_formats_are_strict_json_with_explicit_keys(tmp_path):
    G = awkward()
    G.nodes["N2"]["bad"] = float("nan")
    G.nodes["N1"]["bad"] = [1.0, float("inf")]
    for fmt in JSONS:
        text = write_graph(G, tmp_path / f"g{FORMATS[fmt]}").read_text()
        data = json.loads(text, parse_constant=lambda c: pytest.fail(f"{fmt} holds {c}"))
        H = read_graph(tmp_path / f"g{FORMATS[fmt]}")
        assert H.nodes["N2"]["bad"] is None and H.nodes["N1"]["bad"] == [1.0, None]
    node_link = json.loads((tmp_path / "g.json").read_text())
    assert "edges" in node_link and "links" not in node_link and node_link["semgraph_format"]
    cy = json.loads((tmp_path / "g.cyjs").read_text())
    # cytoscape.js elements: every element has data.id; edges data.source/target; user's 'id' kept aside
    assert [n["data"]["id"] for n in cy["elements"]["nodes"]] == ["N0", "N1", "N2"]
    assert all({"id", "source", "target"} <= set(e["data"]) for e in cy["elements"]["edges"])
    assert cy["elements"]["nodes"][0]["data"]["attr:id"] == "own-id"
    assert cy["elements"]["edges"][0]["data"]["attr:source"] == "s"


def test_nan_survives_the_xml_formats(tmp_path):
    G = nx.DiGraph()
    G.add_node("a", x=float("nan"), y=float("inf"))
    G.add_node("b", x=1.0, y=-float("inf"))
    for fmt in ("graphml", "gexf"):
        H = read_graph(write_graph(G, tmp_path / f"g{FORMATS[fmt]}"))
        assert math.isnan(H.nodes["a"]["x"]) and H.nodes["a"]["y"] == math.inf and H.nodes["b"]["y"] == -math.inf
    H = read_graph(write_graph(G, tmp_path / "g.dot"))      # documented: DOT has no non-finite numeral
    assert H.nodes["a"]["x"] == "nan" and H.nodes["b"]["y"] == "-inf" and H.nodes["b"]["x"] == 1.0


def test_dot_parses_with_pydot_as_graphviz_text():
    pydot = pytest.importorskip("pydot")
    text = to_dot(read_graph_from_dict(TYPED_NODES, TYPED_EDGES, TYPED_GRAPH))
    P = pydot.graph_from_dot_data(text)[0]
    assert P.get_type() == "digraph" and len(P.get_edge_list()) == 2
    assert_graph(from_dot(text), TYPED_NODES, TYPED_EDGES, TYPED_GRAPH, "dot")


def read_graph_from_dict(nodes, edges, graph) -> nx.DiGraph:
    G = nx.DiGraph(**graph)
    for n, d in nodes.items():
        G.add_node(n, **d)
    for (u, v), d in edges.items():
        G.add_edge(u, v, **d)
    return G


def test_cytoscape_file_is_read_by_networkx_too(tmp_path):
    doc = json.loads(write_graph(awkward(), tmp_path / "g.cyjs").read_text())
    H = nx.cytoscape_graph(doc)                      # networkx's own reader of the cytoscape.js format
    assert set(H.nodes) == set(JSON_NODES) and set(H.edges) == set(JSON_EDGES)
    for n, want in JSON_NODES.items():
        got = {k: v for k, v in H.nodes[n].items() if k not in ("id", "name", "value")}
        got = {k.removeprefix("attr:"): v for k, v in got.items()}
        assert all(same(got[k], v) for k, v in want.items()) and set(got) == set(want), n
    assert H.nodes["N1"]["name"] == "b"              # Cytoscape desktop's label column holds the label


def test_cytoscape_reads_flat_element_arrays():
    doc = {"elements": [{"data": {"id": "a", "w": 1}}, {"data": {"id": "b"}},
                        {"group": "edges", "data": {"id": "e", "source": "a", "target": "b", "n": 2}}]}
    G = from_cytoscape(doc)
    assert G.nodes["a"] == {"w": 1} and G["a"]["b"] == {"n": 2}
    back = from_cytoscape(to_cytoscape(G))
    assert dict(back.nodes(data=True)) == dict(G.nodes(data=True)) and back["a"]["b"] == {"n": 2}


def test_cli_converts_between_every_pair_of_formats(tmp_path, capsys):
    start = write_graph(awkward(), tmp_path / "start.json")
    firsts = {}
    for a in ALL:                                   # JSON -> every format
        firsts[a] = tmp_path / f"first{FORMATS[a]}"
        assert main(["export", str(start), "--format", a, "--out", str(firsts[a])]) == 0
    pairs = 0
    for a in ALL:                                   # every format -> every other format
        for b in ALL:
            if a == b:
                continue
            out = tmp_path / f"{a}_to{FORMATS[b]}"
            assert main(["export", str(firsts[a]), "--format", b, "--out", str(out)]) == 0
            assert "3 nodes, 2 edges" in capsys.readouterr().out
            H = read_graph(out)
            if a in TYPED or b in TYPED:            # a typed format on the way: the sanitised values
                assert_graph(H, TYPED_NODES, TYPED_EDGES, TYPED_GRAPH, f"{a}->{b}")
            else:                                   # JSON -> JSON keeps JSON's types
                assert_graph(H, JSON_NODES, JSON_EDGES, JSON_GRAPH, f"{a}->{b}")
            pairs += 1
    assert pairs == 20
    # without --out the output goes beside the input with the format's own suffix, never over an existing file
    assert main(["export", str(firsts["dot"]), "--format", "cytoscape"]) == 2
    assert "already exists" in capsys.readouterr().err
    (tmp_path / "first.cyjs").unlink()
    assert main(["export", str(firsts["dot"]), "--format", "cytoscape"]) == 0
    assert read_graph(tmp_path / "first.cyjs").number_of_edges() == 2


def test_cli_export_bad_input_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "broken.graphml"
    bad.write_text("<graphml><oops")
    assert main(["export", str(bad), "--format", "json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "Fix:" in err[0]


# ---- property: any attribute values, every format -------------------------------------------------------
KEYS = ("a", "b", "c")
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**62, 2**62),
                    st.floats(allow_nan=False, allow_infinity=False, width=64),
                    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
                    st.integers(-100, 100).map(np.int32), st.floats(-1e6, 1e6).map(np.float64),
                    st.booleans().map(np.bool_))
values = st.one_of(scalars, st.lists(st.integers(-5, 5), max_size=3),
                   st.dictionaries(st.sampled_from("xy"), st.integers(0, 3), max_size=2))
attr_dicts = st.dictionaries(st.sampled_from(KEYS), values, max_size=3)


def expected_typed(dicts: list[dict]) -> list[dict]:
    """Test-local re-derivation of the rule (independent of semgraph.export)."""
    import re
    bad = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
    out = []
    for d in dicts:
        e = {}
        for k, v in d.items():
            if v is None:
                continue
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, (list, dict)):
                v = json.dumps(v, ensure_ascii=False)
            if isinstance(v, str):
                v = bad.sub("\ufffd", v.replace("\r\n", "\n").replace("\r", "\n"))
            e[k] = v
        out.append(e)
    for k in KEYS:
        types = {type(e[k]) for e in out if k in e}
        if len(types) > 1:
            to = float if types <= {int, float} else str
            for e in out:
                if k in e:
                    e[k] = to(e[k])
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(attr_dicts, min_size=1, max_size=4))
def test_property_round_trip_every_format(tmp_path, node_attrs):
    G = nx.DiGraph()
    for i, d in enumerate(node_attrs):
        G.add_node(f"n{i}", **d)
    for i in range(len(node_attrs) - 1):
        G.add_edge(f"n{i}", f"n{i + 1}", **node_attrs[i + 1])
    typed = expected_typed(node_attrs)
    typed_edges = expected_typed(node_attrs[1:])
    for fmt in ALL:
        H = read_graph(write_graph(G, tmp_path / f"p{FORMATS[fmt]}"))
        assert list(H.nodes) == list(G.nodes) and set(H.edges) == set(G.edges), fmt
        for i, n in enumerate(G.nodes):
            if fmt in TYPED:
                want = {k: v for k, v in typed[i].items() if not (fmt == "dot" and _nonfinite(v))}
            else:
                want = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in node_attrs[i].items()}
            assert set(H.nodes[n]) == set(want), (fmt, H.nodes[n], want)
            for k, v in want.items():
                assert same(H.nodes[n][k], v), (fmt, k, H.nodes[n][k], v)
        for i in range(len(node_attrs) - 1):
            got = H.edges[f"n{i}", f"n{i + 1}"]
            want = typed_edges[i] if fmt in TYPED else \
                {k: (v.item() if isinstance(v, np.generic) else v) for k, v in node_attrs[i + 1].items()}
            assert set(got) == set(want) and all(same(got[k], want[k]) for k in want), (fmt, got, want)


def _nonfinite(v) -> bool:
    return isinstance(v, float) and not math.isfinite(v)
