"""The whole analysis: discover -> capture into the store -> probes -> states -> landscape -> files.

Every stage writes to ``OUT`` and the next reads from there, so a killed analysis resumes where it stopped
and a second run on the same folder reuses the store (no forward pass repeated).
"""
from __future__ import annotations

import csv
import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import networkx as nx
import numpy as np

import probes as probe_library
from probes.base import Probe
from semgraph.checkpoints import Run, discover
from semgraph.errors import ConfigError, SemgraphError
from semgraph.extract import CaptureConfig, ExtractReport, extract_run
from semgraph.io import atomic_write_json, exclusive_folder
from semgraph.landscape import build_landscape, node_path
from semgraph.parallel import Executor, make_executor
from semgraph.probing import run_probes
from semgraph.recorder import read_metrics
from semgraph.states import (describe_node, order_by_first_visit, refine_by_concepts,
                             signature_matrix)
from semgraph.store import ActivationStore, clean_stale_temps
from semgraph.tasks import task_from_spec


@dataclass
class AnalysisResult:
    out: Path
    graph: nx.DiGraph
    rows: list[dict[str, Any]]
    extract: ExtractReport
    files: dict[str, Path] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def analyze(run_dir: str | Path, out: str | Path, *, strict: bool = False, progress: bool = True,
            probes: Sequence[Probe] | None = None, signature: Sequence[str] | None = None,
            max_states: int = 8, batch_size: int = 1024, run_spec: dict[str, Any] | None = None,
            trust: bool = False, payload: str | None = None, workers: int | None = 1,
            scheduler: str | None = None, states: str | None = None,
            compare_states: Sequence[str] | None = None, skip_probes: Sequence[str] = (),
            executor: Executor | None = None) -> AnalysisResult:
    """Analyze a run folder. ``run_spec`` (see semgraph.runspec) gives folders without run.json their
    model, task and analysis settings; ``trust`` allows full unpickling of torch checkpoints.
    ``workers`` processes capture and probe checkpoints in parallel (None: one per core); ``scheduler`` sends them
    to dask.distributed instead ("local" or "tcp://host:port"). Results do not depend on either.
    ``states``: the state model (semgraph.state_models.METHODS; default DEFAULT_METHOD); ``compare_states``:
    other methods fitted too, for the agreement table (default: all others); ``skip_probes``: task-default
    probes left out (e.g. "linear", ~4 CPU s per checkpoint, for large sweeps). ``executor``
    (semgraph.parallel) replaces ``workers``/``scheduler``; the caller then closes it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError("--out is a file, not a folder", path=out, stage="analyze",
                          fix="pass a new or existing folder for the results")
    runs = discover(run_dir, run_spec, trust=trust, payload=payload)
    _check_writable(out)
    with exclusive_folder(out, stage="analyze"):  # one orchestrator per --out: one manifest writer
        for run in runs:
            for problem in run.problems:
                warnings.warn(problem, stacklevel=2)
        store = ActivationStore(out / "store")
        clean_stale_temps(out)
        report = ExtractReport()
        rows: list[dict[str, Any]] = []
        sig_keys: list[str] | None = list(signature) if signature else None
        own_executor = executor is None
        executor = executor or make_executor(workers, scheduler)
        try:
            for run in runs:
                task, defaults = _task_for(run)
                from semgraph.hf_bridge import preflight
                # a config.json that fits no checkpoint: one line, no work done
                preflight(run, task.probe_set().inputs)
                cfg = CaptureConfig(hooks=defaults["hooks"], params=defaults["params"], batch_size=batch_size,
                                    position=defaults.get("position", -1))
                extract_run(run, task.probe_set(), cfg, store, strict=strict, report=report, progress=progress,
                            executor=executor)
            for run in runs:
                task, defaults = _task_for(run)
                done = [c.step for c in run.checkpoints if store.is_done(run.name, c.step, _sid(store, run, c.step))]
                run_probes_list = list(probes) if probes is not None else \
                    [probe_library.make_probe(name, **params) for name, params in defaults["probes"]
                     if name not in skip_probes]
                rows += run_probes(run.name, done, task.probe_set(), task.spec(), store, run_probes_list,
                                   out / "probe_results", progress=progress, executor=executor)
                sig_keys = sig_keys or defaults["signature"]
        finally:
            if own_executor:
                executor.close()
        if not rows:
            raise SemgraphError("no checkpoint could be analysed (all failed to load)", path=run_dir,
                                stage="analyze", fix="see the warnings above for each file and its fix")
        from semgraph.state_models import DEFAULT_METHOD
        method = states or DEFAULT_METHOD
        G = _states_and_graph(rows, sig_keys, max_states, runs, method)
        agreement = _compare_states(G, rows, sig_keys, max_states, method, compare_states)
        from semgraph.observables import observe_graph, write_observables
        obs = observe_graph(G, rows)
        result = AnalysisResult(out=out, graph=G, rows=rows, extract=report)
        _write_outputs(result, runs)
        result.files.update(write_observables(obs, out))
        result.files["states_agreement"] = out / "states_agreement.json"
        atomic_write_json(result.files["states_agreement"], agreement)
        result.summary["observables"] = obs
        return result


def _check_writable(out: Path) -> None:
    """Refuse an --out folder that cannot be made or written (read-only mount, a file on its path) before any
    work, naming the folder rather than a file deep inside it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as exc:
        raise ConfigError(f"--out cannot be written ({exc.strerror or exc})", path=out, stage="analyze",
                          fix="pass a folder you can write to; results already in it are kept") from exc


def _sid(store: ActivationStore, run: Run, step: int) -> str:
    entry = store.manifest["entries"].get(store.key(run.name, step), {})
    return entry.get("source_id", "")


def _task_for(run: Run):
    from semgraph.runspec import analysis_settings

    spec = run.info.get("task")
    if run.info.get("format") == "foreign" and not (spec and run.info.get("model")):
        lacking = " and ".join(w for w, ok in (("model spec", run.info.get("model")), ("task", spec)) if not ok)
        fix = ("pass --task (induction, or modular-addition --p P), the task the model was trained on, or "
               "--run-spec FILE" if run.info.get("model") else
               "pass --model package.module:function and --task modular-addition --p P (with --train-pairs FILE), "
               "or --run-spec FILE")
        raise ConfigError(f"no {lacking} for this folder (it has no semgraph run.json)", path=run.path,
                          stage="analyze", fix=fix)
    if not spec:
        raise ConfigError("run.json has no task, so there is no probe set", path=run.path / "run.json",
                          stage="analyze", fix="record the run with task_spec=... (e.g. ModularAddition.spec())")
    task = task_from_spec(spec)
    return task, analysis_settings(task.analysis_defaults(), run.info)


def _states_and_graph(rows: list[dict[str, Any]], sig_keys: Sequence[str], max_states: int,
                             runs: Sequence[Run], method: str) -> nx.DiGraph:
    """Nodes from a pooled state model (semgraph.state_models), shared by every run, split where a node
    mixes behaviour (see semgraph.states.refine_by_concepts)."""
    from semgraph.state_models import fit_states

    labels, report = fit_states(method, rows, sig_keys, max_states)
    labels = order_by_first_visit(refine_by_concepts(labels, rows), np.array([r["step"] for r in rows], dtype=float))
    for r, lab in zip(rows, labels):
        r["node"] = f"N{lab}"
    node_info = {}
    for node in sorted({r["node"] for r in rows}):
        members = [r for r in rows if r["node"] == node]
        label, concepts = describe_node(members)
        node_info[node] = {"label": label, "concepts": concepts}
    run_info = {run.name: {"metadata": run.info.get("metadata", {}), "task": run.info.get("task")} for run in runs}
    G = build_landscape(rows, node_info, run_info)
    G.graph["state_model"] = method
    G.graph["signature_features"] = report["features"]
    G.graph["state_selection_criterion"] = report["criterion"]
    G.graph["state_selection"] = report["selection"]
    G.graph["state_stability_ari"] = report["stability_ari"]
    G.graph["state_stability_kind"] = report["stability_kind"]
    return G


def _compare_states(G: nx.DiGraph, rows: list[dict[str, Any]], sig_keys: Sequence[str], max_states: int,
                    method: str, others: Sequence[str] | None) -> dict[str, Any]:
    """Fit the other state models too; pairwise ARI / change-point F1 with the chosen one."""
    from semgraph.state_models import METHODS, agreement_table, fit_states

    labels = {method: np.array([int(r["node"].lstrip("N")) for r in rows])}
    reports: dict[str, Any] = {method: {"n_states": G.number_of_nodes(),
                                        "stability_ari": G.graph.get("state_stability_ari")}}
    for m in (others if others is not None else [m for m in METHODS if m != method]):
        if m == method:
            continue
        try:
            labels[m], reports[m] = fit_states(m, rows, sig_keys, max_states)
        except (SemgraphError, ValueError, np.linalg.LinAlgError) as exc:  # a cross-check must not sink the run
            reports[m] = {"error": f"{type(exc).__name__}: {exc}"}
    table = agreement_table(labels, rows)
    G.graph["state_agreement_ari"] = {f"{t['a']}~{t['b']}": t["ari"] for t in table
                                      if method in (t["a"], t["b"])}
    return {"chosen": method, "models": reports, "pairs": table}


def grokking_step(rows: Sequence[dict[str, Any]], key: str, threshold: float) -> int | None:
    for r in sorted(rows, key=lambda r: r["step"]):
        if r.get(key) is not None and r[key] >= threshold:
            return int(r["step"])
    return None


def _write_outputs(result: AnalysisResult, runs: Sequence[Run]) -> None:
    from semgraph.export import write_graph
    from semgraph.plots import plot_run

    out, G, rows = result.out, result.graph, result.rows
    files = result.files
    for fmt, suffix in (("graphml", ".graphml"), ("gexf", ".gexf"), ("json", ".json")):
        files[fmt] = write_graph(G, out / f"landscape{suffix}", fmt)
    summary: dict[str, Any] = {"nodes": {n: G.nodes[n]["label"] for n in G.nodes}, "runs": {}}
    for run in runs:
        run_rows = [r for r in rows if r["run"] == run.name]
        if not run_rows:
            continue
        files[f"png:{run.name}"] = plot_run(G, rows, run.name, out / f"landscape_{run.name}.png")
        stored = read_metrics(run.path) or _stored_in_checkpoints(result.out / "store", run)
        summary["runs"][run.name] = {
            "path": node_path(G, run.name),
            "t_mem (train acc >= 0.99)": grokking_step(run_rows, "output.train_acc", 0.99),
            "t_grok (test acc >= 0.95)": grokking_step(run_rows, "output.test_acc", 0.95),
            "checkpoints analysed": len(run_rows),
            "max |recomputed - logged| test acc": _agreement(run_rows, stored, "test_acc"),
            "max |recomputed - logged| train acc": _agreement(run_rows, stored, "train_acc"),
        }
    summary["store"] = {"captured": len(result.extract.captured), "reused": len(result.extract.reused),
                        "failed": [f"{r}@{s}: {e}" for r, s, e in result.extract.failed],
                        "identical checkpoints": [f"{r}@{s} == step {t}" for r, s, t in result.extract.duplicates]}
    files["summary"] = out / "summary.json"
    atomic_write_json(files["summary"], summary)
    files["table"] = _write_table(rows, out / "checkpoints.csv")
    files["trajectories"] = out / "trajectories.json"
    atomic_write_json(files["trajectories"], G.graph["trajectories"])
    result.summary = summary
    from semgraph.report import write_report
    files["report"] = write_report(out)


def _stored_in_checkpoints(store_root: Path, run: Run) -> dict[int, dict[str, float]]:
    """Metrics a foreign training script saved inside each checkpoint (recorded in the store manifest)."""
    from semgraph.formats import metric_names

    entries = ActivationStore(store_root).manifest["entries"]
    out = {}
    for ref in run.checkpoints:
        stored = entries.get(ActivationStore.key(run.name, ref.step), {}).get("stored") or {}
        named = metric_names(stored)
        if named:
            out[ref.step] = named
    return out


def _agreement(rows: Sequence[dict[str, Any]], stored: dict[int, dict[str, float]], key: str) -> float | None:
    diffs = [abs(r[f"output.{key}"] - stored[r["step"]][key]) for r in rows
             if r["step"] in stored and key in stored[r["step"]] and r.get(f"output.{key}") is not None]
    return max(diffs) if diffs else None


def _write_table(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """One row per (run, step): scalar probe values, node, and reasons for values not computed."""
    keys: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in keys and not k.startswith("_") and k not in ("present", "reasons") \
                    and not isinstance(v, (list, dict)):
                keys.append(k)
    from semgraph.io import atomic_path
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(keys + ["key_freqs", "concepts_present", "not_computed"])
        for r in sorted(rows, key=lambda r: (r["run"], r["step"])):
            w.writerow([r.get(k, "") for k in keys] +
                       [" ".join(map(str, r.get("fourier.key_freqs") or [])),
                        "; ".join(c for c, on in r.get("present", {}).items() if on),
                        json.dumps(r.get("reasons", {}))])
    return path
