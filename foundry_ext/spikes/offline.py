"""Loss events of a whole series at once: the offline use of :class:`~foundry_ext.spikes.detector.SpikeDetector`
(``analyze-loss``, the benchmarks), on the same code path as the training callback."""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

from foundry_ext.core.errors import ConfigError
from foundry_ext.spikes.detector import SpikeDetector
from foundry_ext.spikes.events import STATUS_OPEN, LossEvent, TrendCurve

log = logging.getLogger(__name__)

__all__ = ['detect_events', 'run_detector']


def run_detector(detector: SpikeDetector, steps: Sequence[int], losses: Sequence[float],
                 curve: Optional[TrendCurve] = None) -> list[tuple[int, LossEvent]]:
    """Feeds a whole series through ``detector``, then closes what is still open.

    The same code path as the online use: :meth:`SpikeDetector.feed` reports what :meth:`SpikeDetector.update`
    per point would, and :meth:`SpikeDetector.finalize` closes what is still open at the last step.

    Args:
        detector (SpikeDetector): A fresh detector.
        steps (Sequence[int]): Increasing training steps.
        losses (Sequence[float]): Loss at each step.
        curve (TrendCurve, optional): Receives the trend and threshold at each point after the warmup.

    Returns:
        list[tuple[int, LossEvent]]: ``(step it was closed at, event)`` for every resolved or truncated event and
        every outlier (the ``'open'`` notifications are left out), in the order they were closed.
    """
    if len(steps) != len(losses):
        raise ConfigError(f'steps and losses differ in length: {len(steps)} vs {len(losses)}.')
    closed = [(step, e) for step, e in detector.feed(steps, losses, curve) if e.status != STATUS_OPEN]
    if len(steps):
        closed.extend((int(steps[-1]), e) for e in detector.finalize(int(steps[-1])))
    return closed


def detect_events(steps: Sequence[int], losses: Sequence[float], **detector_kwargs: Any) -> list[LossEvent]:
    """The classified events and outliers of a whole series (:func:`run_detector` with a new detector).

    Args:
        steps (Sequence[int]): Increasing training steps.
        losses (Sequence[float]): Loss at each step.
        **detector_kwargs: Passed to :class:`SpikeDetector`.

    Returns:
        list[LossEvent]: The resolved and truncated events and the outliers, in the order they were closed.
    """
    return [event for _, event in run_detector(SpikeDetector(**detector_kwargs), steps, losses)]
