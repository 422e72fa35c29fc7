"""Forecasting a grid of WSD branches (branch step x decay length x decay shape) and the best decay per budget.

A branch at step ``s`` with a decay of ``d`` batches ends at the budget ``s + d``. Its schedule (built by the
caller, e.g. from the main run's YAML exactly as ``foundry-ext branch`` would run it) is predicted by the law;
for every budget reached by several branches, the one with the lowest predicted final loss is "best", and the
table says whether its interval overlaps the runner-up's (then the law cannot tell them apart).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from foundry_ext.loss_law.law_file import LossLaw
from foundry_ext.loss_law.predict import predict
from foundry_ext.loss_law.schedule import LRSchedule

log = logging.getLogger(__name__)

__all__ = ['BranchForecast', 'BranchSpec', 'best_per_budget', 'forecast_branches', 'format_branches']


@dataclass(frozen=True)
class BranchSpec:
    """One branch: where it starts, how long and in which shape it decays, and its per-step LR."""
    at: int
    decay: int  # batches
    shape: str
    schedule: LRSchedule


@dataclass(frozen=True)
class BranchForecast:
    """A branch's predicted final loss and interval."""
    at: int
    decay: int
    shape: str
    final_loss: float
    interval: tuple[float, float]

    @property
    def budget(self) -> int:
        return self.at + self.decay


def forecast_branches(law: LossLaw, specs: Sequence[BranchSpec], source: str = 'branch') -> list[BranchForecast]:
    """The final loss of every branch, with its interval."""
    forecasts = []
    for spec in specs:
        pred = predict(law, spec.schedule, steps=np.array([spec.schedule.n], dtype=float),
                       source=f'{source} at {spec.at}, decay {spec.decay}, {spec.shape}')
        forecasts.append(BranchForecast(spec.at, spec.decay, spec.shape, pred.final_loss, pred.final_interval))
    return forecasts


def best_per_budget(forecasts: Sequence[BranchForecast]) -> dict[int, list[BranchForecast]]:
    """For each budget, its branches from the lowest predicted final loss up."""
    by_budget: dict[int, list[BranchForecast]] = {}
    for forecast in forecasts:
        by_budget.setdefault(forecast.budget, []).append(forecast)
    return {b: sorted(rows, key=lambda f: f.final_loss) for b, rows in sorted(by_budget.items())}


def format_branches(forecasts: Sequence[BranchForecast], level: float) -> str:
    """A markdown table of every branch, then the best decay length and shape for each budget."""
    lines = [f'| branch step | decay (batches) | shape | budget | predicted final loss | {level:.0%} interval |',
             '|---|---|---|---|---|---|']
    for f in sorted(forecasts, key=lambda f: (f.at, f.decay, f.shape)):
        lines.append(f'| {f.at} | {f.decay} | {f.shape} | {f.budget} | {f.final_loss:.4f} | '
                     f'{f.interval[0]:.4f} .. {f.interval[1]:.4f} |')
    lines.append('')
    for budget, rows in best_per_budget(forecasts).items():
        best = rows[0]
        line = (f'budget {budget}: best decay {best.decay} batches, {best.shape} (from step {best.at}): '
                f'{best.final_loss:.4f} [{best.interval[0]:.4f}, {best.interval[1]:.4f}]')
        if len(rows) > 1:
            second = rows[1]
            tied = second.interval[0] <= best.interval[1]
            line += (f'; next: decay {second.decay}, {second.shape} at {second.final_loss:.4f}'
                     + (' (intervals overlap: not distinguishable)' if tied else ''))
        lines.append(line)
    return '\n'.join(lines)
