"""Report, plots and similarity on a real (tiny) analysis; the report opened in headless Chromium."""
from __future__ import annotations

import base64
import json
import shutil
import struct
import tempfile
import time
import xml.etree.ElementTree as ET
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from semgraph.analyze import analyze
from semgraph.cli import main
from semgraph.export import read_graph, write_graph
from semgraph.layout import landscape_positions
from semgraph.outputs import json_tables, load_outputs
from semgraph.plots import plot_landscape, probe_panels
from semgraph.report import script_json, write_report
from semgraph.similarity import checkpoint_similarity, cosine_fingerprints
from semgraph.store import ActivationStore

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


@pytest.fixture(scope="module")
def analysis(tmp_path_factory, request) -> Path:
    """One real analysis of the tiny run (analyze writes the report itself)."""
    out = tmp_path_factory.mktemp("analysis") / "out"
    analyze(request.getfixturevalue("tiny_run_master"), out, progress=False)
    return out


@pytest.fixture
def hostile(analysis, tmp_path) -> Path:
    """A copy of the analysis whose first node label, and an observables file name and cell, hold markup."""
    out = tmp_path / "hostile"
    shutil.copytree(analysis, out, ignore=shutil.ignore_patterns("store", "probe_results", "plots"))
    G = read_graph(out / "landscape.json")
    first = next(iter(G.nodes))
    G.nodes[first]["label"] = HOSTILE
    write_graph(G, out / "landscape.json")
    (out / f"observables {HOSTILE[:8]}.json").write_text(json.dumps([{"name": HOSTILE, "value": 1.5}]))
    return out


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_analyze_writes_a_self_contained_report_and_figures(analysis):
    html = (analysis / "report.html").read_text(encoding="utf-8")
    parser = Elements()
    parser.feed(html)
    G = read_graph(analysis / "landscape.graphml")
    for tag, attrs in parser.tags:
        assert tag not in ("link", "iframe", "object", "embed"), tag
        if tag == "script":
            assert "src" not in attrs
        if "src" in attrs:
            assert attrs["src"].startswith("data:image/png;base64,"), attrs["src"][:40]
        if "href" in attrs:
            assert attrs["href"].startswith("#"), attrs["href"]
    imgs = [a["src"] for t, a in parser.tags if t == "img"]
    # landscape + per run: timeline, probes, similarity
    assert len(imgs) == 4
    for src in imgs:
        w, h = png_size(base64.b64decode(src.split(",", 1)[1]))
        assert w > 500 and h > 300
    for stem in ("landscape", "timeline_tiny", "probes_tiny", "similarity_tiny"):
        assert png_size((analysis / "plots" / f"{stem}.png").read_bytes())[0] > 500
        root = ET.parse(analysis / "plots" / f"{stem}.svg").getroot()
        assert root.tag.endswith("svg")
    for n, d in G.nodes(data=True):                 # every node and its label in the nodes table
        assert f">{n}</td>" in html and escape(d["label"]) in html
    assert html.count('<tr><td data-v="') >= G.number_of_nodes() + G.number_of_edges()


def test_report_escapes_labels_file_names_and_cells(hostile):
    html = write_report(hostile, plots=False).read_text(encoding="utf-8")
    assert HOSTILE not in html and "<script>window" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html       # the table shows it as text
    assert html.count("<script") == 2                                   # our data block and our code
    assert "observables &lt;script&gt;.json" in html                     # the file name, escaped
    data = html.split('id="semgraph-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and json.loads(data)["graph"]["nodes"][0]["label"] == HOSTILE


def test_script_json_cannot_close_its_element():
    for text in ("</script><script>alert(1)</script>", "a\u2028b", "x & y > z <!--"):
        s = script_json({"t": text})
        assert "<" not in s and ">" not in s and "\u2028" not in s
        assert json.loads(s) == {"t": text}


def test_report_cli_and_errors(tmp_path, capsys):
    folder = tmp_path / "graph-only"                   # only a graph: the report still works
    G = nx.DiGraph(name="g")
    G.add_node("A", label="start", F_test_mean=3.0, visits=1, first_entry_step=0)
    G.add_node("B", label="end", F_test_mean=0.5, visits=1, first_entry_step=10)
    G.add_edge("A", "B", count=1)
    write_graph(G, folder / "landscape.json")
    target = tmp_path / "r.html"
    assert main(["report", str(folder), "--out", str(target)]) == 0
    assert "self-contained" in capsys.readouterr().out and target.stat().st_size > 20_000
    assert (folder / "plots" / "landscape.svg").exists() and ">start</td>" in target.read_text()
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "Fix:" in err[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "semgraph analyze" in capsys.readouterr().err


def test_observables_tables_are_read_whatever_their_shape(hostile):
    (hostile / "observables.csv").write_text("step,rate\n10,0.25\n20,0.5\n")
    obs = hostile / "observables"
    obs.mkdir()
    (obs / "transitions.json").write_text(json.dumps({"tau": 12.5, "by_node": {"N0": {"dwell": 3}, "N1": {"dwell": 4}},
                                                       "events": [{"step": 1, "kind": "jump"}]}))
    (obs / "broken.json").write_text("{not json")
    o = load_outputs(hostile)
    names = {t.name for t in o.observables}
    assert "observables.csv" in names and "observables/transitions.json: by_node" in names
    csv_table = next(t for t in o.observables if t.name == "observables.csv")
    assert csv_table.columns == ["step", "rate"] and csv_table.rows == [[10, 0.25], [20, 0.5]]
    assert any("broken.json" in p for p in o.problems)
    html = write_report(hostile, plots=False).read_text(encoding="utf-8")
    assert "observables/transitions.json: events" in html and ">jump</td>" in html and "broken.json" in html
    assert json_tables({"a": [1, 2], "b": [3, 4]}, "cols")[0].rows == [[1, 3], [2, 4]]


def test_read_rows_agree_with_the_analysis(analysis):
    o = load_outputs(analysis)
    G = read_graph(analysis / "landscape.json")
    by_node = {}
    for r in o.rows:
        by_node.setdefault(r["node"], []).append(r)
    for n, d in G.nodes(data=True):                  # node means recomputed from the table rows
        assert d["member_steps"] == sorted(r["step"] for r in by_node[n])
        assert np.isclose(d["test_acc"], np.mean([r["output.test_acc"] for r in by_node[n]]))


def test_similarity_matches_theory_on_constructed_store(tmp_path):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(30, 7)).astype(np.float32)
    B = rng.normal(size=(30, 7)).astype(np.float32)
    arrays = {0: A, 1: A + 5.0, 2: -A, 3: B, 4: np.zeros_like(A)}     # shift, sign flip, unrelated, constant
    store = ActivationStore(tmp_path / "store")
    for step, logits in arrays.items():
        with store.writer("r", step, {"run": "r", "step": step}) as w:
            w.put("logits", logits)
        store.record("r", step, {"status": "done", "source_id": str(step)})
    steps, S = checkpoint_similarity(tmp_path / "store", "r")
    assert steps == [0, 1, 2, 3, 4]
    assert np.allclose(S, S.T) and np.allclose(np.diag(S), 1)
    assert np.isclose(S[0, 1], 1, atol=1e-6)                 # a constant shift of the logits does not count
    assert np.isclose(S[0, 2], -1, atol=1e-6)
    Ac, Bc = A - A.mean(1, keepdims=True), B - B.mean(1, keepdims=True)
    assert np.isclose(S[0, 3], (Ac * Bc).sum() / np.linalg.norm(Ac) / np.linalg.norm(Bc), atol=1e-6)
    assert S[4, 0] == 0 and S[4, 4] == 1


def test_similarity_is_swappable(analysis):
    def ones(arrays):
        return np.ones((len(arrays), len(arrays)))
    steps, S = checkpoint_similarity(analysis / "store", "tiny", measure=ones)
    assert S.shape == (len(steps), len(steps)) and np.all(S == 1)
    steps2, S2 = checkpoint_similarity(analysis / "store", "tiny", features="acts/blocks.0.hook_resid_post",
                                       measure=cosine_fingerprints)
    assert steps2 == steps and np.allclose(np.diag(S2), 1)


def test_landscape_layout_puts_lower_fallibility_lower(tmp_path):
    G = nx.DiGraph(name="t")
    for n, f, first, v in (("high", 100.0, 0, 1), ("mid", 10.0, 5, 2), ("low", 0.1, 9, 1), ("none", None, 12, 1)):
        G.add_node(n, F_test_mean=f, first_entry_step=first, visits=v, label=n)
    G.add_edge("high", "mid", count=1)
    G.add_edge("mid", "low", count=3)
    pos = landscape_positions(G)
    assert pos["low"][1] < pos["mid"][1] < pos["high"][1]                 # lower F lower
    assert np.isclose(pos["mid"][1] - pos["low"][1], 2.0)                # log10 scale
    assert [n for n, _ in sorted(pos.items(), key=lambda t: t[1][0])] == ["high", "mid", "low", "none"]
    assert pos["none"][1] < pos["low"][1]
    files = plot_landscape(G, tmp_path / "land")
    assert [f.suffix for f in files] == [".png", ".svg"] and files[0].stat().st_size > 10_000


def test_probe_panels_follow_the_columns_present():
    rows = [{"run": "r", "step": 1, "fourier.key_freqs": [3], "fourier.restricted_loss": 1.0}]
    assert probe_panels(rows) == ["key_freqs", "fourier_loss"]
    assert probe_panels([{"run": "r", "step": 1, "induction.score": 0.3}]) == ["induction"]
    assert probe_panels([{"run": "r", "step": 1}]) == []


# ---- headless Chromium ---------------------------------------------------------------------------------
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="semgraph-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,1500"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def load(driver, path: Path) -> None:
    driver.get(path.resolve().as_uri())
    for _ in range(100):
        if driver.execute_script("return document.documentElement.getAttribute('data-ready')") == "1":
            return
        time.sleep(0.05)
    pytest.fail(f"report script did not finish; console: {driver.get_log('browser')}")


def errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def hover(driver, element) -> str:
    from selenium.webdriver.common.action_chains import ActionChains
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    ActionChains(driver).move_to_element(element).perform()
    tip = driver.find_element("id", "tooltip")
    for _ in range(40):
        if tip.is_displayed():
            break
        time.sleep(0.05)
    return tip.text


def test_report_in_headless_chromium(browser, analysis, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    G = read_graph(analysis / "landscape.graphml")            # read independently of the report
    summary = json.loads((analysis / "summary.json").read_text())
    load(browser, analysis / "report.html")
    assert errors(browser) == []
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0   # no fetches
    nodes = browser.find_elements("css selector", "#graph .node")
    assert sorted(n.get_attribute("data-id") for n in nodes) == sorted(G.nodes)      # one element per node
    assert len(browser.find_elements("css selector", "#graph .edge")) == G.number_of_edges()
    for el in nodes:
        text = hover(browser, el)
        label = G.nodes[el.get_attribute("data-id")]["label"]
        assert text.splitlines()[0] == label and "F_test per input" in text and "members (" in text
    # click a node: the run's path lights up, in order
    nodes[0].click()
    path = summary["runs"]["tiny"]["path"]
    assert browser.find_element("id", "path-status").text == "run tiny: " + " → ".join(path)
    on = browser.find_elements("css selector", "#graph .edge.on")
    assert len(on) == len(path) - 1
    assert {(e.get_attribute("data-source"), e.get_attribute("data-target")) for e in on} == set(zip(path, path[1:]))
    # zoom and pan change the view transform
    vp = browser.find_element("id", "viewport")
    before = vp.get_attribute("transform")
    browser.find_element("id", "zoom-in").click()
    zoomed = vp.get_attribute("transform")
    assert "scale(1.25)" in zoomed and zoomed != before
    svg = browser.find_element("id", "graph-svg")
    ActionChains(browser).move_to_element_with_offset(svg, 5, 5).click_and_hold().move_by_offset(80, 40) \
        .release().perform()
    assert vp.get_attribute("transform") != zoomed
    browser.find_element("id", "zoom-reset").click()
    ActionChains(browser).move_to_element(nodes[-1]).perform()
    assert browser.find_element("id", "tooltip").is_displayed()
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    w, h = png_size(shot.read_bytes())
    assert w >= 1000 and h >= 600 and shot.stat().st_size > 20_000
    shutil.copy(shot, analysis / "report_screenshot.png")
    assert errors(browser) == []


def test_script_label_is_shown_as_text_in_chromium(browser, hostile):
    report = write_report(hostile, plots=False)
    load(browser, report)
    assert errors(browser) == []
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.execute_script("return document.querySelectorAll('main img').length") == 0
    first = browser.find_elements("css selector", "#graph .node")[0]
    assert hover(browser, first).splitlines()[0] == HOSTILE               # the tooltip shows the markup as text
    cell = browser.execute_script(
        "return Array.from(document.querySelectorAll('#nodes td')).map(td => td.textContent)")
    assert HOSTILE in cell
    obs = browser.execute_script(
        "return Array.from(document.querySelectorAll('#observables td')).map(td => td.textContent)")
    assert HOSTILE in obs
    assert browser.execute_script("return window.__pwned === undefined")


def test_real_landscape_round_trips_through_every_format(analysis, tmp_path):
    """The analysed graph (lists, dicts, None, floats) in all five formats: values agree with node-link JSON."""
    from semgraph.export import FORMATS
    ref = read_graph(analysis / "landscape.json")            # JSON keeps lists and dicts as they are
    for fmt, suffix in FORMATS.items():
        H = read_graph(write_graph(ref, tmp_path / f"real{suffix}"))
        assert set(H.nodes) == set(ref.nodes) and set(H.edges) == set(ref.edges), fmt
        for n, d in ref.nodes(data=True):
            got = H.nodes[n]
            assert set(got) == {k for k, v in d.items() if v is not None}, (fmt, n)
            for k, v in d.items():
                if v is None:
                    continue
                want = json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) and \
                    fmt in ("graphml", "gexf", "dot") else v
                assert got[k] == want or (isinstance(want, float) and np.isclose(got[k], want)), (fmt, n, k)
        for u, v, d in ref.edges(data=True):
            assert H[u][v]["count"] == d["count"], fmt
