"""Fourier probe for modular arithmetic (Nanda et al. 2023, arXiv 2301.05217).

Definitions (p = modulus, frequencies k = 1..(p-1)//2, basis cos/sin(2 pi k t / p)):

- embedding spectrum: fraction of the embedding's non-constant power (over token index t) at frequency k;
  key frequencies are those whose fraction is at least ``threshold_factor`` times the spectrum's median
  (the noise floor, robust while fewer than half the frequencies are key) and at least half the uniform
  share 1 / (2 n_freqs). A random embedding spreads power evenly (no key frequency); a Fourier circuit
  concentrates it on a few k.
- neuron spectrum: fraction of the MLP activations' non-constant power over the (a, b) grid lying in
  components whose two frequencies are in {0, k, -k}.
- Gini coefficient of the embedding spectrum: 0 for flat, -> 1 for a single frequency.
- restricted loss: cross-entropy on all inputs of logits keeping only their mean over inputs and their
  projections on cos(k(a+b)), sin(k(a+b)) for the key frequencies.
- excluded loss: cross-entropy on the training inputs of logits with those projections removed.
  For progress measures over a run, pass the FINAL checkpoint's key frequencies as ``fixed_frequencies``
  (Nanda et al. do this), so every checkpoint is measured against the same circuit.
- distance irrelevance q (Zhong et al. 2023, arXiv 2306.17844, Def. 4.2; a cheap clock-vs-pizza indicator
  computed from the stored logits): lay the correct-class logit out as M[(a+b) mod p, (a-b) mod p]; q is
  the mean over columns (fixed difference a-b) of the column's standard deviation, divided by the standard
  deviation of all of M. A clock's correct logit ignores a-b (q -> 1); a pizza's depends on a-b
  (|cos(k(a-b)/2)|, q -> 0). The paper places pizzas in [0, 0.4] and clocks in [0.4, 1].

Concept presence: "Fourier k=<k>" for every key frequency; once the logits solve the task (accuracy over
all inputs >= ``algorithm_at``, 0.9), "clock (distance-irrelevant)" when q >= ``clock_at`` (0.4) and
"pizza (distance-dependent)" otherwise. Degenerate input (no modulus, missing embedding, NaN/inf, an
embedding or activations constant over tokens, a constant correct logit, an incomplete (a, b) grid) gives
"not computed" with the reason.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from probes.base import ProbeContext, ProbeResult, finite_or_reason
from probes.output import log_softmax


def frequencies(p: int) -> np.ndarray:
    return np.arange(1, (p - 1) // 2 + 1)


def frequency_power(x: np.ndarray, p: int) -> np.ndarray:
    """Power per frequency k = 1..(p-1)//2 (rows) of each column of a (p, d) matrix indexed by token 0..p-1."""
    e = np.asarray(x, dtype=np.float64)[:p]
    e = e - e.mean(axis=0, keepdims=True)
    f = np.fft.rfft(e, axis=0)                    # (p//2 + 1, d); index k <-> frequency k
    return np.abs(f[1:(p - 1) // 2 + 1]) ** 2


def embedding_spectrum(embedding: np.ndarray, p: int) -> np.ndarray:
    """Power fraction per frequency k = 1..(p-1)//2 of a (p, d) embedding (rows are tokens 0..p-1)."""
    power = frequency_power(embedding, p).sum(axis=1)
    total = power.sum()
    return power / total if total > 0 else np.full_like(power, np.nan)


def neuron_spectrum(acts: np.ndarray, a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """Power fraction per frequency of MLP activations (n, d) laid out on the (a, b) grid."""
    grid = np.zeros((p, p, acts.shape[1]))
    grid[a, b] = acts
    f = np.abs(np.fft.fft2(grid, axes=(0, 1))) ** 2
    f[0, 0] = 0.0
    total = f.sum()
    out = np.empty(len(frequencies(p)))
    for i, k in enumerate(frequencies(p)):
        idx = np.array([0, k, p - k])
        out[i] = f[np.ix_(idx, idx)].sum()
    return out / total if total > 0 else np.full_like(out, np.nan)


def key_frequencies(spectrum: np.ndarray, factor: float) -> list[int]:
    """Frequencies (1-based) standing above the spectrum's noise floor; see the module docstring."""
    threshold = max(factor * float(np.median(spectrum)), 1.0 / (2 * len(spectrum)))
    return [int(i + 1) for i, f in enumerate(spectrum) if f >= threshold]


def gini(x: np.ndarray) -> float:
    x = np.sort(np.asarray(x, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() <= 0:
        return float("nan")
    return float((2 * np.arange(1, n + 1) - n - 1).dot(x) / (n * x.sum()))


def key_frequency_projection(logits: np.ndarray, a: np.ndarray, b: np.ndarray, p: int,
                             keys: Sequence[int]) -> np.ndarray:
    """Part of the logits (n, C) along cos/sin(2 pi k (a + b) / p) over inputs, summed over ``keys``."""
    out = np.zeros_like(logits, dtype=np.float64)
    theta = 2 * np.pi * (a + b) / p
    for k in keys:
        for basis in (np.cos(k * theta), np.sin(k * theta)):
            out += np.outer(basis, basis @ logits) / (basis @ basis)
    return out


def correct_logit_matrix(logits: np.ndarray, labels: np.ndarray, a: np.ndarray, b: np.ndarray, p: int
                         ) -> np.ndarray | None:
    """M[(a+b) mod p, (a-b) mod p] = logit of the correct class; None unless every cell is filled once."""
    m = np.full((p, p), np.nan)
    count = np.zeros((p, p), dtype=int)
    s, d = (a + b) % p, (a - b) % p
    m[s, d] = logits[np.arange(len(labels)), labels]
    np.add.at(count, (s, d), 1)
    return m if np.all(count == 1) else None


def distance_irrelevance(m: np.ndarray) -> float:
    """Zhong et al. 2023 Def. 4.2 on a correct-logit matrix M[sum, difference] (population std)."""
    return float(m.std(axis=0).mean() / m.std())


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    logp = log_softmax(logits)
    return float(-logp[np.arange(len(labels)), labels].mean())


class FourierProbe:
    """Key frequencies, sparsity, restricted and excluded loss for (a + b) mod p."""

    name = "fourier"

    def __init__(self, embedding_param: str = "embed.weight", token_axis: int = 0,
                 neuron_hook: str | None = "blocks.0.mlp.hook_post", threshold_factor: float = 4.0,
                 fixed_frequencies: Sequence[int] | None = None, clock_at: float = 0.4,
                 algorithm_at: float = 0.9):
        self.embedding_param = embedding_param
        self.token_axis = token_axis
        self.neuron_hook = neuron_hook
        self.threshold_factor = threshold_factor
        self.fixed_frequencies = fixed_frequencies
        self.clock_at = clock_at
        self.algorithm_at = algorithm_at

    def compute(self, ctx: ProbeContext) -> ProbeResult:
        res = ProbeResult()
        p = int(ctx.task.get("p", 0))
        a, b = ctx.concepts.get("a"), ctx.concepts.get("b")
        if p < 3 or a is None or b is None:
            for key in ("key_freqs", "restricted_loss", "excluded_loss", "distance_irrelevance"):
                res.not_computed(key, "task has no modulus p and concepts 'a', 'b'")
            return res
        freqs = frequencies(p)
        emb = ctx.params.get(self.embedding_param)
        reason = (f"parameter {self.embedding_param!r} not stored" if emb is None
                  else finite_or_reason(emb, self.embedding_param))
        if reason is None:
            emb = np.moveaxis(np.asarray(emb), self.token_axis, 0)
            spectrum = embedding_spectrum(emb, p)
            if not np.all(np.isfinite(spectrum)):
                reason = "embedding is constant over tokens"
        if reason:
            for key in ("key_freqs", "n_key_freqs", "gini", "top_freq_power"):
                res.not_computed(key, reason)
            keys: list[int] = []
        else:
            keys = key_frequencies(spectrum, self.threshold_factor)
            res.values["key_freqs"] = keys
            res.values["n_key_freqs"] = len(keys)
            res.values["gini"] = gini(spectrum)
            res.values["top_freq_power"] = float(spectrum.max())
            res.values["spectrum"] = [float(x) for x in spectrum]
            for k in keys:
                res.present[f"Fourier k={k}"] = True
        if self.neuron_hook and self.neuron_hook in ctx.activations:
            acts = np.asarray(ctx.activations[self.neuron_hook], dtype=np.float64)
            bad = finite_or_reason(acts, self.neuron_hook)
            if not bad and not np.any(np.ptp(acts.reshape(len(acts), -1), axis=0) > 0):
                bad = "activations are constant across inputs"
            if bad:
                res.not_computed("neuron_key_freqs", bad)
            else:
                ns = neuron_spectrum(acts.reshape(len(acts), -1), a, b, p)
                if np.all(np.isfinite(ns)):
                    res.values["neuron_key_freqs"] = key_frequencies(ns, self.threshold_factor)
                    res.values["neuron_gini"] = gini(ns)
                else:
                    res.not_computed("neuron_key_freqs", "activations are constant")
        logits = np.asarray(ctx.logits, dtype=np.float64)
        bad = finite_or_reason(logits, "logits")
        if not bad and (logits.ndim != 2 or logits.shape[0] != len(ctx.labels) or logits.shape[1] < p):
            bad = f"logits of shape {logits.shape} do not give p={p} classes for {len(ctx.labels)} inputs"
        if bad:
            for key in ("restricted_loss", "excluded_loss", "distance_irrelevance"):
                res.not_computed(key, bad)
            return res
        self._clock_or_pizza(res, logits, ctx.labels, a, b, p)
        if self.fixed_frequencies is None and reason:
            for key in ("restricted_loss", "excluded_loss"):
                res.not_computed(key, f"no key frequencies to restrict to ({reason})")
            return res
        use = list(self.fixed_frequencies) if self.fixed_frequencies is not None else keys
        proj = key_frequency_projection(logits, a, b, p, use)
        restricted = logits.mean(axis=0, keepdims=True) + proj
        res.values["restricted_loss"] = cross_entropy(restricted, ctx.labels)
        train = ctx.split == "train"
        if train.any():
            res.values["excluded_loss"] = cross_entropy((logits - proj)[train], ctx.labels[train])
        else:
            res.not_computed("excluded_loss", "the probe set has no training inputs")
        return res

    def _clock_or_pizza(self, res: ProbeResult, logits: np.ndarray, labels: np.ndarray, a: np.ndarray,
                        b: np.ndarray, p: int) -> None:
        m = correct_logit_matrix(logits, labels, a, b, p)
        if m is None:
            res.not_computed("distance_irrelevance", "the probe set does not hold every (a, b) pair exactly once")
            return
        if not m.std() > 1e-12 * max(1.0, float(np.abs(m).max())):
            res.not_computed("distance_irrelevance", "the correct-class logit is constant over inputs")
            return
        q = distance_irrelevance(m)
        res.values["distance_irrelevance"] = q
        if float((logits.argmax(-1) == labels).mean()) >= self.algorithm_at:
            res.present["clock (distance-irrelevant)"] = q >= self.clock_at
            res.present["pizza (distance-dependent)"] = q < self.clock_at
