"""Loss-spike detection and classification, one step at a time (online) or a whole series at once (offline).

:class:`SpikeDetector` takes the (all-reduced) training loss of each step and reports loss events as they open and
as they are classified (kinds in :mod:`foundry_ext.spikes.events`). :meth:`SpikeDetector.update` feeds one point
(the training callback), :meth:`SpikeDetector.feed` a whole series (``analyze-loss``, benchmarks, through
:mod:`foundry_ext.spikes.offline`); both run the same code, in which normal points go through the vectorised
statistics of :mod:`foundry_ext.spikes.statistics` and open spikes through :mod:`foundry_ext.spikes.follow`, so they
report identical events. The whole state is a small JSON dict, so a resumed run reports exactly what an
uninterrupted run would have. Per point:

1. *Threshold.* The statistics give the trend prediction ``y_hat`` of the log-loss ``y`` and whether
   ``y - y_hat > max(z_threshold * sigma, log1p(min_height))``. Points above it feed the statistics like any
   other (winsorised), so one bad batch moves nothing.
2. *Outliers.* One or two consecutive points above the threshold, then a point back under it: a ``batch_outlier``,
   reported at that point.
3. *Spikes.* A third consecutive point above the threshold, or a non-finite loss, opens a spike (2 steps after the
   threshold crossing). The statistics are frozen from before its first point; they project the pre-spike trend,
   against which the spike is followed and classified (``fast_recovering``, ``slow_recovering``,
   ``not_recovering``). After ``not_recovering`` the statistics are rebuilt from the points after the peak, so the
   new level becomes the normal one.
4. *Divergence.* The smoothed loss rising more than ``log1p(divergence_rise)`` above its running minimum opens a
   ``divergence``; it is resolved if the smoothed loss comes back to within ``log1p(recover_tol)`` of it.

Detection starts after ``warmup_steps`` finite points; non-finite losses open a spike also during the warmup and
never enter the statistics; finite non-positive losses and steps that do not increase are skipped with a warning.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from dataclasses import replace
from typing import Any, Optional, Sequence

import numpy as np

from foundry_ext.core.errors import ConfigError
from foundry_ext.spikes.events import (  # noqa: F401  kinds re-exported: importing them from here still works
    BATCH_OUTLIER, DIVERGENCE, EVENT_KINDS, FAST_RECOVERING, NOT_RECOVERING, RECOVERING_KINDS, SLOW_RECOVERING, SPIKE,
    STATUS_OPEN, STATUS_RESOLVED, STATUS_TRUNCATED, LossEvent, TrendCurve, event_of, outlier_event)
from foundry_ext.spikes.follow import RECOVERED, close_spike, follow, open_spike
from foundry_ext.spikes.statistics import Stats, StatsConfig, Trace, advance, encode_float, project

log = logging.getLogger(__name__)

# The kinds, statuses and records live in foundry_ext.spikes.events.
__all__ = ['SpikeDetector']

_STATE_VERSION = 2
# Points above the threshold in a row that make a spike rather than an outlier.
SPIKE_POINTS = 3
# Points per vectorised stretch at first; doubled after every stretch without an event.
_FIRST_CHUNK = 2048
_MAX_CHUNK = 1 << 17


class SpikeDetector:
    """Streaming detector and classifier of training-loss events for one loss stream.

    Feed it one loss per step with :meth:`update`, or a whole series with :meth:`feed`; both report the same
    events. See the module docstring for the algorithm. All windows are bounded, and :meth:`state_dict` /
    :meth:`load_state_dict` round-trip through JSON exactly. Keep one detector per loss stream.

    Args:
        z_threshold (float): Spike threshold in robust noise standard deviations of the log-loss residual.
            Default: ``4.5``.
        min_height (float): Minimum relative jump (``loss / trend - 1``) above the threshold, so very clean curves
            do not flag tiny excursions. Default: ``0.1``.
        fast_recovery_steps (int): A spike back at the pre-spike level within this many steps of its onset is
            ``fast_recovering``, later ``slow_recovering``. Default: ``150``.
        max_follow_steps (int): A spike still above the pre-spike level this many steps after its onset is
            ``not_recovering``. Default: ``2000``.
        recover_tol (float): Relative tolerance around the pre-event level that counts as recovered.
            Default: ``0.03``.
        recover_window (int): Number of consecutive points whose median decides recovery. Default: ``10``.
        recover_confirm (int): Consecutive points for which the recovery criterion must hold. Default: ``10``.
        divergence_rise (float): Relative rise of the smoothed loss above its running minimum that counts as
            a divergence. Default: ``0.1``.
        divergence_span (int): EWMA span (points) of the smoothed loss used for divergence. Default: ``100``.
        trend_halflife (int): Half-life (points) of the quadratic fit that gives the trend level (and the
            slope where the loss visibly curves). Default: ``200``.
        slope_halflife (int): Half-life (points) of the straight-line fit that gives the trend slope otherwise.
            Default: ``800``.
        noise_halflife (int): The noise is the median deviation of the last ``2 * noise_halflife`` points, and
            the half-life of the residuals' autocorrelation estimate. Default: ``100``.
        warmup_steps (int): Finite points fed before detection starts. Default: ``100``.
        clip_sigmas (float): Losses are winsorised at this many sigmas around the local median before they feed
            the trend and the smoothed loss. Default: ``3.0``.
        onset_sigmas (float): Residual, in sigmas, of points before the threshold crossing that still count as
            the rise of the spike. Default: ``2.0``.
    """

    def __init__(
        self,
        z_threshold: float = 4.5,
        min_height: float = 0.1,
        fast_recovery_steps: int = 150,
        max_follow_steps: int = 2000,
        recover_tol: float = 0.03,
        recover_window: int = 10,
        recover_confirm: int = 10,
        divergence_rise: float = 0.1,
        divergence_span: int = 100,
        trend_halflife: int = 200,
        slope_halflife: int = 800,
        noise_halflife: int = 100,
        warmup_steps: int = 100,
        clip_sigmas: float = 3.0,
        onset_sigmas: float = 2.0,
    ):
        if not 0 < fast_recovery_steps < max_follow_steps:
            raise ConfigError('Need 0 < fast_recovery_steps < max_follow_steps, got '
                              f'{fast_recovery_steps} and {max_follow_steps}.')
        if warmup_steps < 3:
            raise ConfigError(f'warmup_steps must be at least 3, got {warmup_steps}.')
        self.config: dict[str, Any] = {
            'z_threshold': float(z_threshold),
            'min_height': float(min_height),
            'fast_recovery_steps': int(fast_recovery_steps),
            'max_follow_steps': int(max_follow_steps),
            'recover_tol': float(recover_tol),
            'recover_window': int(recover_window),
            'recover_confirm': int(recover_confirm),
            'divergence_rise': float(divergence_rise),
            'divergence_span': int(divergence_span),
            'trend_halflife': int(trend_halflife),
            'slope_halflife': int(slope_halflife),
            'noise_halflife': int(noise_halflife),
            'warmup_steps': int(warmup_steps),
            'clip_sigmas': float(clip_sigmas),
            'onset_sigmas': float(onset_sigmas),
        }
        self._cfg = StatsConfig(
            warmup=int(warmup_steps),
            noise_window=2 * int(noise_halflife),
            clip=float(clip_sigmas),
            z=float(z_threshold),
            min_log_height=math.log1p(min_height),
            quad_decay=0.5**(1.0 / trend_halflife),
            line_decay=0.5**(1.0 / slope_halflife),
            noise_decay=0.5**(1.0 / noise_halflife),
            ema_alpha=2.0 / (divergence_span + 1.0),
            log_rise=math.log1p(divergence_rise),
            log_tol=math.log1p(recover_tol),
            # The sums' origin moves every few trend half-lives, which keeps them well conditioned.
            block=max(256, 16 * int(trend_halflife)),
        )
        self._stats = Stats()
        # The last finite (step, log-loss) points, to rebuild the statistics after a level shift.
        self._history: deque[tuple[int, float]] = deque(maxlen=warmup_steps)
        self._last_step: Optional[int] = None
        self._points = 0
        # Points above the threshold in a row so far (step, y, residual, prediction, sigma): an outlier or a spike.
        self._run: list[tuple[int, float, float, float, float]] = []
        # The statistics before the first point of the run.
        self._snapshot: Optional[Stats] = None
        self._spike: Optional[dict[str, Any]] = None

    @property
    def sigma(self) -> float:
        """Robust standard deviation of the log-loss noise (0 before there are two points)."""
        return self._stats.sigma

    @property
    def last_step(self) -> Optional[int]:
        """The last step fed (None before the first)."""
        return self._last_step

    @property
    def points(self) -> int:
        """Points fed so far (skipped ones not counted)."""
        return self._points

    @property
    def fitted(self) -> bool:
        """Whether the warmup is over (detection has started)."""
        return self._stats.n >= self._cfg.warmup

    @property
    def has_open_event(self) -> bool:
        """Whether a spike or divergence event is currently open."""
        return self._spike is not None or self._stats.div is not None

    def trend_loss(self, step: int) -> float:
        """Loss the trend predicts at ``step`` (the projected pre-spike level while a spike is open; NaN before the
        first point)."""
        return math.exp(float(project(self._cfg, self._stats, np.array([step]))[0]))

    def spike_threshold(self, step: int) -> float:
        """Loss above which a point at ``step`` counts as above the threshold (``inf`` during the warmup)."""
        if not self.fitted:
            return math.inf
        return math.exp(float(project(self._cfg, self._stats, np.array([step]))[0]) + self._margin())

    def update(self, step: int, loss: float) -> list[LossEvent]:
        """Feeds the loss of one step.

        Args:
            step (int): Non-negative training step; must increase from call to call (repeated or older steps
                are ignored with a warning, e.g. batches replayed after a resume).
            loss (float): Training loss at ``step``; NaN and infinities open a spike.

        Returns:
            list[LossEvent]: Events opened (``status='open'``), classified (``status='resolved'``) or, for
            outliers, confirmed at this step.
        """
        return [event for _, event in self.feed([step], [loss])]

    def feed(self, steps: Sequence[int], losses: Sequence[float],
             curve: Optional[TrendCurve] = None) -> list[tuple[int, LossEvent]]:
        """Feeds a stretch of a series, as :meth:`update` per point would, but vectorised.

        Args:
            steps (Sequence[int]): Steps, increasing.
            losses (Sequence[float]): Loss at each step.
            curve (TrendCurve, optional): Receives the trend and threshold at each point after the warmup.

        Returns:
            list[tuple[int, LossEvent]]: ``(step at which it was reported, event)`` for every notification.
        """
        steps, losses = self._accepted(np.asarray(steps, dtype=np.int64), np.asarray(losses, dtype=np.float64))
        if not len(steps):
            return []
        self._last_step = int(steps[-1])
        self._points += len(steps)
        finite = np.isfinite(losses)
        ys = np.full(len(losses), np.inf)
        ys[finite] = np.log(losses[finite])
        breaks = np.flatnonzero(~finite).tolist() + [len(ys)]
        events: list[tuple[int, LossEvent]] = []
        chunk, i = _FIRST_CHUNK, 0
        while i < len(ys):
            if self._spike is not None:
                i = self._follow(steps, ys, i, events, curve)
                chunk = _FIRST_CHUNK
            elif not finite[i]:
                events.append((int(steps[i]), self._open_spike(int(steps[i]), math.inf, None, None)))
                i += 1
            else:
                end = min(breaks[bisect.bisect_left(breaks, i)], i + chunk)
                done = self._normal(steps[i:end], ys[i:end], events, curve)
                chunk = min(2 * chunk, _MAX_CHUNK) if done == end - i else _FIRST_CHUNK
                self._history.extend(zip(steps[max(i, i + done - self._history.maxlen):i + done].tolist(),
                                         ys[max(i, i + done - self._history.maxlen):i + done].tolist()))
                i += done
        return events

    def finalize(self, step: int) -> list[LossEvent]:
        """Closes what is still open at the end of a series, with ``status='truncated'``.

        A spike whose recovery criterion already holds (not yet confirmed) is classified as recovered at that
        point; any other open spike has not come back within the tolerance, so it is ``not_recovering`` (the
        evidence for a slower recovery is missing). Pending points above the threshold are an outlier, and an
        open divergence stays a ``divergence``. As after any ``not_recovering`` spike, the current level becomes
        the new normal, so the detector can be fed further losses afterwards.

        Args:
            step (int): Last step of the series.

        Returns:
            list[LossEvent]: The closed events.
        """
        events = []
        if self._run:
            events.append(self._outlier(None, STATUS_TRUNCATED))
        if self._spike is not None:
            spike = self._spike
            level = _lower_median([excess for _, excess in spike['window']])
            event = self._close_spike(STATUS_TRUNCATED, spike['recover_start'], level)
            if spike['recover_start'] is None:
                self._restart_after_level_shift(step, event)
            events.append(event)
        div = self._stats.div
        if div is not None:
            event = event_of(DIVERGENCE, STATUS_TRUNCATED, div, div['threshold_step'])
            event.level_shift = math.expm1(self._stats.ema - div['baseline_y'])
            self._stats = _replace_div(self._stats, None, step)
            log.info('Loss divergence from step %d closed (truncated): height %.3g.', event.onset_step, event.height)
            events.append(event)
        return events

    # Checkpointed state.

    def state_dict(self) -> dict[str, Any]:
        """Returns the complete detector state as plain JSON types (bounded size)."""
        spike = None
        if self._spike is not None:
            spike = {k: v for k, v in self._spike.items() if k != 'frozen'}
            spike.update(peak_y=encode_float(spike['peak_y']), baseline_y=encode_float(spike['baseline_y']),
                         window=[[s, encode_float(v)] for s, v in spike['window']])
        return {
            'version': _STATE_VERSION,
            'config': dict(self.config),
            'stats': self._stats.to_json(),
            'history': [list(p) for p in self._history],
            'last_step': self._last_step,
            'points': self._points,
            'run': [list(p) for p in self._run],
            'snapshot': None if not self._run else self._snapshot.to_json(),
            'spike': spike,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a state produced by :meth:`state_dict` (possibly after a JSON round trip).

        The constructor's configuration is kept; a state saved with a different configuration is loaded with
        a warning. A state of the previous detector (version 1) is converted: its history of recent losses is
        replayed into new statistics, and an event it had open is dropped with a warning (its kind cannot be
        decided by the new detector).
        """
        version = state.get('version')
        if version not in (1, _STATE_VERSION):
            raise ConfigError(f'Unsupported SpikeDetector state version: {version!r}.')
        if state['config'] != self.config:
            log.warning('Loading SpikeDetector state saved with config %s into detector with config %s.',
                        state['config'], self.config)
        self._history = deque((tuple(p) for p in state['history']), maxlen=self._history.maxlen)
        self._last_step = state['last_step']
        if version == 1:
            self._from_version_1(state)
            return
        self._stats = Stats.from_json(state['stats'])
        self._points = state['points']
        self._run = [tuple(p) for p in state['run']]
        self._snapshot = None if state['snapshot'] is None else Stats.from_json(state['snapshot'])
        self._spike = None
        if state['spike'] is not None:
            spike = dict(state['spike'])
            spike.update(peak_y=float(spike['peak_y']), baseline_y=float(spike['baseline_y']),
                         window=deque(((s, float(v)) for s, v in spike['window']),
                                      maxlen=self.config['recover_window']),
                         frozen=self._stats)
            self._spike = spike

    def _from_version_1(self, state: dict[str, Any]) -> None:
        points = list(self._history)
        self._stats = self._rebuilt(points) if points else Stats()
        self._points = len(points)
        self._run, self._spike = [], None
        if state.get('spike') is not None or state.get('divergence') is not None:
            log.warning('SpikeDetector state of version 1 had an event open (onset step %s); the new detector '
                        'cannot continue it and starts over from the last %d losses.',
                        (state.get('spike') or state.get('divergence'))['onset_step'], len(points))
        else:
            log.info('SpikeDetector state of version 1 converted: statistics rebuilt from the last %d losses.',
                     len(points))

    # Normal points.

    def _accepted(self, steps: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Drops (with a warning) non-positive finite losses and steps that do not increase."""
        positive = ~(np.isfinite(losses) & (losses <= 0.0))
        before = np.concatenate([[-1 if self._last_step is None else self._last_step], steps[:-1]])
        latest = np.maximum.accumulate(np.where(np.concatenate([[True], positive[:-1]]), before, -1))
        keep = positive & (steps > latest)
        # One line per kind, not per point: a whole series of them must not flood the log.
        late, non_positive = np.flatnonzero(~keep & positive), np.flatnonzero(~positive)
        if late.size:
            log.warning('Ignoring the loss of %d step(s) not after the last step (first: step %d).', late.size,
                        steps[late[0]])
        if non_positive.size:
            log.warning('Ignoring %d non-positive loss(es) (first: %g at step %d): they have no log.',
                        non_positive.size, losses[non_positive[0]], steps[non_positive[0]])
        return steps[keep], losses[keep]

    def _normal(self, steps: np.ndarray, ys: np.ndarray, events: list, curve: Optional[TrendCurve]) -> int:
        """Handles a stretch of finite points up to the first spike or divergence transition; returns how many
        points it consumed."""
        start = self._stats
        trace, after = advance(self._cfg, start, steps, ys)
        above = trace.above
        index = np.arange(trace.m)
        last_below = np.maximum.accumulate(np.where(above, -1, index))
        run = np.where(above, index - last_below + np.where(last_below < 0, len(self._run), 0), 0)
        spikes = np.flatnonzero(run >= SPIKE_POINTS)
        stop = int(spikes[0]) if len(spikes) else trace.m
        # Outliers: a run of one or two points above the threshold, then a point below it.
        after_above = np.concatenate([[bool(self._run)], above[:-1]])
        for end in np.flatnonzero(~above[:stop] & after_above[:stop]).tolist():
            self._run += _points(trace, int(last_below[end - 1]) + 1 if end else 0, end)
            events.append((int(steps[end]), self._outlier((trace, end), STATUS_RESOLVED)))
        if stop:  # the points above the threshold right before the stop (none if the last one is below)
            tail = stop - 1 - int(last_below[stop - 1])
            self._run = (self._run if tail == stop else []) + _points(trace, stop - tail, stop)
        if self._run and stop - len(self._run) >= 0:  # the run began in this stretch: keep the state before it
            self._snapshot = self._prefix(start, steps, ys, stop - len(self._run))
        if curve is not None:
            fitted = trace.fitted[:stop + (stop < trace.m)]
            curve.add(steps[:len(fitted)][fitted], trace.pred[:len(fitted)][fitted],
                      (trace.pred + trace.margin)[:len(fitted)][fitted])
        if len(spikes):
            self._stats = self._prefix(start, steps, ys, stop)
            events.append((int(steps[stop]), self._open_spike(int(steps[stop]), float(ys[stop]),
                                                              float(trace.pred[stop]), float(trace.sigma[stop]))))
            return stop + 1
        self._stats = after
        if trace.transition is not None:
            kind, at, div = trace.transition
            events.append((int(steps[at]), self._divergence_event(kind, at, div, trace)))
        return trace.m

    def _prefix(self, start: Stats, steps: np.ndarray, ys: np.ndarray, count: int) -> Stats:
        """The statistics after the first ``count`` points of a stretch that began at ``start``."""
        return advance(self._cfg, start, steps[:count], ys[:count])[1] if count else start

    def _margin(self) -> float:
        return max(self._cfg.z * self._stats.sigma, self._cfg.min_log_height)

    def _rebuilt(self, points: Sequence[tuple[int, float]]) -> Stats:
        """Fresh statistics over ``points`` (no divergence tracking while replaying them)."""
        steps, ys = (np.array(v) for v in zip(*points))
        return advance(self._cfg, Stats(), steps, ys, divergence=False)[1]

    # Outliers.

    def _outlier(self, back: Optional[tuple[Trace, int]], status: str) -> LossEvent:
        """The outlier of the pending run; ``back`` is the point back under the threshold (trace, index)."""
        run, self._run = self._run, []
        at = None if back is None else (int(back[0].steps[back[1]]), float(back[0].residual[back[1]]))
        return outlier_event(run, status, at)

    # Spikes.

    def _open_spike(self, step: int, y: float, pred: Optional[float], sigma: Optional[float]) -> LossEvent:
        """Opens a spike at ``step``: the third point above the threshold (``pred`` and ``sigma`` its prediction
        and noise), or a non-finite loss (``y = inf``), with the pending run of points before it."""
        run, self._run = self._run + ([(step, y, y - pred, pred, sigma)] if pred is not None else []), []
        if len(run) > (pred is not None):
            # The points of the run are the spike's: the trend and noise are those from before its first point.
            now = self._stats
            self._stats = replace(self._snapshot, ema=now.ema, ema_min=now.ema_min, climb_step=now.climb_step,
                                  div=now.div)
        baseline_y = run[0][3] if run else float(project(self._cfg, self._stats, np.array([step]))[0])
        self._spike, event = open_spike(step, y, run, self._stats, baseline_y, self.config, self._margin())
        log.info('Loss spike opened at step %d: loss %.4g vs trend %.4g (threshold step %d).', step, event.peak_loss,
                 event.baseline_loss, event.threshold_step)
        return event

    def _follow(self, steps: np.ndarray, ys: np.ndarray, i: int, events: list, curve: Optional[TrendCurve]) -> int:
        """Follows the open spike from point ``i``; returns the index after the last point it consumed."""
        spike = self._spike
        span = 64
        while i < len(steps):
            ahead, values = steps[i:i + span], ys[i:i + span]
            trend = project(self._cfg, spike['frozen'], ahead)
            done, closure = follow(spike, ahead, values, trend, self.config['max_follow_steps'],
                                   self.config['recover_confirm'])
            finite = np.isfinite(values[:done])
            self._history.extend(zip(ahead[:done][finite].tolist(), values[:done][finite].tolist()))
            if curve is not None:
                curve.add(ahead[:done], trend[:done], trend[:done] + spike['margin'])
            i += done
            if closure is not None:
                kind, recovered_step, level = closure
                event = self._close_spike(STATUS_RESOLVED, recovered_step, level)
                if kind != RECOVERED:
                    self._restart_after_level_shift(int(ahead[done - 1]), event)
                events.append((int(ahead[done - 1]), event))
                return i
            span = min(4 * span, _MAX_CHUNK)
        return i

    def _close_spike(self, status: str, recovered_step: Optional[int], level: float) -> LossEvent:
        event = close_spike(self._spike, status, recovered_step, level, self.config['fast_recovery_steps'])
        self._spike = None
        log.info('Loss spike from step %d classified as %s (%s): height %.3g, level shift %.3g.',
                 event.onset_step, event.kind, status, event.height, event.level_shift)
        return event

    def _restart_after_level_shift(self, step: int, event: LossEvent) -> None:
        """Makes the post-spike level the new normal: rebuild the statistics from the points after the peak (after
        the threshold crossing if the loss still climbs, so the peak is recent)."""
        post = [p for p in self._history if p[0] > event.peak_step]
        if len(post) < self._cfg.warmup:
            post = [p for p in self._history if p[0] > event.threshold_step]
        if len(post) < self._cfg.warmup:
            # Too few finite losses since the peak (e.g. a run of NaNs) to fit a new level: keep the old trend,
            # so the next excursion is again measured against the last known normal.
            log.info('Only %d finite losses since step %d; keeping the pre-spike trend.', len(post),
                     event.threshold_step)
            return
        old = self._stats
        stats = self._rebuilt(post)
        if old.div is not None:  # still above the divergence's minimum: it stays open
            self._stats = _replace_div(stats, old.div, old.climb_step, old.ema_min)
        else:
            self._stats = _replace_div(stats, None, step)

    # Divergence.

    def _divergence_event(self, kind: str, at: int, div: dict[str, Any], trace: Trace) -> LossEvent:
        if kind == 'open':
            event = event_of(DIVERGENCE, STATUS_OPEN, div, div['threshold_step'])
            log.info('Loss divergence opened at step %d: smoothed loss %.4g is %.1f%% above its minimum %.4g at '
                     'step %d.', event.threshold_step, event.peak_loss, 100 * event.height, event.baseline_loss,
                     event.onset_step)
            return event
        event = event_of(DIVERGENCE, STATUS_RESOLVED, div, div['threshold_step'])
        event.recovered_step = int(trace.steps[at])
        event.steps_to_recover = event.recovered_step - event.onset_step
        event.level_shift = math.expm1(float(trace.ema[at]) - div['baseline_y'])
        log.info('Loss divergence from step %d resolved at step %d.', event.onset_step, event.recovered_step)
        return event


def _points(trace: Trace, start: int, end: int) -> list[tuple[int, float, float, float, float]]:
    """Run records (step, y, residual, prediction, sigma) of trace points ``start:end``."""
    return list(zip(trace.steps[start:end].tolist(), trace.y[start:end].tolist(), trace.residual[start:end].tolist(),
                    trace.pred[start:end].tolist(), trace.sigma[start:end].tolist()))


def _replace_div(stats: Stats, div: Optional[dict[str, Any]], climb_step: int,
                 ema_min: Optional[float] = None) -> Stats:
    """The statistics with the divergence tracker re-armed at the smoothed loss (or kept on ``div``)."""
    return replace(stats, div=div, climb_step=climb_step, ema_min=stats.ema if ema_min is None else ema_min)


def _lower_median(values: list[float]) -> float:
    return sorted(values)[(len(values) - 1) // 2]
