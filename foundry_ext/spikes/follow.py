"""A spike from its opening to its classification, the following for any number of points at once.

While a spike is open, each point's excess ``y - y_hat`` over the projected pre-spike trend joins a window of the
last ``recover_window`` points. The spike has recovered once the window's (lower) median is below the tolerance
for ``recover_confirm`` consecutive points; the recovery is dated at the middle of the first such window (but
after the peak, and not after that window's last point). A spike not recovering ``max_follow_steps`` steps after its onset is ``not_recovering``, unless a
recovery dated within the limit has begun by then: that one is confirmed first. :func:`follow` applies these rules to a stretch of points
with numpy and stops at the point that closes the spike, so the online detector (one point per call) and the
offline analysis (whole stretches) classify identically.

The classes follow from the recovery alone, which gives their invariants: a spike whose window never came back
under the tolerance is never a recovering kind; ``recovered_step - onset_step`` is at most
``fast_recovery_steps`` for ``fast_recovering``, more (and at most ``max_follow_steps``) for ``slow_recovering``;
and the level reported at classification is the window's median excess over the pre-spike trend (which is at
least the tolerance for ``not_recovering``, unless the loss came back only after the limit).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any, Optional, Sequence

import numpy as np

from foundry_ext.spikes.events import (FAST_RECOVERING, NOT_RECOVERING, SLOW_RECOVERING, SPIKE, STATUS_OPEN, LossEvent,
                                       event_of)
from foundry_ext.spikes.statistics import Stats, trailing_lower_medians

log = logging.getLogger(__name__)

__all__ = ['RECOVERED', 'close_spike', 'follow', 'open_spike']

# Closure of a spike that came back (its kind depends on when).
RECOVERED = 'recovered'
# Steps before the threshold crossing that may still belong to the rise of a spike.
MAX_RISE_STEPS = 3
# Median of n noise points: its standard error is about sqrt(pi / 2) times the mean's.
_MEDIAN_SE = math.sqrt(math.pi / 2.0)


def open_spike(step: int, y: float, run: Sequence[tuple[int, float, float, float, float]], frozen: Stats,
               baseline_y: float, config: dict[str, Any], margin: float) -> tuple[dict[str, Any], LossEvent]:
    """The record and the ``'open'`` event of a spike detected at ``step``.

    Args:
        step (int): The detecting point: the third above the threshold, or a non-finite loss.
        y (float): Its log-loss (``inf`` for a non-finite loss).
        run (Sequence[tuple]): The spike's points above the threshold so far, the detecting one included:
            ``(step, log-loss, residual, prediction, sigma)``; empty for a lone non-finite loss.
        frozen (Stats): The statistics from before the spike, which project the pre-spike trend.
        baseline_y (float): The trend at the threshold crossing (log-loss).
        config (dict): The detector's settings.
        margin (float): The spike threshold's margin over the trend (log), for plots.

    Returns:
        tuple[dict, LossEvent]: The spike record (see :func:`follow`) and its opening event.
    """
    threshold_step = run[0][0] if run else step
    sigma = run[0][4] if run else frozen.sigma
    window = [(s, v - p) for s, v, _, p, _ in run]
    if y == math.inf:
        window.append((step, math.inf))
    # Walk the onset back over the rise: earlier consecutive points already well above the trend.
    onset = threshold_step
    for prev_step, prev_residual in [p for p in reversed(frozen.recent) if p[0] < threshold_step][:MAX_RISE_STEPS]:
        if prev_step != onset - 1 or not prev_residual > config['onset_sigmas'] * sigma:
            break
        onset = prev_step
    peak_step, peak_y = max(((s, v) for s, v, *_ in run), key=lambda p: p[1], default=(step, y))
    if y > peak_y:
        peak_step, peak_y = step, y
    spike = {
        'onset_step': onset,
        'threshold_step': threshold_step,
        'detect_step': step,
        'peak_step': peak_step,
        'peak_y': peak_y,
        'baseline_y': baseline_y,
        'window': deque(window, maxlen=config['recover_window']),
        'tolerance': max(math.log1p(config['recover_tol']),
                         3.0 * _MEDIAN_SE * math.sqrt(frozen.effective_noise_var() / config['recover_window'])),
        'margin': margin,
        'recover_start': None,
        'recover_run': 0,
        'frozen': frozen,
    }
    return spike, event_of(SPIKE, STATUS_OPEN, spike, step)


def close_spike(spike: dict[str, Any], status: str, recovered_step: Optional[int], level: float,
                fast_recovery_steps: int) -> LossEvent:
    """The classified event of a spike: recovered by ``fast_recovery_steps`` after its onset: ``fast_recovering``,
    later: ``slow_recovering``, not at all (``recovered_step`` None): ``not_recovering``."""
    if recovered_step is None:
        kind = NOT_RECOVERING
    else:
        kind = FAST_RECOVERING if recovered_step - spike['onset_step'] <= fast_recovery_steps else SLOW_RECOVERING
    event = event_of(kind, status, spike, spike['detect_step'])
    event.recovered_step = recovered_step
    event.steps_to_recover = None if recovered_step is None else recovered_step - event.onset_step
    event.level_shift = math.expm1(level)
    return event


def follow(spike: dict[str, Any], steps: np.ndarray, ys: np.ndarray, trend: np.ndarray, max_follow_steps: int,
           recover_confirm: int) -> tuple[int, Optional[tuple[str, Optional[int], float]]]:
    """Advances an open spike over a stretch of points, up to the point that closes it.

    Args:
        spike (dict): The open spike (``onset_step``, ``peak_step``, ``peak_y``, ``window`` (a deque of
            ``(step, excess)`` with ``maxlen = recover_window``), ``tolerance``, ``recover_start``,
            ``recover_run``); updated in place.
        steps (np.ndarray): Steps of the points.
        ys (np.ndarray): Their log-losses (``inf`` for a non-finite loss).
        trend (np.ndarray): The projected pre-spike trend at those steps (NaN where there is none).
        max_follow_steps (int): Steps after the onset at which a spike that has not begun to recover is
            ``not_recovering``.
        recover_confirm (int): Consecutive points the recovery criterion must hold.

    Returns:
        tuple[int, tuple | None]: The number of points consumed, and the closure at the last of them:
        ``('recovered', recovered_step, level)`` or ``('not_recovering', None, level)``, ``level`` being the
        window's median excess (log-space); None if the spike is still open.
    """
    count = len(steps)
    if not count:
        return 0, None
    index = np.arange(count)
    excess = np.where(np.isfinite(trend), ys - trend, np.inf)
    # The running peak (a later loss replaces it only if strictly higher, like a scalar `if y > peak`).
    earlier_max = np.maximum.accumulate(np.concatenate([[spike['peak_y']], ys]))[:-1]
    latest_new = np.maximum.accumulate(np.where(ys > earlier_max, index, -1))
    peak_steps = np.where(latest_new >= 0, steps[np.maximum(latest_new, 0)], spike['peak_step'])
    # The window after each point: its median, and the step of its middle point.
    window = spike['window']
    size = window.maxlen
    known_steps = np.array([s for s, _ in window], dtype=np.int64)
    known = np.array([v for _, v in window], dtype=np.float64)
    levels = trailing_lower_medians(known, np.concatenate([excess, [0.0]]), size)[1:]
    lengths = np.minimum(size, len(known) + index + 1)
    middle = len(known) + index + 1 - lengths + lengths // 2
    middle_steps = np.concatenate([known_steps, steps])[middle]
    below = levels < spike['tolerance']
    # Runs of points under the tolerance; a run may continue from before this stretch.
    last_above = np.maximum.accumulate(np.where(below, -1, index))
    carried = last_above < 0
    run = np.where(below, index - last_above + np.where(carried, spike['recover_run'], 0), 0)
    first = np.clip(last_above + 1, 0, count - 1)  # where a run under the tolerance began (if one did)
    dated = np.minimum(np.maximum(middle_steps[first], peak_steps[first] + 1), steps[first])
    if spike['recover_start'] is not None:
        dated = np.where(carried, spike['recover_start'], dated)
    # Past the limit, a spike is not recovering unless a recovery dated within the limit is being confirmed.
    in_time = below & (dated - spike['onset_step'] <= max_follow_steps)
    confirmed = in_time & (run >= recover_confirm)
    lapsed = ~in_time & (steps - spike['onset_step'] >= max_follow_steps)
    closes = np.flatnonzero(confirmed | lapsed)
    last = int(closes[0]) if len(closes) else count - 1
    if latest_new[last] >= 0:
        spike['peak_step'], spike['peak_y'] = int(peak_steps[last]), float(ys[latest_new[last]])
    for step, value in zip(steps[max(0, last + 1 - size):last + 1].tolist(),
                           excess[max(0, last + 1 - size):last + 1].tolist()):
        window.append((step, value))
    spike['recover_start'] = int(dated[last]) if below[last] else None
    spike['recover_run'] = int(run[last])
    level = float(levels[last])
    if confirmed[last]:
        return last + 1, (RECOVERED, int(dated[last]), level)
    if lapsed[last]:
        return last + 1, (NOT_RECOVERING, None, level)
    return count, None

