"""Runs on disk for the collapse tools: a metrics file plus, optionally, the run's training config.

A *run* is a metrics file written by the ``jsonl`` logger (or a CSV with a ``step`` column), or a
folder holding ``metrics.jsonl``. If ``config.yaml`` (the run's LLM-Foundry training YAML, with
overrides merged) lies next to the metrics file, it gives the run's total steps ``T``, ``tau`` and
TPP (:func:`foundry_ext.collapse.controls.from_foundry_config`). Without it, ``T`` is taken from
the caller, or else as the last logged step + 1, which is right only for a finished run.

The LR schedule comes from the LR the run logged (``lr_monitor``: ``lr-<Optimizer>/group0``), so
any scheduler works and the schedule is the one actually applied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from foundry_ext.collapse.controls import TrainingBudget, from_foundry_config
from foundry_ext.collapse.curves import LossCurve, estimate_final_loss
from foundry_ext.collapse.schedule import LRSchedule
from foundry_ext.core.config import load_train_config
from foundry_ext.core.errors import fail
from foundry_ext.core.metric_names import LOSS_KEY
from foundry_ext.core.metrics_io import CONFIG_NAME, METRICS_NAME, Series, lr_series, metrics_file, read_metrics

log = logging.getLogger(__name__)

__all__ = ['CONFIG_NAME', 'METRICS_NAME', 'CollapseRun', 'load_run']


@dataclass(frozen=True)
class CollapseRun:
    """One run's training loss, logged LR and (if known) budget.

    Attributes:
        name (str): The run folder's name (or the metrics file's stem).
        curve (LossCurve): Raw losses; ``curve.total_steps`` is ``T``.
        lr (Series, optional): The logged LR ``(steps, values)``, if any.
        budget (TrainingBudget, optional): From ``config.yaml``, if present and countable.
    """

    name: str
    curve: LossCurve
    lr: Optional[Series]
    budget: Optional[TrainingBudget]

    @property
    def total_steps(self) -> int:
        """``T``."""
        return self.curve.total_steps

    @property
    def finished(self) -> bool:
        """Whether the loss was logged up to the last step ``T - 1``."""
        return float(self.curve.steps[-1]) >= self.total_steps - 1

    def final_loss(self) -> float:
        """``L(T)`` of a finished run (:func:`~foundry_ext.collapse.curves.estimate_final_loss`)."""
        return estimate_final_loss(*self.curve)

    def schedule(self) -> LRSchedule:
        """The LR schedule the run trained with, normalized to peak 1 over ``t/T``."""
        if self.lr is None:
            fail(f'run {self.name!r} logged no learning rate; add `callbacks: {{lr_monitor: {{}}}}` to its YAML so '
                 'its schedule can be read.')
        return LRSchedule.from_series(*self.lr, self.total_steps)


def load_run(
    path: Union[str, Path],
    total_steps: Optional[int] = None,
    loss_key: str = LOSS_KEY,
) -> CollapseRun:
    """Reads a run: its loss, its logged LR and, from ``config.yaml`` beside it, ``T``, ``tau`` and TPP.

    Args:
        path (str | Path): Metrics file (JSONL or CSV) or a folder holding ``metrics.jsonl``.
        total_steps (int, optional): ``T``; overrides ``config.yaml``. Needed for an unfinished run
            without ``config.yaml``.
        loss_key (str): The loss metric.

    Returns:
        CollapseRun: The run.

    Raises:
        ConfigError: If the file is missing or has no ``loss_key``, losses are logged beyond ``T``, or none is
            finite.
    """
    metrics_path = metrics_file(path)
    metrics = read_metrics(metrics_path)
    if loss_key not in metrics:
        fail(f'{metrics_path} has no metric {loss_key!r}; it has {sorted(metrics)}.')
    steps, losses = metrics[loss_key]
    finite = np.isfinite(losses)
    if not finite.all():
        log.warning('%s: dropping %d non-finite losses.', metrics_path, int((~finite).sum()))
        steps, losses = steps[finite], losses[finite]
    if not steps.size:
        fail(f'{metrics_path} has no finite {loss_key} value: nothing to normalize.')
    budget = None
    config_path = metrics_path.with_name(CONFIG_NAME)
    if config_path.is_file():
        try:
            budget = from_foundry_config(load_train_config(str(config_path)))
        except ValueError as err:
            log.warning('%s: no total steps, tau or TPP from it (%s).', config_path, err)
    if total_steps is None:
        if budget is not None:
            total_steps = budget.total_steps
        else:
            total_steps = int(steps[-1]) + 1
            log.info('%s: no %s, so T = last logged step + 1 = %d (assumes the run finished).', metrics_path,
                     CONFIG_NAME, total_steps)
    if steps[-1] >= total_steps:
        fail(f'{metrics_path} logs {loss_key} at step {int(steps[-1])}, beyond T={total_steps}.')
    name = metrics_path.parent.name if metrics_path.name == METRICS_NAME else metrics_path.stem
    return CollapseRun(
        name=name,
        curve=LossCurve(steps.astype(float), losses, int(total_steps)),
        lr=lr_series(metrics),
        budget=budget,
    )
