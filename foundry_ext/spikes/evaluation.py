"""Scores loss-event detectors on labelled synthetic curves.

A detector is any callable ``(steps, losses) -> list[LossEvent]``. :func:`evaluate` matches its events to the
ground truth of a :func:`~foundry_ext.spikes.synthetic.random_labeled_suite` and reports, per event
kind, how often an event was opened near the true onset (*detected*) and how often that event also had the
right kind (*classified*), plus false alarms on clean curves and detection latencies.

For comparison this module also re-implements, as plain rules over a whole series, the spike criteria of two
reference trainers. They are re-implementations for benchmarking only, not the original code:

* :func:`kill_loss_spike_rule`: LLM-Foundry ``kill_loss_spike`` - a loss at least ``2x`` the mean of the
  previous 100 losses for 5 consecutive steps (without the callback's window bugs).
* :func:`olmo_sigma_rule`: OLMo-core style - a loss more than 6 standard deviations above the mean of the
  previous 128 losses.

Neither rule classifies, so only their detection rates are comparable with the classification accuracy of
:class:`~foundry_ext.spikes.detector.SpikeDetector`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from foundry_ext.spikes.detector import DIVERGENCE, EVENT_KINDS, SPIKE, STATUS_OPEN, LossEvent, detect_events
from foundry_ext.spikes.synthetic import CLEAN, LabeledCurve

log = logging.getLogger(__name__)

__all__ = [
    'DetectorReport',
    'EventDetector',
    'HELD_OUT_SEED',
    'TUNING_SEED',
    'evaluate',
    'format_markdown',
    'kill_loss_spike_rule',
    'olmo_sigma_rule',
    'spike_detector',
]

EventDetector = Callable[[np.ndarray, np.ndarray], list[LossEvent]]

# SpikeDetector's defaults were tuned on the suite drawn with TUNING_SEED; report on HELD_OUT_SEED.
TUNING_SEED = 0
HELD_OUT_SEED = 1
# A true event counts as found if an event opens from EARLY_TOLERANCE steps before its onset to
# SPIKE_LATE_TOLERANCE (spikes) or DIVERGENCE_LATE_TOLERANCE (divergences) steps after it.
EARLY_TOLERANCE = 2
SPIKE_LATE_TOLERANCE = 10
# A divergence can only be seen once the climb exceeds the detector's threshold, i.e. hundreds of steps late.
DIVERGENCE_LATE_TOLERANCE = 3000


@dataclass
class DetectorReport:
    """Scores of one detector over a labelled suite.

    Args:
        name (str): Detector name.
        classifies (bool): Whether the detector assigns event kinds (the reference rules do not).
        labels (dict[str, int]): Number of true events per kind.
        detected (dict[str, int]): True events with some event opened within tolerance of their onset.
        correct (dict[str, int]): True events with an event of the right kind opened within tolerance.
        clean_events (int): Events on clean curves (false alarms).
        clean_steps (int): Steps of all clean curves.
        spurious_events (int): Events on curves with events that matched no true event.
        event_curve_steps (int): Steps of all curves with events.
        threshold_latency (list[int]): ``detect_step - threshold_step`` of the matched events.
        spike_onset_latency (list[int]): ``detect_step - true onset`` of the matched spikes.
        divergence_onset_latency (list[int]): ``detect_step - true onset`` of the matched divergences.
        seconds (float): Wall time of the detector over the suite.
    """

    name: str
    classifies: bool
    labels: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_KINDS, 0))
    detected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_KINDS, 0))
    correct: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_KINDS, 0))
    clean_events: int = 0
    clean_steps: int = 0
    spurious_events: int = 0
    event_curve_steps: int = 0
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
        """Events per 10,000 steps of clean curves."""
        return 1e4 * _ratio(self.clean_events, self.clean_steps)

    @property
    def spurious_per_10k(self) -> float:
        """Unmatched events per 10,000 steps of curves with events."""
        return 1e4 * _ratio(self.spurious_events, self.event_curve_steps)


def spike_detector(**detector_kwargs: Any) -> EventDetector:
    """Wraps :func:`~foundry_ext.spikes.detector.detect_events` as an :data:`EventDetector`."""

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

    A true event is *detected* if an event (of any kind) was opened within ``[onset - 2, onset + 10]`` steps for
    a spike, or ``[onset - 2, onset + 3000]`` for a divergence, and *classified* if such an event also has the
    true kind. Each event matches at most one true event.

    Args:
        name (str): Name of the detector in the report.
        detector (EventDetector): The detector.
        curves (Sequence[LabeledCurve]): The labelled suite.
        classifies (bool): Whether the detector assigns kinds.

    Returns:
        DetectorReport: The scores.
    """
    report = DetectorReport(name, classifies)
    start = time.perf_counter()
    for curve in curves:
        events = detector(curve.steps, curve.loss)
        if curve.kind == CLEAN:
            report.clean_events += len(events)
            report.clean_steps += len(curve.steps)
            continue
        report.event_curve_steps += len(curve.steps)
        unmatched = sorted(events, key=lambda e: e.detect_step)
        for label in curve.events:
            report.labels[label.kind] += 1
            late = DIVERGENCE_LATE_TOLERANCE if label.kind == DIVERGENCE else SPIKE_LATE_TOLERANCE
            near = [
                e for e in unmatched if -EARLY_TOLERANCE <= e.detect_step - label.onset_step <= late
            ]
            if not near:
                continue
            right_kind = [e for e in near if e.kind == label.kind]
            match = (right_kind or near)[0]
            unmatched.remove(match)
            report.detected[label.kind] += 1
            report.correct[label.kind] += bool(right_kind)
            report.threshold_latency.append(match.detect_step - match.threshold_step)
            latencies = report.divergence_onset_latency if label.kind == DIVERGENCE else report.spike_onset_latency
            latencies.append(match.detect_step - label.onset_step)
        report.spurious_events += len(unmatched)
    report.seconds = time.perf_counter() - start
    log.info('%s: %.1f%% classified, %.1f%% detected in %.1fs.', name, 100 * report.accuracy(),
             100 * report.detection_rate(), report.seconds)
    return report


def format_markdown(reports: Sequence[DetectorReport]) -> str:
    """Formats reports as a markdown table: per-kind accuracy (detection rate), false alarms, latencies."""
    header = [
        'Detector', *EVENT_KINDS, 'Overall', 'False alarms / 10k clean steps', 'Spurious / 10k event-curve steps',
        'Latency after threshold', 'Spike latency after onset', 'Divergence latency after onset', 'Time'
    ]
    rows = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in reports:
        cells = [r.name]
        for kind in (*EVENT_KINDS, None):
            accuracy = f'{100 * r.accuracy(kind):.1f}%' if r.classifies else 'n/a'
            cells.append(f'{accuracy} ({100 * r.detection_rate(kind):.1f}%)')
        cells += [
            f'{r.false_alarms_per_10k:.2f}',
            f'{r.spurious_per_10k:.2f}',
            _latency(r.threshold_latency),
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
