"""Tests for foundry_ext.collapse.prediction: early final-loss prediction and collapse residuals."""

from typing import Any

import numpy as np
import pytest

from foundry_ext.collapse.prediction import collapse_residual, predict_final_loss


def test_predict_largest_final_loss_from_first_20_percent(family: dict[str, Any]):
    prediction = predict_final_loss(*family['large'], family['ref'], fraction_used=0.2)
    assert prediction.final_loss == pytest.approx(2.5, rel=0.01)
    assert prediction.lower < 2.5 < prediction.upper
    assert prediction.fraction_used <= 0.2
    # The loss at 20% itself is far from the answer: the reference does the extrapolating.
    steps, losses, total = family['large']
    assert losses[np.searchsorted(steps, 0.2 * total)] > 2.5 * 1.05


def test_prediction_needs_points_after_warmup(family: dict[str, Any]):
    with pytest.raises(ValueError, match='at least 2'):
        predict_final_loss(*family['large'], family['ref'], fraction_used=0.1)


def test_residual_flags_a_curve_whose_shape_deviates(family: dict[str, Any]):
    drifting = collapse_residual(*family['drifting'], family['ref'])
    onset = drifting.onset(threshold=3.0, consecutive=5)
    assert onset is not None and 0.6 < onset < 0.85
    clean = collapse_residual(*family['large'], family['ref'])
    assert clean.onset(threshold=3.0, consecutive=5) is None
    assert np.isnan(clean.z[clean.fractions < family['ref'].fit_start]).all()
    assert not clean.out_of_band()[clean.fractions < family['ref'].fit_start].any()


def test_residual_of_an_in_progress_run_uses_early_points(family: dict[str, Any]):
    steps, losses, total = family['large']
    partial = collapse_residual(steps[:80], losses[:80], total, family['ref'])  # up to 20%
    assert partial.final_loss == pytest.approx(2.5, rel=0.01)
    given = collapse_residual(steps, losses, total, family['ref'], final_loss_estimate=2.6)
    np.testing.assert_allclose(given.normalized, np.asarray(losses) / 2.6)


def test_residual_of_sparse_evaluations_aligns_on_every_point_past_warmup(family: dict[str, Any]):
    # One point in [fit_start, 0.5] (a monitor evaluating every 30% of the run): align on all points past warmup.
    steps, losses, total = (np.asarray(v, dtype=float) if i < 2 else v for i, v in enumerate(family['large']))
    pick = [int(np.searchsorted(steps, f * total)) for f in (0.05, 0.3, 0.6, 0.9)]
    sparse = collapse_residual(steps[pick], losses[pick], total, family['ref'])
    assert sparse.final_loss == pytest.approx(2.5, rel=0.02)
    assert np.isnan(sparse.z[0]) and np.isfinite(sparse.z[1:]).all()


def test_a_fraction_at_the_reference_start_says_which_fraction_works(family: dict[str, Any]):
    # fit_start is 0.1 and the run logs every 10 of 4000 steps: t/T = 0.1 is one point, 0.1025 the second.
    with pytest.raises(ValueError, match=r'at least 2 logged points .* use a fraction of at least that') as err:
        predict_final_loss(*family['large'], family['ref'], fraction_used=0.1)
    assert 't/T=0.102' in str(err.value)
    assert predict_final_loss(*family['large'], family['ref'], fraction_used=0.1025).n_points == 2


def test_sparse_evaluations_widen_the_window_to_two_points(family: dict[str, Any]):
    # An eval loss every 200 steps of 4000: the 3% window before 20% holds one point, so the two newest are used.
    steps, losses, total = family['large']
    pick = np.searchsorted(steps, np.arange(200, total + 1, 200))
    sparse = (np.asarray(steps)[pick], np.asarray(losses)[pick], total)
    pred = predict_final_loss(*sparse, family['ref'], fraction_used=0.2)
    assert pred.n_points == 2 and pred.fraction_used == pytest.approx(0.2)
    assert pred.final_loss == pytest.approx(2.5, rel=0.01)
    assert predict_final_loss(*sparse, family['ref'], fraction_used=0.2, window=None).n_points == 3  # 0.1 .. 0.2
