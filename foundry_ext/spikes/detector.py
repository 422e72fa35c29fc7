"""Online loss-spike detection and classification.

:class:`SpikeDetector` consumes one (all-reduced) training loss per step and reports loss events as they
open and as they are classified. Its whole state is a small JSON-serialisable dict, so a training callback
can checkpoint it and a resumed run reports exactly what an uninterrupted run would have reported.

Event kinds (after BLOOM, IDEFICS and the pre-BLOOM 104B runs):

* ``fast_recovering``: a spike after which the loss is back at the pre-spike level within
  ``fast_recovery_steps`` steps of the onset.
* ``slow_recovering``: a spike that returns to the pre-spike level, but only after more than
  ``fast_recovery_steps`` steps (and within ``max_follow_steps``).
* ``not_recovering``: a spike after which the loss settles on a clearly higher level or keeps climbing, i.e.
  it has not returned to the pre-spike level ``max_follow_steps`` after the onset.
* ``divergence``: no spike, but the smoothed loss climbs steadily by more than ``divergence_rise`` above its
  lowest point.

Algorithm, all in log-loss space (``y = log(loss)``), O(1) work per step:

1. *Trend.* The loss is modelled as a local power law, i.e. a straight line in ``u = log(step + 1)``. An
   exponentially-weighted least-squares quadratic in ``u`` (half-life ``trend_halflife`` observations) gives
   the level at the latest step without the lag a straight-line fit has on a curving loss. The slope is the
   quadratic's slope at the latest step if the data show curvature (it differs from the slope of a
   long-memory line, half-life ``slope_halflife``, by more than 3 standard errors), otherwise the line's,
   which is several times less noisy. The prediction ``y_hat`` extends the level along that slope in ``u``,
   which is also how the pre-spike level is projected over the thousands of steps a slow recovery can take.
2. *Noise.* ``sigma = sqrt(pi / 2) * EWMA(|r|)`` of the one-step-ahead residuals ``r = y - y_hat`` (half-life
   ``noise_halflife``). Residuals are winsorised at ``clip_sigmas * sigma`` before they update the trend or
   ``sigma``, so an isolated bad batch cannot drag the baseline or inflate the noise estimate. The lag-1
   autocorrelation ``phi`` of the residuals is tracked too; wherever averages over many steps are judged
   (slope standard errors, the recovery tolerance) the noise variance is scaled by ``(1 + phi) / (1 - phi)``.
3. *Onset.* A spike opens at the first step where ``r > max(z_threshold * sigma, log1p(min_height))``: the
   threshold and the detection step coincide, so the detection latency is zero steps. The onset is walked
   back over up to 3 immediately preceding steps whose residual exceeded ``onset_sigmas * sigma`` (the rise).
4. *Follow.* While a spike is open, the trend and noise estimates are frozen and the excess
   ``e = y - y_hat`` is measured against the projected pre-spike trend. The spike has recovered once the
   mean excess over the last ``recover_window`` losses is below
   ``max(log1p(recover_tol), 3 * sqrt(effective_noise_var / recover_window))`` for ``recover_confirm``
   consecutive losses; the recovery step is dated at the centre of the first such window.
5. *Classification.* Recovered within ``fast_recovery_steps`` of the onset: ``fast_recovering``; later:
   ``slow_recovering``; not recovered ``max_follow_steps`` after the onset: ``not_recovering``. After a
   ``not_recovering`` event the trend is refitted on the post-spike losses, so the new level becomes the
   baseline instead of an endless spike.
6. *Divergence.* An EWMA of ``y`` with span ``divergence_span`` (started from the fitted trend level) tracks
   its running minimum; a rise of more than ``log1p(divergence_rise)`` above that minimum opens a
   ``divergence`` event. Its onset is the last step at which the EWMA was within 3 of its own noise standard
   deviations of the minimum, i.e. where the climb left the noise. This tracker is frozen while a spike is
   open and re-armed after a ``not_recovering`` spike, so spikes and level shifts are not counted as
   divergences. A
   divergence stays open until the smoothed loss is back within ``recover_tol`` of its minimum; a spike can
   still be detected while it is open.

Detection needs ``warmup_steps`` finite losses first (the first fit is a robust, median-based fit on them);
only non-finite losses are reported during the warmup. Windows and half-lives count observations (calls to
``update``); ``fast_recovery_steps`` and ``max_follow_steps`` are in steps, so series logged every ``k`` steps
work too.

Non-finite losses (NaN, +-inf) count as a spike of infinite height: if no spike is open, one opens at that
very step (``peak_loss = inf``, ``height = inf``); non-finite values never update any statistic. If the
losses that follow are finite and back at the pre-spike level, the event resolves as ``fast_recovering`` or
``slow_recovering`` (e.g. a skipped overflow step); otherwise it ends as ``not_recovering``. Finite
non-positive losses cannot be put on a log scale; they are skipped with a warning.

Unlike LLM-Foundry's ``kill_loss_spike`` callback, every window here is bounded and rolling (detection
never stops after the first window), the state survives checkpoint/resume, and the threshold is a noise
multiple rather than ``2 x mean``, which loss spikes of 15-150% practically never reach.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    'DIVERGENCE',
    'EVENT_KINDS',
    'FAST_RECOVERING',
    'LossEvent',
    'NOT_RECOVERING',
    'SLOW_RECOVERING',
    'SPIKE',
    'STATUS_OPEN',
    'STATUS_RESOLVED',
    'STATUS_TRUNCATED',
    'SpikeDetector',
    'detect_events',
    'run_detector',
]

FAST_RECOVERING = 'fast_recovering'
SLOW_RECOVERING = 'slow_recovering'
NOT_RECOVERING = 'not_recovering'
DIVERGENCE = 'divergence'
EVENT_KINDS = (FAST_RECOVERING, SLOW_RECOVERING, NOT_RECOVERING, DIVERGENCE)
# Kind of a spike event while it is still open, i.e. before it is classified.
SPIKE = 'spike'

STATUS_OPEN = 'open'
STATUS_RESOLVED = 'resolved'
# Closed by ``finalize`` before the evidence for its kind was complete.
STATUS_TRUNCATED = 'truncated'

_STATE_VERSION = 1
# E|r| = sigma * sqrt(2 / pi) for Gaussian residuals.
_ABS_DEV_TO_SIGMA = math.sqrt(math.pi / 2.0)
# Steps before the threshold crossing that may still belong to the rise of the spike.
_MAX_RISE_STEPS = 3
# Normal-consistency constant of the median absolute deviation.
_MAD_TO_SIGMA = 1.4826


@dataclass
class LossEvent:
    """A loss event, reported when it opens and again when it is classified.

    Args:
        kind (str): One of :data:`EVENT_KINDS`; ``'spike'`` for a spike that is still open.
        status (str): ``'open'`` (reported at detection), ``'resolved'`` (classified with full evidence) or
            ``'truncated'`` (closed by :meth:`SpikeDetector.finalize` while still open).
        onset_step (int): First step of the event (the first step of the rise for spikes; for divergences the
            last step at which the smoothed loss was still within noise of its minimum).
        peak_step (int): Step of the highest loss seen so far in the event.
        peak_loss (float): Highest loss seen so far (the smoothed loss for divergences); ``inf`` for
            non-finite losses.
        baseline_loss (float): Pre-event level: the trend prediction at the threshold step for spikes, the
            smoothed-loss minimum for divergences.
        height (float): Relative height, ``peak_loss / baseline_loss - 1``.
        threshold_step (int): Step at which the detection statistic first crossed its threshold.
        detect_step (int): Step at which the event was opened (reported with ``status='open'``).
        recovered_step (int, optional): Step at which the loss was back at the baseline, if it was.
        steps_to_recover (int, optional): ``recovered_step - onset_step``.
        level_shift (float, optional): Relative level of the loss at classification versus the baseline
            (for spikes, versus the baseline extrapolated along the pre-spike trend).
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

    def to_dict(self) -> dict[str, Any]:
        """Returns the event as a flat dict (floats may be ``inf`` for non-finite losses)."""
        return asdict(self)


class _PolyFit:
    """Exponentially-weighted least-squares polynomial of degree 1 or 2 in ``dx = x - ref_x``.

    The sums are kept relative to the latest point (both in ``x`` and in ``y``), so they stay small and the
    normal equations stay well conditioned however long the run.
    """

    _FIELDS = ('ref_x', 'ref_y', 's0', 's1', 's2', 's3', 's4', 't0', 't1', 't2')

    def __init__(self, degree: int, decay: float):
        self.quadratic = degree == 2
        self.decay = decay
        self.reset()

    def reset(self) -> None:
        self.ref_x = self.ref_y = 0.0
        # s_k = sum(w * dx**k), t_k = sum(w * dx**k * (y - ref_y)); s3, s4 and t2 stay 0 for a line.
        self.s0 = self.s1 = self.s2 = self.s3 = self.s4 = 0.0
        self.t0 = self.t1 = self.t2 = 0.0

    def add(self, x: float, y: float) -> None:
        d = x - self.ref_x
        e = y - self.ref_y
        lam = self.decay
        s0, s1, s2, s3 = self.s0, self.s1, self.s2, self.s3
        # Move the origin to the new point (binomial expansion of (dx - d)**k and y - e), age the old points
        # and add the new one at (0, 0).
        t0 = self.t0 - e * s0
        t1 = self.t1 - e * s1
        if self.quadratic:
            self.t2 = lam * (self.t2 - e * s2 - 2.0 * d * t1 + d * d * t0)
            self.s4 = lam * (self.s4 - 4.0 * d * s3 + 6.0 * d * d * s2 - 4.0 * d**3 * s1 + d**4 * s0)
            self.s3 = lam * (s3 - 3.0 * d * s2 + 3.0 * d * d * s1 - d**3 * s0)
        self.t1 = lam * (t1 - d * t0)
        self.t0 = lam * t0
        self.s2 = lam * (s2 - 2.0 * d * s1 + d * d * s0)
        self.s1 = lam * (s1 - d * s0)
        self.s0 = lam * s0 + 1.0
        self.ref_x = x
        self.ref_y = y

    def solve(self) -> tuple[float, float, float]:
        """Returns the fitted level and slope at ``ref_x``, and the slope's variance per unit noise variance.

        The variance uses the sandwich form of weighted least squares with exponential weights, approximated as
        ``[M^-1]_11 / (1 + decay)``. A quadratic whose points cannot pin a curvature yet (e.g. right after a
        reset) is solved as a line.
        """
        s0, s1, s2, s3, s4 = self.s0, self.s1, self.s2, self.s3, self.s4
        t0, t1, t2 = self.t0, self.t1, self.t2
        if self.quadratic:
            # Cramer's rule on the 3x3 normal equations.
            m0 = s2 * s4 - s3 * s3
            m1 = s1 * s4 - s2 * s3
            det = s0 * m0 - s1 * m1 + s2 * (s1 * s3 - s2 * s2)
            if det > 1e-9 * s0 * s2 * s4:
                level = (t0 * m0 - s1 * (t1 * s4 - t2 * s3) + s2 * (t1 * s3 - t2 * s2)) / det
                slope = (s0 * (t1 * s4 - t2 * s3) - t0 * m1 + s2 * (s1 * t2 - s2 * t1)) / det
                return level, slope, (s0 * s4 - s2 * s2) / det / (1.0 + self.decay)
        det = s0 * s2 - s1 * s1
        if det > 1e-9 * s0 * s2:
            slope = (s0 * t1 - s1 * t0) / det
            return (t0 - slope * s1) / s0, slope, s0 / det / (1.0 + self.decay)
        return (t0 / s0 if s0 else 0.0), 0.0, math.inf

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._FIELDS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self._FIELDS:
            setattr(self, name, state[name])


class _Trend:
    """Local power-law trend of the log-loss: straight lines in ``u = log(step + 1)``.

    A short-memory quadratic gives the level and, if the data show curvature, the slope at the latest point;
    otherwise the slope comes from a long-memory line, whose estimate is several times less noisy. Curvature
    counts as shown when the two slopes differ by more than ``3`` standard errors (about 1 false switch in
    370 without curvature).
    """

    _SLOPE_SWITCH_SIGMAS = 3.0

    def __init__(self, level_halflife: int, slope_halflife: int):
        self.curved = _PolyFit(2, 0.5**(1.0 / level_halflife))
        self.straight = _PolyFit(1, 0.5**(1.0 / slope_halflife))

    def reset(self) -> None:
        self.curved.reset()
        self.straight.reset()

    def add(self, step: int, y: float) -> None:
        u = math.log1p(step)
        self.curved.add(u, y)
        self.straight.add(u, y)

    def predict(self, step: int, noise_var: float) -> float:
        """Trend level at ``step``; ``noise_var`` is the (autocorrelation-adjusted) noise variance of the points."""
        level, slope, var_curved = self.curved.solve()
        _, straight_slope, var_straight = self.straight.solve()
        threshold = self._SLOPE_SWITCH_SIGMAS**2 * noise_var * (var_curved + var_straight)
        if (slope - straight_slope)**2 <= threshold:
            slope = straight_slope
        return self.curved.ref_y + level + slope * (math.log1p(step) - self.curved.ref_x)

    def state_dict(self) -> dict[str, Any]:
        return {'curved': self.curved.state_dict(), 'straight': self.straight.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curved.load_state_dict(state['curved'])
        self.straight.load_state_dict(state['straight'])


class SpikeDetector:
    """Streaming detector and classifier of training-loss events for one loss stream.

    Feed it one loss per step with :meth:`update`; it returns the events opened or resolved at that step.
    See the module docstring for the algorithm. All windows are bounded, and :meth:`state_dict` /
    :meth:`load_state_dict` round-trip through JSON exactly, so a resumed stream yields the same events as
    an uninterrupted one. Keep one detector per loss stream.

    Args:
        z_threshold (float): Spike threshold in robust noise standard deviations of the log-loss residual.
            Default: ``4.5`` (about 0.03 false alarms per 10k steps of Gaussian noise).
        min_height (float): Minimum relative jump (``loss / trend - 1``) for a spike, so very clean curves do
            not flag tiny excursions. Default: ``0.1``.
        fast_recovery_steps (int): A spike back at the pre-spike level within this many steps of its onset is
            ``fast_recovering``, later ``slow_recovering``. Default: ``150``, in the gap between the fast
            (5-100 steps) and slow (300-1500 steps) recoveries of the synthetic benchmark suite.
        max_follow_steps (int): A spike still above the pre-spike level this many steps after its onset is
            ``not_recovering``; it must exceed the longest slow recovery (1500 steps in the suite).
            Default: ``2000``.
        recover_tol (float): Relative tolerance around the pre-event level that counts as recovered.
            Default: ``0.03``.
        recover_window (int): Number of consecutive losses averaged to decide recovery. Default: ``10``.
        recover_confirm (int): Consecutive losses for which the recovery criterion must hold. Default: ``10``.
        divergence_rise (float): Relative rise of the smoothed loss above its running minimum that counts as
            a divergence. Default: ``0.1``.
        divergence_span (int): EWMA span (in observations) of the loss used for divergence. Default: ``100``.
        trend_halflife (int): Half-life (observations) of the quadratic fit that gives the trend level (and the
            slope where the loss visibly curves). Default: ``200``.
        slope_halflife (int): Half-life (observations) of the straight-line fit that gives the trend slope
            otherwise. Default: ``800``.
        noise_halflife (int): Half-life (observations) of the noise estimate. Default: ``100``.
        warmup_steps (int): Finite observations collected before detection starts; the first fit is a robust
            (median-based) fit on them. Default: ``100``.
        clip_sigmas (float): Residuals are winsorised at this many sigmas before updating the statistics.
            Default: ``3.0``.
        onset_sigmas (float): Residual, in sigmas, of steps before the threshold crossing that still count as
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
            raise ValueError('Need 0 < fast_recovery_steps < max_follow_steps, got '
                             f'{fast_recovery_steps} and {max_follow_steps}.')
        if warmup_steps < 3:
            raise ValueError(f'warmup_steps must be at least 3, got {warmup_steps}.')
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
        self._min_log_height = math.log1p(min_height)
        self._log_recover_tol = math.log1p(recover_tol)
        self._log_divergence_rise = math.log1p(divergence_rise)
        self._noise_decay = 0.5**(1.0 / noise_halflife)
        self._ema_alpha = 2.0 / (divergence_span + 1.0)
        self._trend = _Trend(trend_halflife, slope_halflife)
        # The last finite (step, log-loss) pairs, for the robust fits after the warmup and after a level shift.
        self._history: deque[list] = deque(maxlen=warmup_steps)
        # Residuals of the last few normal steps, to walk a spike's onset back over its rise.
        self._recent: deque[list] = deque(maxlen=_MAX_RISE_STEPS)
        self._last_step: Optional[int] = None
        self._fitted = False
        self._abs_dev = 0.0
        # EWMA of the product of consecutive (winsorised) residuals, for their lag-1 autocorrelation.
        self._lag_product = 0.0
        self._prev_residual = 0.0
        self._spike: Optional[dict[str, Any]] = None
        self._ema: Optional[float] = None
        self._ema_min = math.inf
        # Last step at which the smoothed loss was within noise of its minimum: the onset of a divergence.
        self._climb_start_step = 0
        self._divergence: Optional[dict[str, Any]] = None

    @property
    def sigma(self) -> float:
        """Robust standard deviation of the one-step log-loss residual (0 before the warmup ends)."""
        return _ABS_DEV_TO_SIGMA * self._abs_dev

    @property
    def _effective_noise_var(self) -> float:
        """Noise variance scaled by ``(1 + phi) / (1 - phi)`` for the lag-1 autocorrelation ``phi`` of the
        residuals: the variance that averages over many steps see (phi is clamped to ``[0, 0.9]``)."""
        var = self.sigma**2
        phi = min(max(self._lag_product / var, 0.0), 0.9) if var > 0.0 else 0.0
        return var * (1.0 + phi) / (1.0 - phi)

    def trend_loss(self, step: int) -> float:
        """Loss the trend predicts at ``step`` (the projected pre-spike level while a spike is open).

        Before the warmup ends this is the mean of the losses seen so far (NaN if there are none).
        """
        return math.exp(self._baseline(step))

    def spike_threshold(self, step: int) -> float:
        """Loss above which a spike opens at ``step`` (``inf`` before the warmup ends)."""
        if not self._fitted:
            return math.inf
        return math.exp(self._baseline(step) + self._spike_margin())

    @property
    def last_step(self) -> Optional[int]:
        """The last step fed (None before the first)."""
        return self._last_step

    @property
    def has_open_event(self) -> bool:
        """Whether a spike or divergence event is currently open."""
        return self._spike is not None or self._divergence is not None

    def update(self, step: int, loss: float) -> list[LossEvent]:
        """Feeds the loss of one step.

        Args:
            step (int): Non-negative training step; must increase from call to call (repeated or older steps
                are ignored with a warning, e.g. batches replayed after a resume).
            loss (float): Training loss at ``step``; NaN and infinities are reported as spikes.

        Returns:
            list[LossEvent]: Events opened (``status='open'``) or classified (``status='resolved'``) at this step.
        """
        step = int(step)
        loss = float(loss)
        if self._last_step is not None and step <= self._last_step:
            log.warning('Ignoring loss for step %d: not after the last step %d.', step, self._last_step)
            return []
        if math.isfinite(loss) and loss <= 0.0:
            log.warning('Ignoring non-positive loss %g at step %d: it has no log.', loss, step)
            return []
        self._last_step = step
        y = math.log(loss) if math.isfinite(loss) else math.inf
        if self._spike is not None:
            return self._follow_spike(step, y)
        if not self._fitted:
            return self._warm_up(step, y)
        residual = y - self._trend.predict(step, self._effective_noise_var)
        if residual > self._spike_margin():
            return [self._open_spike(step, y, residual)]
        self._observe(step, y, residual)
        return self._update_divergence(step, y)

    def finalize(self, step: int) -> list[LossEvent]:
        """Closes the events still open at the end of a series, classifying them with what is known.

        An open spike whose recovery criterion already holds (but is not yet confirmed) is classified as
        recovered at that point. Otherwise, a spike whose recent mean excess is still at least half its peak
        excess has not come down and is ``not_recovering``; one that has come down at least halfway is taken
        to be recovering: ``fast_recovering`` if it is not older than ``fast_recovery_steps`` yet,
        ``slow_recovering`` otherwise. An open divergence stays a ``divergence``. All of them are returned with
        ``status='truncated'``. As after any ``not_recovering`` spike, the current level becomes the new normal,
        so the detector can be fed further losses afterwards.

        Args:
            step (int): Last step of the series.

        Returns:
            list[LossEvent]: The closed events.
        """
        events = []
        if self._spike is not None:
            spike = self._spike
            mean_excess = _mean(spike['window'])
            if spike['recover_start'] is not None:
                kind = self._recovered_kind(spike, spike['recover_start'])
                recovered_step = spike['recover_start']
            else:
                recovered_step = None
                # Written so that NaN (no baseline) and inf (non-finite losses) count as not come down.
                if not mean_excess < 0.5 * (spike['peak_y'] - spike['baseline_y']):
                    kind = NOT_RECOVERING
                else:
                    kind = self._recovered_kind(spike, step)
            event = self._close_spike(kind, STATUS_TRUNCATED, recovered_step, mean_excess)
            if kind == NOT_RECOVERING:
                self._restart_after_level_shift(step, event.peak_step)
            events.append(event)
        if self._divergence is not None:
            events.append(self._close_divergence(STATUS_TRUNCATED, step, recovered=False))
        return events

    def state_dict(self) -> dict[str, Any]:
        """Returns the complete detector state as plain JSON types (bounded size)."""
        return {
            'version': _STATE_VERSION,
            'config': dict(self.config),
            'trend': self._trend.state_dict(),
            'history': [list(p) for p in self._history],
            'recent': [list(p) for p in self._recent],
            'last_step': self._last_step,
            'fitted': self._fitted,
            'abs_dev': self._abs_dev,
            'lag_product': self._lag_product,
            'prev_residual': self._prev_residual,
            'spike': _spike_to_json(self._spike),
            'ema': self._ema,
            'ema_min': _encode_float(self._ema_min),
            'climb_start_step': self._climb_start_step,
            'divergence': None if self._divergence is None else dict(self._divergence),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a state produced by :meth:`state_dict` (possibly after a JSON round trip).

        The constructor's configuration is kept; a state saved with a different configuration is loaded with
        a warning, since the events after the resume may then differ from an uninterrupted run.
        """
        if state.get('version') != _STATE_VERSION:
            raise ValueError(f'Unsupported SpikeDetector state version: {state.get("version")!r}.')
        if state['config'] != self.config:
            log.warning('Loading SpikeDetector state saved with config %s into detector with config %s.',
                        state['config'], self.config)
        self._trend.load_state_dict(state['trend'])
        self._history = deque((list(p) for p in state['history']), maxlen=self._history.maxlen)
        self._recent = deque((list(p) for p in state['recent']), maxlen=self._recent.maxlen)
        self._last_step = state['last_step']
        self._fitted = state['fitted']
        self._abs_dev = state['abs_dev']
        self._lag_product = state['lag_product']
        self._prev_residual = state['prev_residual']
        self._spike = _spike_from_json(state['spike'], self.config['recover_window'])
        self._ema = state['ema']
        self._ema_min = _decode_float(state['ema_min'])
        self._climb_start_step = state['climb_start_step']
        self._divergence = None if state['divergence'] is None else dict(state['divergence'])

    # Normal operation.

    def _warm_up(self, step: int, y: float) -> list[LossEvent]:
        if not math.isfinite(y):
            return [self._open_spike(step, y, math.inf)]
        self._history.append([step, y])
        if len(self._history) >= self.config['warmup_steps']:
            self._refit(list(self._history))
            self._rearm_divergence(step)
        return []

    def _observe(self, step: int, y: float, residual: float) -> None:
        """Updates the trend and noise estimates with a normal (non-spike) observation."""
        bound = self.config['clip_sigmas'] * self.sigma
        clipped = min(max(residual, -bound), bound)
        self._abs_dev = self._noise_decay * self._abs_dev + (1.0 - self._noise_decay) * abs(clipped)
        self._lag_product = self._noise_decay * self._lag_product + (1.0 - self._noise_decay) * (
            clipped * self._prev_residual)
        self._prev_residual = clipped
        self._trend.add(step, y - residual + clipped)
        self._history.append([step, y])
        self._recent.append([step, residual])

    def _refit(self, points: Sequence[Sequence[float]]) -> None:
        """Robustly refits trend and noise on ``points``, then replays them through the online update."""
        steps = [int(p[0]) for p in points]
        x = np.log1p(np.array(steps, dtype=np.float64))
        ys = np.array([p[1] for p in points], dtype=np.float64)
        # Same exponential weighting as the online level fit; one winsorising pass makes it robust to a spike.
        weights = np.sqrt(self._trend.curved.decay**np.arange(len(x) - 1, -1, -1))
        fit = np.polyval(np.polyfit(x, ys, 2, w=weights), x)
        resid = ys - fit
        sigma = _MAD_TO_SIGMA * float(np.median(np.abs(resid - np.median(resid))))
        bound = self.config['clip_sigmas'] * sigma
        clipped = np.clip(resid, -bound, bound)
        self._trend.reset()
        for step, y in zip(steps, (fit + clipped).tolist()):
            self._trend.add(step, y)
        self._abs_dev = max(sigma, 1e-12) / _ABS_DEV_TO_SIGMA
        self._lag_product = float(np.mean(clipped[1:] * clipped[:-1]))
        self._prev_residual = float(clipped[-1])
        self._recent.clear()
        self._fitted = True

    # Spikes.

    def _spike_margin(self) -> float:
        return max(self.config['z_threshold'] * self.sigma, self._min_log_height)

    def _baseline(self, step: int) -> float:
        if self._fitted:
            return self._trend.predict(step, self._effective_noise_var)
        if self._history:
            return _mean([p[1] for p in self._history])
        return math.nan

    def _open_spike(self, step: int, y: float, residual: float) -> LossEvent:
        onset = step
        for prev_step, prev_residual in reversed(self._recent):
            if prev_step != onset - 1 or prev_residual <= self.config['onset_sigmas'] * self.sigma:
                break
            onset = prev_step
        self._recent.clear()
        # The spike interrupts the residual sequence; do not correlate across it.
        self._prev_residual = 0.0
        baseline_y = self._baseline(step)
        self._spike = {
            'onset_step': onset,
            'threshold_step': step,
            'peak_step': step,
            'peak_y': y,
            'baseline_y': baseline_y,
            'window': deque([y - baseline_y], maxlen=self.config['recover_window']),
            'recover_start': None,
            'recover_run': 0,
        }
        event = _event_of(SPIKE, STATUS_OPEN, self._spike)
        log.info('Loss spike opened at step %d: loss %.4g vs trend %.4g (threshold step %d, residual %.3g).',
                 step, event.peak_loss, event.baseline_loss, step, residual)
        return event

    def _follow_spike(self, step: int, y: float) -> list[LossEvent]:
        spike = self._spike
        assert spike is not None
        if y > spike['peak_y']:
            spike['peak_step'] = step
            spike['peak_y'] = y
        if math.isfinite(y):
            self._history.append([step, y])
        window = spike['window']
        window.append(y - self._baseline(step))
        mean_excess = _mean(window)
        tol = max(self._log_recover_tol, 3.0 * math.sqrt(self._effective_noise_var / window.maxlen))
        if mean_excess < tol:
            if spike['recover_start'] is None:
                # The window mean lags the loss; date the recovery at the window's centre.
                spike['recover_start'] = max(step - (len(window) - 1) // 2, spike['peak_step'] + 1)
            spike['recover_run'] += 1
            if spike['recover_run'] >= self.config['recover_confirm']:
                kind = self._recovered_kind(spike, spike['recover_start'])
                return [self._close_spike(kind, STATUS_RESOLVED, spike['recover_start'], mean_excess)]
        else:
            spike['recover_start'] = None
            spike['recover_run'] = 0
        # A recovery that began within the limit is confirmed first (at most recover_confirm more steps).
        if step - spike['onset_step'] >= self.config['max_follow_steps'] and spike['recover_start'] is None:
            event = self._close_spike(NOT_RECOVERING, STATUS_RESOLVED, None, mean_excess)
            self._restart_after_level_shift(step, event.peak_step)
            return [event]
        return []

    def _recovered_kind(self, spike: dict[str, Any], recovered_step: int) -> str:
        fast = recovered_step - spike['onset_step'] <= self.config['fast_recovery_steps']
        return FAST_RECOVERING if fast else SLOW_RECOVERING

    def _close_spike(self, kind: str, status: str, recovered_step: Optional[int],
                     mean_excess: float) -> LossEvent:
        event = _event_of(kind, status, self._spike)
        event.recovered_step = recovered_step
        event.steps_to_recover = None if recovered_step is None else recovered_step - event.onset_step
        event.level_shift = math.expm1(mean_excess)
        self._spike = None
        log.info('Loss spike from step %d classified as %s (%s): height %.3g, level shift %.3g.',
                 event.onset_step, kind, status, event.height, event.level_shift)
        return event

    def _restart_after_level_shift(self, step: int, peak_step: int) -> None:
        """Makes the post-spike level the new normal: refit the trend and re-arm the divergence tracker."""
        post = [p for p in self._history if p[0] > peak_step]
        if len(post) >= self.config['warmup_steps']:
            self._refit(post)
            self._rearm_divergence(step)
        else:
            # Too few finite losses since the peak (e.g. a run of NaNs) to fit a new level: keep the old trend,
            # so the next excursion is again measured against the last known normal.
            log.info('Only %d finite losses since step %d; keeping the pre-spike trend.', len(post), peak_step)

    # Divergence.

    def _rearm_divergence(self, step: int) -> None:
        """Restarts the smoothed loss at the fitted trend level, which is far less noisy than one loss."""
        self._ema = self._trend.predict(step, self._effective_noise_var)
        if self._divergence is None:
            self._ema_min = self._ema
            self._climb_start_step = step

    def _update_divergence(self, step: int, y: float) -> list[LossEvent]:
        assert self._ema is not None
        self._ema += self._ema_alpha * (y - self._ema)
        div = self._divergence
        if div is None:
            self._ema_min = min(self._ema_min, self._ema)
            # Three standard deviations of the EWMA's noise.
            ema_noise = 3.0 * math.sqrt(self._effective_noise_var * self._ema_alpha / (2.0 - self._ema_alpha))
            if self._ema - self._ema_min <= ema_noise:
                self._climb_start_step = step
            if self._ema - self._ema_min <= self._log_divergence_rise:
                return []
            self._divergence = {
                'onset_step': self._climb_start_step,
                'threshold_step': step,
                'peak_step': step,
                'peak_y': self._ema,
                'baseline_y': self._ema_min,
            }
            event = _event_of(DIVERGENCE, STATUS_OPEN, self._divergence)
            log.info('Loss divergence opened at step %d: smoothed loss %.4g is %.1f%% above its minimum '
                     '%.4g at step %d.', step, event.peak_loss, 100 * event.height, event.baseline_loss,
                     event.onset_step)
            return [event]
        if self._ema > div['peak_y']:
            div['peak_step'] = step
            div['peak_y'] = self._ema
        if self._ema - self._ema_min < self._log_recover_tol:
            return [self._close_divergence(STATUS_RESOLVED, step, recovered=True)]
        return []

    def _close_divergence(self, status: str, step: int, recovered: bool) -> LossEvent:
        assert self._ema is not None
        event = _event_of(DIVERGENCE, status, self._divergence)
        if recovered:
            event.recovered_step = step
            event.steps_to_recover = step - event.onset_step
        # While a divergence is open, the running minimum stays at its baseline.
        event.level_shift = math.expm1(self._ema - self._ema_min)
        self._divergence = None
        self._ema_min = self._ema
        self._climb_start_step = step
        log.info('Loss divergence from step %d closed (%s): height %.3g.', event.onset_step, status,
                 event.height)
        return event


def run_detector(
    detector: SpikeDetector,
    steps: Sequence[int],
    losses: Sequence[float],
    before_update: Optional[Callable[[int], None]] = None,
) -> list[tuple[int, LossEvent]]:
    """Feeds a whole series through ``detector`` as training would, then closes what is still open.

    This is the same code path as the online use: every loss goes through :meth:`SpikeDetector.update`, and
    :meth:`SpikeDetector.finalize` closes what is still open at the last step.

    Args:
        detector (SpikeDetector): A fresh detector.
        steps (Sequence[int]): Increasing training steps.
        losses (Sequence[float]): Loss at each step.
        before_update (Callable[[int], None], optional): Called with each step before its loss goes in, e.g.
            to read the detector's trend and threshold there.

    Returns:
        list[tuple[int, LossEvent]]: ``(step it was closed at, event)`` for every resolved or truncated event
        (the ``'open'`` notifications are left out), in the order they were closed.
    """
    if len(steps) != len(losses):
        raise ValueError(f'steps and losses differ in length: {len(steps)} vs {len(losses)}.')
    closed: list[tuple[int, LossEvent]] = []
    for step, loss in zip(np.asarray(steps).tolist(), np.asarray(losses, dtype=np.float64).tolist()):
        if before_update is not None:
            before_update(step)
        closed.extend((step, e) for e in detector.update(step, loss) if e.status != STATUS_OPEN)
    if len(steps):
        closed.extend((int(steps[-1]), e) for e in detector.finalize(int(steps[-1])))
    return closed


def detect_events(steps: Sequence[int], losses: Sequence[float], **detector_kwargs: Any) -> list[LossEvent]:
    """The classified events of a whole series (:func:`run_detector` with a new :class:`SpikeDetector`).

    Args:
        steps (Sequence[int]): Increasing training steps.
        losses (Sequence[float]): Loss at each step.
        **detector_kwargs: Passed to :class:`SpikeDetector`.

    Returns:
        list[LossEvent]: The resolved and truncated events, in the order they were closed.
    """
    return [event for _, event in run_detector(SpikeDetector(**detector_kwargs), steps, losses)]


def _event_of(kind: str, status: str, record: Optional[dict[str, Any]]) -> LossEvent:
    """The event of an open spike or divergence record, as of now (its onset, peak and baseline so far)."""
    assert record is not None
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
        detect_step=record['threshold_step'],  # an event opens at the step its statistic crosses the threshold
    )


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _spike_to_json(spike: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    if spike is None:
        return None
    state = dict(spike)
    for key in ('peak_y', 'baseline_y'):
        state[key] = _encode_float(spike[key])
    state['window'] = [_encode_float(v) for v in spike['window']]
    return state


def _spike_from_json(state: Optional[dict[str, Any]], window: int) -> Optional[dict[str, Any]]:
    if state is None:
        return None
    spike = dict(state)
    for key in ('peak_y', 'baseline_y'):
        spike[key] = _decode_float(state[key])
    spike['window'] = deque((_decode_float(v) for v in state['window']), maxlen=window)
    return spike


def _encode_float(value: float) -> Union[float, str]:
    # Strict JSON has no NaN or infinities; store those as 'nan' / 'inf' / '-inf'.
    return value if math.isfinite(value) else repr(value)


def _decode_float(value: Union[float, str]) -> float:
    return float(value)
