"""Online analysis: capture activations and run probes on the probe set at each checkpoint, while training.

``Recorder(..., online=OnlineAnalysis())`` runs, after each checkpoint is written, the same two stages
``semgraph analyze`` runs (``semgraph.extract.extract_run`` on that one checkpoint, then
``semgraph.probing.run_probes``), into ``RUN/online/`` (HDF5 store + probe result cache), and appends the
probe row to ``RUN/online/rows.jsonl``. Capture runs on a fresh eager model rebuilt from the run's model spec
and loaded from the checkpoint just written, so torch.compile'd training models are handled, the training
model's mode and hooks are untouched, and a hook that never fires is an error (``check_fired``).
``landscape()`` clusters the rows so far into nodes: the landscape can be followed during training, and
``semgraph analyze RUN --out RUN/online`` afterwards reuses the store.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import networkx as nx

from probes.base import Probe
from semgraph.checkpoints import Run, discover_run
from semgraph.errors import ConfigError
from semgraph.extract import CaptureConfig, extract_run
from semgraph.probing import run_probes
from semgraph.store import ActivationStore

if TYPE_CHECKING:
    from semgraph.recorder import Recorder

ONLINE_DIR = "online"
ROWS_FILE = "rows.jsonl"


class OnlineAnalysis:
    """Per-checkpoint capture + probes during training; defaults come from the task's analysis_defaults()."""

    def __init__(self, *, hooks: Sequence[str] | None = None, params: Sequence[str] | None = None,
                 probes: Sequence[Probe] | None = None, position: int | None | str = "task",
                 signature: Sequence[str] | None = None, batch_size: int = 1024):
        self.hooks, self.params, self.probes = hooks, params, probes
        self.position, self.signature, self.batch_size = position, signature, batch_size
        self.rows: list[dict[str, Any]] = []
        self.recorder: Recorder | None = None

    def attach(self, recorder: "Recorder") -> None:
        import probes as probe_library
        from semgraph.tasks import task_from_spec

        spec = recorder.run_info.get("task")
        if not spec:
            raise ConfigError("online analysis needs a task (its probe set)", path=recorder.run_dir,
                              stage="record", fix="pass task_spec=... to the Recorder")
        self.recorder = recorder
        self.task = task_from_spec(spec)
        self.task_spec = self.task.spec()
        defaults = self.task.analysis_defaults()
        self.probe_set = self.task.probe_set()
        position = defaults.get("position", -1) if self.position == "task" else self.position
        self.config = CaptureConfig(hooks=list(self.hooks if self.hooks is not None else defaults["hooks"]),
                                    params=list(self.params if self.params is not None else defaults["params"]),
                                    batch_size=self.batch_size, position=position)  # type: ignore[arg-type]
        self.probe_objects = list(self.probes) if self.probes is not None else \
            [probe_library.make_probe(name, **kw) for name, kw in defaults["probes"]]
        self.signature = list(self.signature or defaults["signature"])
        self.root = recorder.run_dir / ONLINE_DIR
        self.store = ActivationStore(self.root / "store")
        rows_path = self.root / ROWS_FILE
        if rows_path.exists():  # resumed run: keep the rows already computed
            self.rows = [json.loads(line) for line in rows_path.read_text(encoding="utf-8").splitlines()
                         if line.strip()]

    def after_checkpoint(self, step: int) -> dict[str, Any]:
        """Capture and probe the checkpoint of ``step`` just written; returns its probe row."""
        assert self.recorder is not None, "attach() the analysis to a Recorder first"
        run = discover_run(self.recorder.run_dir)
        refs = [c for c in run.checkpoints if c.step == step]
        one = Run(name=run.name, path=run.path, info=run.info, checkpoints=refs)
        extract_run(one, self.probe_set, self.config, self.store, strict=True, progress=False)
        row = run_probes(run.name, [step], self.probe_set, self.task_spec, self.store, self.probe_objects,
                         self.root / "probe_results", progress=False)[0]
        self.rows = [r for r in self.rows if r["step"] != step] + [row]
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ROWS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=str) + "\n")
        return row

    def landscape(self, max_states: int = 8) -> nx.DiGraph:
        """Nodes and transitions of the checkpoints analysed so far (same method as ``semgraph analyze``)."""
        from semgraph.analyze import _states_and_graph

        assert self.recorder is not None
        rows = sorted(self.rows, key=lambda r: r["step"])
        from semgraph.state_models import DEFAULT_METHOD
        return _states_and_graph(rows, self.signature, max_states, [discover_run(self.recorder.run_dir)],
                                 DEFAULT_METHOD)
