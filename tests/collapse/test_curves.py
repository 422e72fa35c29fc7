"""Tests for foundry_ext.collapse.curves: normalizing, estimating the final loss, smoothing."""

import numpy as np
import pytest

from foundry_ext.collapse.curves import estimate_final_loss, normalize_curve, smooth_curve


def test_normalize_curve_divides_by_final_loss():
    t, ell = normalize_curve([100, 200, 400], [4.0, 3.0, 2.0], 400, final_loss=2.0)
    np.testing.assert_allclose(t, [0.25, 0.5, 1.0])
    np.testing.assert_allclose(ell, [2.0, 1.5, 1.0])


def test_final_loss_estimate_follows_the_decaying_tail_and_ignores_a_spike():
    steps = np.arange(1, 1001)
    losses = 3.0 - 0.5 * steps / 1000  # still falling at the end, as with decay-to-zero
    assert estimate_final_loss(steps, losses, 1000) == pytest.approx(2.5)
    spiked = losses.copy()
    spiked[-5] += 1.0
    assert estimate_final_loss(steps, spiked, 1000) == pytest.approx(2.5, abs=1e-3)
    _, ell = normalize_curve(steps, losses, 1000)
    assert ell[-1] == pytest.approx(1.0)


def test_normalize_curve_input_errors():
    with pytest.raises(ValueError, match='finished run'):
        normalize_curve([1, 2, 3], [3.0, 2.9, 2.8], 100)
    with pytest.raises(ValueError, match='increasing'):
        normalize_curve([1, 1, 2], [3.0, 2.9, 2.8], 2, final_loss=2.8)
    with pytest.raises(ValueError, match='positive'):
        normalize_curve([1, 2], [3.0, -1.0], 2, final_loss=2.8)


def test_smooth_curve_is_a_trailing_mean_placed_at_its_mean_step():
    steps, losses = np.arange(10.0), 3.0 - 0.1 * np.arange(10.0)
    s, y = smooth_curve(steps, losses, 4)
    np.testing.assert_allclose(s, np.arange(1.5, 8.0))
    np.testing.assert_allclose(y, 3.0 - 0.1 * s)  # no lag on a linear curve
    assert smooth_curve(steps, losses, 1)[1].tolist() == losses.tolist()
    with pytest.raises(ValueError, match='positive integer'):
        smooth_curve(steps, losses, 0)


def test_a_finished_short_run_ends_at_step_t_minus_one():
    assert estimate_final_loss(np.arange(40), np.full(40, 2.0), 40) == pytest.approx(2.0)
