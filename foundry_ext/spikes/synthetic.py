"""Synthetic, labelled training-loss curves for evaluating loss-spike detectors.

A curve is a power-law decay ``L(t) = L_inf + A * (t + t0) ** -alpha`` times log-normal noise (an AR(1) process
in log space, so consecutive steps can be mildly correlated), with events added to the log-loss at known
steps. Every event is a log-space excess ``e(t)`` on top of the clean curve, so heights are relative:

* ``fast_recovering``: a rise over ``rise_steps`` (1-3) steps to ``log1p(height)``, then a truncated
  exponential return that is exactly back at the clean curve ``recovery_steps`` (5-100) steps after the peak.
* ``slow_recovering``: the same shape with ``recovery_steps`` of 300-1500 and a flatter decay
  (``recovery_curvature`` near 0 is a straight line, large values an exponential).
* ``not_recovering``: a rise to ``height`` that decays (time constant ``recovery_steps``) to a higher level
  ``log1p(level_shift)`` and then optionally keeps climbing at ``drift`` log-loss per step.
* ``divergence``: no spike; the log-loss climb rate ramps from 0 to ``drift`` per step over ``ramp_steps``
  steps and then stays there.

:func:`random_labeled_suite` draws a varied benchmark set (all four kinds plus clean curves, noise 0.5%-3%).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np
from scipy.signal import lfilter

from foundry_ext.spikes.detector import DIVERGENCE, EVENT_KINDS, FAST_RECOVERING, NOT_RECOVERING, SLOW_RECOVERING

log = logging.getLogger(__name__)

__all__ = ['CLEAN', 'CurveBase', 'EventSpec', 'LabeledCurve', 'make_curve', 'random_labeled_suite']

# Kind of a suite curve without events.
CLEAN = 'clean'
_SPIKE_KINDS = (FAST_RECOVERING, SLOW_RECOVERING, NOT_RECOVERING)


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
class EventSpec:
    """One event to inject into a curve; also its ground-truth label.

    Args:
        kind (str): One of :data:`~foundry_ext.spikes.detector.EVENT_KINDS`.
        onset_step (int): First step whose loss is raised by the event.
        height (float): Relative peak height of a spike (``0.5`` = +50%). Ignored for divergences.
        rise_steps (int): Steps from the onset to the peak, inclusive (peak at ``onset_step + rise_steps - 1``).
        recovery_steps (int): Recovering spikes: steps from the peak until the loss is back on the clean
            curve. ``not_recovering``: time constant of the decay from the peak to the new level.
        recovery_curvature (float): Shape of a recovery: the excess falls like ``exp(-c * s)`` (shifted so it
            reaches 0 at ``s = 1``); ``c`` near 0 is a straight line.
        level_shift (float): ``not_recovering``: relative level the loss settles on after the spike.
        drift (float): ``not_recovering``: extra log-loss per step after the spike; ``divergence``: final
            climb rate in log-loss per step.
        ramp_steps (int): ``divergence``: steps over which the climb rate ramps up to ``drift``.
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

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f'Unknown event kind {self.kind!r}; expected one of {EVENT_KINDS}.')
        if self.rise_steps < 1 or self.recovery_steps < 1 or self.ramp_steps < 1:
            raise ValueError('rise_steps, recovery_steps and ramp_steps must be positive.')

    @property
    def peak_step(self) -> int:
        """Step of the spike's peak (the onset for a divergence)."""
        return self.onset_step if self.kind == DIVERGENCE else self.onset_step + self.rise_steps - 1

    def log_excess(self, steps: np.ndarray) -> np.ndarray:
        """Log-loss added by the event at ``steps``."""
        j = (steps - self.onset_step).astype(np.float64)
        if self.kind == DIVERGENCE:
            ramp = float(self.ramp_steps)
            climb = np.where(j < ramp, j * j / (2.0 * ramp), j - ramp / 2.0)
            return self.drift * np.where(j > 0, climb, 0.0)
        peak = math.log1p(self.height)
        rise = peak * (j + 1.0) / self.rise_steps
        after = j - (self.rise_steps - 1)
        if self.kind == NOT_RECOVERING:
            level = math.log1p(self.level_shift)
            fall = level + (peak - level) * np.exp(-after / self.recovery_steps) + self.drift * after
        else:
            fall = peak * _truncated_exp_decay(after / self.recovery_steps, self.recovery_curvature)
        return np.where(j < 0, 0.0, np.where(after < 0, rise, fall))


@dataclass
class LabeledCurve:
    """A synthetic loss curve with its ground truth.

    Args:
        name (str): Short identifier, e.g. ``'slow_recovering-017'``.
        kind (str): Kind of its events, or ``'clean'``.
        steps (np.ndarray): Training steps.
        loss (np.ndarray): Loss at each step.
        events (list[EventSpec]): Injected events, sorted by onset.
        noise (float): Standard deviation of the log-space noise.
        autocorr (float): Lag-1 autocorrelation of the noise.
    """

    name: str
    kind: str
    steps: np.ndarray
    loss: np.ndarray
    events: list[EventSpec] = field(default_factory=list)
    noise: float = 0.0
    autocorr: float = 0.0


def make_curve(
    n_steps: int,
    events: Sequence[EventSpec] = (),
    noise: float = 0.01,
    seed: Optional[int] = None,
    *,
    autocorr: float = 0.0,
    base: CurveBase = CurveBase(),
    start_step: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[EventSpec]]:
    """Generates one loss curve with events at known steps.

    Args:
        n_steps (int): Number of steps (``start_step .. start_step + n_steps - 1``).
        events (Sequence[EventSpec]): Events to inject; their log-excesses add up where they overlap.
        noise (float): Standard deviation of the multiplicative (log-space) noise, e.g. ``0.005``-``0.03``.
        seed (int, optional): Seed of the noise.
        autocorr (float): Lag-1 autocorrelation of the noise in ``[0, 1)``; the marginal standard deviation
            stays ``noise``.
        base (CurveBase): The clean curve.
        start_step (int): First step, e.g. to take a window from the middle of a long run.

    Returns:
        tuple[np.ndarray, np.ndarray, list[EventSpec]]: Steps, losses, and the events sorted by onset (the
        labels).
    """
    if not 0.0 <= autocorr < 1.0:
        raise ValueError(f'autocorr must be in [0, 1), got {autocorr}.')
    steps = np.arange(start_step, start_step + n_steps, dtype=np.int64)
    innovations = np.random.default_rng(seed).standard_normal(n_steps) * noise
    # AR(1) with stationary marginal std `noise`; the first value is drawn from the stationary distribution.
    innovations[1:] *= math.sqrt(1.0 - autocorr**2)
    log_noise = lfilter([1.0], [1.0, -autocorr], innovations)
    log_loss = np.log(base(steps.astype(np.float64))) + log_noise
    labels = sorted(events, key=lambda e: e.onset_step)
    for event in labels:
        log_loss += event.log_excess(steps)
    return steps, np.exp(log_loss), labels


def random_labeled_suite(n_curves: int = 250, seed: int = 0, n_steps: int = 5000) -> list[LabeledCurve]:
    """Draws a varied labelled set of curves for benchmarks and tests.

    Curves cycle through ``clean``, ``fast_recovering`` (1-3 spikes per curve), ``slow_recovering``,
    ``not_recovering`` (half settle on a higher level, half also drift upwards) and ``divergence``. Each curve
    has its own power-law base, noise in 0.5%-3% and noise autocorrelation in 0-0.3. A quarter of the curves
    start at step 0 (events in the steep early phase); the rest are windows of a longer run starting at steps
    2k-30k, where the loss curves more gently. Spike heights are log-uniform in 15%-150%; level shifts
    log-uniform in 8%-40%. Events start at least 500 steps into the curve, and early enough that the curve
    shows how they end (a ``not_recovering`` spike is followed for at least 2500 steps).

    Args:
        n_curves (int): Number of curves.
        seed (int): Seed of the whole suite.
        n_steps (int): Length of every curve (at least 4000).

    Returns:
        list[LabeledCurve]: The curves.
    """
    if n_steps < 4000:
        raise ValueError(f'n_steps must be at least 4000 to fit every event kind, got {n_steps}.')
    rng = np.random.default_rng(seed)
    kinds = (CLEAN,) + EVENT_KINDS
    curves = []
    for i in range(n_curves):
        kind = kinds[i % len(kinds)]
        l_inf = rng.uniform(1.6, 2.6)
        t0 = _log_uniform(rng, 300.0, 3000.0)
        alpha = rng.uniform(0.3, 0.7)
        base = CurveBase(l_inf=l_inf, amplitude=rng.uniform(1.0, 4.0) * t0**alpha, t0=t0, alpha=alpha)
        noise = rng.uniform(0.005, 0.03)
        autocorr = rng.uniform(0.0, 0.3)
        start = 0 if rng.random() < 0.25 else int(rng.integers(2000, 30001))
        events = [] if kind == CLEAN else _random_events(rng, kind, n_steps)
        events = [replace(e, onset_step=start + e.onset_step) for e in events]
        steps, loss, labels = make_curve(n_steps, events, noise, int(rng.integers(2**31)), autocorr=autocorr,
                                         base=base, start_step=start)
        curves.append(LabeledCurve(f'{kind}-{i:03d}', kind, steps, loss, labels, noise, autocorr))
    return curves


def _random_events(rng: np.random.Generator, kind: str, n_steps: int) -> list[EventSpec]:
    """Events of ``kind`` with onsets relative to the start of an ``n_steps`` curve."""
    if kind == FAST_RECOVERING:
        # One to three spikes, at least 400 steps apart so each is over before the next starts.
        count = int(rng.integers(1, 4))
        onsets = 500 + 400 * np.arange(count) + np.sort(rng.integers(0, n_steps - 1000 - 400 * count, count))
        return [
            EventSpec(kind, int(onset), height=_log_uniform(rng, 0.15, 1.5), rise_steps=int(rng.integers(1, 4)),
                      recovery_steps=int(rng.integers(5, 101)), recovery_curvature=rng.uniform(2.0, 5.0))
            for onset in onsets
        ]
    if kind == SLOW_RECOVERING:
        recovery = int(rng.integers(300, 1501))
        return [
            EventSpec(kind, int(rng.integers(500, n_steps - recovery - 500)), height=_log_uniform(rng, 0.15, 1.5),
                      rise_steps=int(rng.integers(1, 4)), recovery_steps=recovery,
                      recovery_curvature=rng.uniform(0.3, 1.2))
        ]
    if kind == NOT_RECOVERING:
        level_shift = _log_uniform(rng, 0.08, 0.4)
        drift = rng.uniform(5e-5, 2e-4) if rng.random() < 0.5 else 0.0
        return [
            EventSpec(kind, int(rng.integers(500, n_steps - 2500)),
                      height=_log_uniform(rng, max(0.15, 2.0 * level_shift), 1.5),
                      rise_steps=int(rng.integers(1, 4)), recovery_steps=int(rng.integers(5, 51)),
                      level_shift=level_shift, drift=drift)
        ]
    return [
        EventSpec(kind, int(rng.integers(800, n_steps - 2500)), drift=rng.uniform(1e-4, 4e-4),
                  ramp_steps=int(rng.integers(100, 501)))
    ]


def _truncated_exp_decay(s: np.ndarray, curvature: float) -> np.ndarray:
    """``1`` at ``s = 0`` falling to ``0`` at ``s = 1`` like ``exp(-curvature * s)``; ``0`` after."""
    floor = math.exp(-curvature)
    decay = (np.exp(-curvature * np.clip(s, 0.0, 1.0)) - floor) / (1.0 - floor)
    return np.where(s >= 1.0, 0.0, decay)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))
