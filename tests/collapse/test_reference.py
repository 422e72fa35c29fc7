"""Tests for foundry_ext.collapse.reference: fitting [SwC] Eq. (4) and the band, JSON, controls."""

from typing import Any

import numpy as np
import pytest

from foundry_ext.collapse.curves import LossCurve, estimate_final_loss, smooth_curve
from foundry_ext.collapse.prediction import final_window_losses, predict_final_loss
from foundry_ext.collapse.reference import ReferenceCurve, fit_reference
from tests.collapse.conftest import D2Z, WARMUP, true_shape


def test_reference_recovers_the_collapsed_shape(family: dict[str, Any]):
    ref = family['ref']
    t = np.linspace(0.1, 1.0, 91)
    np.testing.assert_allclose(ref(t), true_shape(t), rtol=2e-3)
    assert ref.b == pytest.approx(0.4, rel=0.1)
    assert ref.q == pytest.approx(1.3, rel=0.1)
    assert ref(np.array([1.0]))[0] == pytest.approx(1.0)
    assert all(0.001 <= s < 0.01 for s in ref.band_sigma)


def test_fit_m_recovers_a_different_power_law_exponent():
    steps = np.arange(10, 2001, 10)
    t = steps / 2000

    def g(x: np.ndarray) -> np.ndarray:
        eta = np.interp(x, [0.0, WARMUP, 1.0], [0.0, 1.0, 0.0])
        return (1.001 / (x + 0.001))**0.1 + 0.4 * (eta + 0.1)**1.3

    ref = fit_reference([LossCurve(steps, 3.0 * g(t) / g(np.array([1.0]))[0], 2000)], D2Z, fit_m=True)
    assert ref.m == pytest.approx(0.1, rel=0.05)



def test_reference_json_round_trip(family: dict[str, Any]):
    ref = family['ref']
    restored = ReferenceCurve.from_json(ref.to_json())
    assert restored == ref
    with pytest.raises(ValueError, match='foundry_ext.collapse.reference'):
        ReferenceCurve.from_json('{"format": "other"}')
    with pytest.raises(ValueError, match='foundry_ext.collapse.reference'):
        ReferenceCurve.from_json('[1, 2]')


def test_controls_mismatch(family: dict[str, Any]):
    ref = family['ref']
    assert ref.controls_mismatch(tau_fraction=0.21, tpp=80.0) == []
    problems = ref.controls_mismatch(tau_fraction=0.4, tpp=20.0)
    assert len(problems) == 2 and problems[0].startswith('tau_fraction')



def test_fitted_final_losses_make_a_tight_reference_from_noisy_curves():
    rng = np.random.default_rng(1)

    def noisy(total: int, final: float) -> LossCurve:
        steps = np.arange(total)
        noise = 1 + 0.04 * rng.standard_normal(total)  # small batches: ~4% per step, like the demo corpus
        return LossCurve(steps, final * true_shape(np.maximum(steps, 1) / total) * noise, total)

    runs = [noisy(400, 3.0), noisy(800, 2.6)]
    fitted = fit_reference(runs, D2Z, smoothing=25, final_loss='fit')
    t = np.linspace(0.1, 1.0, 91)
    assert np.max(np.abs(fitted(t) / true_shape(t) - 1)) < 0.015 and fitted.smoothing == 25
    # The L(T) each run is normalized by: aligned over the whole curve vs a line through the last 2%.
    aligned = [predict_final_loss(*smooth_curve(r.steps, r.losses, 25), r.total_steps, fitted, window=None).final_loss
               for r in runs]
    tails = [estimate_final_loss(*r) for r in runs]
    aligned_error = max(abs(a / f - 1) for a, f in zip(aligned, (3.0, 2.6)))
    assert aligned_error < 0.01 and aligned_error < 0.5 * max(abs(a / f - 1) for a, f in zip(tails, (3.0, 2.6)))
    assert ReferenceCurve.from_json(fitted.to_json()) == fitted
    big = noisy(1600, 2.2)
    s, y = smooth_curve(big.steps, big.losses, 25)
    pred = predict_final_loss(s[s < 320], y[s < 320], 1600, fitted)
    measured, predicted = final_window_losses(*big, fitted, pred.final_loss)
    assert abs(predicted / measured - 1) < 0.01
    with pytest.raises(ValueError, match="'tail' or 'fit'"):
        fit_reference(runs, D2Z, final_loss='end')
