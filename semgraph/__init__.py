"""semgraph: semantic landscape graphs (nodes = emergent algorithms, edges = transitions) from training runs.

``Recorder`` is imported on first use, so ``import semgraph.<module>`` does not load torch unless that module
needs it (the CLI starts its worker processes before the heavy imports).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from semgraph.errors import SemgraphError

if TYPE_CHECKING:
    from semgraph.recorder import Recorder

__version__ = "0.1.0"
__all__ = ["Recorder", "SemgraphError", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Recorder":
        from semgraph.recorder import Recorder
        return Recorder
    raise AttributeError(f"module 'semgraph' has no attribute {name!r}")
