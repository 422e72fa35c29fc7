"""The LR schedule of collapse: the LR multiplier over the training fraction ``t/T``, normalized to peak 1.

[SwC] Eq. (4) (Bergsma et al. 2025, arXiv:2509.25087) uses the LR schedule "normalized to be at 1.0 at its peak",
"interpreted over training fraction" (App. D.1). It comes from the LR a run logged, or from evaluating a YAML's
scheduler through Foundry's registry.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from foundry_ext.core.errors import ConfigError, fail

if TYPE_CHECKING:
    from foundry_ext.collapse.controls import TrainingBudget

__all__ = ['LRSchedule']

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LRSchedule:
    """LR multiplier ``eta(t/T)`` as piecewise-linear knots, normalized to peak 1.

    [SwC] Eq. (4) takes the LR schedule "normalized to be at 1.0 at its peak" and "interpreted
    over training fraction" (App. D.1). Knots represent any schedule (WSD, cosine, ...); smooth
    ones are tabulated finely enough that linear interpolation error is negligible.

    Attributes:
        fractions (tuple[float, ...]): Strictly increasing knots from 0.0 to 1.0.
        multipliers (tuple[float, ...]): Non-negative multipliers at the knots, maximum 1.0.
    """

    fractions: tuple[float, ...]
    multipliers: tuple[float, ...]

    def __post_init__(self) -> None:
        f = np.asarray(self.fractions, dtype=float)
        m = np.asarray(self.multipliers, dtype=float)
        if f.ndim != 1 or f.shape != m.shape or f.size < 2:
            fail('LRSchedule needs at least two knots with one multiplier each.')
        if f[0] != 0.0 or f[-1] != 1.0 or np.any(np.diff(f) <= 0):
            fail('LRSchedule.fractions must increase strictly from 0.0 to 1.0.')
        if np.any(m < 0) or not np.isclose(m.max(), 1.0):
            fail('LRSchedule.multipliers must be non-negative with peak 1.0.')

    def __call__(self, fractions: np.ndarray) -> np.ndarray:
        """``eta(t/T)`` at the given training fractions (clipped to [0, 1])."""
        return np.interp(np.clip(fractions, 0.0, 1.0), self.fractions, self.multipliers)

    @classmethod
    def from_series(
        cls,
        steps: Sequence[float],
        lrs: Sequence[float],
        total_steps: int,
        max_knots: int = 1024,
    ) -> 'LRSchedule':
        """The schedule a run actually trained with, from its logged LR (e.g. ``lr_monitor``'s series).

        Works for any scheduler (``wsd``, Composer's, a custom one), and is what [SwC] Eq. (4)
        needs: the LR "normalized to be at 1.0 at its peak" over ``t/T`` (App. D.1). Knots are the
        logged points at ``step / T``; interior knots collinear with their neighbours (to 1e-6) are
        dropped, which keeps piecewise-linear schedules exact, and if more than ``max_knots`` remain
        they are subsampled evenly. The first and last logged values are extended to ``t/T = 0`` and
        ``1``.

        Args:
            steps (Sequence[float]): Steps at which the LR was logged, strictly increasing.
            lrs (Sequence[float]): LR at those steps (any positive scale).
            total_steps (int): ``T`` of the run.
            max_knots (int): Most knots to keep (>= 2).

        Returns:
            LRSchedule: The normalized schedule.
        """
        s = np.asarray(steps, dtype=float)
        lr = np.asarray(lrs, dtype=float)
        if s.ndim != 1 or s.shape != lr.shape or s.size < 2 or np.any(np.diff(s) <= 0):
            fail('need at least two LR points at strictly increasing steps.')
        if not (np.all(np.isfinite(lr)) and np.all(lr >= 0) and lr.max() > 0) or max_knots < 2:
            fail('LRs must be finite, non-negative and not all zero; max_knots >= 2.')
        if s[0] < 0 or s[-1] > total_steps:
            fail(f'the LR is logged at steps {s[0]:g}..{s[-1]:g}, outside 0..total_steps={total_steps}; is T right?')
        f, m = s / total_steps, lr / lr.max()
        if f[0] > 0:
            f, m = np.concatenate([[0.0], f]), np.concatenate([[m[0]], m])
        if f[-1] < 1:
            f, m = np.concatenate([f, [1.0]]), np.concatenate([m, [m[-1]]])
        keep = np.ones(f.size, dtype=bool)
        if f.size > 2:
            between = m[:-2] + (m[2:] - m[:-2]) * (f[1:-1] - f[:-2]) / (f[2:] - f[:-2])
            keep[1:-1] = np.abs(m[1:-1] - between) > 1e-6
        f, m = f[keep], m[keep]
        if f.size > max_knots:
            idx = np.round(np.linspace(0, f.size - 1, max_knots - 1)).astype(int)
            idx = np.unique(np.append(idx, np.argmax(m)))  # keep the peak knot: LRSchedule needs 1.0
            f, m = f[idx], m[idx]
        return cls(tuple(float(v) for v in f), tuple(float(v) for v in m))

    @classmethod
    def from_foundry_scheduler(cls, scheduler_cfg: Mapping[str, Any], budget: TrainingBudget,
                               max_duration: Optional[str] = None) -> 'LRSchedule':
        """The schedule a YAML's ``scheduler:`` section gives a run, evaluated as the Trainer evaluates it.

        The scheduler is built through Foundry's registry and called at every batch ``0..T`` on a real Composer
        ``State`` (:func:`foundry_ext.schedulers.preview.schedule_multipliers`, as ``foundry-ext plot-schedule``
        does), so any registered schedule works (Composer's, ``wsd``, ``wsd_s``, ...) with Composer's own
        rounding, and ``t_warmup`` in ``tok`` or ``sp`` counts ``budget``'s tokens and samples per batch. Knots
        are then made as in :meth:`from_series`.

        Args:
            scheduler_cfg (Mapping[str, Any]): The ``scheduler`` section of the YAML.
            budget (TrainingBudget): The run: its ``T`` and batch size.
            max_duration (str, optional): The YAML's ``max_duration`` (default: ``T`` batches). Composer's warmup
                schedulers need it in the unit of their ``t_warmup``.

        Raises:
            ConfigError: For a scheduler that cannot be built or evaluated over the run, or that is zero throughout.
        """
        from foundry_ext.schedulers.preview import schedule_multipliers, yaml_scheduler

        scheduler = yaml_scheduler(scheduler_cfg)
        try:
            steps, alphas = schedule_multipliers(scheduler, max_duration or f'{budget.total_steps}ba',
                                                 budget.global_train_batch_size, budget.tokens_per_batch)
        except (ValueError, TypeError, RuntimeError) as err:  # e.g. a time in epochs: no dataloader to count them
            raise ConfigError(f'scheduler={dict(scheduler_cfg)} cannot be evaluated over the {budget.total_steps} '
                              f'batches of the run ({err}); write its times in ba, tok or sp.') from err
        if not np.max(alphas) > 0:
            fail(f'scheduler={dict(scheduler_cfg)} never has a positive LR multiplier.')
        return cls.from_series(steps, alphas, budget.total_steps)
