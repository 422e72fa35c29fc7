"""The normal-mode statistics of a loss stream, for any number of points at once.

:func:`advance` takes the statistics' state and a stretch of losses and returns the state after them together
with, for every point, the trend prediction, the noise, the spike threshold and whether the point was above it.
The online detector calls it with one point per step, the offline analysis with thousands: both run the very
same numpy code, so they agree to the last bit (``scipy.signal.lfilter`` runs the same recursion as a loop
would, and medians pick elements). Per point, in log-loss space ``y = log(loss)``:

1. *Local median and noise.* ``m`` is the (lower) median of the previous 5 points, ``a = |y - m|``, and the
   noise ``sigma`` is the median of the previous ``noise_window`` values of ``a``, scaled to the standard
   deviation of Gaussian noise:

   .. math:: \\sigma = \\frac{\\operatorname{median}(a)}{\\Phi^{-1}(3/4)\\sqrt{1 + \\operatorname{Var}(\\mathrm{med}_5)}}

   Both are rank statistics of the losses alone, so a single bad batch moves neither, and no estimate feeds
   back into its own input: that is what lets a whole series be filtered at once.
2. *Trend.* ``z = clip(y, m - c sigma, m + c sigma)`` (winsorised at ``clip_sigmas``) feeds exponentially
   weighted least-squares fits in ``u = log(step + 1)``: a quadratic (half-life ``trend_halflife``) for the level
   at the latest point, and for the slope a long line (``slope_halflife``) unless the two slopes differ by more
   than 3 standard errors (curvature). The sums are kept about an origin that moves every ``block`` points, so
   they stay well conditioned however long the run. The prediction ``y_hat`` extends the level along the slope.
3. *Threshold.* A point is above the spike threshold if ``y - y_hat > max(z_threshold * sigma,
   log1p(min_height))`` (only after ``warmup_steps`` points).
4. *Smoothed loss.* An EWMA of ``z`` (span ``divergence_span``) and its running minimum since the warmup;
   a rise of more than ``log1p(divergence_rise)`` opens a divergence, a return to within ``log1p(recover_tol)``
   closes it. :func:`advance` stops right after such a transition, so the caller can report it.

The variance and lag-1 autocorrelation ``phi`` of the winsorised residuals ``z - level`` (EWMAs, half-life
``noise_halflife``) give the noise that averages over many points see, ``var * (1 + phi) / (1 - phi)``: it judges
the slopes' standard errors and the smoothed loss.
"""

from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np
from scipy.ndimage import rank_filter
from scipy.signal import lfilter

log = logging.getLogger(__name__)

__all__ = ['Stats', 'StatsConfig', 'Trace', 'advance', 'encode_float', 'project', 'trailing_lower_medians']

# Points in the local median.
LOCAL_WINDOW = 5
# Var(median of 5 iid N(0, 1)): y - m has variance 1 + this for Gaussian noise.
_MEDIAN5_VAR = 0.28683366160587653
SIGMA_PER_MEDIAN_ABS = 1.0 / (0.6744897501960817 * math.sqrt(1.0 + _MEDIAN5_VAR))
# Residuals of the latest points kept to walk a spike's onset back over its rise (plus two run points).
RECENT = 5
# Up to this many points, medians are taken one by one rather than by the rank filter.
_FEW = 8
# Slopes of the quadratic and the line differ by more than this many standard errors: the loss curves.
_SLOPE_SWITCH_SIGMAS = 4.0


@dataclass(frozen=True)
class StatsConfig:
    """Settings of the statistics (derived from the detector's settings)."""

    warmup: int
    noise_window: int
    clip: float
    z: float
    min_log_height: float
    quad_decay: float
    line_decay: float
    noise_decay: float
    ema_alpha: float
    log_rise: float
    log_tol: float
    block: int


@dataclass(frozen=True)
class Stats:
    """State of the statistics after some points (immutable; :func:`advance` returns a new one).

    ``quad`` holds the quadratic's weighted sums ``s0..s4, t0..t2`` (``s_k = sum w dx^k``,
    ``t_k = sum w dx^k (z - y0)``) and ``line`` the line's ``s0..s2, t0, t1``, both about the origin ``(u0, y0)``.
    ``div`` is the open divergence (``onset_step``, ``threshold_step``, ``peak_step``, ``peak_y``, ``baseline_y``).
    """

    n: int = 0
    ywin: tuple = ()
    awin: tuple = ()
    u0: float = 0.0
    y0: float = 0.0
    quad: tuple = (0.0,) * 8
    line: tuple = (0.0,) * 5
    last_u: float = 0.0
    var: float = 0.0
    lag: float = 0.0
    prev_e: float = 0.0
    ema: float = math.nan
    ema_min: float = math.inf
    climb_step: int = 0
    div: Optional[dict[str, Any]] = None
    recent: tuple = ()

    @property
    def sigma(self) -> float:
        """Robust standard deviation of the log-loss noise (0 before there are two points)."""
        if not self.awin:
            return 0.0
        return SIGMA_PER_MEDIAN_ABS * float(np.partition(np.asarray(self.awin), (len(self.awin) - 1) // 2)[
            (len(self.awin) - 1) // 2])

    def effective_noise_var(self) -> float:
        """The robust noise variance scaled for the residuals' lag-1 autocorrelation: what medians over many
        points see."""
        sigma = self.sigma
        return float((sigma * sigma * _correlation_factor(np.array([self.var]), np.array([self.lag])))[0])

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (non-finite floats as strings)."""
        state = {name: getattr(self, name) for name in self.__dataclass_fields__}
        state.update(ywin=list(self.ywin), awin=list(self.awin), quad=list(self.quad), line=list(self.line),
                     recent=[list(p) for p in self.recent], ema=encode_float(self.ema), ema_min=encode_float(self.ema_min),
                     div=None if self.div is None else dict(self.div))
        return state

    @classmethod
    def from_json(cls, state: dict[str, Any]) -> 'Stats':
        return cls(**{
            **state, 'ywin': tuple(state['ywin']), 'awin': tuple(state['awin']), 'quad': tuple(state['quad']),
            'line': tuple(state['line']), 'recent': tuple(tuple(p) for p in state['recent']),
            'ema': float(state['ema']), 'ema_min': float(state['ema_min']),
            'div': None if state['div'] is None else dict(state['div'])
        })


@dataclass
class Trace:
    """Per-point results of :func:`advance` for the ``m`` points it consumed (``m`` < input length only when a
    divergence transition stopped it). ``pred`` is NaN for the first point of a stream; ``above`` is False
    during the warmup; ``ema`` is the smoothed log-loss after each point, ``eff_var`` the effective noise
    variance before it. ``transition`` is ``('open' | 'close', index, divergence record)`` or None."""

    steps: np.ndarray
    y: np.ndarray
    pred: np.ndarray
    sigma: np.ndarray
    margin: np.ndarray
    residual: np.ndarray
    above: np.ndarray
    fitted: np.ndarray
    ema: np.ndarray
    eff_var: np.ndarray
    transition: Optional[tuple] = None

    @property
    def m(self) -> int:
        return len(self.steps)


def advance(cfg: StatsConfig, st: Stats, steps: np.ndarray, ys: np.ndarray, divergence: bool = True,
            ) -> tuple[Trace, Stats]:
    """Adds finite log-losses ``ys`` at increasing ``steps`` to the statistics.

    Stops right after a point at which a divergence opens or closes (``Trace.transition``), so fewer points than
    given may be consumed (``Trace.m``).

    Args:
        cfg (StatsConfig): Settings.
        st (Stats): State before the first point.
        steps (np.ndarray): Steps (int64), increasing and after every step already added.
        ys (np.ndarray): Finite log-losses.
        divergence (bool): Track the smoothed loss for divergences (off while replaying points for a refit).

    Returns:
        tuple[Trace, Stats]: The per-point trace and the state after its last point.
    """
    steps = np.asarray(steps, dtype=np.int64)
    ys = np.asarray(ys, dtype=np.float64)
    if st.n == 0 and len(ys):
        first = _first_point(int(steps[0]), float(ys[0]))
        head = Trace(steps[:1], ys[:1], np.full(1, np.nan), np.zeros(1), np.full(1, cfg.min_log_height),
                     np.full(1, np.nan), np.zeros(1, bool), np.zeros(1, bool), np.full(1, first.ema), np.zeros(1))
        if len(ys) == 1:
            return head, first
        rest, state = advance(cfg, first, steps[1:], ys[1:], divergence)
        return _concat(head, rest), state
    trace, state = _stretch(cfg, st, steps, ys)
    if not divergence or not len(ys):
        return trace, state
    m, ema_min, climb, div, transition = _divergence(cfg, st, trace)
    if m < len(ys):
        trace, state = _stretch(cfg, st, steps[:m], ys[:m])
    trace.transition = transition
    return trace, replace(state, ema_min=ema_min, climb_step=climb, div=div)


def _stretch(cfg: StatsConfig, st: Stats, steps: np.ndarray, ys: np.ndarray) -> tuple[Trace, Stats]:
    """:func:`advance` for a state with at least one point, leaving the divergence tracking as it was."""
    n0, count = st.n, len(ys)
    u = np.log1p(steps.astype(np.float64))
    local = trailing_lower_medians(np.asarray(st.ywin), ys, LOCAL_WINDOW)
    dev = np.abs(ys - local)
    sigma = SIGMA_PER_MEDIAN_ABS * np.nan_to_num(trailing_lower_medians(np.asarray(st.awin), dev, cfg.noise_window))
    bound = cfg.clip * sigma
    z = np.where(sigma > 0.0, np.minimum(np.maximum(ys, local - bound), local + bound), ys)

    # Weighted sums before each point, about the origin in effect then; the origin moves every `block` points.
    quad_prev, line_prev = np.empty((8, count)), np.empty((5, count))
    x_last, x_now, y_ref = np.empty(count), np.empty(count), np.empty(count)
    quad, line, u0, y0, last_u = np.array(st.quad), np.array(st.line), st.u0, st.y0, st.last_u
    start = 0
    while start < count:
        end = min(count, start + cfg.block - (n0 + start) % cfg.block)
        x = u[start:end] - u0
        q = z[start:end] - y0
        x2 = x * x
        ones = np.ones_like(x)
        quad_out = lfilter([1.0], [1.0, -cfg.quad_decay], np.stack([ones, x, x2, x2 * x, x2 * x2, q, q * x, q * x2]),
                           axis=1, zi=(cfg.quad_decay * quad)[:, None])[0]
        line_out = lfilter([1.0], [1.0, -cfg.line_decay], np.stack([ones, x, x2, q, q * x]), axis=1,
                           zi=(cfg.line_decay * line)[:, None])[0]
        quad_prev[:, start], quad_prev[:, start + 1:end] = quad, quad_out[:, :-1]
        line_prev[:, start], line_prev[:, start + 1:end] = line, line_out[:, :-1]
        x_last[start], x_last[start + 1:end] = last_u - u0, x[:-1]
        x_now[start:end], y_ref[start:end] = x, y0
        quad, line, last_u = quad_out[:, -1], line_out[:, -1], float(u[end - 1])
        if (n0 + end) % cfg.block == 0:
            quad, line, u0, y0 = _shift(quad, line, u0, y0, last_u, float(z[end - 1]))
        start = end

    level, slope_curved, var_curved = _curved(quad_prev, x_last, cfg.quad_decay)
    slope_line, var_line = _line(line_prev, cfg.line_decay)
    # Variance and lag-1 products of the winsorised residuals about the level (not the prediction: its slope
    # needs them): what the least-squares fits and the smoothed loss see.
    e = z - (y_ref + level)
    var, lag = lfilter([1.0 - cfg.noise_decay], [1.0, -cfg.noise_decay],
                       np.stack([e * e, e * np.concatenate([[st.prev_e], e[:-1]])]), axis=1,
                       zi=cfg.noise_decay * np.array([[st.var], [st.lag]]))[0]
    var_before = np.concatenate([[st.var], var[:-1]])
    eff_var = var_before * _correlation_factor(var_before, np.concatenate([[st.lag], lag[:-1]]))
    pred = y_ref + level + _slope(slope_curved, var_curved, slope_line, var_line, eff_var) * (x_now - x_last)
    residual = ys - pred
    margin = np.maximum(cfg.z * sigma, cfg.min_log_height)
    fitted = np.arange(n0, n0 + count) >= cfg.warmup
    beta = 1.0 - cfg.ema_alpha
    ema = lfilter([cfg.ema_alpha], [1.0, -beta], z, zi=[beta * st.ema])[0]
    trace = Trace(steps, ys, pred, sigma, margin, residual, fitted & (residual > margin), fitted, ema, eff_var)
    last = np.flatnonzero(fitted)[-RECENT:]
    recent = st.recent + tuple(zip(steps[last].tolist(), residual[last].tolist()))
    return trace, replace(
        st, n=n0 + count, ywin=(st.ywin + tuple(ys[-LOCAL_WINDOW:].tolist()))[-LOCAL_WINDOW:],
        awin=(st.awin + tuple(dev[-cfg.noise_window:].tolist()))[-cfg.noise_window:], u0=u0, y0=y0,
        quad=tuple(quad.tolist()), line=tuple(line.tolist()), last_u=last_u, var=float(var[-1]), lag=float(lag[-1]),
        prev_e=float(e[-1]),
        ema=float(ema[-1]), recent=recent[-RECENT:])


def project(cfg: StatsConfig, st: Stats, steps: np.ndarray) -> np.ndarray:
    """The trend of state ``st`` extended to ``steps`` (a spike's projected pre-spike level): what
    :func:`advance` would predict there if no point were added in between."""
    steps = np.asarray(steps, dtype=np.int64)
    count = len(steps)
    if st.n == 0:
        return np.full(count, np.nan)
    x_now = np.log1p(steps.astype(np.float64)) - st.u0
    x_last = np.full(count, st.last_u - st.u0)
    quad = np.repeat(np.array(st.quad)[:, None], count, axis=1)
    line = np.repeat(np.array(st.line)[:, None], count, axis=1)
    level, slope_curved, var_curved = _curved(quad, x_last, cfg.quad_decay)
    slope_line, var_line = _line(line, cfg.line_decay)
    eff_var = np.full(count, st.var * _correlation_factor(np.array([st.var]), np.array([st.lag]))[0])
    return st.y0 + level + _slope(slope_curved, var_curved, slope_line, var_line, eff_var) * (x_now - x_last)


# Pieces of advance.


def _first_point(step: int, y: float) -> Stats:
    u = float(np.log1p(np.array([step], dtype=np.float64))[0])
    return Stats(n=1, ywin=(y,), u0=u, y0=y, quad=(1.0,) + (0.0,) * 7, line=(1.0,) + (0.0,) * 4, last_u=u, ema=y)


def trailing_lower_medians(prev: np.ndarray, new: np.ndarray, size: int) -> np.ndarray:
    """For each ``new[i]``, the lower median of the (up to) ``size`` values before it in ``prev + new``
    (NaN where there is none)."""
    known, count = len(prev), len(new)
    out = np.full(count, np.nan)
    partial = min(count, max(0, size - known))  # points whose window is not full yet (a new stream)
    if partial:
        window = sorted(prev.tolist())
        for i in range(partial):
            if window:
                out[i] = window[(len(window) - 1) // 2]
            bisect.insort(window, float(new[i]))
    if count - partial > _FEW:
        seq = np.concatenate([prev[len(prev) - max(0, size - partial):] if size > partial else prev[:0],
                              new[max(0, partial - size):count - 1]])
        out[partial:] = rank_filter(seq, rank=(size - 1) // 2, size=size, origin=(size - 1) // 2)[size - 1:]
    elif count > partial:  # a few points (the online detector's one): cheaper than the filter, the same elements
        seq = np.concatenate([prev, new])
        for i in range(partial, count):
            out[i] = np.partition(seq[known + i - size:known + i], (size - 1) // 2)[(size - 1) // 2]
    return out


def _shift(quad: np.ndarray, line: np.ndarray, u0: float, y0: float, u1: float, y1: float,
           ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Moves the sums' origin from ``(u0, y0)`` to ``(u1, y1)``: ``dx -> dx - d``, ``q -> q - e``."""
    d, e = u1 - u0, y1 - y0
    s0, s1, s2, s3, s4, t0, t1, t2 = quad.tolist()
    n1 = s1 - d * s0
    n2 = s2 - 2.0 * d * s1 + d * d * s0
    n3 = s3 - 3.0 * d * s2 + 3.0 * d * d * s1 - d**3 * s0
    n4 = s4 - 4.0 * d * s3 + 6.0 * d * d * s2 - 4.0 * d**3 * s1 + d**4 * s0
    m0 = t0 - e * s0
    m1 = t1 - d * t0 - e * n1
    m2 = t2 - 2.0 * d * t1 + d * d * t0 - e * n2
    l0, l1, l2, k0, k1 = line.tolist()
    j1 = l1 - d * l0
    j2 = l2 - 2.0 * d * l1 + d * d * l0
    return (np.array([s0, n1, n2, n3, n4, m0, m1, m2]), np.array([l0, j1, j2, k0 - e * l0, k1 - d * k0 - e * j1]),
            u1, y1)


def _curved(quad: np.ndarray, x: np.ndarray, decay: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Level and slope of the weighted quadratic at ``x``, and the slope's variance per unit noise variance.

    The variance is the sandwich form of weighted least squares with exponential weights, approximated as
    ``e' M^-1 e / (1 + decay)`` with ``e = (0, 1, 2x)``. Where the points cannot pin a curvature (a new stream),
    the same sums are solved as a line, and where they cannot pin a slope, as a mean.
    """
    s0, s1, s2, s3, s4, t0, t1, t2 = quad
    c00 = s2 * s4 - s3 * s3
    c01 = s2 * s3 - s1 * s4
    c02 = s1 * s3 - s2 * s2
    c11 = s0 * s4 - s2 * s2
    c12 = s1 * s2 - s0 * s3
    c22 = s0 * s2 - s1 * s1
    det = s0 * c00 + s1 * c01 + s2 * c02
    with np.errstate(divide='ignore', invalid='ignore'):
        a0 = (c00 * t0 + c01 * t1 + c02 * t2) / det
        a1 = (c01 * t0 + c11 * t1 + c12 * t2) / det
        a2 = (c02 * t0 + c12 * t1 + c22 * t2) / det
        quad_level = a0 + x * (a1 + a2 * x)
        quad_slope = a1 + 2.0 * a2 * x
        quad_var = (c11 + 4.0 * x * (c12 + x * c22)) / det / (1.0 + decay)
        b1 = (s0 * t1 - s1 * t0) / c22
        line_level = (t0 - b1 * s1) / s0 + b1 * x
        line_var = s0 / c22 / (1.0 + decay)
        mean = t0 / s0
    is_quad = det > 1e-9 * s0 * s2 * s4
    is_line = c22 > 1e-9 * s0 * s2
    level = np.where(is_quad, quad_level, np.where(is_line, line_level, mean))
    slope = np.where(is_quad, quad_slope, np.where(is_line, b1, 0.0))
    var = np.where(is_quad, quad_var, np.where(is_line, line_var, np.inf))
    return level, slope, var


def _line(line: np.ndarray, decay: float) -> tuple[np.ndarray, np.ndarray]:
    """Slope of the weighted line and its variance per unit noise variance (0 and inf if it has no slope)."""
    s0, s1, s2, t0, t1 = line
    det = s0 * s2 - s1 * s1
    ok = det > 1e-9 * s0 * s2
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(ok, (s0 * t1 - s1 * t0) / det, 0.0), np.where(ok, s0 / det / (1.0 + decay), np.inf)


def _slope(curved: np.ndarray, var_curved: np.ndarray, line: np.ndarray, var_line: np.ndarray,
           eff_var: np.ndarray) -> np.ndarray:
    """The line's slope unless the quadratic's differs from it by more than 3 standard errors."""
    gap = curved - line
    with np.errstate(invalid='ignore'):
        bent = gap * gap > _SLOPE_SWITCH_SIGMAS**2 * eff_var * (var_curved + var_line)
    return np.where(bent, curved, line)


def _correlation_factor(var: np.ndarray, lag: np.ndarray) -> np.ndarray:
    """``(1 + phi) / (1 - phi)``, the variance factor of averages over many points, with the lag-1
    autocorrelation ``phi = lag / var`` clamped to ``[0, 0.9]``."""
    with np.errstate(divide='ignore', invalid='ignore'):
        phi = np.where(var > 0.0, np.minimum(np.maximum(lag / var, 0.0), 0.9), 0.0)
    return (1.0 + phi) / (1.0 - phi)


def _divergence(cfg: StatsConfig, st: Stats, trace: Trace) -> tuple[int, float, int, Optional[dict], Optional[tuple]]:
    """Runs the smoothed-loss tracker over a trace: the points consumed (through the first transition), the
    running minimum, the climb's start, the open divergence and the transition."""
    steps, ema, count = trace.steps, trace.ema, trace.m
    ema_min, climb, div = st.ema_min, st.climb_step, st.div
    first = max(0, cfg.warmup - st.n)  # first point checked (after the warmup)
    if first > count:
        return count, ema_min, climb, div, None
    if div is None and first > 0:  # the warmup ends in this stretch: the tracker starts at its last point
        ema_min, climb = float(ema[first - 1]), int(steps[first - 1])
    if first == count:
        return count, ema_min, climb, div, None
    tail = ema[first:]
    if div is not None:
        closes = np.flatnonzero(tail - ema_min < cfg.log_tol)
        stop = int(closes[0]) if len(closes) else len(tail)
        peak = int(np.argmax(tail[:stop + 1] if len(closes) else tail))
        if tail[peak] > div['peak_y']:
            div = {**div, 'peak_step': int(steps[first + peak]), 'peak_y': float(tail[peak])}
        if not len(closes):
            return count, ema_min, climb, div, None
        at = first + stop
        return at + 1, float(ema[at]), int(steps[at]), None, ('close', at, div)
    lows = np.minimum.accumulate(np.concatenate([[ema_min], tail]))[1:]
    rise = tail - lows
    opens = np.flatnonzero(rise > cfg.log_rise)
    stop = int(opens[0]) + 1 if len(opens) else len(tail)
    near = np.flatnonzero(rise[:stop] <= _ema_noise(cfg, trace, first, stop))
    if len(near):
        climb = int(steps[first + near[-1]])
    ema_min = float(lows[stop - 1])
    if not len(opens):
        return count, ema_min, climb, None, None
    at = first + stop - 1
    div = {'onset_step': climb, 'threshold_step': int(steps[at]), 'peak_step': int(steps[at]),
           'peak_y': float(ema[at]), 'baseline_y': ema_min}
    return at + 1, ema_min, climb, div, ('open', at, div)


def _ema_noise(cfg: StatsConfig, trace: Trace, first: int, stop: int) -> np.ndarray:
    """Three standard deviations of the smoothed loss's noise."""
    return 3.0 * np.sqrt(trace.eff_var[first:first + stop] * cfg.ema_alpha / (2.0 - cfg.ema_alpha))


def _concat(head: Trace, rest: Trace) -> Trace:
    names = ('steps', 'y', 'pred', 'sigma', 'margin', 'residual', 'above', 'fitted', 'ema', 'eff_var')
    joined = Trace(*(np.concatenate([getattr(head, k), getattr(rest, k)]) for k in names))
    if rest.transition is not None:
        kind, at, record = rest.transition
        joined.transition = (kind, at + head.m, record)
    return joined


def encode_float(value: float) -> Any:
    """``value``, or its ``repr`` if it is not finite (strict JSON has no NaN or infinities)."""
    return value if math.isfinite(value) else repr(value)
