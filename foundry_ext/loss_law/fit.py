r"""Fitting a loss law to runs robustly, and its uncertainty by a block bootstrap and a run jackknife.

**Points.** Each run's logged losses are averaged over up to ``max_points`` windows of consecutive points (all
points when there are fewer; narrow windows early and where the LR changes, :func:`window_means`), placed at
their mean step; a window's weight is the number of losses it holds.

**Objective.** The relative residuals :math:`r_j = \sqrt{w_j}\,(\hat L_j - L_j)/L_j` go through a Huber loss
(quadratic within :math:`\delta`, linear beyond, so single-batch outliers and loss spikes pull little) with
:math:`\delta = 1.345\,\hat\sigma`, :math:`\hat\sigma` the median absolute residual of the best starting point
times 1.4826 (the noise it leaves, floored at ``1e-5``). Parameters are bounded
(:class:`~foundry_ext.loss_law.laws.Law`).

**Starts.** :meth:`~foundry_ext.loss_law.laws.Law.screen` solves the linear parameters on a grid of the nonlinear
ones; the best ``starts`` grid points are each refined by ``scipy.optimize.least_squares`` (trust region,
analytic Jacobian), and the lowest Huber cost wins.

**Identifiability.** Runs at a constant LR (after warmup) say nothing about the decay term. Unless some run has
at least ``MIN_DECAY`` of its peak LR decayed before a few of its fitted points, the decay term is switched off
(its scale fixed at zero): :attr:`FitResult.decay_identified` is False and the law refuses schedules that decay
(:mod:`foundry_ext.loss_law.predict`). Decay parameters may also be *given* (``fixed``), e.g. from a law fitted
on runs with decays, while the rest are refitted.

**Uncertainty.** A moving-block bootstrap of the residuals: for each of ``n_boot`` replicates, each run's relative
residuals are resampled in blocks of :math:`\lceil\sqrt{m}\rceil` consecutive windows (keeping their
correlation), put back on the fitted curve, and the law is refitted from the fitted parameters. The replicates'
parameters give each parameter's standard deviation and every prediction's interval. This measures how much the
data the law saw, with its own misfit and noise, pins the parameters. :func:`jackknife` refits leaving out each
run, which measures how much the law depends on which runs it saw. Neither measures how wrong the law's form is
for every run alike; :func:`trend_misfit` measures it on the fitted runs, and
:mod:`~foundry_ext.loss_law.predict` adds it, and the form error of decays beyond the fitted ones, to every
interval.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy.optimize import least_squares

from foundry_ext.core.errors import fail
from foundry_ext.loss_law.design import Design, build_design
from foundry_ext.loss_law.laws import Law
from foundry_ext.loss_law.schedule import LRSchedule

log = logging.getLogger(__name__)

__all__ = [
    'FitResult', 'FitRun', 'MIN_DECAY', 'fit_law', 'identifies_decay', 'jackknife', 'trend_misfit', 'window_means'
]

MIN_DECAY = 0.1  # of the peak LR: the least decay that identifies the decay term
_MIN_POINTS_AFTER_DECAY = 3
_HUBER_K = 1.345
_BOOT_NFEV = 15  # a replicate starts at the fit, a few trust-region steps away from its own optimum
_JACKKNIFE_NFEV = 50  # a run left out moves the optimum further than a bootstrap replicate
_FIT_RESOLUTION = 128  # bins across a decay when fitting (evaluated steps add their own cuts)


def window_means(steps: np.ndarray, losses: np.ndarray, max_points: int,
                 schedule: Optional[LRSchedule] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Averages ``(steps, losses)`` over at most ``max_points`` windows of consecutive points.

    The loss falls fastest early and where the LR changes, and there a window's mean loss is furthest from the loss
    at its mean step. So the window edges are equally spaced in a progress that adds, each counting as much as the
    others: the fraction of points, the fraction of log(step), and (with a ``schedule``) the LR change so far over
    the peak LR. Early steps and decays get narrow windows, a long stable phase wide ones.

    Returns:
        tuple: Mean step, mean loss and number of losses of each window.
    """
    steps, losses = np.asarray(steps, dtype=float), np.asarray(losses, dtype=float)
    if steps.size <= max_points:
        return steps, losses, np.ones_like(steps)
    progress = np.arange(steps.size) / steps.size
    first = max(steps[0], 1.0)
    if steps[-1] > first:
        progress = progress + np.log(np.maximum(steps, first) / first) / np.log(steps[-1] / first)
    if schedule is not None and schedule.peak > 0:
        change = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(schedule.lr)))]) / schedule.peak
        progress = progress + np.interp(steps, np.arange(schedule.n, dtype=float), change)
    edges = np.unique(np.searchsorted(progress, np.linspace(0, progress[-1], max_points + 1), side='left'))
    edges = np.unique(np.concatenate([[0], edges[(edges > 0) & (edges < steps.size)], [steps.size]]))
    counts = np.diff(edges).astype(float)
    index = np.repeat(np.arange(counts.size), np.diff(edges))
    return (np.bincount(index, weights=steps) / counts, np.bincount(index, weights=losses) / counts, counts)


@dataclass
class FitRun:
    """One run's contribution to a fit: its schedule (divided by the reference LR) and its loss windows."""

    name: str
    schedule: LRSchedule
    steps: np.ndarray
    losses: np.ndarray
    counts: np.ndarray
    design: Design = field(init=False)

    def __post_init__(self) -> None:
        self.design = build_design(self.schedule, self.steps, resolution=_FIT_RESOLUTION)

    def decayed_points(self) -> int:
        """Windows at which the LR has been at least ``MIN_DECAY`` below the peak for some steps."""
        decayed = self.schedule.lr < (1.0 - MIN_DECAY) * self.schedule.peak
        decayed[:self.schedule.peak_step] = False
        if not decayed.any():
            return 0
        return int(np.count_nonzero(self.steps > np.argmax(decayed) + 1))


@dataclass
class FitResult:
    r"""A fitted law: its internal parameters, bootstrap replicates and fit statistics.

    Attributes:
        law (Law): The law.
        theta (np.ndarray): Fitted internal parameters.
        samples (np.ndarray): Bootstrap replicates of ``theta``, one per row.
        decay_identified (bool): Whether the data pinned the decay term (else it is off, or ``fixed``).
        fixed (dict[str, float]): Internal parameters held fixed, by name.
        huber_scale (float): :math:`\delta` of the Huber loss, in relative error.
        run_rmse (dict[str, float]): Root mean square relative residual of each run.
        run_trend (dict[str, float]): The same of each run's relative residuals smoothed over a tenth of its windows
            (:func:`trend_misfit`): the misfit that noise does not explain.
        n_points (int): Loss windows fitted.
    """

    law: Law
    theta: np.ndarray
    samples: np.ndarray
    decay_identified: bool
    fixed: dict[str, float]
    huber_scale: float
    run_rmse: dict[str, float]
    run_trend: dict[str, float]
    n_points: int

    @property
    def params(self) -> dict[str, float]:
        """Fitted parameters in natural form."""
        return self.law.to_natural(self.theta)

    def param_std(self) -> dict[str, float]:
        """Bootstrap standard deviation of each natural parameter."""
        natural = [self.law.to_natural(t) for t in self.samples]
        return {name: float(np.std([p[name] for p in natural])) for name in self.law.names}


class _Objective:
    """Weighted relative residuals of a law over several runs, with their Jacobian, for ``least_squares``."""

    def __init__(self, law: Law, runs: Sequence[FitRun], free: np.ndarray, base: np.ndarray,
                 losses: Optional[Sequence[np.ndarray]] = None) -> None:
        self.law, self.runs, self.free, self.base = law, runs, free, base
        self.losses = [r.losses for r in runs] if losses is None else losses
        self.scale = [np.sqrt(r.counts / np.mean(r.counts)) / y for r, y in zip(runs, self.losses)]
        self._cache: tuple[Optional[np.ndarray], Optional[tuple]] = (None, None)

    def theta(self, x: np.ndarray) -> np.ndarray:
        theta = self.base.copy()
        theta[self.free] = x
        return theta

    def _evaluate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cached_x, value = self._cache
        if cached_x is not None and np.array_equal(cached_x, x):
            return value
        theta = self.theta(x)
        residuals, jacobians = [], []
        for run, y, scale in zip(self.runs, self.losses, self.scale):
            pred, jac = self.law.evaluate(theta, run.design, jacobian=True)
            residuals.append((pred - y) * scale)
            jacobians.append(jac[:, self.free] * scale[:, None])
        value = (np.concatenate(residuals), np.concatenate(jacobians))
        self._cache = (x.copy(), value)
        return value

    def residuals(self, x: np.ndarray) -> np.ndarray:
        return self._evaluate(x)[0]

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        return self._evaluate(x)[1]


def _solve(objective: _Objective, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray, huber: float,
           max_nfev: int) -> tuple[np.ndarray, float]:
    x0 = np.clip(x0, lower + 1e-9, upper - 1e-9)
    with np.errstate(over='ignore', invalid='ignore', divide='ignore'):
        result = least_squares(objective.residuals, x0, jac=objective.jacobian, bounds=(lower, upper), loss='huber',
                               f_scale=huber, x_scale='jac', max_nfev=max_nfev, method='trf')
    cost = float(result.cost) if np.isfinite(result.cost) else np.inf
    return result.x, cost


def identifies_decay(runs: Sequence[FitRun]) -> bool:
    """Whether some run has enough fitted points after a decay of at least ``MIN_DECAY`` to fit the decay term."""
    return any(run.decayed_points() >= _MIN_POINTS_AFTER_DECAY for run in runs)


def fit_law(
    law: Law,
    runs: Sequence[FitRun],
    fixed: Optional[dict[str, float]] = None,
    starts: int = 4,
    n_boot: int = 32,
    seed: int = 0,
    max_nfev: int = 200,
    start: Optional[np.ndarray] = None,
) -> FitResult:
    """Fits ``law`` to ``runs`` (Huber loss, bounds, several starts) and bootstraps it; see the module docstring.

    Args:
        law (Law): The law.
        runs (Sequence[FitRun]): The runs, LRs divided by the reference LR.
        fixed (dict[str, float], optional): Internal parameters to hold at the given values.
        starts (int): Grid points refined by least squares.
        n_boot (int): Bootstrap replicates (0: none; the interval is then a point).
        seed (int): Seed of the bootstrap.
        max_nfev (int): Evaluation limit of each refinement.
        start (np.ndarray, optional): One internal starting point instead of the grid (e.g. a previous fit).
    """
    fixed = dict(fixed or {})
    decay_identified = identifies_decay(runs)
    scale = law.internal[law.scale_index]
    if start is not None:
        candidates = [np.asarray(start, dtype=float)]
    else:
        candidates = law.screen([r.design for r in runs], [r.losses for r in runs], [r.counts for r in runs],
                                decay=decay_identified and scale not in fixed, keep=starts)
    if not candidates:
        fail('no starting point of the grid gives a positive power-law term: the losses do not fall as the LR '
             'area grows. Fit runs whose loss decreases (after warmup), with the loss key of a loss.')
    free = np.array([name not in fixed and (decay_identified or name not in law.decay) for name in law.internal])
    candidates = [c.copy() for c in candidates]
    for candidate in candidates:
        if not decay_identified and scale not in fixed:
            candidate[law.scale_index] = law.lower[law.scale_index]  # decay term off unless given
        for name, value in fixed.items():
            candidate[law.internal.index(name)] = value
    base = candidates[0]
    lower, upper = np.array(law.lower)[free], np.array(law.upper)[free]
    if free[0]:  # a decay takes the loss below L0 (the constant-LR asymptote), so L0 is only kept below the start
        upper[0] = min(upper[0], max(float(r.losses.max()) for r in runs))
    objective = _Objective(law, runs, free, base)
    start_residuals = objective.residuals(np.clip(base[free], lower + 1e-9, upper - 1e-9))
    huber = _HUBER_K * max(1.4826 * float(np.median(np.abs(start_residuals))), 1e-5)
    best_theta, best_cost = base, np.inf
    for candidate in candidates:
        objective = _Objective(law, runs, free, candidate)
        x, cost = _solve(objective, candidate[free], lower, upper, huber, max_nfev)
        if cost < best_cost:
            best_theta, best_cost = objective.theta(x), cost
    theta = best_theta
    fitted = [law.evaluate(theta, r.design) for r in runs]
    relative = {r.name: p / r.losses - 1.0 for r, p in zip(runs, fitted)}
    run_rmse = {name: float(np.sqrt(np.mean(res**2))) for name, res in relative.items()}
    run_trend = {name: trend_misfit(res) for name, res in relative.items()}
    samples = _bootstrap(law, runs, free, theta, fitted, lower, upper, huber, n_boot, seed)
    return FitResult(law, theta, samples, decay_identified, {n: float(v) for n, v in fixed.items()}, huber, run_rmse,
                     run_trend, int(sum(r.steps.size for r in runs)))


def trend_misfit(relative: np.ndarray) -> float:
    """Root mean square of relative residuals after a moving average over a tenth of them (at least 3).

    Averaging removes the per-point noise; what is left is where the law's form bends away from the run, an error
    no choice of its parameters removes and that its predictions of other schedules share.
    """
    relative = np.asarray(relative, dtype=float)
    width = min(max(3, relative.size // 10), relative.size)
    smoothed = np.convolve(relative, np.ones(width) / width, mode='valid')
    return float(np.sqrt(np.mean(smoothed**2)))


def jackknife(result: FitResult, runs: Sequence[FitRun]) -> np.ndarray:
    """Refits leaving out each run in turn, from the fit; rows are the refits that still pin what the fit pinned.

    With fewer than three runs no row is returned: one run left cannot say how much the law depends on the choice.
    """
    if len(runs) < 3:
        return np.zeros((0, result.theta.size))
    rows = []
    for i in range(len(runs)):
        rest = [r for j, r in enumerate(runs) if j != i]
        if result.decay_identified and not result.fixed and not identifies_decay(rest):
            continue
        refit = fit_law(result.law, rest, fixed=result.fixed, n_boot=0, start=result.theta, max_nfev=_JACKKNIFE_NFEV)
        rows.append(refit.theta)
    return np.array(rows).reshape(len(rows), result.theta.size)


def _block_resample(residuals: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = residuals.size
    block = max(1, int(np.ceil(np.sqrt(n))))
    starts = rng.integers(0, max(n - block, 0) + 1, size=int(np.ceil(n / block)))
    return np.concatenate([residuals[s:s + block] for s in starts])[:n]


def _bootstrap(law: Law, runs: Sequence[FitRun], free: np.ndarray, theta: np.ndarray, fitted: list[np.ndarray],
               lower: np.ndarray, upper: np.ndarray, huber: float, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    relative = [(r.losses - p) / p for r, p in zip(runs, fitted)]
    samples = []
    for _ in range(n_boot):
        losses = [p * (1.0 + _block_resample(res, rng)) for p, res in zip(fitted, relative)]
        objective = _Objective(law, runs, free, theta, losses)
        x, cost = _solve(objective, theta[free], lower, upper, huber, max_nfev=_BOOT_NFEV)
        if np.isfinite(cost):
            samples.append(objective.theta(x))
    return np.array(samples) if samples else theta[None, :].copy()
