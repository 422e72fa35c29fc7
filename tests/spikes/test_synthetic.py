"""Tests for the synthetic labelled loss curves."""

import math

import numpy as np
import pytest

from foundry_ext.spikes.detector import BATCH_OUTLIER, DIVERGENCE, FAST_RECOVERING, NOT_RECOVERING, SLOW_RECOVERING
from foundry_ext.spikes.synthetic import (CLEAN, CURVE_KINDS, NOISE_FAMILIES, SCHEDULE, CurveBase, EventSpec, Schedule,
                                          benchmark_suite, make_curve, random_labeled_suite)

BASE = CurveBase(l_inf=2.0, amplitude=60.0, t0=1000.0, alpha=0.5)


def _excess(spec, n_steps=3000):
    """Log-loss the event adds to a noise-free curve, per step."""
    steps, with_event, _ = make_curve(n_steps, [spec], noise=0.0, base=BASE)
    _, clean, _ = make_curve(n_steps, [], noise=0.0, base=BASE)
    return steps, np.log(with_event) - np.log(clean)


def test_noise_free_curve_is_the_power_law():
    steps, loss, labels = make_curve(500, noise=0.0, base=BASE, start_step=1000)
    assert steps[0] == 1000 and steps[-1] == 1499
    np.testing.assert_allclose(loss, 2.0 + 60.0 * (steps + 1000.0)**-0.5)
    assert labels == []


@pytest.mark.parametrize('noise,autocorr', [(0.005, 0.0), (0.02, 0.3)])
def test_noise_has_requested_std_and_autocorrelation(noise, autocorr):
    steps, loss, _ = make_curve(40_000, noise=noise, seed=1, autocorr=autocorr, base=BASE)
    log_noise = np.log(loss) - np.log(BASE(steps.astype(np.float64)))
    assert np.std(log_noise) == pytest.approx(noise, rel=0.05)
    assert np.corrcoef(log_noise[1:], log_noise[:-1])[0, 1] == pytest.approx(autocorr, abs=0.03)


def test_same_seed_same_curve():
    spec = EventSpec(FAST_RECOVERING, 300, height=0.5)
    first = make_curve(1000, [spec], noise=0.01, seed=7)
    second = make_curve(1000, [spec], noise=0.01, seed=7)
    other = make_curve(1000, [spec], noise=0.01, seed=8)
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize('kind,duration,curvature', [(FAST_RECOVERING, 40, 4.0), (SLOW_RECOVERING, 900, 0.8)])
def test_recovering_spike_rises_then_returns_exactly(kind, duration, curvature):
    spec = EventSpec(kind, 1000, height=0.8, rise_steps=3, recovery_steps=duration, recovery_curvature=curvature)
    steps, excess = _excess(spec)
    peak = math.log1p(0.8)
    assert spec.peak_step == 1002
    np.testing.assert_allclose(excess[999:1003], [0.0, peak / 3, 2 * peak / 3, peak], atol=1e-12)
    assert np.all(np.diff(excess[1002:1002 + duration + 1]) < 0)
    np.testing.assert_allclose(excess[1002 + duration:], 0.0, atol=1e-12)
    np.testing.assert_allclose(excess[:1000], 0.0, atol=1e-12)


def test_slow_recovery_is_still_well_up_halfway():
    # The suite draws slow curvatures up to 1.2, which keeps a third of the spike at half its duration.
    spec = EventSpec(SLOW_RECOVERING, 1000, height=0.3, recovery_steps=600, recovery_curvature=1.2)
    _, excess = _excess(spec)
    assert excess[1000 + 300] > 0.35 * math.log1p(0.3)


def test_not_recovering_settles_on_a_higher_level_and_drifts():
    flat = EventSpec(NOT_RECOVERING, 1000, height=0.6, recovery_steps=10, level_shift=0.2)
    drifting = EventSpec(NOT_RECOVERING, 1000, height=0.6, recovery_steps=10, level_shift=0.2, drift=1e-4)
    _, flat_excess = _excess(flat)
    _, drift_excess = _excess(drifting)
    assert flat_excess[1000] == pytest.approx(math.log1p(0.6))
    np.testing.assert_allclose(flat_excess[1500:], math.log1p(0.2), rtol=1e-6)
    np.testing.assert_allclose(drift_excess[2000] - flat_excess[2000], 1e-4 * 1000)


def test_divergence_ramps_up_to_a_steady_climb():
    spec = EventSpec(DIVERGENCE, 1000, drift=2e-4, ramp_steps=200)
    _, excess = _excess(spec)
    np.testing.assert_allclose(excess[:1001], 0.0, atol=1e-12)
    assert excess[1100] == pytest.approx(2e-4 * 100**2 / 400)
    np.testing.assert_allclose(np.diff(excess[1300:]), 2e-4)


def test_event_spec_validation():
    with pytest.raises(ValueError, match='kind'):
        EventSpec('spike', 10)
    with pytest.raises(ValueError, match='positive'):
        EventSpec(FAST_RECOVERING, 10, rise_steps=0)
    with pytest.raises(ValueError, match='autocorr'):
        make_curve(10, autocorr=1.0)


@pytest.mark.parametrize('family', NOISE_FAMILIES)
def test_noise_families_have_the_requested_robust_scale(family):
    autocorr = 0.5 if family == 'ar1' else 0.0
    steps, loss, _ = make_curve(40_000, noise=0.02, seed=2, autocorr=autocorr, base=BASE, family=family)
    log_noise = np.log(loss) - np.log(BASE(steps.astype(np.float64)))
    robust = 1.4826 * np.median(np.abs(log_noise - np.median(log_noise)))
    assert robust == pytest.approx(0.02, rel=0.05)
    tails = np.mean(np.abs(log_noise) > 6 * 0.02)
    assert (tails > 1e-3) == (family in ('t3', 't5'))  # Student-t: heavy tails


def test_outliers_raise_one_or_two_points_and_schedules_move_the_level():
    outlier = EventSpec(BATCH_OUTLIER, 1000, height=0.5, rise_steps=2, spacing=10)
    steps, excess = _excess(outlier)
    assert np.flatnonzero(excess).tolist() == list(range(1000, 1020))  # two points of a series sampled every 10
    schedule = Schedule(1000, 500, 0.05, 'linear', hold_steps=100, rewarm_steps=200)
    factor = schedule.log_factor(np.array([999, 1250, 1500, 1600, 1700, 1800, 2000]))
    np.testing.assert_allclose(np.expm1(factor), [0.0, -0.025, -0.05, -0.05, -0.025, 0.0, 0.0], atol=1e-3)


def test_random_suite_covers_every_kind_with_room_to_resolve():
    curves = random_labeled_suite(48, seed=0)
    kinds = [c.kind for c in curves]
    assert {kind: kinds.count(kind) for kind in CURVE_KINDS} == dict.fromkeys(CURVE_KINDS, 8)
    assert any(c.steps[0] == 0 for c in curves) and any(c.steps[0] > 0 for c in curves)
    assert sum(len(c.outliers) for c in curves) > 20
    for curve in curves:
        assert len(curve.steps) == len(curve.loss) == 5000 and np.all(np.isfinite(curve.loss))
        assert 0.005 <= curve.noise <= 0.03 and 0.0 <= curve.autocorr <= 0.3
        assert (curve.kind in (CLEAN, SCHEDULE)) == (not curve.labels)
        assert (curve.schedule is not None) == (curve.kind == SCHEDULE)
        last = int(curve.steps[-1])
        for event in curve.labels:
            assert event.kind == curve.kind
            assert event.onset_step >= curve.steps[0] + 500
            if event.kind != DIVERGENCE:
                assert 0.15 <= event.height <= 1.5
            if event.kind == FAST_RECOVERING:
                assert event.back_within() <= 100  # well inside fast_recovery_steps (150)
            elif event.kind == SLOW_RECOVERING:
                assert 300 <= event.back_within() <= 1500 and event.peak_step + event.recovery_steps < last
            elif event.kind == NOT_RECOVERING:
                assert event.onset_step + 2500 <= last and event.level_shift >= 0.08
        onsets = [e.onset_step for e in curve.labels]
        assert np.all(np.diff(onsets) >= 400)
        for outlier in curve.outliers:  # away from the events
            assert all(abs(outlier.onset_step - e.onset_step) >= 50 for e in curve.labels)


def test_sparse_curves_are_paced_per_point():
    curves = random_labeled_suite(12, seed=1, sampling='sparse')
    for curve in curves:
        assert curve.interval in (10, 20, 50) and len(curve.steps) == 1500
        assert np.all(np.diff(curve.steps) == curve.interval)
        assert all(e.onset_step % curve.interval == 0 for e in curve.events)
        assert curve.loss.max() < 10 * curve.loss.min()  # climbs stay sane over the long span
    assert {c.interval for c in curves if c.kind == FAST_RECOVERING} == {10}
    assert len(benchmark_suite(0, curves_per_cell=6)) == 6 * len(NOISE_FAMILIES) * 2


def test_random_suite_is_reproducible():
    first, second, other = (random_labeled_suite(5, seed=s) for s in (3, 3, 4))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.loss, b.loss)
        assert a.events == b.events
    assert not np.array_equal(first[1].loss, other[1].loss)
