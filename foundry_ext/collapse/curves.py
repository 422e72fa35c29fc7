"""Loss curves for collapse: validation, smoothing, normalizing by the final loss, and estimating ``L(T)``.

[SwC] (Bergsma et al. 2025, arXiv:2509.25087) divides a training-loss curve by its final loss and plots it over
the training fraction ``t/T`` (Eq. 1 with no offset, Sec. 3), after a moving average. Everything here is numpy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple, Optional

import numpy as np
from scipy import stats

from foundry_ext.core.errors import fail

__all__ = ['LossCurve', 'estimate_final_loss', 'is_finished', 'normalize_curve', 'smooth_curve', 'validated_curve']

log = logging.getLogger(__name__)


class LossCurve(NamedTuple):
    """One run's training loss: ``losses[i]`` logged after step ``steps[i]`` of ``total_steps``."""

    steps: Sequence[float]
    losses: Sequence[float]
    total_steps: int


def validated_curve(
    steps: Sequence[float],
    losses: Sequence[float],
    total_steps: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(t/T, losses)`` as float arrays after checking shapes and values.

    Raises:
        ConfigError: For empty or mismatched arrays, non-positive ``total_steps``, non-finite or non-positive
            losses, or steps that do not increase.
    """
    s = np.asarray(steps, dtype=float)
    y = np.asarray(losses, dtype=float)
    if s.ndim != 1 or s.shape != y.shape or s.size == 0:
        fail('steps and losses must be non-empty 1-D sequences of equal length.')
    if total_steps <= 0:
        fail(f'total_steps must be positive, got {total_steps}.')
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(y)) and np.all(y > 0)):
        fail('steps must be finite and losses finite and positive.')
    if np.any(np.diff(s) <= 0):
        fail('steps must be strictly increasing.')
    return s / total_steps, y


def is_finished(steps: Sequence[float], total_steps: int) -> bool:
    """Whether a curve was logged to the end of its run: the loss of the last batch is logged at step ``T - 1``,
    and an eval loss logged every ``g`` steps ends within ``g`` of ``T``."""
    s = np.asarray(steps, dtype=float)
    gap = float(np.median(np.diff(s))) if s.size > 1 else 1.0
    return float(s[-1]) + max(gap, 1.0) >= total_steps


def estimate_final_loss(
    steps: Sequence[float],
    losses: Sequence[float],
    total_steps: int,
    tail_fraction: float = 0.02,
) -> float:
    """Robust estimate of ``L(T)`` from the end of a finished run.

    [SwC] divides by the (moving-average smoothed) final training loss. A trailing mean is biased
    upward when the LR decays to zero, because the loss still falls steeply at the end; instead this
    fits a Theil-Sen line (median of pairwise slopes, robust to spikes) to the points with
    ``t/T >= 1 - tail_fraction`` (at least the last 3 points) and evaluates it at ``T``.

    Args:
        steps (Sequence[float]): Logged steps, strictly increasing.
        losses (Sequence[float]): Training losses at those steps.
        total_steps (int): ``T``. The curve must be finished (:func:`is_finished`).
        tail_fraction (float): Width of the tail window as a fraction of the run.

    Returns:
        float: Estimated final loss.
    """
    t, y = validated_curve(steps, losses, total_steps)
    if not is_finished(steps, total_steps):
        fail(f'the curve ends at t/T={t[-1]:.3f}; estimate_final_loss needs a finished run. Pass final_loss '
             'explicitly or use predict_final_loss for a partial run.')
    tail = t >= 1.0 - tail_fraction
    if tail.sum() < 3:
        tail = np.arange(t.size) >= t.size - 3
    if tail.sum() < 2:
        return float(y[-1])
    slope, intercept, _, _ = stats.theilslopes(y[tail], t[tail])
    return float(intercept + slope * 1.0)


def normalize_curve(
    steps: Sequence[float],
    losses: Sequence[float],
    total_steps: int,
    final_loss: Optional[float] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalized training-loss curve of [SwC] Eq. (1) with :math:`\\hat L = 0` (Sec. 3):

    .. math::

        \\ell(\\hat t) = \\frac{L(\\hat t \\cdot T)}{L(T)}, \\qquad \\hat t = t/T

    [SwC] found dividing by the final loss (no irreducible-loss offset, unlike Qiu et al. 2025)
    aligned curves best. The paper also smooths with a 100-step moving average before
    normalizing; this function does not smooth, so pass already-smoothed losses if you want that.

    Args:
        steps (Sequence[float]): Logged steps, strictly increasing.
        losses (Sequence[float]): Training losses.
        total_steps (int): ``T``.
        final_loss (float, optional): ``L(T)``; estimated with :func:`estimate_final_loss` when
            omitted (which requires a finished curve).

    Returns:
        tuple[np.ndarray, np.ndarray]: ``(t/T, L/L(T))``.
    """
    t, y = validated_curve(steps, losses, total_steps)
    if final_loss is None:
        final_loss = estimate_final_loss(steps, losses, total_steps)
    if final_loss <= 0:
        fail(f'final_loss must be positive, got {final_loss}.')
    return t, y / final_loss


def smooth_curve(
    steps: Sequence[float],
    losses: Sequence[float],
    window: int,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Trailing moving average of ``window`` logged points, placed at the mean step of its window.

    [SwC] smooths training losses with a 100-step moving average before normalizing (Sec. 3). A
    trailing mean lags a falling curve by ``(window - 1) / 2`` steps; placing it at the mean step of
    its window removes that lag for a locally linear curve, while staying causal (an online monitor
    computes the same value once the window's last loss is known):

    .. math::

        \bar L_k = \frac{1}{W}\sum_{j=k-W+1}^{k} L_j \quad\text{at}\quad
        \bar t_k = \frac{1}{W}\sum_{j=k-W+1}^{k} t_j, \qquad k \ge W - 1

    Reference runs and monitored runs must be smoothed with the same ``window``, since the reference
    band measures the spread of the smoothed curves (:attr:`ReferenceCurve.smoothing` records it).

    Args:
        steps (Sequence[float]): Logged steps, strictly increasing (normally every step).
        losses (Sequence[float]): Training losses.
        window (int): Points per average; 1 returns the input unchanged.

    Returns:
        tuple[np.ndarray, np.ndarray]: ``(mean steps, mean losses)``, ``window - 1`` points shorter.
    """
    s = np.asarray(steps, dtype=float)
    y = np.asarray(losses, dtype=float)
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        fail(f'smoothing window must be a positive integer, got {window!r}.')
    if s.ndim != 1 or s.shape != y.shape or s.size < window:
        fail(f'need 1-D steps and losses of equal length with at least {window} points.')
    if window == 1:
        return s, y

    def trailing_mean(x: np.ndarray) -> np.ndarray:
        c = np.cumsum(np.concatenate([[0.0], x]))
        return (c[window:] - c[:-window]) / window

    return trailing_mean(s), trailing_mean(y)
