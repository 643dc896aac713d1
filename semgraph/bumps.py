"""Where a training curve bends: the phase-change "bump" of a loss curve against log(step).

Olsson et al. 2022 ("In-context Learning and Induction Heads", section 3) see the induction-head phase
change in the training loss as a bump: the loss, plotted against log(step), falls faster for a short
while (often after a plateau) than both before and after it; in the derivative of the loss against
log(step) this is a local extremum. A smooth power law ``a * t**-b + c`` has no bump: its slope against
log(t), ``-a b t**-b``, only ever flattens.

Definitions (``x = ln(step)``):

- local slope at a logged step ``s``: the least-squares slope of the values against ``x`` over the points
  with ``|x - ln s| <= half_width``, with its standard error; only steps whose whole window lies inside the
  data get one (no one-sided edge windows);
- **loss bump**: its onset is the step at which the local slope is the most *steeper* than the local slope
  of the adjacent window before it (centred ``2 * half_width`` earlier, no shared points):
  ``excess = slope(before) - slope``, provided the excess is significant (``>= z`` standard errors of the
  difference) and large (``>= min_excess`` times the curve's mean slope over the range): the bump's onset.
  The bump lasts while the local slope stays steeper than that window's; the **loss bump step** is its
  steepest local slope (the local extremum of d loss / d ln(step)). ``None`` when the
  curve's fall only ever slows down against log(step) (a power law, a logarithm). An exponential decay
  ``exp(-t/tau)`` does fall fastest against log(step) at ``t = tau``: it is a bump at that scale;
- **steepest fall step**: the step of the most negative local slope (significant at ``z``), used for the
  in-context-learning score, which is flat and then drops.

Both ignore the steps before ``skip_until`` (the initial fall from chance is not the phase change).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class LocalSlopes:
    steps: np.ndarray       # logged steps that got a full window
    slope: np.ndarray       # d value / d ln(step)
    se: np.ndarray          # standard error of each slope


@dataclass(frozen=True)
class Bump:
    step: int               # the bump: steepest local slope between onset and end
    slope: float            # local slope there (per e-fold of steps)
    reference_slope: float  # the shallowest slope before it
    excess: float           # reference_slope - slope
    z: float                # significance of the steepening at the onset, in standard errors
    onset: int = 0          # where the fall steepens most against the window before
    end: int = 0            # last step whose local slope is still steeper than the reference


def _clean(steps: Sequence[float], values: Sequence[float], skip_until: float) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    if s.shape != v.shape:
        raise ValueError(f"steps {s.shape} and values {v.shape} differ in shape")
    keep = np.isfinite(s) & np.isfinite(v) & (s > 0) & (s >= skip_until)
    order = np.argsort(s[keep], kind="stable")
    return s[keep][order], v[keep][order]


def local_log_slopes(steps: Sequence[float], values: Sequence[float], *, half_width: float = 0.25,
                     skip_until: float = 0, min_points: int = 5) -> LocalSlopes:
    """Least-squares slope of ``values`` against ln(step) in a window of ``+-half_width`` around each step."""
    s, v = _clean(steps, values, skip_until)
    x = np.log(s)
    out_s, out_b, out_se = [], [], []
    for i, xc in enumerate(x):
        if xc - half_width < x[0] - 1e-12 or xc + half_width > x[-1] + 1e-12:
            continue
        w = np.abs(x - xc) <= half_width + 1e-12
        if w.sum() < min_points:
            continue
        xw, vw = x[w] - x[w].mean(), v[w]
        sxx = float(xw @ xw)
        if sxx <= 0:
            continue
        b = float(xw @ (vw - vw.mean())) / sxx
        resid = vw - vw.mean() - b * xw
        dof = max(int(w.sum()) - 2, 1)
        out_s.append(int(s[i]))
        out_b.append(b)
        out_se.append(float(np.sqrt(resid @ resid / dof / sxx)))
    return LocalSlopes(np.array(out_s, dtype=int), np.array(out_b), np.array(out_se))


def loss_bump(steps: Sequence[float], losses: Sequence[float], *, skip_until: float = 0,
              half_width: float = 0.25, z: float = 3.0, min_excess: float = 0.25) -> Bump | None:
    """The phase-change bump of a loss curve (module docstring), or None when there is none."""
    s, v = _clean(steps, losses, skip_until)
    if len(s) < 4 or s[-1] <= s[0]:
        return None
    ls = local_log_slopes(s, v, half_width=half_width)
    if len(ls.steps) < 2:
        return None
    x = np.log(ls.steps)
    mean_slope = abs(float(np.polyfit(np.log(s), v, 1)[0]))
    best: Bump | None = None
    for i in range(len(ls.steps)):
        gap = np.abs(x - (x[i] - 2 * half_width))         # the adjacent window before (no shared points)
        j = int(np.argmin(gap))
        if j >= i or gap[j] > half_width / 2:
            continue
        excess = float(ls.slope[j] - ls.slope[i])
        se = float(np.hypot(ls.se[i], ls.se[j]))
        zi = excess / se if se > 0 else (np.inf if excess > 0 else 0.0)
        if excess >= min_excess * mean_slope and zi >= z and (best is None or excess > best.excess):
            best = Bump(int(ls.steps[i]), float(ls.slope[i]), float(ls.slope[j]), excess, float(zi),
                        onset=int(ls.steps[i]))
    if best is None:
        return None
    i = int(np.searchsorted(ls.steps, best.onset))
    end = i
    while end + 1 < len(ls.steps) and ls.slope[end + 1] < best.reference_slope:
        end += 1                                            # the bump lasts while the fall is steeper than before
    k = i + int(np.argmin(ls.slope[i:end + 1]))
    return Bump(int(ls.steps[k]), float(ls.slope[k]), best.reference_slope,
                float(best.reference_slope - ls.slope[k]), best.z, onset=best.onset, end=int(ls.steps[end]))


def steepest_fall_step(steps: Sequence[float], values: Sequence[float], *, skip_until: float = 0,
                       half_width: float = 0.25, z: float = 3.0) -> int | None:
    """The step of the most negative local slope against ln(step), if significant at ``z``; else None."""
    ls = local_log_slopes(steps, values, half_width=half_width, skip_until=skip_until)
    if len(ls.steps) == 0:
        return None
    i = int(np.argmin(ls.slope))
    if not (ls.slope[i] < 0 and (ls.se[i] == 0 or -ls.slope[i] / ls.se[i] >= z)):
        return None
    return int(ls.steps[i])
