"""Synthetic, labelled training-loss curves for evaluating loss-spike detectors.

A curve is a power-law decay ``L(t) = L_inf + A * (t + t0) ** -alpha``, times an optional learning-rate schedule
effect (a WSD decay that lowers the loss, and a re-warmup that raises it back: not events), times noise, with
events added to the log-loss at known steps. Every event is a log-space excess ``e(t)`` on top of that curve:

* ``batch_outlier``: one or two consecutive points raised by ``log1p(height)``, then exactly back.
* ``fast_recovering``: a rise over ``rise_steps`` (1-3) steps to ``log1p(height)``, then a truncated
  exponential return that is exactly back on the curve ``recovery_steps`` steps after the peak.
* ``slow_recovering``: the same shape, slower and flatter (``recovery_curvature`` near 0 is a straight line).
* ``not_recovering``: a rise to ``height`` that decays (time constant ``recovery_steps``) to a higher level
  ``log1p(level_shift)`` and then optionally keeps climbing at ``drift`` log-loss per step.
* ``divergence``: no spike; the log-loss climb rate ramps from 0 to ``drift`` per step over ``ramp_steps``.

Noise families (:data:`NOISE_FAMILIES`), all scaled so that the robust standard deviation (1.4826 times the
median absolute deviation) is ``noise``: ``gaussian`` (log-normal, mild AR(1)), ``t5`` and ``t3`` (Student-t with
5 and 3 degrees of freedom: the heavy tails of per-batch losses), ``ar1`` (Gaussian with lag-1 autocorrelation
0.3-0.6). Sampling: ``dense`` (one point per step) or ``sparse`` (one point every 10, 20 or 50 steps, like an
eval stream, with less noise).

The labels follow the detector's definitions, and the generator keeps clear of their boundaries, so that each
label is unambiguous: a spike stays at least 1.3 spike thresholds high for at least 4 points in a row; a fast spike is
back within 3% of the curve at most 100 steps after its onset, a slow one 300-1500 steps after (the boundary is
150); a not-recovering level is at least 8% up; an outlier is at least 1.5 thresholds high.
:func:`random_labeled_suite` draws one family and sampling; :func:`benchmark_suite` all of them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np
from scipy.signal import lfilter

from foundry_ext.spikes.events import (BATCH_OUTLIER, DIVERGENCE, EVENT_KINDS, FAST_RECOVERING, NOT_RECOVERING,
                                       SLOW_RECOVERING)

log = logging.getLogger(__name__)

__all__ = [
    'CLEAN', 'CURVE_KINDS', 'CurveBase', 'EventSpec', 'LabeledCurve', 'NOISE_FAMILIES', 'SAMPLINGS', 'SCHEDULE',
    'Schedule', 'benchmark_suite', 'make_curve', 'random_labeled_suite'
]

# Kinds of suite curves without events: plain, and with a learning-rate schedule's level changes.
CLEAN = 'clean'
SCHEDULE = 'schedule'
CURVE_KINDS = (CLEAN, SCHEDULE) + EVENT_KINDS
NOISE_FAMILIES = ('gaussian', 't5', 't3', 'ar1')
SAMPLINGS = ('dense', 'sparse')
SPARSE_INTERVALS = (10, 20, 50)
# Robust scale (1.4826 * median |x|) of Student-t variates, to express their noise like Gaussian noise.
_T_ROBUST_SCALE = {3: 1.4826 * 0.7648923284043444, 5: 1.4826 * 0.7266868438004226}
# The detector's default threshold (z = 4.5 noise sigmas, at least +10%) and recovery tolerance, in log-loss.
_Z, _MIN_LOG_HEIGHT, _LOG_TOL = 4.5, math.log1p(0.1), math.log1p(0.03)
_FAST_BACK, _SLOW_BACK = 100, (300, 1500)


@dataclass(frozen=True)
class CurveBase:
    """Clean power-law loss curve ``l_inf + amplitude * (step + t0) ** -alpha``.

    Args:
        l_inf (float): Irreducible loss. Default: ``2.0``.
        amplitude (float): Scale of the reducible part. Default: ``60.0``.
        t0 (float): Step offset (sets how steep the start is). Default: ``1000.0``.
        alpha (float): Power-law exponent. Default: ``0.5``.
    """

    l_inf: float = 2.0
    amplitude: float = 60.0
    t0: float = 1000.0
    alpha: float = 0.5

    def __call__(self, steps: np.ndarray) -> np.ndarray:
        return self.l_inf + self.amplitude * (steps + self.t0)**-self.alpha


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule's effect on the loss: a WSD decay, then optionally a re-warmup.

    The loss falls by ``gain`` (relative) over ``decay_steps`` from ``decay_start`` (linear, cosine or
    1-sqrt in shape), stays there for ``hold_steps``, and with ``rewarm_steps`` rises back onto the curve
    over that many steps (WSD-S: the learning rate goes back up).
    """

    decay_start: int
    decay_steps: int
    gain: float
    shape: str = 'linear'
    hold_steps: int = 0
    rewarm_steps: Optional[int] = None

    def log_factor(self, steps: np.ndarray) -> np.ndarray:
        """Log of the loss factor at ``steps`` (0 before the decay)."""
        p = np.clip((steps - self.decay_start) / self.decay_steps, 0.0, 1.0)
        progress = {'linear': p, 'cosine': 0.5 * (1.0 - np.cos(math.pi * p)), '1-sqrt': 1.0 - np.sqrt(1.0 - p)}
        factor = math.log1p(-self.gain) * progress[self.shape]
        if self.rewarm_steps is not None:
            rewarm_start = self.decay_start + self.decay_steps + self.hold_steps
            factor = factor * (1.0 - np.clip((steps - rewarm_start) / self.rewarm_steps, 0.0, 1.0))
        return factor


@dataclass(frozen=True)
class EventSpec:
    """One event to inject into a curve; also its ground-truth label.

    Args:
        kind (str): One of :data:`~foundry_ext.spikes.events.EVENT_KINDS` or ``'batch_outlier'``.
        onset_step (int): First step whose loss is raised by the event.
        height (float): Relative peak height of a spike or outlier (``0.5`` = +50%). Ignored for divergences.
        rise_steps (int): Steps from the onset to the peak, inclusive; for an outlier, its number of points.
        recovery_steps (int): Recovering spikes: steps from the peak until the loss is back on the curve.
            ``not_recovering``: time constant of the decay from the peak to the new level.
        recovery_curvature (float): Shape of a recovery: the excess falls like ``exp(-c * s)`` (shifted so it
            reaches 0 at ``s = 1``); ``c`` near 0 is a straight line.
        level_shift (float): ``not_recovering``: relative level the loss settles on after the spike.
        drift (float): ``not_recovering``: extra log-loss per step after the spike; ``divergence``: final
            climb rate in log-loss per step.
        ramp_steps (int): ``divergence``: steps over which the climb rate ramps up to ``drift``.
        spacing (int): Steps between the points of the series (an outlier raises ``rise_steps`` points).
    """

    kind: str
    onset_step: int
    height: float = 0.5
    rise_steps: int = 1
    recovery_steps: int = 20
    recovery_curvature: float = 3.0
    level_shift: float = 0.0
    drift: float = 0.0
    ramp_steps: int = 200
    spacing: int = 1

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS + (BATCH_OUTLIER,):
            raise ValueError(f'Unknown event kind {self.kind!r}; expected one of {EVENT_KINDS + (BATCH_OUTLIER,)}.')
        if self.rise_steps < 1 or self.recovery_steps < 1 or self.ramp_steps < 1 or self.spacing < 1:
            raise ValueError('rise_steps, recovery_steps, ramp_steps and spacing must be positive.')

    @property
    def peak_step(self) -> int:
        """Step of the spike's peak (the onset for a divergence or an outlier)."""
        return self.onset_step if self.kind in (DIVERGENCE, BATCH_OUTLIER) else self.onset_step + self.rise_steps - 1

    def log_excess(self, steps: np.ndarray) -> np.ndarray:
        """Log-loss added by the event at ``steps``."""
        j = (steps - self.onset_step).astype(np.float64)
        if self.kind == BATCH_OUTLIER:
            return np.where((j >= 0) & (j < self.rise_steps * self.spacing), math.log1p(self.height), 0.0)
        if self.kind == DIVERGENCE:
            ramp = float(self.ramp_steps)
            climb = np.where(j < ramp, j * j / (2.0 * ramp), j - ramp / 2.0)
            return self.drift * np.where(j > 0, climb, 0.0)
        peak = math.log1p(self.height)
        rise = peak * (j + 1.0) / self.rise_steps
        after = j - (self.rise_steps - 1)
        if self.kind == NOT_RECOVERING:
            level = math.log1p(self.level_shift)
            fall = level + (peak - level) * np.exp(-np.maximum(after, 0.0) / self.recovery_steps) + self.drift * after
        else:
            fall = peak * _truncated_exp_decay(after / self.recovery_steps, self.recovery_curvature)
        return np.where(j < 0, 0.0, np.where(after < 0, rise, fall))

    def back_within(self, log_tol: float = _LOG_TOL) -> Optional[int]:
        """Steps from the onset until a recovering spike's excess is back under ``log_tol`` (None otherwise)."""
        if self.kind not in (FAST_RECOVERING, SLOW_RECOVERING):
            return None
        offsets = np.arange(self.rise_steps - 1, self.rise_steps + self.recovery_steps + 1)
        return int(offsets[np.argmax(self.log_excess(self.onset_step + offsets) <= log_tol)])


@dataclass
class LabeledCurve:
    """A synthetic loss curve with its ground truth.

    Args:
        name (str): Short identifier, e.g. ``'t3-dense-slow_recovering-017'``.
        kind (str): Kind of its events, or ``'clean'`` / ``'schedule'``.
        steps (np.ndarray): Training steps.
        loss (np.ndarray): Loss at each step.
        events (list[EventSpec]): Injected events (outliers included), sorted by onset.
        noise (float): Robust standard deviation of the log-space noise.
        autocorr (float): Lag-1 autocorrelation of the noise.
        family (str): Noise family.
        interval (int): Steps between points.
        schedule (Schedule, optional): The schedule's level changes, if any.
    """

    name: str
    kind: str
    steps: np.ndarray
    loss: np.ndarray
    events: list[EventSpec] = field(default_factory=list)
    noise: float = 0.0
    autocorr: float = 0.0
    family: str = 'gaussian'
    interval: int = 1
    schedule: Optional[Schedule] = None

    @property
    def sampling(self) -> str:
        return 'dense' if self.interval == 1 else 'sparse'

    @property
    def labels(self) -> list[EventSpec]:
        """The events to detect and classify (outliers left out)."""
        return [e for e in self.events if e.kind != BATCH_OUTLIER]

    @property
    def outliers(self) -> list[EventSpec]:
        return [e for e in self.events if e.kind == BATCH_OUTLIER]


def make_curve(
    n_steps: int,
    events: Sequence[EventSpec] = (),
    noise: float = 0.01,
    seed: Optional[int] = None,
    *,
    autocorr: float = 0.0,
    base: CurveBase = CurveBase(),
    start_step: int = 0,
    family: str = 'gaussian',
    interval: int = 1,
    schedule: Optional[Schedule] = None,
) -> tuple[np.ndarray, np.ndarray, list[EventSpec]]:
    """Generates one loss curve with events at known steps.

    Args:
        n_steps (int): Number of points (steps ``start_step, start_step + interval, ...``).
        events (Sequence[EventSpec]): Events to inject; their log-excesses add up where they overlap.
        noise (float): Robust standard deviation of the multiplicative (log-space) noise, e.g. ``0.005-0.03``.
        seed (int, optional): Seed of the noise.
        autocorr (float): Lag-1 autocorrelation of the noise in ``[0, 1)``; the marginal scale stays ``noise``.
        base (CurveBase): The clean curve.
        start_step (int): First step, e.g. to take a window from the middle of a long run.
        family (str): Noise family, one of :data:`NOISE_FAMILIES` (``ar1`` only names the family: pass its
            ``autocorr``).
        interval (int): Steps between points.
        schedule (Schedule, optional): A learning-rate schedule's level changes.

    Returns:
        tuple[np.ndarray, np.ndarray, list[EventSpec]]: Steps, losses, and the events sorted by onset (the
        labels).
    """
    if not 0.0 <= autocorr < 1.0:
        raise ValueError(f'autocorr must be in [0, 1), got {autocorr}.')
    if family not in NOISE_FAMILIES:
        raise ValueError(f'Unknown noise family {family!r}; expected one of {NOISE_FAMILIES}.')
    steps = start_step + interval * np.arange(n_steps, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if family in ('t3', 't5'):
        dof = int(family[1:])
        innovations = rng.standard_t(dof, n_steps) / _T_ROBUST_SCALE[dof] * noise
    else:
        innovations = rng.standard_normal(n_steps) * noise
    # AR(1) with stationary marginal scale `noise`; the first value is drawn from the stationary distribution.
    innovations[1:] *= math.sqrt(1.0 - autocorr**2)
    log_loss = np.log(base(steps.astype(np.float64))) + lfilter([1.0], [1.0, -autocorr], innovations)
    if schedule is not None:
        log_loss += schedule.log_factor(steps)
    labels = sorted(events, key=lambda e: e.onset_step)
    for event in labels:
        log_loss += event.log_excess(steps)
    return steps, np.exp(log_loss), labels


def random_labeled_suite(n_curves: int = 250, seed: int = 0, n_steps: int = 5000, family: str = 'gaussian',
                         sampling: str = 'dense') -> list[LabeledCurve]:
    """Draws a varied labelled set of curves of one noise family and sampling.

    Curves cycle through :data:`CURVE_KINDS`: ``clean``, ``schedule`` (a WSD decay of 2-8% over 300-2000 steps,
    then in half of them a re-warmup back over 50-500 steps), ``fast_recovering`` (1-3 spikes per curve),
    ``slow_recovering``, ``not_recovering`` (half settle on a higher level, half also drift upwards) and
    ``divergence``. Each curve has its own power-law base, noise scale (0.5%-3% dense, 0.2%-1% sparse) and
    autocorrelation, and occasional batch outliers (0-2 per 1000 points, one or two points of +14% to +80%,
    away from the events). A quarter of the dense curves start at step 0 (events in the steep early phase); the
    rest are windows of a longer run. Spike heights are log-uniform in 15%-150%, level shifts in 8%-40%.
    Sparse curves have 1500 points every 10, 20 or 50 steps; their fast spikes (which need a few points above
    the threshold) only come at 10.

    Args:
        n_curves (int): Number of curves.
        seed (int): Seed of the whole suite.
        n_steps (int): Points per dense curve (at least 4000).
        family (str): Noise family (:data:`NOISE_FAMILIES`).
        sampling (str): ``dense`` or ``sparse``.

    Returns:
        list[LabeledCurve]: The curves.
    """
    if n_steps < 4000:
        raise ValueError(f'n_steps must be at least 4000 to fit every event kind, got {n_steps}.')
    if sampling not in SAMPLINGS:
        raise ValueError(f'Unknown sampling {sampling!r}; expected one of {SAMPLINGS}.')
    rng = np.random.default_rng([seed, NOISE_FAMILIES.index(family), SAMPLINGS.index(sampling)])
    curves = []
    for i in range(n_curves):
        kind = CURVE_KINDS[i % len(CURVE_KINDS)]
        interval = 1 if sampling == 'dense' else (10 if kind == FAST_RECOVERING else
                                                  int(rng.choice(SPARSE_INTERVALS)))
        points = n_steps if interval == 1 else 1500
        t0 = _log_uniform(rng, 300.0, 3000.0)
        alpha = rng.uniform(0.3, 0.7)
        base = CurveBase(l_inf=rng.uniform(1.6, 2.6), amplitude=rng.uniform(1.0, 4.0) * t0**alpha, t0=t0, alpha=alpha)
        noise = rng.uniform(0.005, 0.03) if interval == 1 else rng.uniform(0.002, 0.01)
        autocorr = rng.uniform(0.3, 0.6) if family == 'ar1' else rng.uniform(0.0, 0.3)
        start = 0 if interval == 1 and rng.random() < 0.25 else int(rng.integers(2, 31)) * 1000
        span = points * interval
        events = _random_events(rng, kind, span, noise, interval) if kind not in (CLEAN, SCHEDULE) else []
        events = [replace(e, onset_step=start + e.onset_step) for e in events]
        schedule = _random_schedule(rng, start, span) if kind == SCHEDULE else None
        events += _random_outliers(rng, start, span, noise, interval, events)
        steps, loss, labels = make_curve(points, events, noise, int(rng.integers(2**31)), autocorr=autocorr, base=base,
                                         start_step=start, family=family, interval=interval, schedule=schedule)
        curves.append(LabeledCurve(f'{family}-{sampling}-{kind}-{i:03d}', kind, steps, loss, labels, noise, autocorr,
                                   family, interval, schedule))
    return curves


def benchmark_suite(seed: int, curves_per_cell: int = 120, n_steps: int = 5000) -> list[LabeledCurve]:
    """:func:`random_labeled_suite` for every noise family and sampling (``curves_per_cell`` curves each)."""
    return [
        curve for family in NOISE_FAMILIES for sampling in SAMPLINGS
        for curve in random_labeled_suite(curves_per_cell, seed, n_steps, family, sampling)
    ]


def _threshold(noise: float) -> float:
    """The detector's spike threshold (log-loss) for robust noise ``noise``."""
    return max(_Z * noise, _MIN_LOG_HEIGHT)


def _random_events(rng: np.random.Generator, kind: str, span: int, noise: float, interval: int) -> list[EventSpec]:
    """Events of ``kind`` with onsets (multiples of ``interval``) relative to the start of a ``span``-step curve."""
    lead = 500 if interval == 1 else 60 * interval  # after the detector's warmup
    # Climbs are paced per point: three times faster per point on the (1500-point) sparse curves than on the dense
    # ones, so that a sparse curve's tens of thousands of steps stay sane and a divergence still shows in it.
    per_step = 1.0 if interval == 1 else 3.0 / interval
    if kind == DIVERGENCE:
        onset = _on_grid(rng.integers(lead + int(300 / per_step), span - int(2500 / per_step)), interval)
        return [EventSpec(kind, onset, drift=rng.uniform(1e-4, 4e-4) * per_step,
                          ramp_steps=int(rng.integers(100, 501) / per_step))]
    if kind == NOT_RECOVERING:
        level_shift = _log_uniform(rng, 0.08, 0.4)
        drift = rng.uniform(5e-5, 2e-4) * per_step if rng.random() < 0.5 else 0.0
        spec = EventSpec(kind, _on_grid(rng.integers(lead, span - 2500), interval),
                         height=_log_uniform(rng, max(0.15, 2.0 * level_shift), 1.5), rise_steps=int(rng.integers(1, 4)),
                         recovery_steps=int(rng.integers(5, 51)), level_shift=level_shift, drift=drift)
        return [_tall_enough(rng, spec, noise, interval)]
    if kind == SLOW_RECOVERING:
        while True:
            spec = EventSpec(kind, 0, height=_log_uniform(rng, 0.15, 1.5), rise_steps=int(rng.integers(1, 4)),
                             recovery_steps=int(rng.integers(300, 2001)), recovery_curvature=rng.uniform(0.3, 1.2))
            spec = _tall_enough(rng, spec, noise, interval)
            back = spec.back_within()
            if _SLOW_BACK[0] <= back <= _SLOW_BACK[1] and back + spec.recovery_steps < span - lead - 500:
                return [replace(spec, onset_step=_on_grid(rng.integers(lead, span - spec.recovery_steps - 500),
                                                          interval))]
    count = int(rng.integers(1, 4 if interval == 1 else 3))
    gap = 400 * interval if interval > 1 else 400
    onsets = lead + gap * np.arange(count) + np.sort(rng.integers(0, span - 2 * lead - gap * count, count))
    specs = []
    for onset in onsets.tolist():
        while True:
            spec = EventSpec(kind, _on_grid(onset, interval), height=_log_uniform(rng, 0.15, 1.5),
                             rise_steps=int(rng.integers(1, 4)), recovery_steps=int(rng.integers(15, 121)),
                             recovery_curvature=rng.uniform(1.0, 4.0))
            spec = _tall_enough(rng, spec, noise, interval)
            if spec.back_within() <= _FAST_BACK:
                specs.append(spec)
                break
    return specs


def _tall_enough(rng: np.random.Generator, spec: EventSpec, noise: float, interval: int) -> EventSpec:
    """Raises a spike's height (up to +150%) until at least 4 points in a row are 1.3 thresholds high; lengthens its
    decay if that is not enough."""
    need = 1.3 * _threshold(noise)
    while True:
        grid = spec.onset_step + interval * np.arange(200)
        for _ in range(12):
            high = spec.log_excess(grid) > need
            start = int(np.argmax(high))  # the first high point; then at least 4 in a row
            if high[start:start + 4].all():
                return spec
            spec = replace(spec, height=min(1.5, (1.0 + spec.height) * 1.25 - 1.0))
        spec = replace(spec, recovery_steps=int(spec.recovery_steps * 1.3) + interval, rise_steps=1)


def _random_schedule(rng: np.random.Generator, start: int, span: int) -> Schedule:
    decay_steps = int(rng.integers(300, 2001))
    rewarm = int(rng.integers(50, 501)) if rng.random() < 0.5 else None
    hold = int(rng.integers(0, 500))
    latest = span - decay_steps - hold - (rewarm or 0) - 200
    return Schedule(start + int(rng.integers(min(600, latest), latest)), decay_steps, rng.uniform(0.02, 0.08),
                    str(rng.choice(['linear', 'cosine', '1-sqrt'])), hold, rewarm)


def _random_outliers(rng: np.random.Generator, start: int, span: int, noise: float, interval: int,
                     events: Sequence[EventSpec]) -> list[EventSpec]:
    """Occasional single-batch outliers (0-2 per 1000 points), away from the events and from each other."""
    points = span // interval
    count = rng.poisson(rng.uniform(0.0, 2.0) * points / 1000)
    busy = [(e.onset_step - 50 * interval,
             e.onset_step + (e.recovery_steps + 100 * interval if e.kind in (FAST_RECOVERING, SLOW_RECOVERING) else
                             span)) for e in events]
    low = 150 if interval == 1 else 30 * interval  # after the detector's warmup
    outliers: list[EventSpec] = []
    for onset in np.sort(start + interval * rng.integers(low // interval, points - 20, count)).tolist():
        if any(a <= onset <= b for a, b in busy) or any(abs(onset - o.onset_step) < 20 * interval for o in outliers):
            continue
        height = _log_uniform(rng, max(0.14, math.expm1(1.5 * _threshold(noise))), 0.8)
        outliers.append(EventSpec(BATCH_OUTLIER, onset, height=height, rise_steps=1 + int(rng.random() < 0.2),
                                  spacing=interval))
    return outliers


def _on_grid(step: int, interval: int) -> int:
    return int(step) // interval * interval


def _truncated_exp_decay(s: np.ndarray, curvature: float) -> np.ndarray:
    """``1`` at ``s = 0`` falling to ``0`` at ``s = 1`` like ``exp(-curvature * s)``; ``0`` after."""
    floor = math.exp(-curvature)
    decay = (np.exp(-curvature * np.clip(s, 0.0, 1.0)) - floor) / (1.0 - floor)
    return np.where(s >= 1.0, 0.0, decay)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))
