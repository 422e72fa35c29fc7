r"""Predicting the loss curve of any LR schedule from a fitted law, with an interval at every step.

**Interval.** At each step the prediction is the law at the fitted parameters, :math:`\hat L`, and its interval

.. math::

    \hat L \pm z_{(1+q)/2} \sqrt{\sigma_{boot}^2 + \sigma_{jack}^2 + \hat L^2 (s^2 + \kappa^2 x^2)}

with :math:`q` the law file's level (default 0.9) and four terms:

- :math:`\sigma_{boot}`, the standard deviation of the prediction over the block-bootstrap replicates (how much
  the fitted points' noise and misfit move it);
- :math:`\sigma_{jack}^2 = \frac{m-1}{m}\sum_i (\hat L_{(i)} - \bar L)^2` over the :math:`m \ge 2` refits that
  each leave one run out (how much it depends on which runs were fitted);
- :math:`s`, the largest trend misfit of a fitted run (:func:`~foundry_ext.loss_law.fit.trend_misfit`): the law
  bends away from the runs it was fitted on by that much, and will not do better on others;
- :math:`x = \max(0, d(t) - \max_j d_j)`, how far the schedule's decayed share of the LR area
  (:meth:`~foundry_ext.loss_law.schedule.LRSchedule.decayed_share`) up to step :math:`t` goes beyond the largest of
  the fitted runs', times ``KAPPA`` (:math:`\kappa`). The first two measure the parameters; neither sees an
  error of the law's form, and the form errs most where it extrapolates a decay: fitted on short cooldowns, it
  under-credits long ones by about :math:`\kappa x` of the loss on the 124M development curves (docs/loss_law.md
  reports how often the interval covered held-out and unseen runs).

It is an interval for the law's prediction, not for one noisy logged loss.

**Checks before predicting** (each a :class:`~foundry_ext.core.errors.ConfigError` with the fix): a schedule that
decays, from a law whose runs never decayed; a peak LR more than 10x off the fitted runs' (a multiplier given for
an LR, or another unit), or a schedule that ends inside its warmup; steps in another unit than the fitted runs'
(tokens or samples against batches): a schedule that ends before the first fitted loss, or whose warmup and length
are both 8 or more times the fitted runs' (or both an eighth or less); a schedule more than ``MAX_EXTRAPOLATION``
times longer than the longest fitted run; tokens per step that differ from the fitted runs' (when both are
known).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from scipy.stats import norm

from foundry_ext.core.errors import fail
from foundry_ext.loss_law.design import design_chunks
from foundry_ext.loss_law.fit import MIN_DECAY
from foundry_ext.loss_law.law_file import LossLaw
from foundry_ext.loss_law.schedule import LRSchedule

log = logging.getLogger(__name__)

__all__ = ['KAPPA', 'MAX_EXTRAPOLATION', 'Prediction', 'check_schedule', 'curve_steps', 'form_error', 'predict']

MAX_EXTRAPOLATION = 20.0  # schedule length / longest fitted run
_WARN_EXTRAPOLATION = 4.0
_LR_RATIO = 10.0
_LR_WARN = 1.1  # a peak LR this far off the fitted runs' gets a warning
_WIDE = 0.25  # an interval half-width beyond this share of the prediction is warned about
_UNIT_RATIO = 8.0  # a warmup and a length both this many times the fitted runs': steps in another unit
KAPPA = 0.005  # relative form error per unit of decayed share beyond the fitted runs' (124M development set)


@dataclass
class Prediction:
    """A predicted loss curve with its interval.

    Attributes:
        steps (np.ndarray): Steps predicted; the last is the schedule's final step.
        loss (np.ndarray): The law at the fitted parameters.
        lower (np.ndarray): Lower end of the interval.
        upper (np.ndarray): Upper end of the interval.
        level (float): The interval's level.
    """

    steps: np.ndarray
    loss: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float

    @property
    def final_step(self) -> int:
        return int(round(self.steps[-1]))

    @property
    def final_loss(self) -> float:
        return float(self.loss[-1])

    @property
    def final_interval(self) -> tuple[float, float]:
        return float(self.lower[-1]), float(self.upper[-1])

    def to_dict(self) -> dict[str, Any]:
        """``final_loss``, ``final_step``, ``final_loss_interval``, ``interval`` (level) and the ``curve``."""
        return {
            'final_step': self.final_step,
            'final_loss': self.final_loss,
            'final_loss_interval': list(self.final_interval),
            'interval': self.level,
            'curve': {'step': self.steps.tolist(), 'loss': self.loss.tolist(), 'lower': self.lower.tolist(),
                      'upper': self.upper.tolist()},
        }


def curve_steps(schedule: LRSchedule, points: int = 400) -> np.ndarray:
    """Up to ``points`` whole steps from the end of the warmup to the final step ``schedule.n``, both included."""
    start = min(schedule.peak_step + 1, schedule.n)
    return np.unique(np.linspace(start, schedule.n, points).round())


def _decays(schedule: LRSchedule) -> bool:
    after = schedule.lr[schedule.peak_step:]
    return bool(after.size and after.min() < (1.0 - MIN_DECAY) * schedule.peak)


def _warmup_end(knots: list[list[float]]) -> float:
    """The first step at which a fitted run's LR (``[step, lr]`` knots) reaches its peak."""
    lrs = np.array([lr for _, lr in knots])
    return float(knots[int(np.argmax(lrs >= lrs.max() * (1.0 - 1e-9)))][0])


def _check_units(law: LossLaw, schedule: LRSchedule, source: str) -> None:
    """Refuses a schedule whose steps look like another unit than the fitted runs' (tokens or samples against
    batches): one that ends before any fitted loss, or whose warmup and length are both ``_UNIT_RATIO`` times the
    fitted runs' or more, the same way round."""
    if not law.runs:
        return
    fix = ('Are one side\'s steps tokens or samples and the other\'s batches? Give both in batches (divide by the '
           'tokens or samples per batch).')
    first = min(run.first_step for run in law.runs)
    if schedule.n < first:
        fail(f'{source}: the schedule ends at step {schedule.n}, before the first fitted loss (step {first}), so the '
             f'law knows nothing of it. {fix}')
    warmups = [_warmup_end(run.knots) for run in law.runs if run.knots]
    if not warmups or min(warmups) <= 0 or schedule.peak_step <= 0:
        return  # no warmup on one side: nothing to compare
    longest, median_warmup = max(run.final_step for run in law.runs), float(np.median(warmups))
    length, warmup = schedule.n / longest, schedule.peak_step / median_warmup
    if min(length, warmup) >= _UNIT_RATIO or max(length, warmup) <= 1.0 / _UNIT_RATIO:
        fail(f'{source}: its warmup ends at step {schedule.peak_step} and it runs to step {schedule.n}: '
             f'{warmup:.3g}x and {length:.3g}x the fitted runs\' ({median_warmup:.0f} and {longest} steps). {fix} (A '
             f'schedule really that much longer or shorter is beyond what this law was fitted on: fit runs closer '
             f'to it.)')


def check_schedule(law: LossLaw, schedule: LRSchedule, source: str, tokens_per_step: Optional[int] = None) -> None:
    """Refuses a schedule the law cannot speak for; see the module docstring."""
    if schedule.n < 2 or schedule.peak <= 0:
        fail(f'{source}: the schedule has {schedule.n} steps and peak LR {schedule.peak:g}; give at least 2 steps '
             f'with an LR above 0.')
    ratio = schedule.peak / law.lr_ref
    if ratio < 1.0 / _LR_RATIO and schedule.peak_step >= schedule.n - 1:
        fail(f'{source}: its LR still rises at its last step ({schedule.n}): the schedule ends inside its warmup, '
             f'before any step the law was fitted on. Give the whole schedule (its max_duration, or every row).')
    if not 1.0 / _LR_RATIO <= ratio <= _LR_RATIO:
        fail(f'{source}: its peak LR {schedule.peak:.4g} is {ratio:.3g}x the fitted runs\' {law.lr_ref:.4g}. A '
             f'multiplier given instead of an LR, or an LR in another unit? Give the LR itself (optimizer.lr times '
             f'the schedule). The law does not extrapolate that far in LR.')
    if not 1.0 / _LR_WARN <= ratio <= _LR_WARN:
        log.warning('%s: peak LR %.4g is %.3gx the fitted runs\' %.4g. The law was fitted at one peak LR and does '
                    'not know how the loss depends on it (a 1.5x or 2x peak gave errors of 5-8%% on real curves, '
                    'outside the interval): fit it on runs at this peak LR, or give the fitted runs\' LR.', source,
                    schedule.peak, ratio, law.lr_ref)
    _check_units(law, schedule, source)
    longest = max((run.final_step for run in law.runs), default=schedule.n)
    if schedule.n > MAX_EXTRAPOLATION * longest:
        fail(f'{source}: the schedule runs to step {schedule.n}, {schedule.n / longest:.0f}x the longest fitted run '
             f'({longest} steps). Are its steps tokens or samples? Steps are batches (divide by the tokens or samples '
             f'per batch). The law does not extrapolate beyond {MAX_EXTRAPOLATION:g}x.')
    if schedule.n > _WARN_EXTRAPOLATION * longest:
        log.warning('%s: %d steps is %.1fx the longest fitted run; the prediction extrapolates far.', source,
                    schedule.n, schedule.n / longest)
    if tokens_per_step is not None and law.tokens_per_step is not None and tokens_per_step != law.tokens_per_step:
        fail(f'{source}: {tokens_per_step} tokens per step, but the law was fitted on runs of {law.tokens_per_step}: '
             f'their steps are of another size, so areas do not compare. Predict schedules with the fitted runs\' '
             f'batch size and sequence length, or fit runs that have yours.')
    if not law.decay_identified and _decays(schedule):
        fail(f'{source}: the schedule decays the LR, but the law was fitted on runs that never decayed (no run '
             f'went {MIN_DECAY:.0%} below its peak), so its decay term is unknown. Fit it with at least one run '
             f'that decays, e.g. a branch of the main run (`foundry-ext branch`).')


def _spread(values: np.ndarray) -> np.ndarray:
    """Jackknife standard deviation over rows (0 with fewer than 2)."""
    m = values.shape[0]
    if m < 2:
        return np.zeros(values.shape[1:])
    return np.sqrt((m - 1) / m * np.sum((values - values.mean(axis=0))**2, axis=0))


def _fitted_decayed_share(law: LossLaw) -> float:
    """The largest decayed share of the LR area (at its final step) of a fitted run, from its knots."""
    shares = [0.0]
    for run in law.runs:
        knots = np.asarray(run.knots, dtype=float).reshape(-1, 2)
        if knots.shape[0]:
            schedule = LRSchedule.from_logged(knots[:, 0], knots[:, 1], end=run.final_step, source=run.name)
            shares.append(float(schedule.decayed_share(np.array([schedule.n]))[0]))
    return max(shares)


def form_error(law: LossLaw, schedule: LRSchedule, steps: np.ndarray) -> np.ndarray:
    r"""The relative error of the law's form expected at ``steps`` of ``schedule``: :math:`\sqrt{s^2+\kappa^2x^2}`
    of the module docstring."""
    trend = max((run.trend_rmse for run in law.runs), default=0.0)
    beyond = np.maximum(schedule.decayed_share(steps) - _fitted_decayed_share(law), 0.0)
    return np.sqrt(trend**2 + (KAPPA * beyond)**2)


def predict(law: LossLaw, schedule: LRSchedule, steps: Optional[np.ndarray] = None, source: str = 'the schedule',
            tokens_per_step: Optional[int] = None) -> Prediction:
    """The law's loss curve for ``schedule`` (LRs in the fitted runs' units) with intervals.

    Args:
        law (LossLaw): A fitted law.
        schedule (LRSchedule): The per-step LR; its final step is ``schedule.n``.
        steps (np.ndarray, optional): Steps to predict; default :func:`curve_steps`.
        source (str): Where the schedule came from, for messages.
        tokens_per_step (int, optional): The schedule's tokens per step, if known.
    """
    check_schedule(law, schedule, source, tokens_per_step)
    steps = curve_steps(schedule) if steps is None else np.asarray(steps, dtype=float)
    designs = design_chunks(schedule.scaled(1.0 / law.lr_ref), steps)
    model = law.model

    def curve(theta: np.ndarray) -> np.ndarray:
        return np.concatenate([model.evaluate(theta, design) for design in designs])

    with np.errstate(over='ignore', invalid='ignore'):
        center = curve(law.theta)
        boot = np.array([curve(t) for t in law.replicate_thetas('samples')])
        jack = np.array([curve(t) for t in law.replicate_thetas('jackknife')])
    sigma_boot = boot.std(axis=0) if boot.size else np.zeros_like(center)
    sigma_jack = _spread(jack) if jack.size else np.zeros_like(center)
    sigma_form = np.abs(center) * form_error(law, schedule, steps)
    half = norm.ppf(0.5 + law.interval / 2.0) * np.sqrt(sigma_boot**2 + sigma_jack**2 + sigma_form**2)
    if half[-1] > _WIDE * abs(center[-1]):
        log.warning('%s: the final loss\'s interval is +-%.0f%% of it: the fitted runs do not pin the law down for '
                    'this schedule (see the misfit and bounds `loss-law fit` printed); do not rely on it.', source,
                    100 * half[-1] / abs(center[-1]))
    return Prediction(steps, center, np.maximum(center - half, 0.0), center + half, law.interval)  # a loss is >= 0
