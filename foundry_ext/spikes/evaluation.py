"""Scores loss-event detectors on labelled synthetic curves.

A detector is any callable ``(steps, losses) -> list[LossEvent]``. :func:`evaluate` matches its events to the
ground truth of labelled curves (:mod:`foundry_ext.spikes.synthetic`) and reports, per event kind, how often an
event was opened near the true onset (*detected*) and how often that event also had the right kind
(*classified*); the non-outlier events on curves without events (false alarms, apart for curves with a
learning-rate schedule's level changes); what became of the injected batch outliers (reported as outliers, or
as spikes, which they must never be) and how many outliers the noise alone produced; and detection latencies.

For comparison this module also re-implements, as plain rules over a whole series, the spike criteria of two
reference trainers. They are re-implementations for benchmarking only, not the original code:

* :func:`kill_loss_spike_rule`: LLM-Foundry ``kill_loss_spike`` - a loss at least ``2x`` the mean of the
  previous 100 losses for 5 consecutive steps (without the callback's window bugs).
* :func:`olmo_sigma_rule`: OLMo-core style - a loss more than 6 standard deviations above the mean of the
  previous 128 losses.

Neither rule classifies nor knows outliers, so only their detection rates are comparable with the classification
accuracy of :class:`~foundry_ext.spikes.detector.SpikeDetector`, and every event they report counts as a spike.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from foundry_ext.spikes.events import (BATCH_OUTLIER, DIVERGENCE, EVENT_KINDS, NOT_RECOVERING, SPIKE, STATUS_OPEN,
                                       LossEvent)
from foundry_ext.spikes.offline import detect_events
from foundry_ext.spikes.synthetic import CLEAN, SCHEDULE, LabeledCurve

log = logging.getLogger(__name__)

__all__ = [
    'DetectorReport',
    'EventDetector',
    'REPORT_SEEDS',
    'RealCurveReport',
    'TUNING_SEEDS',
    'evaluate',
    'evaluate_real',
    'format_markdown',
    'format_real_markdown',
    'kill_loss_spike_rule',
    'olmo_sigma_rule',
    'spike_detector',
]

EventDetector = Callable[[np.ndarray, np.ndarray], list[LossEvent]]

# SpikeDetector's defaults were tuned on suites drawn with TUNING_SEEDS; results are reported on REPORT_SEEDS.
TUNING_SEEDS = (0, 10)
REPORT_SEEDS = (1, 2)
# A true event counts as found if an event opens from EARLY_TOLERANCE points before its onset to
# SPIKE_LATE_TOLERANCE points (spikes) or DIVERGENCE_LATE_TOLERANCE points (divergences) after it.
EARLY_TOLERANCE = 2
SPIKE_LATE_TOLERANCE = 10
# A divergence can only be seen once the climb exceeds the detector's threshold, i.e. hundreds of steps late.
DIVERGENCE_LATE_TOLERANCE = 3000


@dataclass
class DetectorReport:
    """Scores of one detector over labelled curves.

    Args:
        name (str): Detector name.
        classifies (bool): Whether the detector assigns event kinds (the reference rules do not).
        labels (dict[str, int]): Number of true events per kind.
        detected (dict[str, int]): True events with some event opened within tolerance of their onset.
        correct (dict[str, int]): True events with an event of the right kind opened within tolerance.
        clean_events (int): Non-outlier events on clean curves (false alarms).
        clean_points (int): Points of all clean curves.
        schedule_events (int): Non-outlier events on curves whose only level changes are a schedule's.
        schedule_points (int): Points of those curves.
        spurious_events (int): Non-outlier events on curves with events that matched no true event (the climb
            after a ``not_recovering`` spike whose level keeps drifting up is not counted: it is one).
        event_curve_points (int): Points of all curves with events.
        outliers (int): Injected batch outliers.
        outliers_found (int): Injected outliers reported as ``batch_outlier`` at their step.
        outliers_as_spikes (int): Injected outliers that opened a non-outlier event.
        noise_outliers (int): ``batch_outlier`` events at no injected outlier (heavy-tailed noise makes them).
        points (int): Points of all curves.
        threshold_latency (list[int]): ``detect_step - threshold_step`` of the matched events.
        spike_onset_latency (list[int]): ``detect_step - true onset`` of the matched spikes.
        divergence_onset_latency (list[int]): ``detect_step - true onset`` of the matched divergences.
        seconds (float): Wall time of the detector over the curves.
    """

    name: str
    classifies: bool
    labels: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_KINDS, 0))
    detected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_KINDS, 0))
    correct: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_KINDS, 0))
    clean_events: int = 0
    clean_points: int = 0
    schedule_events: int = 0
    schedule_points: int = 0
    spurious_events: int = 0
    event_curve_points: int = 0
    outliers: int = 0
    outliers_found: int = 0
    outliers_as_spikes: int = 0
    noise_outliers: int = 0
    points: int = 0
    threshold_latency: list[int] = field(default_factory=list)
    spike_onset_latency: list[int] = field(default_factory=list)
    divergence_onset_latency: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def accuracy(self, kind: Optional[str] = None) -> float:
        """Fraction of true events (of ``kind``, or of all kinds) classified correctly."""
        kinds = EVENT_KINDS if kind is None else (kind,)
        return _ratio(sum(self.correct[k] for k in kinds), sum(self.labels[k] for k in kinds))

    def detection_rate(self, kind: Optional[str] = None) -> float:
        """Fraction of true events (of ``kind``, or of all kinds) with an event opened near their onset."""
        kinds = EVENT_KINDS if kind is None else (kind,)
        return _ratio(sum(self.detected[k] for k in kinds), sum(self.labels[k] for k in kinds))

    @property
    def false_alarms_per_10k(self) -> float:
        """Non-outlier events per 10,000 points of clean curves."""
        return 1e4 * _ratio(self.clean_events, self.clean_points)

    @property
    def schedule_alarms_per_10k(self) -> float:
        """Non-outlier events per 10,000 points of curves with a schedule's level changes only."""
        return 1e4 * _ratio(self.schedule_events, self.schedule_points)

    @property
    def spurious_per_10k(self) -> float:
        """Unmatched non-outlier events per 10,000 points of curves with events."""
        return 1e4 * _ratio(self.spurious_events, self.event_curve_points)

    @property
    def noise_outliers_per_10k(self) -> float:
        """Outlier events at no injected outlier, per 10,000 points."""
        return 1e4 * _ratio(self.noise_outliers, self.points)

    def __add__(self, other: 'DetectorReport') -> 'DetectorReport':
        """The scores of both reports' curves together."""
        merged = DetectorReport(self.name, self.classifies)
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, dict):
                setattr(merged, f.name, {k: a[k] + b[k] for k in a})
            elif f.name not in ('name', 'classifies'):
                setattr(merged, f.name, a + b)
        return merged


def spike_detector(**detector_kwargs: Any) -> EventDetector:
    """Wraps :func:`~foundry_ext.spikes.offline.detect_events` as an :data:`EventDetector`."""

    def run(steps: np.ndarray, losses: np.ndarray) -> list[LossEvent]:
        return detect_events(steps, losses, **detector_kwargs)

    return run


def kill_loss_spike_rule(steps: np.ndarray,
                         losses: np.ndarray,
                         window: int = 100,
                         multiplier: float = 2.0,
                         patience: int = 4) -> list[LossEvent]:
    """Re-implementation of LLM-Foundry ``kill_loss_spike``'s spike rule, for comparison.

    A step is an outlier if its loss is at least ``multiplier`` times the mean of the previous ``window``
    losses; the rule fires on the ``patience + 1``-th consecutive outlier. Unlike the callback, the window
    keeps rolling for the whole series.

    Args:
        steps (np.ndarray): Training steps.
        losses (np.ndarray): Loss at each step.
        window (int): Number of previous losses averaged.
        multiplier (float): Outlier factor over the window mean.
        patience (int): Consecutive outliers tolerated before the rule fires.

    Returns:
        list[LossEvent]: Unclassified events (kind ``'spike'``): the threshold step is the first outlier of
        the run, the detect step the one where the rule fires.
    """
    losses = np.asarray(losses, dtype=np.float64)
    reference = _previous_window(losses, window, np.mean)
    outlier = losses >= multiplier * reference
    # Length of the run of consecutive outliers ending at each step.
    run = np.zeros(len(losses), dtype=np.int64)
    for i in np.flatnonzero(outlier).tolist():
        run[i] = run[i - 1] + 1 if i > 0 else 1
    fires = np.flatnonzero(run == patience + 1)
    return _rule_events(steps, losses, reference, fires - patience, fires, window)


def olmo_sigma_rule(steps: np.ndarray,
                    losses: np.ndarray,
                    window: int = 128,
                    sigmas: float = 6.0) -> list[LossEvent]:
    """Re-implementation of an OLMo-core style spike rule, for comparison.

    A step is a spike if its loss exceeds the mean of the previous ``window`` losses by more than ``sigmas``
    of their standard deviations.

    Args:
        steps (np.ndarray): Training steps.
        losses (np.ndarray): Loss at each step.
        window (int): Number of previous losses.
        sigmas (float): Threshold in standard deviations.

    Returns:
        list[LossEvent]: Unclassified events (kind ``'spike'``) opened at the flagged step.
    """
    losses = np.asarray(losses, dtype=np.float64)
    mean = _previous_window(losses, window, np.mean)
    std = _previous_window(losses, window, np.std)
    flagged = np.flatnonzero(losses > mean + sigmas * std)
    return _rule_events(steps, losses, mean, flagged, flagged, window)


def evaluate(name: str,
             detector: EventDetector,
             curves: Sequence[LabeledCurve],
             classifies: bool = True) -> DetectorReport:
    """Runs ``detector`` over ``curves`` and scores its events against their labels.

    A true event is *detected* if a non-outlier event (of any kind) was opened within ``[onset - 2, onset + 10]``
    points for a spike, or ``[onset - 2, onset + 3000]`` points for a divergence, and *classified* if such
    an event also has the true kind. Each event matches at most one true event. An injected outlier is found if
    a ``batch_outlier`` event starts at its step, and counts as reported as a spike if a non-outlier event crosses
    the threshold within 2 points of it.

    Args:
        name (str): Name of the detector in the report.
        detector (EventDetector): The detector.
        curves (Sequence[LabeledCurve]): The labelled curves.
        classifies (bool): Whether the detector assigns kinds.

    Returns:
        DetectorReport: The scores.
    """
    report = DetectorReport(name, classifies)
    start = time.perf_counter()
    for curve in curves:
        _score(report, curve, detector(curve.steps, curve.loss))
    report.seconds = time.perf_counter() - start
    log.info('%s: %.1f%% classified, %.1f%% detected in %.1fs.', name, 100 * report.accuracy(),
             100 * report.detection_rate(), report.seconds)
    return report


def _score(report: DetectorReport, curve: LabeledCurve, events: list[LossEvent]) -> None:
    grid = curve.interval
    points = len(curve.steps)
    report.points += points
    outliers = [e for e in events if e.kind == BATCH_OUTLIER]
    others = sorted((e for e in events if e.kind != BATCH_OUTLIER), key=lambda e: e.detect_step)
    for injected in curve.outliers:
        report.outliers += 1
        found = [e for e in outliers if e.onset_step == injected.onset_step]
        if found:
            outliers.remove(found[0])
            report.outliers_found += 1
        report.outliers_as_spikes += any(abs(e.threshold_step - injected.onset_step) <= 2 * grid for e in others)
    report.noise_outliers += len(outliers)
    if curve.kind in (CLEAN, SCHEDULE):
        if curve.kind == CLEAN:
            report.clean_events += len(others)
            report.clean_points += points
        else:
            report.schedule_events += len(others)
            report.schedule_points += points
        return
    report.event_curve_points += points
    for label in curve.labels:
        report.labels[label.kind] += 1
        late = (DIVERGENCE_LATE_TOLERANCE if label.kind == DIVERGENCE else SPIKE_LATE_TOLERANCE) * grid
        near = [e for e in others if -EARLY_TOLERANCE * grid <= e.detect_step - label.onset_step <= late]
        if not near:
            continue
        right_kind = [e for e in near if e.kind == label.kind]
        match = (right_kind or near)[0]
        others.remove(match)
        report.detected[label.kind] += 1
        report.correct[label.kind] += bool(right_kind)
        report.threshold_latency.append(match.detect_step - match.threshold_step)
        latencies = report.divergence_onset_latency if label.kind == DIVERGENCE else report.spike_onset_latency
        latencies.append(match.detect_step - label.onset_step)
    # A spike that settles on a level that keeps climbing is followed by the climb's own events.
    climbs = [label.onset_step for label in curve.labels if label.kind == NOT_RECOVERING and label.drift > 0]
    report.spurious_events += sum(not any(e.onset_step > onset for onset in climbs) for e in others)


def format_markdown(reports: Sequence[DetectorReport], row_names: Optional[Sequence[str]] = None) -> str:
    """Formats reports as a markdown table: per-kind accuracy (detection rate), false alarms, outliers, latencies.

    Args:
        reports (Sequence[DetectorReport]): One row each.
        row_names (Sequence[str], optional): Row labels (default: the detector names).
    """
    header = [
        'Detector', *EVENT_KINDS, 'False alarms / 10k clean pts', 'On schedule curves / 10k pts',
        'Spurious / 10k event-curve pts', 'Outliers found', 'Outliers as spikes', 'Noise outliers / 10k pts',
        'Spike latency after onset', 'Divergence latency after onset', 'Time'
    ]
    rows = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r, label in zip(reports, row_names or [r.name for r in reports]):
        cells = [label]
        for kind in EVENT_KINDS:
            accuracy = f'{100 * r.accuracy(kind):.1f}%' if r.classifies else 'n/a'
            cells.append(f'{accuracy} ({100 * r.detection_rate(kind):.1f}%)' if r.labels[kind] else '-')
        cells += [
            f'{r.false_alarms_per_10k:.2f}',
            f'{r.schedule_alarms_per_10k:.2f}',
            f'{r.spurious_per_10k:.2f}',
            f'{r.outliers_found}/{r.outliers}',
            f'{r.outliers_as_spikes}',
            f'{r.noise_outliers_per_10k:.1f}',
            _latency(r.spike_onset_latency),
            _latency(r.divergence_onset_latency),
            f'{r.seconds:.1f}s',
        ]
        rows.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows)


def _previous_window(losses: np.ndarray, window: int, stat: Callable[..., np.ndarray]) -> np.ndarray:
    """``stat`` of the ``window`` losses before each step; NaN until a full window exists."""
    out = np.full(len(losses), np.nan)
    if len(losses) > window:
        out[window:] = stat(sliding_window_view(losses, window)[:-1], axis=1)
    return out


def _rule_events(steps: np.ndarray, losses: np.ndarray, reference: np.ndarray, threshold_idx: np.ndarray,
                 detect_idx: np.ndarray, window: int) -> list[LossEvent]:
    """Builds events of a reference rule; firings within ``window`` steps of the last one are the same event."""
    events: list[LossEvent] = []
    last_fire = -np.inf
    for first, fire in zip(threshold_idx.tolist(), detect_idx.tolist()):
        if fire - last_fire > window:
            peak = first + int(np.argmax(losses[first:fire + 1]))
            events.append(
                LossEvent(kind=SPIKE,
                          status=STATUS_OPEN,
                          onset_step=int(steps[first]),
                          peak_step=int(steps[peak]),
                          peak_loss=float(losses[peak]),
                          baseline_loss=float(reference[first]),
                          height=float(losses[peak] / reference[first] - 1.0),
                          threshold_step=int(steps[first]),
                          detect_step=int(steps[fire])))
        last_fire = fire
    return events


def _latency(values: Sequence[int]) -> str:
    if not values:
        return 'n/a'
    return f'{np.mean(values):.1f} / {np.median(values):.0f} / {np.max(values)}'


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float('nan')


@dataclass
class RealCurveReport:
    """What a detector reports on a set of real (unlabelled) loss curves.

    Args:
        name (str): Name of the set.
        steps (dict[str, int]): Steps spanned per run.
        points (dict[str, int]): Points per run.
        events (dict[str, list[LossEvent]]): Non-outlier events per run.
        outliers (dict[str, list[LossEvent]]): Batch outliers per run.
        seconds (float): Wall time of the detector over the set.
    """

    name: str
    steps: dict[str, int] = field(default_factory=dict)
    points: dict[str, int] = field(default_factory=dict)
    events: dict[str, list[LossEvent]] = field(default_factory=dict)
    outliers: dict[str, list[LossEvent]] = field(default_factory=dict)
    seconds: float = 0.0

    def per_10k_steps(self, kind: str) -> float:
        """Events of ``kind`` (or ``'batch_outlier'``) per 10,000 steps over all runs."""
        found = self.outliers if kind == BATCH_OUTLIER else self.events
        count = sum(e.kind == kind for events in found.values() for e in events)
        return 1e4 * _ratio(count, sum(self.steps.values()))

    def shared_outliers(self, minimum: float = 0.2) -> list[tuple[str, str, int, int]]:
        """Pairs of runs whose outliers fall at the same steps (a shared data order): ``(run, run, shared, fewer)``
        for pairs sharing at least ``minimum`` of the smaller set."""
        at = {run: {e.onset_step for e in events} for run, events in self.outliers.items()}
        runs = sorted(at)
        pairs = []
        for i, a in enumerate(runs):
            for b in runs[i + 1:]:
                shared, fewer = len(at[a] & at[b]), min(len(at[a]), len(at[b]))
                if fewer and shared >= minimum * fewer:
                    pairs.append((a, b, shared, fewer))
        return pairs


def evaluate_real(name: str, series: dict[str, tuple[np.ndarray, np.ndarray]],
                  **detector_kwargs: Any) -> RealCurveReport:
    """Runs :func:`~foundry_ext.spikes.offline.detect_events` over named real series (``{run: (steps, losses)}``)."""
    report = RealCurveReport(name)
    start = time.perf_counter()
    for run, (steps, losses) in series.items():
        events = detect_events(steps, losses, **detector_kwargs)
        report.steps[run] = int(steps[-1] - steps[0]) + 1 if len(steps) else 0
        report.points[run] = len(steps)
        report.events[run] = [e for e in events if e.kind != BATCH_OUTLIER]
        report.outliers[run] = [e for e in events if e.kind == BATCH_OUTLIER]
    report.seconds = time.perf_counter() - start
    return report


def format_real_markdown(reports: Sequence[RealCurveReport]) -> str:
    """A markdown table: per set of real curves, the events per 10k steps by kind and the outliers."""
    header = ['Curves', 'Runs', 'Points', 'Steps', *(f'{k} / 10k steps' for k in EVENT_KINDS),
              'Non-outlier events / 10k steps', 'Batch outliers / 10k steps', 'Time']
    rows = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in reports:
        steps = sum(r.steps.values())
        events = sum(len(v) for v in r.events.values())
        rows.append('| ' + ' | '.join([
            r.name, str(len(r.steps)), f'{sum(r.points.values()):,}', f'{steps:,}',
            *(f'{r.per_10k_steps(k):.2f}' for k in EVENT_KINDS), f'{1e4 * _ratio(events, steps):.2f}',
            f'{r.per_10k_steps(BATCH_OUTLIER):.1f}', f'{r.seconds:.1f}s'
        ]) + ' |')
    return '\n'.join(rows)
