"""semgraph's probe library: one module per probe family behind the protocol in ``probes.base``."""
from probes.base import Probe, ProbeContext, ProbeResult
from probes.fourier import FourierProbe
from probes.induction import InductionProbe, InductionScoresProbe
from probes.linear import LinearConceptProbe
from probes.linear_per_layer import LinearPerLayerProbe
from probes.neuron_fourier import NeuronFourierProbe
from probes.output import OutputProbe
from probes.similarity import CKAProbe
from probes.weights import WeightStatsProbe

__all__ = ["Probe", "ProbeContext", "ProbeResult", "OutputProbe", "FourierProbe", "LinearConceptProbe",
           "InductionProbe", "InductionScoresProbe", "LinearPerLayerProbe", "CKAProbe", "WeightStatsProbe",
           "NeuronFourierProbe"]

#: Probe families by name, so analyses and stored settings refer to probes by name (add yours here or pass
#: an object that follows ``probes.base.Probe`` directly).
REGISTRY = {"output": OutputProbe, "fourier": FourierProbe, "linear": LinearConceptProbe,
            "induction_scores": InductionScoresProbe, "linear_per_layer": LinearPerLayerProbe,
            "induction": InductionProbe, "cka": CKAProbe, "weights": WeightStatsProbe,
            "neuron_fourier": NeuronFourierProbe}


def make_probe(name: str, **params) -> Probe:
    if name not in REGISTRY:
        raise KeyError(f"unknown probe {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name](**params)
