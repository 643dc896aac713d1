"""Compare two `semgraph analyze` output folders exactly (used by the resume and parallel tests)."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np


def h5_contents(path: Path) -> dict:
    out = {}
    with h5py.File(path, "r") as fh:
        out["attrs"] = {k: np.asarray(v).tolist() for k, v in fh.attrs.items()}
        fh.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_analysis(a: Path, b: Path) -> None:
    """Store files (every dataset and attribute), manifest, probe rows, table and graph are identical."""
    files_a = sorted(p.relative_to(a) for p in (a / "store").rglob("*.h5"))
    files_b = sorted(p.relative_to(b) for p in (b / "store").rglob("*.h5"))
    assert files_a == files_b and files_a
    for rel in files_a:
        ca, cb = h5_contents(a / rel), h5_contents(b / rel)
        assert ca.keys() == cb.keys(), rel
        for k in ca:
            if k == "attrs":
                assert ca[k] == cb[k], (rel, {x: (ca[k].get(x), cb[k].get(x)) for x in set(ca[k]) | set(cb[k]) if ca[k].get(x) != cb[k].get(x)})
            else:
                np.testing.assert_array_equal(ca[k], cb[k], err_msg=f"{rel}:{k}")
    ma = json.loads((a / "store" / "manifest.json").read_text())
    mb = json.loads((b / "store" / "manifest.json").read_text())
    assert ma == mb
    rows_a = sorted(p.relative_to(a) for p in (a / "probe_results").rglob("*.json"))
    assert rows_a == sorted(p.relative_to(b) for p in (b / "probe_results").rglob("*.json"))
    for rel in rows_a:
        assert json.loads((a / rel).read_text()) == json.loads((b / rel).read_text()), rel
    for name in ("checkpoints.csv", "landscape.json", "landscape.graphml", "trajectories.json"):
        assert (a / name).read_text() == (b / name).read_text(), name
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    sa.pop("store"), sb.pop("store")       # how many were captured vs reused differs, by design
    assert sa == sb


