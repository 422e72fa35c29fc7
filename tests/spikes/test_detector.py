"""Tests for the online loss-spike detector and the benchmark scoring around it."""

import json
import logging
import math

import numpy as np
import pytest

from foundry_ext.spikes.detector import (BATCH_OUTLIER, DIVERGENCE, EVENT_KINDS, FAST_RECOVERING, NOT_RECOVERING,
                                         SLOW_RECOVERING, SPIKE, STATUS_OPEN, STATUS_RESOLVED, STATUS_TRUNCATED,
                                         LossEvent, SpikeDetector, TrendCurve)
from foundry_ext.spikes.evaluation import evaluate, format_markdown, kill_loss_spike_rule, olmo_sigma_rule
from foundry_ext.spikes.offline import detect_events, run_detector
from foundry_ext.spikes.synthetic import CurveBase, EventSpec, make_curve, random_labeled_suite

BASE = CurveBase(l_inf=2.0, amplitude=60.0, t0=1000.0, alpha=0.5)
# Curves are windows from the middle of a run unless a test needs the start of training.
START = 10_000


def _curve(events=(), n_steps=5000, noise=0.01, seed=0, start=START, autocorr=0.2):
    return make_curve(n_steps, events, noise, seed, autocorr=autocorr, base=BASE, start_step=start)


def _stream(detector, steps, losses):
    """Feeds a series one loss at a time and returns every event reported, open notifications included."""
    events = []
    for step, loss in zip(steps.tolist(), losses.tolist()):
        events.extend(detector.update(step, loss))
    return events


def _fed(detector, steps, losses):
    """Feeds a series in one call (vectorised); every event reported, open notifications included."""
    return [event for _, event in detector.feed(steps, losses)]


def _spikes(events):
    return [e for e in events if e.kind != BATCH_OUTLIER]


KIND_CASES = {
    FAST_RECOVERING:
        EventSpec(FAST_RECOVERING, START + 1500, height=0.4, rise_steps=2, recovery_steps=40),
    SLOW_RECOVERING:
        EventSpec(SLOW_RECOVERING, START + 1500, height=0.5, recovery_steps=800, recovery_curvature=0.8),
    NOT_RECOVERING:
        EventSpec(NOT_RECOVERING, START + 1500, height=0.6, recovery_steps=20, level_shift=0.2),
    DIVERGENCE:
        EventSpec(DIVERGENCE, START + 1500, drift=3e-4, ramp_steps=200),
}


@pytest.mark.parametrize('noise', [0.005, 0.02])
@pytest.mark.parametrize('seed', [0, 1])
@pytest.mark.parametrize('kind', EVENT_KINDS)
def test_each_kind_is_detected_and_classified(kind, seed, noise):
    spec = KIND_CASES[kind]
    steps, losses, _ = _curve([spec], noise=noise, seed=seed)

    events = _spikes(detect_events(steps, losses))

    assert [e.kind for e in events] == [kind]
    event = events[0]
    if kind == DIVERGENCE:
        # Only visible once the climb exceeds divergence_rise; the series ends while it still climbs.
        assert spec.onset_step - 300 <= event.onset_step <= spec.onset_step + 600
        assert spec.onset_step < event.detect_step < spec.onset_step + 1500
        assert event.status == STATUS_TRUNCATED
        assert event.height > 0.1
        return
    assert event.status == STATUS_RESOLVED
    assert abs(event.onset_step - spec.onset_step) <= 2
    assert event.detect_step == event.threshold_step + 2  # the third point above the threshold
    assert event.detect_step <= spec.peak_step + 5
    assert event.height == pytest.approx(spec.height, rel=0.25)
    if kind == FAST_RECOVERING:
        assert 0 < event.steps_to_recover <= 150
    elif kind == SLOW_RECOVERING:
        assert 150 < event.steps_to_recover <= spec.recovery_steps + 50
    else:
        assert event.recovered_step is None
        assert event.level_shift == pytest.approx(spec.level_shift, abs=0.05)


@pytest.mark.parametrize('noise', [0.005, 0.01, 0.02, 0.03])
@pytest.mark.parametrize('start', [0, START])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_no_events_on_clean_curves(noise, start, seed):
    steps, losses, _ = _curve(n_steps=8000, noise=noise, seed=seed, start=start)
    assert _spikes(detect_events(steps, losses)) == []


@pytest.mark.parametrize('noise', [0.005, 0.01, 0.03])
def test_sigma_tracks_the_noise(noise):
    steps, losses, _ = _curve(n_steps=3000, noise=noise, autocorr=0.0)
    detector = SpikeDetector()
    _fed(detector, steps, losses)
    assert detector.sigma == pytest.approx(noise, rel=0.15)


def test_downward_outliers_do_not_hide_spikes():
    # Unusually easy batches (loss -30%) are not spikes; winsorising keeps them from inflating the noise estimate.
    spec = EventSpec(FAST_RECOVERING, START + 3000, height=0.2, recovery_steps=20)
    steps, losses, _ = _curve([spec], n_steps=4000, noise=0.02, autocorr=0.0)
    losses[205::20] *= 0.7
    events = _spikes(detect_events(steps, losses))
    assert [(e.kind, e.onset_step) for e in events] == [(FAST_RECOVERING, spec.onset_step)]


def test_spikes_open_at_the_third_point_above_the_threshold():
    specs = [
        EventSpec(FAST_RECOVERING, START + 500 + 400 * i, height=height, rise_steps=rise, recovery_steps=30)
        for i, (height, rise) in enumerate([(0.3, 1), (0.3, 3), (1.0, 1), (1.0, 3)])
    ]
    steps, losses, _ = _curve(specs, n_steps=2500, noise=0.01)
    detector = SpikeDetector()
    opened, above = [], []
    for step, loss in zip(steps.tolist(), losses.tolist()):
        if loss > detector.spike_threshold(step) and detector._spike is None:
            above.append(step)
        opened += [e for e in detector.update(step, loss) if e.status == STATUS_OPEN]

    assert [e.kind for e in opened] == [SPIKE] * len(specs)
    for event, spec in zip(opened, specs):
        crossing = min(s for s in above if s >= spec.onset_step)
        assert event.threshold_step == crossing and event.detect_step == crossing + 2
        assert {crossing, crossing + 1, crossing + 2} <= set(above)
        assert spec.onset_step <= event.threshold_step <= spec.peak_step + 2


@pytest.mark.parametrize('points', [1, 2])
def test_one_or_two_bad_batches_are_outliers_not_spikes(points):
    steps, losses, _ = _curve(n_steps=3000, noise=0.01)
    for at in (1000, 1700, 2400):
        losses[at:at + points] *= 1.6
    events = detect_events(steps, losses)
    assert [e.kind for e in events] == [BATCH_OUTLIER] * 3
    for event, at in zip(events, (1000, 1700, 2400)):
        first = int(steps[at])
        assert event.above_steps == list(range(first, first + points))
        assert event.onset_step == event.threshold_step == first and event.recovered_step == first + points
        assert event.detect_step == first + points and event.steps_to_recover == points
        assert event.height == pytest.approx(0.6, abs=0.05) and abs(event.level_shift) < 0.05


def test_three_bad_batches_are_a_spike():
    steps, losses, _ = _curve(n_steps=3000, noise=0.01)
    losses[1000:1003] *= 1.6
    [event] = detect_events(steps, losses)
    assert event.kind == FAST_RECOVERING and event.onset_step == int(steps[1000])
    assert event.detect_step == int(steps[1002])


def test_an_outlier_does_not_move_the_trend_or_the_noise():
    steps, losses, _ = _curve(n_steps=2000, noise=0.01, autocorr=0.0)
    clean, spiky = SpikeDetector(), SpikeDetector()
    clean.feed(steps, losses)
    losses[1500] *= 3.0
    spiky.feed(steps, losses)
    assert spiky.sigma == pytest.approx(clean.sigma, rel=0.02)
    assert spiky.trend_loss(int(steps[-1]) + 1) == pytest.approx(clean.trend_loss(int(steps[-1]) + 1), rel=2e-3)


@pytest.mark.parametrize('cut_offset', [50, 820, 1900, 3001, 4500])
def test_resume_from_json_state_matches_uninterrupted_stream(cut_offset):
    specs = [
        EventSpec(FAST_RECOVERING, START + 800, height=0.5, recovery_steps=30),
        EventSpec(SLOW_RECOVERING, START + 1500, height=0.6, recovery_steps=900, recovery_curvature=0.7),
        EventSpec(DIVERGENCE, START + 3600, drift=3e-4),
    ]
    steps, losses, _ = _curve(specs, n_steps=6000, noise=0.015)
    losses[3000] = np.nan
    cut = cut_offset + 1

    losses[cut - 2:cut] *= 1.8  # the checkpoint falls inside a run of points above the threshold
    uninterrupted = SpikeDetector()
    expected = _fed(uninterrupted, steps, losses) + uninterrupted.finalize(int(steps[-1]))

    first = SpikeDetector()
    events = _fed(first, steps[:cut], losses[:cut])
    resumed = SpikeDetector()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict(), allow_nan=False)))
    events += _fed(resumed, steps[cut:], losses[cut:]) + resumed.finalize(int(steps[-1]))

    assert [e.to_dict() for e in events] == [e.to_dict() for e in expected]
    assert {e.kind for e in expected} >= {FAST_RECOVERING, SLOW_RECOVERING, DIVERGENCE}
    assert json.dumps(resumed.state_dict()) == json.dumps(uninterrupted.state_dict())


def test_state_dict_is_json_and_bounded():
    steps, losses, _ = _curve(n_steps=30_000, noise=0.02, start=0)
    detector = SpikeDetector()
    sizes = []
    for chunk in np.array_split(np.arange(len(steps)), 6):
        _fed(detector, steps[chunk], losses[chunk])
        sizes.append(len(json.dumps(detector.state_dict(), allow_nan=False)))
    assert max(sizes) < 20_000
    assert max(sizes[1:]) < 1.1 * min(sizes[1:])


@pytest.mark.parametrize('bad_loss', [math.nan, math.inf, -math.inf])
def test_single_non_finite_loss_is_an_immediate_spike_that_recovers(bad_loss):
    steps, losses, _ = _curve(n_steps=3000, noise=0.01)
    losses[1000] = bad_loss
    bad_step = int(steps[1000])
    detector = SpikeDetector()

    opened = _stream(detector, steps[:1001], losses[:1001])
    assert [(e.kind, e.status, e.detect_step) for e in opened] == [(SPIKE, STATUS_OPEN, bad_step)]
    assert opened[0].peak_loss == math.inf and opened[0].height == math.inf
    json.dumps(detector.state_dict(), allow_nan=False)

    rest = _stream(detector, steps[1001:], losses[1001:]) + detector.finalize(int(steps[-1]))
    assert len(rest) == 1
    assert rest[0].kind == FAST_RECOVERING and rest[0].status == STATUS_RESOLVED
    assert rest[0].onset_step == bad_step and rest[0].steps_to_recover <= 15


def test_a_recovery_that_begins_just_inside_max_follow_steps_is_confirmed_not_cut_off():
    # Back at the trend 1988 steps after the onset: inside max_follow_steps (2000), although its confirmation
    # (recover_confirm points) ends past the limit.
    steps = np.arange(4000)
    loss = 3.0 * (steps + 10.0)**-0.1 * np.exp(np.random.default_rng(0).normal(0, 0.01, len(steps)))
    loss[1000:2988] *= 1.3
    [event] = detect_events(steps, loss)
    assert event.kind == SLOW_RECOVERING and 2970 <= event.recovered_step <= 3000


def test_persistent_nan_is_not_recovering():
    steps, losses, _ = _curve(n_steps=4000, noise=0.01)
    losses[1000:] = np.nan

    events = detect_events(steps, losses)

    assert events[0].detect_step == int(steps[1000])
    assert all(e.kind == NOT_RECOVERING and e.height == math.inf for e in events)


def test_keeps_detecting_after_many_windows():
    # LLM-Foundry's kill_loss_spike stops checking after its first window when window_size is set by the user.
    onsets = [5_000, 20_000, 39_000]
    specs = [EventSpec(FAST_RECOVERING, onset, height=0.3, recovery_steps=30) for onset in onsets]
    steps, losses, _ = _curve(specs, n_steps=40_000, noise=0.01, start=0)

    events = detect_events(steps, losses)

    assert [(e.kind, e.onset_step) for e in events] == [(FAST_RECOVERING, onset) for onset in onsets]


def test_finalize_never_calls_an_unrecovered_spike_recovering():
    # Cut mid-recovery, 700 steps in: the loss has come down, but not back within the tolerance.
    slow = EventSpec(SLOW_RECOVERING, START + 1000, height=0.6, recovery_steps=1200, recovery_curvature=0.5)
    shift = EventSpec(NOT_RECOVERING, START + 1000, height=0.5, recovery_steps=20, level_shift=0.25)
    for spec, n_steps in [(slow, 1700), (shift, 1400)]:
        steps, losses, _ = _curve([spec], n_steps=n_steps, noise=0.01)
        [event] = _spikes(detect_events(steps, losses))
        assert (event.kind, event.status, event.recovered_step) == (NOT_RECOVERING, STATUS_TRUNCATED, None)
        assert event.level_shift > 0.03
    # Cut after the recovery began but before it was confirmed: recovered, dated where it began.
    steps, losses, _ = _curve([slow], n_steps=2300, noise=0.01)
    full = _spikes(detect_events(steps, losses))[0]
    cut = int(np.searchsorted(steps, full.recovered_step)) + 8
    [event] = _spikes(detect_events(steps[:cut], losses[:cut]))
    assert (event.kind, event.status, event.recovered_step) == (SLOW_RECOVERING, STATUS_TRUNCATED, full.recovered_step)


def test_finalize_reports_a_pending_outlier():
    steps, losses, _ = _curve(n_steps=1000, noise=0.01)
    losses[-1] *= 2.0
    [event] = detect_events(steps, losses)
    assert (event.kind, event.status, event.above_steps) == (BATCH_OUTLIER, STATUS_TRUNCATED, [int(steps[-1])])


def test_detect_events_is_the_streaming_path():
    steps, losses, _ = _curve([KIND_CASES[FAST_RECOVERING], KIND_CASES[DIVERGENCE]], n_steps=3500, noise=0.01)
    losses[700] *= 1.7
    detector = SpikeDetector(z_threshold=5.0)
    streamed = [e for e in _stream(detector, steps, losses) if e.status != STATUS_OPEN]
    streamed += detector.finalize(int(steps[-1]))

    offline = detect_events(steps, losses, z_threshold=5.0)

    assert offline == streamed
    assert {e.kind for e in offline} == {BATCH_OUTLIER, FAST_RECOVERING, DIVERGENCE}


def test_run_detector_reports_where_each_event_closed_and_its_trend():
    spec = EventSpec(NOT_RECOVERING, START + 1000, height=0.5, recovery_steps=20, level_shift=0.25)
    fast = EventSpec(FAST_RECOVERING, START + 500, height=0.4, rise_steps=2, recovery_steps=40)
    steps, losses, _ = _curve([fast, spec], n_steps=1400, noise=0.01)
    curve = TrendCurve()
    closed = run_detector(SpikeDetector(), steps, losses, curve)
    trend_steps, trend, threshold = curve.arrays()
    assert trend_steps.tolist() == steps[100:].tolist()  # every point after the warmup, spikes included
    assert np.all(threshold > trend) and np.all(np.abs(np.log(trend / losses[100:]))[:300] < 0.05)
    (spike_at, spike), (shift_at, shift) = closed
    assert spike.kind == FAST_RECOVERING and spike.status == STATUS_RESOLVED
    assert spike.detect_step < spike_at < steps[-1]
    assert shift.status == STATUS_TRUNCATED and shift_at == steps[-1]  # closed by finalize at the last step
    assert [e for _, e in closed] == detect_events(steps, losses)


def test_ignores_repeated_steps_and_non_positive_losses(caplog):
    steps, losses, _ = _curve(n_steps=300)
    detector = SpikeDetector()
    _stream(detector, steps, losses)
    state = json.dumps(detector.state_dict())

    with caplog.at_level(logging.WARNING):
        assert detector.update(int(steps[-1]), 100.0) == []
        assert detector.update(int(steps[-1]) + 1, 0.0) == []

    assert json.dumps(detector.state_dict()) == state
    assert len(caplog.records) == 2


def test_load_state_dict_checks_version_and_config(caplog):
    detector = SpikeDetector()
    state = detector.state_dict()
    with caplog.at_level(logging.WARNING):
        SpikeDetector(z_threshold=6.0).load_state_dict(state)
    assert 'config' in caplog.text
    with pytest.raises(ValueError, match='version'):
        SpikeDetector().load_state_dict({**state, 'version': 0})


def test_a_version_1_state_is_rebuilt_from_its_history(caplog):
    steps, losses, _ = _curve(n_steps=1500, noise=0.01)
    history = [[int(s), float(np.log(v))] for s, v in zip(steps[-100:], losses[-100:])]
    old = {'version': 1, 'config': SpikeDetector().config, 'history': history, 'last_step': int(steps[-1]),
           'spike': {'onset_step': 1400}, 'divergence': None}
    detector = SpikeDetector()
    with caplog.at_level(logging.WARNING):
        detector.load_state_dict(old)
    assert 'version 1 had an event open' in caplog.text and not detector.has_open_event
    assert detector.fitted and detector.last_step == int(steps[-1])
    assert detector.trend_loss(int(steps[-1])) == pytest.approx(losses[-50:].mean(), rel=0.02)
    more_steps, more, _ = _curve(n_steps=500, noise=0.01, start=int(steps[-1]) + 1)
    assert _spikes(detect_events(more_steps, more)) == [] and _spikes(_fed(detector, more_steps, more)) == []


# Benchmark scoring (spike_evaluation).


def test_kill_loss_spike_rule_needs_five_consecutive_doublings():
    steps = np.arange(400)
    losses = np.ones(400)
    losses[200:204] = 2.5  # Four outliers: below the patience.
    losses[300:305] = 2.5
    events = kill_loss_spike_rule(steps, losses)
    assert [(e.threshold_step, e.detect_step) for e in events] == [(300, 304)]


def test_olmo_sigma_rule_flags_six_sigma_jumps():
    steps = np.arange(400)
    losses = 2.0 + 0.01 * np.random.default_rng(0).standard_normal(400)
    losses[300] += 0.1  # 10 sigma.
    assert [e.detect_step for e in olmo_sigma_rule(steps, losses)] == [300]


def test_evaluate_scores_perfect_and_empty_detectors():
    curves = random_labeled_suite(10, seed=3)

    def oracle(steps, losses):
        curve = next(c for c in curves if c.steps is steps)
        return [
            LossEvent(e.kind, STATUS_RESOLVED, e.onset_step, e.peak_step, 0.0, 0.0, 0.0, e.onset_step, e.onset_step)
            for e in curve.events
        ]

    perfect = evaluate('oracle', oracle, curves)
    empty = evaluate('empty', lambda steps, losses: [], curves)

    assert perfect.accuracy() == 1.0 and perfect.false_alarms_per_10k == 0.0
    assert all(perfect.labels[kind] > 0 for kind in EVENT_KINDS)
    assert empty.accuracy() == 0.0 and empty.detection_rate() == 0.0
    assert perfect.outliers > 0 and perfect.outliers_found == perfect.outliers and perfect.outliers_as_spikes == 0
    assert empty.outliers_found == 0

    def outliers_as_spikes(steps, losses):
        return [LossEvent(SPIKE, STATUS_OPEN, e.onset_step, e.onset_step, 0.0, 0.0, 0.0, e.onset_step, e.onset_step)
                for e in next(c for c in curves if c.steps is steps).outliers]

    assert evaluate('bad', outliers_as_spikes, curves).outliers_as_spikes == perfect.outliers
    table = format_markdown([perfect, empty])
    assert table.count('\n') == 3 and '| oracle | 100.0% (100.0%)' in table
