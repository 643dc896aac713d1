"""Reference tasks: a probe set (inputs, labels, split) and a training recipe."""
from __future__ import annotations

from semgraph.errors import ConfigError
from semgraph.tasks.base import ProbeSet, Task
from semgraph.tasks.digits import Digits
from semgraph.tasks.induction import InductionText
from semgraph.tasks.modular_addition import ModularAddition

TASKS: dict[str, type[Task]] = {ModularAddition.name: ModularAddition, InductionText.name: InductionText,
                                Digits.name: Digits}


def task_from_spec(spec: dict) -> Task:
    """Rebuild a task from the ``task`` entry of a run's ``run.json``."""
    name = spec.get("name")
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}", stage="load task",
                          fix=f"use one of {sorted(TASKS)} or register your task in semgraph.tasks.TASKS")
    params = {k: v for k, v in spec.items() if k != "name"}
    return TASKS[name](**params)


__all__ = ["ProbeSet", "Task", "ModularAddition", "InductionText", "Digits", "TASKS", "task_from_spec"]
