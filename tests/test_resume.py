"""Resume after a kill: SIGKILL `semgraph analyze` at random points, re-run, get the uninterrupted result."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from analysis_compare import assert_same_analysis, h5_contents

from semgraph.analyze import analyze
from semgraph.checkpoints import discover
from semgraph.io import atomic_write_json
from semgraph.errors import StoreError
from semgraph.store import ActivationStore, _host, _open_h5, _unreadable, clean_stale_temps


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ---- store-level recovery ---------------------------------------------------------------------------------
def test_store_recovers_from_leftovers_of_a_kill(tiny_run, tmp_path):
    out = tmp_path / "out"
    first = analyze(tiny_run, out, progress=False)
    store_dir = out / "store"
    files = sorted(store_dir.rglob("*.h5"))
    stamps = {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in files}
    # what a SIGKILL (or a power cut) can leave behind
    pid = dead_pid()
    stale = [store_dir / "tiny" / f".step_00000300.h5.{_host()}@{pid}.tmp",
             store_dir / f".manifest.json.{pid}.tmp",
             out / "probe_results" / "tiny" / f".step_00000001.json.{pid}.tmp"]
    for s in stale:
        s.write_bytes(b"\x89HDF half written")
    live = store_dir / "tiny" / f".step_00000000.h5.{_host()}@{os.getppid()}.tmp"
    live.write_bytes(b"a live writer's file")               # the pid is alive: never touched
    manifest = store_dir / "manifest.json"
    manifest.write_text(manifest.read_text()[: len(manifest.read_text()) // 2])  # truncated manifest
    with pytest.warns(UserWarning, match="manifest is unreadable"):
        again = analyze(tiny_run, out, progress=False)
    assert again.extract.captured == []                   # every finished file was adopted, none recomputed
    assert {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in files} == stamps
    assert not any(s.exists() for s in stale) and live.exists()
    assert json.loads(manifest.read_text()) == json.loads(json.dumps(ActivationStore(store_dir).manifest))
    assert set(again.graph.edges) == set(first.graph.edges)
    live.unlink()


def test_file_renamed_but_not_yet_in_manifest_is_adopted(tiny_run, tmp_path):
    out = tmp_path / "out"
    analyze(tiny_run, out, progress=False)
    store = ActivationStore(out / "store")
    entries = dict(store.manifest["entries"])
    key = sorted(entries)[3]
    del store.manifest["entries"][key]                     # killed between os.replace and the manifest update
    atomic_write_json(store.manifest_path, store.manifest)
    assert ActivationStore(out / "store").recover() == [key]
    assert ActivationStore(out / "store").manifest["entries"][key] == \
        {k: v for k, v in entries[key].items() if k != "identical_to_step"}


def test_damaged_finished_file_is_captured_again_not_reused(tiny_run, tmp_path):
    """A store file cut short outside semgraph (a copy, a full disk) is recaptured even when its probe row is
    cached; the result equals the intact analysis."""
    out = tmp_path / "out"
    first = analyze(tiny_run, out, progress=False)
    store = ActivationStore(out / "store")
    key = sorted(store.manifest["entries"], key=lambda k: int(k.split("/")[1]))[4]
    damaged = out / "store" / store.manifest["entries"][key]["file"]
    intact = h5_contents(damaged)
    with open(damaged, "r+b") as fh:
        fh.truncate(100)
    run, step = key.rsplit("/", 1)
    with pytest.raises(StoreError, match="delete the file") as exc:   # named for what it is, not a lock
        store.open(run, int(step)).close()
    assert "lock refused" not in str(exc.value) and str(damaged) in str(exc.value)
    with pytest.warns(UserWarning, match=r"stored activations are damaged .*capturing this checkpoint again"):
        again = analyze(tiny_run, out, progress=False)
    assert [f"{r}/{s}" for r, s in again.extract.captured] == [key]
    recaptured = h5_contents(damaged)
    assert recaptured.keys() == intact.keys()
    for k in intact:
        np.testing.assert_equal(recaptured[k], intact[k], err_msg=k)
    assert set(again.graph.edges) == set(first.graph.edges) and again.rows == first.rows


def test_file_held_by_another_program_is_reported_as_a_lock(tmp_path):
    path = tmp_path / "held.h5"
    h5py.File(path, "w").close()
    hold = "import h5py, sys, time; f = h5py.File(sys.argv[1], 'a'); print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        if os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE":
            pytest.skip("HDF5 file locking is switched off in this environment")
        with pytest.raises(StoreError, match="HDF5_USE_FILE_LOCKING=FALSE") as exc:
            _open_h5(path, "r")
        assert str(path) in str(exc.value)
        assert _unreadable(path) is None              # locked is not damaged: recover() keeps the file
    finally:
        holder.kill()
        holder.wait()


def test_clean_stale_temps_keeps_other_hosts_recent_files(tmp_path):
    pid = dead_pid()
    mine = tmp_path / f".a.h5.{_host()}@{pid}.tmp"
    other_recent = tmp_path / f".b.h5.otherhost@{pid}.tmp"
    other_old = tmp_path / f".c.h5.otherhost@{pid}.tmp"
    unrelated = tmp_path / "notes.tmp"
    for f in (mine, other_recent, other_old, unrelated):
        f.write_text("x")
    os.utime(other_old, (time.time() - 3 * 86400,) * 2)
    removed = clean_stale_temps(tmp_path)
    assert sorted(removed) == sorted([mine, other_old])
    assert other_recent.exists() and unrelated.exists()


# ---- SIGKILL the CLI at random points ------------------------------------------------------------------------
def _progress(out: Path) -> tuple[int, int, bool]:
    """(checkpoints in the manifest, probe rows cached, landscape written) as seen from outside."""
    try:
        n_store = len(json.loads((out / "store" / "manifest.json").read_text())["entries"])
    except (OSError, ValueError):
        n_store = 0
    n_rows = len(list((out / "probe_results").rglob("step_*.json")))
    return n_store, n_rows, (out / "landscape.graphml").exists()


def _done_files(out: Path) -> dict[Path, tuple[int, int]]:
    """Finished store files and probe rows with (inode, mtime): a recomputed file gets a new inode."""
    path = out / "store" / "manifest.json"
    if not path.exists():
        return {}
    entries = json.loads(path.read_text())["entries"]
    files = [out / "store" / e["file"] for e in entries.values() if e.get("status") == "done"]
    files += list((out / "probe_results").rglob("step_*.json"))
    return {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in files if f.exists()}


def _analyze_cmd(run: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "semgraph.cli", "analyze", str(run), "--out", str(out), "--workers", "1"]


def test_sigkill_at_random_points_then_rerun_gives_the_uninterrupted_result(tiny_run_master, tiny_reference,
                                                                           tmp_path):
    tiny_run, reference = tiny_run_master, tiny_reference   # the run is only read; reference: uninterrupted
    n = len(discover(tiny_run)[0].checkpoints)
    out = tmp_path / "killed"
    rng = random.Random(20261203)
    # kill points: after k checkpoints are stored (three random k), while probes run, and at a random moment
    triggers = [("store", rng.randint(1, n // 3)), ("store", rng.randint(n // 3 + 1, 2 * n // 3)),
                ("store", rng.randint(2 * n // 3 + 1, n - 1)), ("rows", rng.randint(1, n - 1))]
    kills = 0
    for kind, k in triggers:
        before = _done_files(out)
        proc = subprocess.Popen(_analyze_cmd(tiny_run, out), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            n_store, n_rows, _ = _progress(out)
            if (kind == "store" and n_store >= k) or (kind == "rows" and n_rows >= k):
                os.killpg(proc.pid, signal.SIGKILL)         # the whole process group, as a job scheduler does
                kills += 1
                break
            time.sleep(0.005)
        proc.wait()
        # what was finished before this run was not recomputed by it
        after = _done_files(out)
        assert {f: after.get(f) for f in before} == before
    assert kills >= 3
    before = _done_files(out)
    final = subprocess.run(_analyze_cmd(tiny_run, out), capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    after = _done_files(out)
    assert {f: after.get(f) for f in before} == before
    assert_same_analysis(reference, out)


@pytest.mark.parametrize("damage", ['{"broken', "", "[]"])
def test_damaged_cached_probe_row_is_computed_again(tiny_run_master, tiny_reference, tmp_path, damage):
    out = tmp_path / "out"
    shutil.copytree(tiny_reference, out)
    rows = sorted((out / "probe_results").rglob("step_*.json"))
    rows[3].write_text(damage)
    with pytest.warns(UserWarning, match=r"cached probe results are (damaged \(.*\)|not a row); computing them again"):
        again = analyze(tiny_run_master, out, progress=False)
    assert again.extract.captured == []
    assert_same_analysis(tiny_reference, out)
