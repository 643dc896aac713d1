"""`semgraph inspect DIR`: what a checkpoint folder holds, without building or running any model.

For each run: its steps in order, formats, the model signature (tensor names and shapes, read from
safetensors headers or from the pickle structure with tensor data memory-mapped, never read), steps whose
signature differs, files that could not be opened (classified), duplicate and unparseable steps, files
recognised as not being weights. ``--hash`` also hashes every checkpoint's tensors to flag identical
checkpoints at different steps (this reads the weights, still without running a model).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from semgraph import formats
from semgraph.checkpoints import CheckpointRef, Run, discover
from semgraph.errors import CorruptCheckpointError
from semgraph.faithful import common_wrapper_prefixes


_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
              "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _dtype(name: str) -> str:
    return _ST_DTYPES.get(name, name.lower())


def tensor_shapes(ref: CheckpointRef) -> tuple[dict[str, tuple[int, ...]], set[str], dict[str, Any]]:
    """(name -> shape, dtypes, stored scalars) of one checkpoint, without reading tensor data."""
    if ref.format == formats.SAFETENSORS:
        header, meta = formats.safetensors_header(ref.path)
        return {k: v[0] for k, v in header.items()}, {_dtype(v[1]) for v in header.values()}, dict(meta)
    if ref.format in (formats.SAFETENSORS_SHARDED, formats.TORCH_SHARDED):
        weight_map = formats.read_index(ref.path)
        shapes: dict[str, tuple[int, ...]] = {}
        dtypes: set[str] = set()
        for shard in sorted(set(weight_map.values())):
            if ref.format == formats.SAFETENSORS_SHARDED:
                header, _ = formats.safetensors_header(ref.path.parent / shard)
                shapes.update({k: v[0] for k, v in header.items()})
                dtypes |= {_dtype(v[1]) for v in header.values()}
            else:
                state = formats.to_state_dict(formats.torch_load(ref.path.parent / shard, trust=ref.trust,
                                                                 mmap=True), ref.path.parent / shard).state
                shapes.update({k: tuple(v.shape) for k, v in state.items()})
                dtypes |= {str(v.dtype).replace("torch.", "") for v in state.values()}
        return shapes, dtypes, {}
    obj = formats.torch_load(ref.path, trust=ref.trust, mmap=True)
    if ref.format == formats.TORCH_MULTI:
        obj = dict(formats.multi_entries(obj) or [])[ref.key]
    loaded = formats.to_state_dict(obj, ref.path, payload=ref.payload)
    return ({k: tuple(v.shape) for k, v in loaded.state.items()},
            {str(v.dtype).replace("torch.", "") for v in loaded.state.values()}, loaded.meta)


def inspect_run(run: Run, *, hash_files: bool = False) -> dict[str, Any]:
    sigs: dict[str, dict[str, Any]] = {}
    failed: list[dict[str, Any]] = []
    hashes: dict[str, list[int]] = {}
    metrics: dict[int, dict[str, float]] = {}
    stripped_prefixes: dict[str, list[int]] = {}
    for ref in run.checkpoints:
        try:
            shapes, dtypes, meta = tensor_shapes(ref)
        except CorruptCheckpointError as exc:
            failed.append({"step": ref.step, "file": ref.label, "kind": exc.kind, "error": str(exc)})
            continue
        renamed, prefixes = common_wrapper_prefixes(shapes)   # `module.` etc.: the same model for analyze
        shapes = {renamed[k]: v for k, v in shapes.items()}
        if prefixes:
            stripped_prefixes.setdefault("".join(prefixes), []).append(ref.step)
        sig = formats.shape_signature(shapes)
        entry = sigs.setdefault(sig, {"signature": sig, "tensors": len(shapes),
                                      "parameters": int(sum(_numel(s) for s in shapes.values())),
                                      "dtypes": sorted(dtypes), "steps": [],
                                      "shapes": {k: list(v) for k, v in sorted(shapes.items())}})
        entry["steps"].append(ref.step)
        named = formats.metric_names(meta)
        if named:
            metrics[ref.step] = named
        if hash_files:  # content of the tensors (torch.save files differ byte-wise even for equal weights)
            from semgraph.checkpoints import load_checkpoint
            from semgraph.extract import weights_sha256
            hashes.setdefault(weights_sha256(load_checkpoint(ref).state), []).append(ref.step)
    problems = list(run.problems)
    signatures = sorted(sigs.values(), key=lambda e: -len(e["steps"]))
    if len(signatures) > 1:
        main = signatures[0]
        for other in signatures[1:]:
            diff = [k for k in sorted(set(main["shapes"]) | set(other["shapes"]))
                    if main["shapes"].get(k) != other["shapes"].get(k)]
            detail = ", ".join(f"{k}: {main['shapes'].get(k) or 'absent'} -> {other['shapes'].get(k) or 'absent'}"
                               for k in diff[:3])
            which = f"step {other['steps'][0]} has" if len(other["steps"]) == 1 else \
                f"steps {_ranges(other['steps'])} have"
            problems.append(f"{which} a different model signature than steps {_ranges(main['steps'])} "
                            f"({detail}); they cannot be analysed with one model")
    for f in failed:
        problems.append(f"step {f['step']}: {f['error']}")
    identical = [steps for steps in hashes.values() if len(steps) > 1]
    for steps in identical:
        problems.append(f"steps {steps} hold identical weights (a duplicated checkpoint?)")
    out = {"run": run.name, "path": str(run.path), "checkpoints": len(run.checkpoints), "steps": run.steps,
           "formats": run.formats, "signatures": [{k: v for k, v in s.items() if k != "shapes"} | {
               "example_shapes": dict(list(s["shapes"].items())[:6])} for s in signatures],
           "failed": failed, "identical": identical, "wrapper_prefixes": stripped_prefixes,
           "problems": problems, "ignored": list(run.ignored),
           "semgraph_run": run.info.get("format") != "foreign",
           "has_model_spec": bool(run.info.get("model")), "has_task": bool(run.info.get("task"))}
    spec = run.info.get("model") or {}
    if spec.get("builder") == "hf-bridge":  # the config.json that analysis builds the model from
        cfg = spec.get("config") or {}
        out["model_source"] = {"config_file": spec.get("config_file"), "model_type": cfg.get("model_type"),
                               "architectures": cfg.get("architectures")}
    if metrics:
        out["stored_metrics"] = {str(k): v for k, v in sorted(metrics.items())}
    return out


def inspect_folder(folder: str | Path, *, trust: bool = False, hash_files: bool = False) -> dict[str, Any]:
    """The report `semgraph inspect` prints: one entry per run found under ``folder``."""
    t0 = time.perf_counter()
    runs = discover(folder, trust=trust)
    report = {"folder": str(folder), "runs": [inspect_run(r, hash_files=hash_files) for r in runs]}
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['folder']}: {len(report['runs'])} run(s) ({report['seconds']:.2f} s, no model run)"]
    for r in report["runs"]:
        lines.append(f"run {r['run']}  ({r['path']})")
        lines.append(f"  {r['checkpoints']} checkpoints, steps {_ranges(r['steps'])}")
        hint = "" if r["semgraph_run"] else "  (no run.json: pass --model/--task or --run-spec to analyze)"
        if r.get("model_source"):
            hint = "" if r["has_task"] else "  (no run.json: pass --task or --run-spec to analyze)"
        lines.append(f"  formats: {', '.join(r['formats'])}" + hint)
        if r.get("model_source"):
            m = r["model_source"]
            lines.append(f"  model: {m['config_file']} ({m['model_type']}, {'/'.join(m['architectures'] or [])}; "
                         f"built offline as a transformer-lens TransformerBridge)")
        for s in r["signatures"]:
            lines.append(f"  model signature {s['signature']}: {s['tensors']} tensors, {s['parameters']:,} "
                         f"values, {'/'.join(s['dtypes'])}, steps {_ranges(s['steps'])}")
            lines.append("    " + ", ".join(f"{k} {tuple(v)}" for k, v in s["example_shapes"].items()))
        for prefix, steps in (r.get("wrapper_prefixes") or {}).items():
            lines.append(f"  wrapper prefix {prefix!r} on every key at steps {_ranges(steps)} (stripped when loaded)")
        if r.get("stored_metrics"):
            steps = sorted(r["stored_metrics"], key=int)
            first, last = r["stored_metrics"][steps[0]], r["stored_metrics"][steps[-1]]
            lines.append(f"  metrics stored in the files: {sorted(first)}; step {steps[0]}: "
                         + _fmt(first) + f"; step {steps[-1]}: " + _fmt(last))
        for p in r["problems"]:
            lines.append(f"  problem: {p}")
        by_name: dict[str, int] = {}
        for f in r["ignored"]:
            by_name[Path(f.split(" (")[0]).name] = by_name.get(Path(f.split(" (")[0]).name, 0) + 1
        if by_name:
            lines.append("  ignored (not weights): " + ", ".join(f"{n}" + (f" x{c}" if c > 1 else "")
                                                              for n, c in sorted(by_name.items())))
    return "\n".join(lines)


def _fmt(m: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in sorted(m.items()))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _ranges(steps: list[int], limit: int = 8) -> str:
    """'0, 10, 20 ... 300 (31)' style summary of a sorted step list."""
    steps = sorted(steps)
    if len(steps) <= limit:
        return ", ".join(map(str, steps))
    return f"{', '.join(map(str, steps[:3]))} ... {', '.join(map(str, steps[-2:]))} ({len(steps)} steps)"
