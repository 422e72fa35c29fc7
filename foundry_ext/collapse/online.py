"""Collapse residuals and final-loss predictions computed point by point, as a run trains.

:func:`~foundry_ext.collapse.prediction.collapse_residual` and
:func:`~foundry_ext.collapse.prediction.predict_final_loss` read a whole curve. A monitor that called them at every
evaluation would redo all its history each time (O(n) per evaluation, O(n^2) over a run). :class:`OnlineCollapse`
gives the same numbers for the newest point from a bounded state: counts and sums of the residuals
``r_i = log L_i - log ell_hat(t_i)`` in the three early-align windows, and the points of the current prediction
window.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from foundry_ext.collapse.prediction import ALIGN_WINDOW, min_alignment_points
from foundry_ext.collapse.reference import ReferenceCurve
from foundry_ext.core.errors import fail

log = logging.getLogger(__name__)

__all__ = ['Evaluation', 'OnlineCollapse']


@dataclass(frozen=True)
class Evaluation:
    """What the newest point says: its residual and the final loss predicted from everything so far.

    Attributes:
        fraction (float): ``t/T`` of the point.
        residual (float): ``L/L(T) - ell_hat`` with the early-aligned ``L(T)``.
        z (float): ``residual`` in reference band widths.
        final_loss (float): Predicted ``L(T)``; ``lower`` and ``upper`` bound its interval.
        lower (float): Lower end of the interval.
        upper (float): Upper end of the interval.
    """

    fraction: float
    residual: float
    z: float
    final_loss: float
    lower: float
    upper: float


class OnlineCollapse:
    """The residual and the prediction of each new point of one run, in O(window) time and memory.

    Numbers equal those of ``collapse_residual(points so far)`` (newest point) and ``predict_final_loss(points so
    far, window=window)``; the state is bounded by the prediction window, not by the run's length.

    Args:
        ref (ReferenceCurve): The run's reference (specialized to its controls).
        total_steps (int): ``T``.
        window (float): Prediction window in ``t/T`` (as ``predict_final_loss``).
        align_window (tuple[float, float]): Early-align window (as ``collapse_residual``).
        z (float): Interval half-width in standard errors.
    """

    def __init__(self, ref: ReferenceCurve, total_steps: int, window: float = ALIGN_WINDOW,
                 align_window: tuple[float, float] = (0.25, 0.5), z: float = 2.0) -> None:
        if total_steps <= 0:
            fail(f'total_steps must be positive, got {total_steps}.')
        self.ref, self.total_steps, self.window, self.z = ref, total_steps, window, z
        lo = ref.fit_start
        # The early-align windows of collapse_residual, in the order it tries them.
        self._align = ((max(align_window[0], lo), align_window[1]), (lo, align_window[1]), (lo, 1.0))
        self._counts = [0, 0, 0]
        self._sums = [0.0, 0.0, 0.0]
        self._recent: deque[tuple[float, float, float]] = deque()  # (t, r, (band/ell_hat)^2) of the window
        self._last_step = -math.inf
        self._min_points = min_alignment_points(ref.smoothing)

    def add(self, step: float, loss: float) -> Optional[Evaluation]:
        """Adds the newest (smoothed) point; returns its evaluation once two points are past ``fit_start``."""
        if not (math.isfinite(loss) and loss > 0) or step <= self._last_step:
            fail(f'points must come at increasing steps with finite, positive losses; got {loss!r} at step {step}.')
        self._last_step = step
        t = step / self.total_steps
        if t < self.ref.fit_start:
            return None  # the reference is undefined in the warmup
        ell = float(self.ref(np.array([t]))[0])
        band = float(self.ref.band(np.array([t]))[0])
        r = math.log(loss) - math.log(ell)
        for i, (a, b) in enumerate(self._align):
            if a <= t <= b:
                self._counts[i] += 1
                self._sums[i] += r
        self._recent.append((t, r, (band / ell)**2))
        while len(self._recent) > self._min_points and self._recent[0][0] < t - self.window:
            self._recent.popleft()
        if self._counts[2] < 2:
            return None
        i = next(i for i in range(3) if self._counts[i] >= 2)
        final = math.exp(self._sums[i] / self._counts[i])
        residual = loss / final - ell
        window = np.array(self._recent)
        log_final = float(np.mean(window[:, 1]))
        sigma = math.sqrt(np.var(window[:, 1], ddof=1) / len(window) + np.mean(window[:, 2]))
        predicted = math.exp(log_final)
        return Evaluation(fraction=t, residual=residual, z=residual / band, final_loss=predicted,
                          lower=predicted * math.exp(-self.z * sigma), upper=predicted * math.exp(self.z * sigma))

    def state_dict(self) -> dict[str, Any]:
        """The bounded state: window sums and counts, and the prediction window's points."""
        return {'counts': list(self._counts), 'sums': list(self._sums), 'recent': [list(p) for p in self._recent],
                'last_step': self._last_step if math.isfinite(self._last_step) else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self._counts = [int(c) for c in state['counts']]
        self._sums = [float(s) for s in state['sums']]
        self._recent = deque(tuple(p) for p in state['recent'])
        self._last_step = -math.inf if state['last_step'] is None else float(state['last_step'])
