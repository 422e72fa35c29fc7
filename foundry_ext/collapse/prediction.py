"""Early final-loss prediction and collapse residuals of a run against a reference curve.

[SwC] (Bergsma et al. 2025, arXiv:2509.25087) predicts a run's final loss as the divisor ``L(T)`` that best aligns
its partial curve with the reference (Sec. 5), and monitors training by the residual of the normalized curve
against the reference (Sec. 4, Fig. 1). Everything here is numpy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

from foundry_ext.collapse.curves import is_finished, validated_curve
from foundry_ext.collapse.reference import ReferenceCurve
from foundry_ext.core.errors import fail

__all__ = ['ALIGN_WINDOW', 'CollapseResidual', 'Prediction', 'alignment_window', 'collapse_residual',
           'final_window_losses', 'min_alignment_points', 'predict_final_loss']

log = logging.getLogger(__name__)

# Width in t/T of the newest part of a partial curve that a prediction aligns on; chosen on the SlimPajama and
# OpenWebText2 cosine families among 0.02, 0.03, 0.05 and 0.1 (docs/collapse.md).
ALIGN_WINDOW = 0.03


@dataclass(frozen=True)
class Prediction:
    """Predicted final loss of a partial run.

    Attributes:
        final_loss (float): Point estimate of ``L(T)``.
        lower (float): Lower end of the interval.
        upper (float): Upper end of the interval.
        log_sigma (float): Standard error of ``log L(T)``.
        n_points (int): Points used in the alignment.
        fraction_used (float): Largest ``t/T`` used.
    """

    final_loss: float
    lower: float
    upper: float
    log_sigma: float
    n_points: int
    fraction_used: float


def _mean_residual(t: np.ndarray, y: np.ndarray, ref: ReferenceCurve, window: np.ndarray) -> tuple[float, np.ndarray]:
    """Least-squares ``log L(T)`` aligning the points in ``window`` with the reference.

    Minimizing :math:`\\sum_i (\\log L_i - \\log L(T) - \\log\\hat\\ell(\\hat t_i))^2` gives the mean of
    :math:`r_i = \\log L_i - \\log\\hat\\ell(\\hat t_i)`.

    Returns:
        tuple: ``(log L(T), r_i)``.
    """
    r = np.log(y[window]) - np.log(ref(t[window]))
    return float(np.mean(r)), r


def alignment_window(t: np.ndarray, lo: float, hi: float, width: Optional[float], min_points: int = 2) -> np.ndarray:
    """The points a prediction aligns on: ``hi - width <= t/T <= hi``, widened back toward ``lo`` until it holds
    ``min_points`` points (sparse evaluations, or smoothed noisy losses), never below ``lo`` (the reference's start).

    Raises:
        ConfigError: With fewer than two points in ``[lo, hi]``, saying which fraction would work.
    """
    usable = (t >= lo) & (t <= hi)
    if usable.sum() < 2:
        past = t[t >= lo]
        fix = (f'the second logged point at or after it is at t/T={past[1]:.3f}: use a fraction of at least that'
               if past.size >= 2 else f'the run has {past.size} logged point(s) past it: refit the reference with a '
               'lower --fit-start or log the loss more often')
        fail(f'need at least 2 logged points with {lo:.3f} <= t/T <= {hi:.3f} to align with the reference, which '
             f'starts at t/T={lo:.3f}; {fix}.')
    window = usable & (t >= hi - width) if width is not None else usable
    if window.sum() < min_points:
        window = usable & (t >= t[usable][-min(min_points, int(usable.sum()))])
    return window


def min_alignment_points(smoothing: int) -> int:
    """Points a prediction averages at least: two, or four smoothing windows of a smoothed noisy loss (whose
    neighbouring points share most of their losses)."""
    return 2 if smoothing <= 1 else 4 * smoothing


def predict_final_loss(
    steps: Sequence[float],
    losses: Sequence[float],
    total_steps: int,
    ref: ReferenceCurve,
    fraction_used: Optional[float] = None,
    ignore_before: Optional[float] = None,
    z: float = 2.0,
    window: Optional[float] = ALIGN_WINDOW,
) -> Prediction:
    """Extrapolate ``L(T)`` from a partial curve, [SwC] Sec. 5 step 5.

    The divisor ``L(T)`` that best aligns the newest part of the partial curve with the reference is the
    prediction:

    .. math::

        \\log \\hat L(T) = \\frac{1}{n}\\sum_{i} \\big(\\log L_i - \\log\\hat\\ell(\\hat t_i)\\big),
        \\qquad \\sigma^2 = \\frac{s_r^2}{n} + \\overline{(\\sigma_{band}/\\hat\\ell)^2} + (\\bar\\epsilon/2)^2

    over the logged points with ``fraction_used - window <= t/T <= fraction_used`` (at least two, or four smoothing
    windows of a smoothed loss, and none before ``ignore_before``; :func:`alignment_window`). Aligning on the
    newest points, not on everything since the warmup, is ours: the reference runs differ from each other most
    early in training (where the band is widest), and those differences are largely one smooth change of shape, so
    older points add shape error rather than average it out (measured on real families in docs/collapse.md). The
    uncertainty (the paper gives none) adds the standard error of the mean residual (independent noise: optimistic
    for smoothed curves) and the reference band over the window as a fully correlated shape error. For a run beyond
    the reference runs' controls, the band (how well the reference runs predict each other) understates the error,
    so the mean over the window of the extrapolation error :math:`\\epsilon`
    (:meth:`ReferenceCurve.extrapolation_error`) is added too, half of it as one standard error: at ``z = 2`` the
    interval reaches a linear continuation of the size trend. The interval is ``exp(+-z sigma)`` around the
    estimate.

    Args:
        steps (Sequence[float]): Logged steps of the run (those after ``fraction_used`` are ignored).
        losses (Sequence[float]): Its losses.
        total_steps (int): ``T`` of the full run.
        ref (ReferenceCurve): Reference for the run's LR schedule, TPP and tau (:meth:`ReferenceCurve.for_controls`).
        fraction_used (float, optional): Use only ``t/T <= fraction_used`` (default: all points), e.g. 0.1-0.3 as
            in the paper.
        ignore_before (float, optional): Never align on points below this fraction (default ``ref.fit_start``).
        z (float): Interval half-width in standard errors.
        window (float, optional): Width of the alignment window in ``t/T``; None aligns on every point from
            ``ignore_before`` on (the ``L(T)`` a whole finished curve implies).

    Returns:
        Prediction: The estimate and interval.

    Raises:
        ConfigError: With fewer than two points between the reference's start and ``fraction_used``, saying which
            fraction would work.
    """
    t, y = validated_curve(steps, losses, total_steps)
    lo = ref.fit_start if ignore_before is None else max(ignore_before, ref.fit_start)
    hi = float(t[-1]) if fraction_used is None else fraction_used
    points = alignment_window(t, lo, hi, window, min_alignment_points(ref.smoothing))
    log_final, r = _mean_residual(t, y, ref, points)
    shape_rel = ref.band(t[points]) / ref(t[points])
    beyond = 0.5 * float(np.mean(ref.extrapolation_error(t[points])))  # the trend continued: 2 standard errors
    sigma = math.sqrt(np.var(r, ddof=1) / r.size + np.mean(shape_rel**2) + beyond**2)
    final = math.exp(log_final)
    return Prediction(
        final_loss=final,
        lower=final * math.exp(-z * sigma),
        upper=final * math.exp(z * sigma),
        log_sigma=sigma,
        n_points=int(r.size),
        fraction_used=float(t[points][-1]),
    )


def final_window_losses(
    steps: Sequence[float],
    losses: Sequence[float],
    total_steps: int,
    ref: ReferenceCurve,
    predicted_final_loss: float,
    window: float = 0.05,
) -> tuple[float, float]:
    r"""Measured and predicted mean loss over the last ``window`` of a finished run (at least its last point).

    ``L(T)`` of a single noisy curve is itself an estimate (the last logged losses scatter by
    several percent with small batches). The mean raw loss over the last ``window`` of training
    is a model-free measurement; the prediction of the same quantity is
    :math:`\hat L(T)\cdot\operatorname{mean}_i \hat\ell(\hat t_i)` over the same steps.

    Args:
        steps (Sequence[float]): Logged steps of the finished run (raw, not smoothed).
        losses (Sequence[float]): Its losses (training, or an eval loss logged every few hundred steps).
        total_steps (int): ``T``.
        ref (ReferenceCurve): The reference the prediction used.
        predicted_final_loss (float): Predicted ``L(T)`` (e.g. :attr:`Prediction.final_loss`).
        window (float): Trailing fraction of the run to average over.

    Returns:
        tuple[float, float]: ``(measured mean, predicted mean)``.
    """
    t, y = validated_curve(steps, losses, total_steps)
    if not is_finished(steps, total_steps):
        fail(f'need a finished run with points in the last {window:.0%} of training; the last is at t/T={t[-1]:.3f}.')
    tail = t >= min(1.0 - window, t[-1])  # at least the last point, when evaluations are sparser than the window
    return float(np.mean(y[tail])), float(predicted_final_loss * np.mean(ref(t[tail])))


@dataclass(frozen=True, eq=False)  # array fields: element-wise equality is not meaningful here
class CollapseResidual:
    """Deviation of a run from the reference, point by point.

    Attributes:
        fractions (np.ndarray): ``t/T`` of each logged point.
        normalized (np.ndarray): ``L / L(T)`` with the ``final_loss`` below.
        reference (np.ndarray): :math:`\\hat\\ell(t/T)`.
        z (np.ndarray): ``(normalized - reference) / band``; NaN before ``fit_start`` (warmup is
            not monitored).
        final_loss (float): The ``L(T)`` used to normalize.
    """

    fractions: np.ndarray
    normalized: np.ndarray
    reference: np.ndarray
    z: np.ndarray
    final_loss: float

    @property
    def residual(self) -> np.ndarray:
        """``normalized - reference``: the collapse residual plotted in [SwC] Fig. 1 (right)."""
        return self.normalized - self.reference

    def out_of_band(self, threshold: float = 3.0) -> np.ndarray:
        """Boolean mask of points with ``|z| > threshold`` (NaN, i.e. warmup, is never out of band)."""
        with np.errstate(invalid='ignore'):
            return np.abs(self.z) > threshold

    def onset(self, threshold: float = 3.0, consecutive: int = 5) -> Optional[float]:
        """``t/T`` where the first run of ``consecutive`` out-of-band points starts, else None."""
        if consecutive < 1:
            fail('consecutive must be >= 1.')
        run = 0
        for i, flagged in enumerate(self.out_of_band(threshold)):
            run = run + 1 if flagged else 0
            if run == consecutive:
                return float(self.fractions[i - consecutive + 1])
        return None


def collapse_residual(
    steps: Sequence[float],
    losses: Sequence[float],
    total_steps: int,
    ref: ReferenceCurve,
    final_loss_estimate: Optional[float] = None,
    align_window: tuple[float, float] = (0.25, 0.5),
) -> CollapseResidual:
    """Residual of a (possibly in-progress) run against the reference, in units of the band.

    Normalizing needs ``L(T)`` before the run ends. Without ``final_loss_estimate`` this uses the
    paper's "early-align" strategy ([SwC] Sec. 4): ``L(T)`` is chosen so the curve best aligns
    with the reference over ``align_window`` (25-50% of training); until the run reaches the window,
    the points from ``ref.fit_start`` up to ``align_window[1]`` are used instead, and if fewer than two
    points lie there (sparse evaluations), every point from ``ref.fit_start`` on. Deviations that
    start after the window (like the numerics bug near 60% in the paper) then show as growing
    residuals.

    A point is *out of band* when
    :math:`|\\ell(\\hat t) - \\hat\\ell(\\hat t)| > k\\,\\sigma_{band}(\\hat t)` (``k = 3`` by
    default), i.e. outside the spread the reference runs themselves showed at that
    training fraction. A monitor should alert on ``N`` consecutive out-of-band evaluations
    (:meth:`CollapseResidual.onset`), not on single points, and should feed curves smoothed like
    the reference runs, since the band includes their logging noise.

    Args:
        steps (Sequence[float]): Logged steps.
        losses (Sequence[float]): Training losses.
        total_steps (int): ``T`` of the full run.
        ref (ReferenceCurve): Reference with the run's controls.
        final_loss_estimate (float, optional): ``L(T)`` to normalize with (e.g. from a scaling law:
            the paper's "estimate" strategy).
        align_window (tuple[float, float]): Early-align window in ``t/T``.

    Returns:
        CollapseResidual: Per-point residuals.
    """
    t, y = validated_curve(steps, losses, total_steps)
    if final_loss_estimate is None:
        # Widen the window until it holds two points: the paper's, then from fit_start, then everything.
        lo, hi = next(((a, b) for a, b in ((max(align_window[0], ref.fit_start), align_window[1]),
                                          (ref.fit_start, align_window[1]))
                       if np.count_nonzero((t >= a) & (t <= b)) >= 2), (ref.fit_start, 1.0))
        final_loss_estimate = math.exp(_mean_residual(t, y, ref, alignment_window(t, lo, hi, None))[0])
    normalized = y / final_loss_estimate
    reference = ref(t)
    z = (normalized - reference) / ref.band(t)
    return CollapseResidual(
        fractions=t,
        normalized=normalized,
        reference=reference,
        z=z,
        final_loss=float(final_loss_estimate),
    )
