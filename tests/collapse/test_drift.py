"""Tests for foundry_ext.collapse.drift: a reference that follows the controls of the run it describes."""

import dataclasses

import numpy as np
import pytest

from foundry_ext.collapse.controls import Controls
from foundry_ext.collapse.curves import LossCurve
from foundry_ext.collapse.prediction import predict_final_loss
from foundry_ext.collapse.reference import fit_reference
from tests.collapse.conftest import D2Z, true_shape


def _run(size: float, final: float = 3.0, total: int = 2000) -> tuple[LossCurve, Controls]:
    """A run whose normalized curve steepens with its size: the drift a collapsed curve alone ignores."""
    steps = np.arange(10, total + 1, 10)
    t = steps / total
    tilt = 0.02 * np.log(size / 1e8) * np.log(t)  # log ell grows by 2% per e-fold of size at t = 1/e
    return LossCurve(steps, final * true_shape(t) * np.exp(-tilt), total), Controls(tau=0.3, tpp=20.0, params=size)


@pytest.fixture(scope='module')
def family():
    sizes = (3e7, 6e7, 1.2e8, 2.4e8)
    runs = [_run(n) for n in sizes]
    return fit_reference([r for r, _ in runs], D2Z, controls=[c for _, c in runs]), sizes


def test_the_reference_follows_the_size_of_the_run(family):
    ref, _ = family
    assert ref.drift is not None and ref.drift.keys == ('params',), 'tau and TPP do not vary, so only size counts'
    target, controls = _run(1.7e8, final=2.5)
    t = np.linspace(0.1, 1.0, 46)
    truth = true_shape(t) * np.exp(-0.02 * np.log(1.7) * np.log(t))
    aware, collapsed = ref.for_controls(controls)(t), ref(t)
    assert np.max(np.abs(aware / truth - 1)) < 0.4 * np.max(np.abs(collapsed / truth - 1))
    # Predicting from the first 20%: the size-aware reference gets L(T) within 1%, the collapsed curve is 2.4% off.
    aware_error = predict_final_loss(*target, ref.for_controls(controls), fraction_used=0.2).final_loss / 2.5 - 1
    collapsed_error = predict_final_loss(*target, ref, fraction_used=0.2).final_loss / 2.5 - 1
    assert abs(aware_error) < 0.01 and abs(aware_error) < 0.35 * abs(collapsed_error)


def test_weights_favour_the_nearest_runs_and_beyond_the_range_the_largest(family):
    ref, sizes = family
    inside = ref.weights(Controls(params=6e7))
    assert np.argmax(inside) == sizes.index(6e7) and sum(inside) == pytest.approx(1.0)
    beyond = ref.weights(Controls(params=1e9))
    assert beyond[-1] > 0.9
    assert ref.weights(None) == pytest.approx([0.25] * 4), 'unknown controls weigh every run alike'


def test_beyond_the_range_the_interval_reaches_the_size_trend_continued(family):
    ref, _ = family
    assert not ref.for_controls(Controls(tau=0.3, tpp=20.0, params=1e8)).extrapolation, 'no error within the range'
    far = ref.for_controls(Controls(tau=0.3, tpp=20.0, params=9.6e8))  # 4x the largest reference run
    t = np.asarray(ref.drift.grid)
    t = t[t > 0.1]
    continued = -0.02 * np.log(4.0) * np.log(t)  # the tilt of _run from 2.4e8 to 9.6e8, zero at t/T = 1
    np.testing.assert_allclose(far.extrapolation_error(t), continued, rtol=0.15, atol=2e-3)
    # The prediction extrapolates flat and misses by about that; at z = 2 its interval reaches the continued trend.
    target, _ = _run(9.6e8, final=2.5)
    pred = predict_final_loss(*target, far, fraction_used=0.2)
    flat = predict_final_loss(*target, dataclasses.replace(far, extrapolation=()), fraction_used=0.2)
    assert pred.final_loss == flat.final_loss and abs(pred.final_loss / 2.5 - 1) > 0.01
    assert pred.lower <= 2.5 <= pred.upper and not flat.lower <= 2.5 <= flat.upper


def test_the_band_is_the_leave_one_out_error(family):
    ref, _ = family
    assert ref.drift is not None
    loo = ref.drift.loo_rms()
    # The smallest and largest runs are extrapolations from the others: the band covers that error.
    assert np.all(loo >= 0) and np.max(loo) > 0.002
    assert max(ref.band_sigma) >= 0.9 * np.max(loo) * min(ref(np.asarray(ref.drift.grid)))


def test_runs_with_the_same_controls_keep_the_collapsed_curve():
    runs = [_run(1e8, final) for final in (3.0, 2.9)]
    ref = fit_reference([r for r, _ in runs], D2Z, controls=[c for _, c in runs])
    assert ref.drift is None and ref.for_controls(Controls(params=5e8)) is ref


def test_with_fitted_final_losses_the_predicted_final_loss_is_the_loss_at_T():
    # Normalized by their fitted scale (the CLI's default), the tilted runs do not end at 1: the collapsed curve
    # misfits their ends. The reference for a run's controls still ends at 1, so L(T) is the loss at T (2.5), not
    # that scale (0.7% lower here).
    runs = [_run(n) for n in (3e7, 6e7, 1.2e8, 2.4e8)]
    ref = fit_reference([r for r, _ in runs], D2Z, controls=[c for _, c in runs], final_loss='fit')
    target, controls = _run(1.7e8, final=2.5)
    own = ref.for_controls(controls)
    assert own(np.array([1.0]))[0] == pytest.approx(1.0)
    assert predict_final_loss(*target, own).final_loss == pytest.approx(2.5, rel=5e-4)  # from its last 3%
