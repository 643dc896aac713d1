"""semgraph: semantic landscape graphs (nodes = emergent algorithms, edges = transitions) from training runs."""
from semgraph.errors import SemgraphError
from semgraph.recorder import Recorder

__version__ = "0.1.0"
__all__ = ["Recorder", "SemgraphError", "__version__"]
