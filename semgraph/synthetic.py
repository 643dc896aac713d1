"""Synthetic ground truth: walks on a planted landscape, rendered as probe-result rows.

The planted model is a trap model with Arrhenius jumps:

- nodes ``0..k-1`` with fallibility ``F[i]`` and concept sets ``concepts[i]``;
- from node i the walk jumps to an out-neighbour j with probability proportional to the Arrhenius rate
  ``exp(-beta * (F[j] - F[i]))`` (one prefactor for all edges), so the mean waiting time for the jump i->j
  (total dwell in i / count of i->j) is ``tau0_i * exp(beta * (F[j] - F[i]))`` with a per-source ``tau0_i``;
- each stay lasts a whole number of checkpoints drawn from the discrete power law
  ``P(d) = d^-(1 + mu) / zeta(1 + mu)``, d >= 1 (heavy-tailed waiting times, tail exponent mu).

A run starts in node 0 and is observed at every checkpoint for ``n_checkpoints`` checkpoints; its last stay
is cut by the end (censored). Each checkpoint becomes a row like the probes write: ``run``, ``step``,
``sig.0 .. sig.{d-1}`` (the node's centre plus Gaussian noise), ``output.F_test_mean`` (F plus small noise)
and ``present`` (the node's concepts). The planted labels, stays and transition counts come with it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

DEFAULT_NOISE = 0.35


@dataclass
class PlantedLandscape:
    F: np.ndarray
    edges: list[tuple[int, int]]
    beta: float = 1.0
    mu: float = 1.5
    centres: np.ndarray | None = None  # (k, n_features) signature centres
    concepts: list[frozenset[str]] = field(default_factory=list)

    @property
    def k(self) -> int:
        return len(self.F)

    def out_neighbours(self, i: int) -> list[int]:
        return [j for u, j in self.edges if u == i]

    def jump_probabilities(self, i: int) -> dict[int, float]:
        nbrs = self.out_neighbours(i)
        w = np.exp(-self.beta * (self.F[nbrs] - self.F[i]))
        return dict(zip(nbrs, w / w.sum()))


def default_landscape(k: int = 6, *, beta: float = 1.0, mu: float = 1.5, n_features: int = 6,
                      separation: float = 3.0, seed: int = 0) -> PlantedLandscape:
    """k nodes on a ring with chords (i -> i±1, i±2), F spread over [0.5, 4], random well-separated centres."""
    rng = np.random.default_rng(seed)
    F = np.linspace(4.0, 0.5, k)
    edges = sorted({(i, (i + s) % k) for i in range(k) for s in (-2, -1, 1, 2) if (i + s) % k != i})
    centres = rng.normal(0.0, separation, size=(k, n_features))
    names = [f"c{b}" for b in range(max(1, int(np.ceil(np.log2(k + 1)))))]
    concepts = [frozenset(n for b, n in enumerate(names) if (i >> b) & 1) for i in range(k)]
    return PlantedLandscape(F=F, edges=edges, beta=beta, mu=mu, centres=centres, concepts=concepts)


@dataclass
class SyntheticRuns:
    rows: list[dict[str, Any]]
    labels: np.ndarray  # planted node per row (rows in run, step order)
    stays: dict[str, list[dict[str, Any]]]  # run -> [{node, entry, exit, censored}]
    transitions: Counter  # (i, j) -> planted count, pooled over runs
    landscape: PlantedLandscape

    @property
    def dwell_times(self) -> np.ndarray:
        """Uncensored stay lengths (in checkpoints), pooled over runs."""
        return np.array([s["exit"] - s["entry"] for v in self.stays.values() for s in v if not s["censored"]])


def simulate(land: PlantedLandscape, *, n_runs: int = 20, n_checkpoints: int = 150,
             noise: float = DEFAULT_NOISE, F_noise: float = 0.05, seed: int = 0) -> SyntheticRuns:
    """Walk ``n_runs`` runs on ``land`` and render every checkpoint as a signature row."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    labels: list[int] = []
    stays: dict[str, list[dict[str, Any]]] = {}
    transitions: Counter = Counter()
    all_concepts = sorted(set().union(*land.concepts)) if land.concepts else []
    for r in range(n_runs):
        run = f"run{r:03d}"
        node, t, path = 0, 0, []
        while t < n_checkpoints:
            d = int(stats.zipf.rvs(1.0 + land.mu, random_state=rng))
            end = min(t + d, n_checkpoints)
            path.append({"node": node, "entry": t, "exit": end, "censored": t + d >= n_checkpoints})
            labels.extend([node] * (end - t))
            t = end
            if t < n_checkpoints:
                probs = land.jump_probabilities(node)
                nxt = int(rng.choice(list(probs), p=list(probs.values())))
                transitions[(node, nxt)] += 1
                node = nxt
        stays[run] = path
        for stay in path:
            for step in range(stay["entry"], stay["exit"]):
                i = stay["node"]
                sig = land.centres[i] + rng.normal(0.0, noise, size=land.centres.shape[1])
                row = {"run": run, "step": step, **{f"sig.{f}": float(v) for f, v in enumerate(sig)},
                       "output.F_test_mean": float(land.F[i] + rng.normal(0.0, F_noise)),
                       "present": {c: c in land.concepts[i] for c in all_concepts} if land.concepts else {}}
                rows.append(row)
    return SyntheticRuns(rows=rows, labels=np.array(labels), stays=stays, transitions=transitions,
                         landscape=land)


def signature_keys(data: SyntheticRuns) -> list[str]:
    return [f"sig.{f}" for f in range(data.landscape.centres.shape[1])]
