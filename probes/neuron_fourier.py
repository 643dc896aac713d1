"""Per-neuron Fourier probe: does each neuron lock onto ONE frequency (He et al. 2026, arXiv 2602.16849)?

The aggregate spectrum of ``probes.fourier`` sums power over all neurons; when every neuron uses one
frequency but the frequencies are spread over all of 1..(p-1)//2, that sum is flat and finds no key
frequency. This probe measures each neuron on its own.

Definitions (p = modulus, m = (p-1)//2 frequencies k = 1..m, the basis of ``probes.fourier``):

- neuron: a slice of a weight matrix along its non-token axis, read as a function of the residue t = 0..p-1
  (W_in [d_mlp, p] of a one-hot MLP: a row, ``token_axis=1``; an embedding [d_vocab, d_model]: a column,
  ``token_axis=0``; tokens beyond p, e.g. '=', are ignored). Its energy is its power at k = 1..m after
  removing its mean (``probes.fourier.frequency_power``; the constant part and, for even p, the Nyquist
  term are not frequencies). Neurons constant over the residues (dead or zero) are left out.
- concentration c: the share of a neuron's energy at its dominant frequency, c in [1/m, 1]; 1 for a pure
  cos(2 pi k t / p + phi). For i.i.d. Gaussian weights the m powers are i.i.d. exponential, so the shares are
  uniform spacings: E[c] = H_m / m (harmonic number; 0.27 for p = 23) and
  P(c >= s) = sum_{j>=1, j s<1} (-1)^(j+1) C(m, j) (1 - j s)^(m-1)  (reported as ``chance_fraction``).
- single-frequency neuron: c >= ``single_at`` (default 0.5: more than half its energy in one frequency;
  chance 0.011 at p = 23, but 0.75 at p = 7, so raise it for small p).
- key frequencies: frequencies that are dominant for at least ``key_share`` of the single-frequency neurons
  (default half the uniform share, 1 / (2 m), as in ``probes.fourier``); only when Fourier features are
  present, otherwise none (a handful of chance single-frequency neurons names no circuit).

Values: ``mean_concentration``, ``median_concentration``, ``weighted_concentration`` (energy-weighted mean),
``single_fraction`` (of the non-constant neurons), ``n_single``, ``n_dominant_freqs`` (distinct dominant
frequencies among single-frequency neurons), ``key_freqs`` and ``n_key_freqs``, ``dominant_counts`` (single
neurons per frequency), ``chance_fraction``, ``n_neurons``.

Concept presence: "Fourier features" when ``single_fraction >= features_at`` (default 0.5: most neurons are
single-frequency) and at least twice ``chance_fraction``; "neuron Fourier k=<k>" for each key frequency.
Degenerate input (no modulus, weight not stored or not 2-D, NaN/inf, fewer than p residues on the token
axis, every neuron constant over residues) gives "not computed" with the reason.
"""
from __future__ import annotations

from math import comb

import numpy as np

from probes.base import ProbeContext, ProbeResult, finite_or_reason
from probes.fourier import frequencies, frequency_power

VALUES = ("mean_concentration", "median_concentration", "weighted_concentration", "single_fraction", "n_single",
          "n_dominant_freqs", "key_freqs", "n_key_freqs", "dominant_counts", "chance_fraction", "n_neurons")


def neuron_concentration(weight: np.ndarray, p: int, token_axis: int = 0
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(concentration, dominant frequency (1-based), energy) per non-constant neuron of ``weight``."""
    w = np.moveaxis(np.asarray(weight, dtype=np.float64), token_axis, 0)
    power = frequency_power(w.reshape(w.shape[0], -1), p)          # (m, n_neurons)
    energy = power.sum(axis=0)
    scale = max(1.0, float(np.abs(w[:p]).max(initial=0.0))) ** 2
    keep = energy > 1e-24 * scale * p
    power, energy = power[:, keep], energy[keep]
    return power.max(axis=0) / energy, power.argmax(axis=0) + 1, energy


def chance_single_fraction(m: int, single_at: float) -> float:
    """P(concentration >= single_at) for i.i.d. Gaussian weights over m frequencies (uniform spacings)."""
    if m == 1:
        return 1.0
    total, j = 0.0, 1
    while j <= m and j * single_at < 1:
        total += (-1) ** (j + 1) * comb(m, j) * (1 - j * single_at) ** (m - 1)
        j += 1
    return float(min(1.0, max(0.0, total)))


class NeuronFourierProbe:
    """Per-neuron frequency concentration of a weight indexed by the input residue; see the module docstring."""

    name = "neuron_fourier"

    def __init__(self, param: str = "embed.weight", token_axis: int = 0, single_at: float = 0.5,
                 key_share: float | None = None, features_at: float = 0.5):
        self.param = param
        self.token_axis = token_axis
        self.single_at = single_at
        self.key_share = key_share
        self.features_at = features_at

    def compute(self, ctx: ProbeContext) -> ProbeResult:
        res = ProbeResult()
        p = int(ctx.task.get("p", 0))
        w = ctx.params.get(self.param)
        reason = None
        if p < 3:
            reason = "task has no modulus p >= 3"
        elif w is None:
            reason = f"parameter {self.param!r} not stored"
        elif np.ndim(w) != 2 or not -2 <= self.token_axis <= 1:
            reason = (f"parameter {self.param!r} of shape {np.shape(w)} is not a 2-D matrix with token axis "
                      f"{self.token_axis}")
        elif np.shape(w)[self.token_axis] < p:
            reason = (f"axis {self.token_axis} of {self.param!r} has {np.shape(w)[self.token_axis]} entries, "
                      f"fewer than p={p}")
        else:
            reason = finite_or_reason(np.asarray(w), self.param)
        if reason is None:
            conc, dom, energy = neuron_concentration(w, p, self.token_axis)
            if len(conc) == 0:
                reason = "every neuron's weights are constant over the residues"
        if reason:
            for key in VALUES:
                res.not_computed(key, reason)
            return res
        m = len(frequencies(p))
        single = conc >= self.single_at
        counts = np.bincount(dom[single], minlength=m + 1)[1:]
        chance = chance_single_fraction(m, self.single_at)
        fraction = float(single.mean())
        features = fraction >= self.features_at and fraction >= 2 * chance
        share = self.key_share if self.key_share is not None else 1.0 / (2 * m)
        keys = [int(k) for k in np.flatnonzero(counts >= share * single.sum()) + 1] if features else []
        res.values.update({
            "mean_concentration": float(conc.mean()), "median_concentration": float(np.median(conc)),
            "weighted_concentration": float(conc.dot(energy) / energy.sum()), "single_fraction": fraction,
            "n_single": int(single.sum()), "n_dominant_freqs": int(np.count_nonzero(counts)),
            "key_freqs": keys, "n_key_freqs": len(keys), "dominant_counts": [int(c) for c in counts],
            "chance_fraction": chance, "n_neurons": int(len(conc))})
        res.present["Fourier features"] = bool(features)
        for k in keys:
            res.present[f"neuron Fourier k={k}"] = True
        return res
