"""The `semgraph` command: train, analyze, export, report. Errors print one line (no traceback) and exit 2."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from semgraph.errors import SemgraphError


def _one_line_warnings() -> None:
    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        from tqdm import tqdm
        tqdm.write(f"warning: {message}", file=sys.stderr)  # on a line of its own, not after a progress bar
    warnings.showwarning = show


def cmd_train(args: argparse.Namespace) -> int:
    from semgraph.schedule import parse_schedule
    from semgraph.tasks.train_modular_addition import ModAddRecipe, train_modular_addition

    if args.task != "modular-addition":
        return cmd_train_workload(args)
    if args.steps is None:
        args.steps = 5000

    recipe = ModAddRecipe(p=args.p, train_fraction=args.train_fraction, seed=args.seed, steps=args.steps,
                          lr=args.lr, weight_decay=args.weight_decay, d_model=args.d_model,
                          n_heads=args.n_heads, d_mlp=args.d_mlp)
    if args.schedule:
        recipe.schedule = parse_schedule(args.schedule, args.steps)
    run_dir = train_modular_addition(args.out, recipe, resume=args.resume, threads=args.threads)
    print(f"run written to {run_dir} ({len(recipe.checkpoint_steps())} scheduled checkpoints)")
    return 0


def cmd_train_workload(args: argparse.Namespace) -> int:
    """`semgraph train induction|digits`: the other reference workloads (issue 7)."""
    from semgraph.schedule import parse_schedule

    if args.task == "induction":
        from semgraph.tasks.train_induction import InductionRecipe, train_induction
        recipe = InductionRecipe(seed=args.seed, **({"steps": args.steps} if args.steps else {}))
        if args.schedule:
            recipe.schedule = parse_schedule(args.schedule, recipe.steps)
        run_dir = train_induction(args.out, recipe, resume=args.resume, threads=args.threads)
        n = len(recipe.checkpoint_steps())
    else:
        from semgraph.tasks.train_digits import DigitsRecipe, train_digits
        recipe = DigitsRecipe(seed=args.seed, **({"steps": args.steps} if args.steps else {}))
        if args.schedule:
            recipe.schedule = args.schedule
        run_dir = train_digits(args.out, recipe, resume=args.resume, threads=args.threads)
        n = len(list((Path(run_dir) / "checkpoints").glob("*.safetensors")))
    print(f"run written to {run_dir} ({n} checkpoints)")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from semgraph.parallel import make_executor, start_early

    # the worker processes import torch and TransformerLens while this process does the same
    executor = start_early(make_executor(args.workers, args.scheduler))
    try:
        return _analyze_with(args, executor)
    finally:
        executor.close()


def _analyze_with(args: argparse.Namespace, executor) -> int:  # noqa: ANN001
    from semgraph.analyze import analyze

    from semgraph import runspec

    res = analyze(args.run_dir, args.out, strict=args.strict, max_states=args.max_states,
                  batch_size=args.batch_size,
                  run_spec=runspec.from_args(args) if hasattr(args, "run_spec") else None,
                  trust=getattr(args, "trust_checkpoints", False), payload=getattr(args, "payload", None),
                  workers=args.workers,
                  scheduler=args.scheduler, states=getattr(args, "states", None),
                  compare_states=_compare_arg(getattr(args, "compare_states", None)),
                  skip_probes=[x for x in (getattr(args, "skip_probes", "") or "").split(",") if x],
                  executor=executor)
    G, s = res.graph, res.summary
    print(f"\nlandscape: {G.number_of_nodes()} nodes, {G.number_of_edges()} edges "
          f"(store: {s['store']['captured']} captured, {s['store']['reused']} reused, "
          f"{len(s['store']['failed'])} failed)")
    for n in G.nodes:
        d = G.nodes[n]
        print(f"  {n}: {d['label']:<48} steps {min(d['member_steps'])}..{max(d['member_steps']):<6} "
              f"train acc {d.get('train_acc', float('nan')):.2f} test acc {d.get('test_acc', float('nan')):.2f} "
              f"F_test/input {d.get('F_test_mean', float('nan')):.3g}")
    for run, info in s["runs"].items():
        t_mem, t_grok = info["t_mem (train acc >= 0.99)"], info["t_grok (test acc >= 0.95)"]
        when = (f"memorised at step {t_mem}, grokked at step {t_grok}"
                if t_mem is None or t_grok is None or t_mem < t_grok else
                f"train acc >= 0.99 at step {t_mem}, test acc >= 0.95 at step {t_grok} (no memorisation phase)")
        print(f"  run {run}: path {' -> '.join(info['path'])}; {when}")
    if "observables" in s:
        from semgraph.observables import summary_lines
        print("\n".join(summary_lines(s["observables"])))
    print("files:")
    for key, path in res.files.items():
        print(f"  {key:>14}: {path}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from semgraph.inspect_cmd import format_report, inspect_folder

    report = inspect_folder(args.folder, trust=args.trust_checkpoints, hash_files=args.hash)
    if args.json:
        import json
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_report(report))
    return 0


def _compare_arg(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [] if text.strip().lower() == "none" else [m.strip() for m in text.split(",") if m.strip()]


def cmd_observe(args: argparse.Namespace) -> int:
    from semgraph.observables import observe, summary_lines

    obs, files = observe(args.out_dir)
    print("\n".join(summary_lines(obs)))
    for key, path in files.items():
        print(f"  {key:>16}: {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from semgraph.export import read_graph, write_graph

    G = read_graph(args.graph)
    from semgraph.export import FORMATS
    out = Path(args.out) if args.out else Path(args.graph).with_suffix(FORMATS[args.format])
    if not args.out and out.exists():
        # e.g. `export landscape.graphml --format json` inside an analysis folder would replace analyze's own
        # landscape.json (whose structured attributes the typed formats hold as JSON text)
        raise SemgraphError("the default output file already exists", path=out, stage="export",
                            fix="pass --out NEW_FILE (or delete the file first)")
    write_graph(G, out, args.format)
    print(f"wrote {out} ({G.number_of_nodes()} nodes, {G.number_of_edges()} edges)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from semgraph.report import write_report

    path = write_report(args.out_dir, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, self-contained; open it in any browser)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from semgraph.sweep import SweepConfig, parse_list, run_sweep

    cfg = SweepConfig(seeds=parse_list(args.seeds, int), fractions=parse_list(args.fractions, float),
                      sizes=parse_list(args.sizes, int), p=args.p, steps=args.steps, every=args.every,
                      lr=args.lr, weight_decay=args.weight_decay)
    report = run_sweep(args.out, cfg, jobs=args.jobs)
    print(f"sweep: {len(report['trained'])} runs trained, {len(report['failed'])} failed, "
          f"{report['seconds']:.0f} s with {report['jobs']} processes")
    if args.no_analyze:
        return 0 if not report["failed"] else 2
    args.run_dir, args.out = args.out, args.analysis_out or str(Path(args.out) / "analysis")
    return cmd_analyze(args)


def _capture_args(parser: argparse.ArgumentParser, run_spec: bool = True) -> None:
    from semgraph.runspec import add_arguments as add_run_spec_arguments

    if run_spec:
        add_run_spec_arguments(parser)
    parser.add_argument("--workers", type=int, default=None,
                        help="processes capturing checkpoints in parallel (default: one per core; 1 = serial)")
    parser.add_argument("--scheduler", help="run the capture on dask.distributed: 'local' (a LocalCluster of "
                        "--workers processes) or a scheduler address tcp://HOST:PORT (e.g. from dask-jobqueue)")


def _states_args(parser: argparse.ArgumentParser, default_skip: str = "") -> None:
    from semgraph.state_models import DEFAULT_METHOD, METHODS

    parser.add_argument("--states", choices=METHODS, default=DEFAULT_METHOD,
                        help=f"state model for the nodes (default: {DEFAULT_METHOD})")
    parser.add_argument("--skip-probes", default=default_skip,
                        help="task-default probes to leave out, comma-separated (e.g. linear)")
    parser.add_argument("--compare-states", help="other state models for the agreement table, comma-separated, "
                                                 "or 'none' (default: all)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semgraph", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a reference task with the recorder")
    t.add_argument("task", choices=["modular-addition", "induction", "digits"])
    t.add_argument("--out", required=True, help="run folder to write (checkpoints/<run>)")
    t.add_argument("--p", type=int, default=53)
    t.add_argument("--train-fraction", type=float, default=0.4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, default=None,
                   help="training steps (default: 5000 modular-addition, 2000 induction, 1500 digits)")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=1.0)
    t.add_argument("--d-model", type=int, default=128)
    t.add_argument("--n-heads", type=int, default=4)
    t.add_argument("--d-mlp", type=int, default=512)
    t.add_argument("--schedule", help="'log+100' (default), 'every:50' or explicit '0,10,100'")
    t.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    t.add_argument("--resume", dest="resume", action="store_true", default=True,
                   help="continue an interrupted run in --out (default)")
    t.add_argument("--no-resume", dest="resume", action="store_false")
    t.set_defaults(func=cmd_train)

    a = sub.add_parser("analyze", help="analyze a run folder (or a folder of runs) into a landscape graph")
    a.add_argument("run_dir")
    a.add_argument("--out", required=True)
    a.add_argument("--strict", action="store_true", help="a corrupt checkpoint is fatal instead of skipped")
    a.add_argument("--max-states", type=int, default=8)
    a.add_argument("--batch-size", type=int, default=1024)
    _capture_args(a)
    _states_args(a)
    a.set_defaults(func=cmd_analyze)

    i = sub.add_parser("inspect", help="list runs, steps, formats, model signature and problems (no model run)")
    i.add_argument("folder")
    i.add_argument("--json", action="store_true", help="print the report as JSON")
    i.add_argument("--hash", action="store_true",
                   help="hash every checkpoint's tensors to flag identical ones (reads weights, runs no model)")
    i.add_argument("--trust-checkpoints", action="store_true",
                   help="allow full unpickling of torch checkpoints (only for files you trust)")
    i.set_defaults(func=cmd_inspect)

    o = sub.add_parser("observe", help="recompute the landscape observables of an analysis folder")
    o.add_argument("out_dir", help="folder written by `semgraph analyze --out`")
    o.set_defaults(func=cmd_observe)

    w = sub.add_parser("sweep", help="train modular addition over seeds x data fractions x sizes in parallel, "
                                     "then analyze all runs into one landscape")
    w.add_argument("--out", required=True, help="sweep folder (one sub-folder per run)")
    w.add_argument("--seeds", default="0,1,2,3")
    w.add_argument("--fractions", default="0.4,0.6,0.8", help="training data fractions")
    w.add_argument("--sizes", default="64", help="d_model values (d_mlp = 4 d_model)")
    w.add_argument("--p", type=int, default=31)
    w.add_argument("--steps", type=int, default=1500)
    w.add_argument("--lr", type=float, default=3e-3)
    w.add_argument("--weight-decay", type=float, default=1.0)
    w.add_argument("--every", type=int, default=100, help="checkpoint every N steps (after a log-spaced start)")
    w.add_argument("--jobs", type=int, default=None, help="parallel training processes (default: CPU count)")
    w.add_argument("--no-analyze", action="store_true", help="only train")
    w.add_argument("--analysis-out", help="analysis folder (default: OUT/analysis)")
    w.add_argument("--strict", action="store_true")
    w.add_argument("--max-states", type=int, default=8)
    w.add_argument("--batch-size", type=int, default=1024)
    _capture_args(w, run_spec=False)
    _states_args(w, default_skip="linear")
    w.set_defaults(func=cmd_sweep)

    e = sub.add_parser("export", help="convert a landscape graph file to another format")
    e.add_argument("graph")
    e.add_argument("--format", required=True, choices=["graphml", "gexf", "json", "cytoscape", "dot"],
                   help="cytoscape = cytoscape.js elements JSON (.cyjs); the input's format is read from its suffix")
    e.add_argument("--out")
    e.set_defaults(func=cmd_export)

    r = sub.add_parser("report", help="write one self-contained HTML report of an analysis folder")
    r.add_argument("out_dir", help="the --out folder of `semgraph analyze`")
    r.add_argument("--out", help="HTML file to write (default OUT_DIR/report.html)")
    r.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _one_line_warnings()
    try:
        return args.func(args)
    except SemgraphError as exc:
        print(f"semgraph: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path semgraph did not check first: still one line, naming the file
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"semgraph: error: {where}{exc.strerror or exc} (stage: {args.command}; fix: check that the path "
              f"exists, is of the right kind (file or folder) and is writable; finished work is kept)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("semgraph: interrupted; finished work is kept, re-run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
