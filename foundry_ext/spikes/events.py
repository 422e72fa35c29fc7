"""Loss-event kinds, statuses and the :class:`LossEvent` record shared by the online and offline detectors.

Event kinds (after BLOOM, IDEFICS and the pre-BLOOM 104B runs), plus single-batch outliers:

* ``fast_recovering``: a spike after which the loss is back at the pre-spike level within
  ``fast_recovery_steps`` steps of the onset.
* ``slow_recovering``: a spike that returns to the pre-spike level, but only after more than
  ``fast_recovery_steps`` steps (and within ``max_follow_steps``).
* ``not_recovering``: a spike after which the loss does not return to the pre-spike level within
  ``max_follow_steps`` steps of the onset (a new, higher level, or a climb).
* ``divergence``: no spike, but the smoothed loss climbs steadily by more than ``divergence_rise`` above its
  lowest point.
* ``batch_outlier``: at most two consecutive points above the spike threshold, and the next point back under
  it: one bad batch (or two), not an optimisation event. Counted apart from the spikes, never a reason to stop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import numpy as np

__all__ = [
    'BATCH_OUTLIER',
    'DIVERGENCE',
    'EVENT_KINDS',
    'FAST_RECOVERING',
    'LossEvent',
    'NOT_RECOVERING',
    'RECOVERING_KINDS',
    'SLOW_RECOVERING',
    'SPIKE',
    'STATUS_OPEN',
    'STATUS_RESOLVED',
    'STATUS_TRUNCATED',
    'TrendCurve',
    'event_of',
    'outlier_event',
]

FAST_RECOVERING = 'fast_recovering'
SLOW_RECOVERING = 'slow_recovering'
NOT_RECOVERING = 'not_recovering'
DIVERGENCE = 'divergence'
# The optimisation events: spikes by how they end, and divergences.
EVENT_KINDS = (FAST_RECOVERING, SLOW_RECOVERING, NOT_RECOVERING, DIVERGENCE)
RECOVERING_KINDS = (FAST_RECOVERING, SLOW_RECOVERING)
# Kind of a spike event while it is still open, i.e. before it is classified.
SPIKE = 'spike'
BATCH_OUTLIER = 'batch_outlier'

STATUS_OPEN = 'open'
STATUS_RESOLVED = 'resolved'
# Closed by ``finalize`` before the evidence for its kind was complete.
STATUS_TRUNCATED = 'truncated'


@dataclass
class LossEvent:
    """A loss event: a spike or divergence (reported when it opens and again when it is classified), or a batch
    outlier (reported once, when the loss is back under the threshold).

    Args:
        kind (str): One of :data:`EVENT_KINDS`, ``'spike'`` for a spike that is still open, or ``'batch_outlier'``.
        status (str): ``'open'`` (reported at detection), ``'resolved'`` (classified with full evidence) or
            ``'truncated'`` (closed by ``finalize`` at the end of a series while still open).
        onset_step (int): First step of the event (the first step of the rise for spikes; for divergences the
            last step at which the smoothed loss was still within noise of its minimum).
        peak_step (int): Step of the highest loss seen so far in the event.
        peak_loss (float): Highest loss seen so far (the smoothed loss for divergences); ``inf`` for
            non-finite losses.
        baseline_loss (float): Pre-event level: the trend prediction at the threshold step for spikes and
            outliers, the smoothed-loss minimum for divergences.
        height (float): Relative height, ``peak_loss / baseline_loss - 1``.
        threshold_step (int): Step at which the loss first crossed the threshold.
        detect_step (int): Step at which the event was reported: a spike opens at its third consecutive point
            above the threshold (or at a non-finite loss), an outlier is reported at the first point back under.
        recovered_step (int, optional): Step at which the loss was back at the baseline, if it was (for an
            outlier, the first point back under the threshold).
        steps_to_recover (int, optional): ``recovered_step - onset_step``.
        level_shift (float, optional): Relative level of the loss at classification versus the pre-event trend
            extrapolated to that step (for divergences, versus the smoothed-loss minimum).
        above_steps (list[int], optional): Outliers only: the steps of the points above the threshold (one or
            two), i.e. the batches to look at.
    """

    kind: str
    status: str
    onset_step: int
    peak_step: int
    peak_loss: float
    baseline_loss: float
    height: float
    threshold_step: int
    detect_step: int
    recovered_step: Optional[int] = None
    steps_to_recover: Optional[int] = None
    level_shift: Optional[float] = None
    above_steps: Optional[list[int]] = None

    def to_dict(self) -> dict[str, Any]:
        """Returns the event as a flat dict (floats may be ``inf`` for non-finite losses)."""
        return asdict(self)


def event_of(kind: str, status: str, record: dict[str, Any], detect_step: int) -> LossEvent:
    """The event of an open spike or divergence record (log-space ``peak_y`` and ``baseline_y``), as of now."""
    # A non-finite loss is infinitely high even when there is no baseline yet (NaN at the first steps).
    height = math.inf if record['peak_y'] == math.inf else math.expm1(record['peak_y'] - record['baseline_y'])
    return LossEvent(
        kind=kind,
        status=status,
        onset_step=record['onset_step'],
        peak_step=record['peak_step'],
        peak_loss=math.exp(record['peak_y']),
        baseline_loss=math.exp(record['baseline_y']),
        height=height,
        threshold_step=record['threshold_step'],
        detect_step=detect_step,
    )


def outlier_event(run: Sequence[tuple[int, float, float, float, float]], status: str,
                  back: Optional[tuple[int, float]] = None) -> LossEvent:
    """The ``batch_outlier`` of a run of one or two points above the threshold.

    Args:
        run (Sequence[tuple]): The points above the threshold: ``(step, log-loss, residual, prediction, sigma)``.
        status (str): ``'resolved'``, or ``'truncated'`` at the end of a series.
        back (tuple[int, float], optional): The point back under the threshold: its step and residual.
    """
    first = run[0]
    peak = max(run, key=lambda p: p[1])
    event = LossEvent(kind=BATCH_OUTLIER, status=status, onset_step=first[0], peak_step=peak[0],
                      peak_loss=math.exp(peak[1]), baseline_loss=math.exp(first[3]),
                      height=math.expm1(peak[1] - first[3]), threshold_step=first[0], detect_step=run[-1][0],
                      above_steps=[p[0] for p in run])
    if back is not None:
        event.detect_step = event.recovered_step = back[0]
        event.steps_to_recover = event.recovered_step - event.onset_step
        event.level_shift = math.expm1(back[1])
    return event


class TrendCurve:
    """The detector's trend and spike threshold (log-loss) at each point after the warmup, for plots."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, steps: np.ndarray, trend: np.ndarray, threshold: np.ndarray) -> None:
        self.parts.append((steps, trend, threshold))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Steps, trend loss and threshold loss."""
        if not self.parts:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        steps, trend, threshold = (np.concatenate(p) for p in zip(*self.parts))
        return steps, np.exp(trend), np.exp(threshold)
