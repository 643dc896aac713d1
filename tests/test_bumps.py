"""Loss-bump and steepest-fall detectors on constructed curves (planted bump at a known step, smooth laws)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semgraph.bumps import local_log_slopes, loss_bump, steepest_fall_step

STEPS = np.arange(1, 4001, dtype=float)


def power_law(t: np.ndarray, a: float = 3.0, b: float = 0.3, c: float = 1.0) -> np.ndarray:
    return a * t ** -b + c


def planted_drop(t: np.ndarray, at: float, depth: float, width: float = 0.08) -> np.ndarray:
    """An extra fall of ``depth`` centred at step ``at``, ``width`` wide in ln(step) (a sigmoid in ln t)."""
    return depth * (1 - 1 / (1 + np.exp(-(np.log(t) - np.log(at)) / width)))


def test_local_slope_of_a_line_in_log_step_is_its_coefficient():
    ls = local_log_slopes(STEPS, 2.0 - 0.7 * np.log(STEPS), skip_until=50)
    assert len(ls.steps) > 100 and ls.steps.min() >= 50 * np.exp(0.25) - 1
    np.testing.assert_allclose(ls.slope, -0.7, atol=1e-9)
    np.testing.assert_allclose(ls.se, 0.0, atol=1e-9)


@pytest.mark.parametrize("law", [power_law, lambda t: power_law(t, 10.0, 0.7, 0.5), lambda t: 5 - 0.3 * np.log(t)])
def test_smooth_curves_have_no_bump(law):
    assert loss_bump(STEPS, law(STEPS), skip_until=200) is None


@settings(max_examples=15, deadline=None)
@given(at=st.floats(500, 2500), depth=st.floats(0.05, 0.3))
def test_planted_bump_is_found_where_it_was_planted(at, depth):
    bump = loss_bump(STEPS, power_law(STEPS) + planted_drop(STEPS, at, depth), skip_until=200)
    assert bump is not None
    assert abs(np.log(bump.step / at)) <= 0.05, (bump, at)   # within 5% of the planted step
    assert bump.slope < bump.reference_slope < 0


def test_planted_bump_in_noisy_per_step_losses_and_none_without_it():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.05, size=STEPS.shape)           # per-batch noise of a logged training loss
    base = power_law(STEPS) + noise
    bump = loss_bump(STEPS, base + planted_drop(STEPS, 1200, 0.15), skip_until=200)
    assert bump is not None and abs(np.log(bump.step / 1200)) <= 0.1, bump
    assert loss_bump(STEPS, base, skip_until=200) is None


def test_means_over_sparse_intervals_still_show_the_bump():
    """The loss logged as a mean over every 40 updates (the old default) still carries the bump."""
    loss = power_law(STEPS) + planted_drop(STEPS, 1000, 0.15)
    means = loss.reshape(-1, 40).mean(axis=1)
    mid = STEPS.reshape(-1, 40).mean(axis=1)
    bump = loss_bump(mid, means, skip_until=200)
    assert bump is not None and abs(np.log(bump.step / 1000)) <= 0.1


def test_an_exponential_decay_falls_fastest_in_log_step_at_its_time_scale():
    """d/d(ln t) of exp(-t/tau) is -(t/tau) exp(-t/tau), steepest at t = tau."""
    bump = loss_bump(STEPS, 2 + np.exp(-STEPS / 700.0), skip_until=100)
    assert bump is not None and abs(np.log(bump.step / 700)) <= 0.3


def test_steepest_fall_finds_a_planted_drop_and_not_a_flat_curve():
    icl = -0.1 + planted_drop(STEPS, 900, 0.4) - 0.4
    assert abs(np.log(steepest_fall_step(STEPS, icl, skip_until=200) / 900)) <= 0.05
    assert steepest_fall_step(STEPS, np.full_like(STEPS, -0.3), skip_until=200) is None
    assert steepest_fall_step(STEPS, 0.1 * np.log(STEPS), skip_until=200) is None   # rising: no fall
