"""Runs on disk for the collapse tools: a metrics file plus, optionally, the run's controls.

A *run* is a metrics file written by the ``jsonl`` logger (or a CSV with a ``step`` column), a folder holding
``metrics.jsonl`` (or ``metrics.csv``), or an MLflow run (:func:`foundry_ext.core.metrics_io.resolve_run`). Its
controls come from one of two files beside the metrics (an MLflow run has neither):

* ``config.yaml``: the run's LLM-Foundry training YAML with overrides merged; it gives ``T``, ``tau`` and TPP
  (:func:`foundry_ext.collapse.controls.from_foundry_config`);
* ``run.json`` (``<metrics stem>.run.json`` for a file among others), for runs from other trainers or exported from
  W&B or MLflow: ``{"params": N, "tokens": D}`` and optionally ``"tau"``, ``"batch_tokens"``, ``"peak_lr"``,
  ``"weight_decay"`` and ``"total_steps"`` (:func:`read_run_json`). It wins over ``config.yaml``.

Without either, ``T`` is taken from the caller, or else as the last logged step + 1, which is right only for a
finished run that logs every step. The LR schedule comes from the LR the run logged (``lr_monitor``:
``lr-<Optimizer>/group0``), so any scheduler works and the schedule is the one actually applied.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from foundry_ext.collapse.controls import Controls, TrainingBudget, from_foundry_config
from foundry_ext.collapse.curves import LossCurve, estimate_final_loss, is_finished
from foundry_ext.collapse.reference import ReferenceCurve, default_fit_start, fit_reference
from foundry_ext.collapse.schedule import LRSchedule
from foundry_ext.core.config import load_train_config
from foundry_ext.core.errors import ConfigError, fail
from foundry_ext.core.metric_names import LOSS_KEY, find_loss_key
from foundry_ext.core.metrics_io import CONFIG_NAME, METRICS_NAME, Series, lr_series, resolve_run

log = logging.getLogger(__name__)

__all__ = ['CONFIG_NAME', 'METRICS_NAME', 'RUN_JSON', 'CollapseRun', 'RunFile', 'auto_smoothing', 'fit_runs', 'load_run',
           'read_run_json']

RUN_JSON = 'run.json'
_RUN_JSON_KEYS = ('params', 'tokens', 'tau', 'batch_tokens', 'peak_lr', 'weight_decay', 'total_steps')


@dataclass(frozen=True)
class RunFile:
    """The controls a ``run.json`` gives.

    Attributes:
        controls (Controls): ``params``, ``tpp = tokens / params`` and ``tau`` (given, or
            ``batch_tokens / (peak_lr * weight_decay * tokens)``, [SwC] Eq. 2 with torch AdamW's weight decay).
        total_steps (int, optional): ``T``: ``total_steps``, or ``tokens / batch_tokens`` rounded.
    """

    controls: Controls
    total_steps: Optional[int]


def read_run_json(path: Union[str, Path]) -> RunFile:
    """Reads and checks a ``run.json``.

    Raises:
        ConfigError: Naming the file, the key, the value and the fix, for a missing, unknown or non-positive key.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f'{path} is not JSON ({err}); write e.g. {{"params": 124000000, "tokens": 2.5e9}}.') from err
    if not isinstance(data, dict):
        fail(f'{path} must hold a JSON object such as {{"params": 124000000, "tokens": 2.5e9}}.')
    unknown = sorted(set(data) - set(_RUN_JSON_KEYS))
    if unknown:
        fail(f'{path}: unknown keys {unknown}; a run.json may hold {list(_RUN_JSON_KEYS)}.')
    values = {}
    for key, value in data.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not number or not (value >= 0 if key == 'weight_decay' else value > 0):
            quoted = ' (a JSON number, not a string: no quotes)' if isinstance(value, str) else ''
            fail(f'{path}: {key}={value!r} must be a finite number {">= 0" if key == "weight_decay" else "> 0"}'
                 f'{quoted}.')
        values[key] = float(value)
    for key in ('params', 'tokens'):
        if key not in values:
            fail(f'{path}: "{key}" is missing; a run.json needs the parameter count "params" and the tokens trained '
                 '"tokens" (e.g. {"params": 124000000, "tokens": 2.5e9}).')
    tau = values.get('tau')
    if tau is None and values.get('weight_decay') and {'batch_tokens', 'peak_lr'} <= set(values):
        tau = values['batch_tokens'] / (values['peak_lr'] * values['weight_decay'] * values['tokens'])
    steps = values.get('total_steps')
    if steps is None and 'batch_tokens' in values:
        steps = values['tokens'] / values['batch_tokens']
    if steps is not None and steps != round(steps) and 'total_steps' in values:
        fail(f'{path}: total_steps={steps!r} must be a whole number of optimizer steps.')
    return RunFile(Controls(tau=tau, tpp=values['tokens'] / values['params'], params=values['params']),
                   int(round(steps)) if steps is not None else None)


@dataclass(frozen=True)
class CollapseRun:
    """One run's loss, logged LR and (if known) controls.

    Attributes:
        name (str): The run folder's name (or the metrics file's stem).
        curve (LossCurve): Raw losses; ``curve.total_steps`` is ``T``.
        lr (Series, optional): The logged LR ``(steps, values)``, if any.
        budget (TrainingBudget, optional): From ``config.yaml``, if present and countable.
        controls (Controls, optional): From ``run.json``, else from the budget.
    """

    name: str
    curve: LossCurve
    lr: Optional[Series]
    budget: Optional[TrainingBudget]
    controls: Optional[Controls] = None

    @property
    def total_steps(self) -> int:
        """``T``."""
        return self.curve.total_steps

    @property
    def finished(self) -> bool:
        """Whether the loss was logged to the end: at step ``T - 1``, or for sparse logs (an eval loss every few
        hundred steps) within one logging interval of ``T``."""
        return is_finished(self.curve.steps, self.total_steps)

    def final_loss(self) -> float:
        """``L(T)`` of a finished run (:func:`~foundry_ext.collapse.curves.estimate_final_loss`)."""
        return estimate_final_loss(*self.curve)

    def schedule(self) -> LRSchedule:
        """The LR schedule the run trained with, normalized to peak 1 over ``t/T``."""
        if self.lr is None:
            fail(f'run {self.name!r} logged no learning rate; add `callbacks: {{lr_monitor: {{}}}}` to its YAML so '
                 'its schedule can be read (or log an lr-<Optimizer>/group0 column).')
        return LRSchedule.from_series(*self.lr, self.total_steps)


def _run_json(metrics_path: Path) -> Optional[Path]:
    own = metrics_path.with_name(f'{metrics_path.stem}.{RUN_JSON}')
    shared = metrics_path.with_name(RUN_JSON)
    return own if own.is_file() else (shared if shared.is_file() else None)


def load_run(path: Union[str, Path], total_steps: Optional[int] = None, loss_key: str = LOSS_KEY,
             tracking_uri: Optional[str] = None) -> CollapseRun:
    """Reads a run: its loss, its logged LR and, from ``run.json`` or ``config.yaml`` beside it, ``T`` and controls.

    Args:
        path (str | Path): The RUN (:func:`~foundry_ext.core.metrics_io.resolve_run`): a metrics file (JSONL or
            CSV), a folder holding ``metrics.jsonl`` or ``metrics.csv``, or an MLflow run (``runs:/<run_id>`` or its
            name), which has no files beside it: its ``T`` is ``total_steps`` or its last logged step + 1.
        total_steps (int, optional): ``T``; overrides the files beside the metrics. Needed for an unfinished run
            without them.
        loss_key (str): The loss metric (e.g. an eval loss, ``metrics/eval/LanguageCrossEntropy``).
        tracking_uri (str, optional): MLflow tracking store of an MLflow run; default ``MLFLOW_TRACKING_URI``.

    Raises:
        ConfigError: If the run is missing or has no ``loss_key``, losses are logged beyond ``T``, none is finite,
            or ``run.json`` is malformed.
    """
    source = resolve_run(path, tracking_uri)
    metrics = source.read()
    where = source.label
    if loss_key not in metrics:
        alias = find_loss_key(metrics) if loss_key == LOSS_KEY else None
        if alias is None:
            fail(f'{where} has no metric {loss_key!r}; it has {sorted(metrics)}. Name the loss with --loss-key.')
        log.info('%s has no %r; using its %r column as the loss.', where, loss_key, alias)
        loss_key = alias
    steps, losses = metrics[loss_key]
    finite = np.isfinite(losses)
    if not finite.all():
        log.warning('%s: dropping %d non-finite losses.', where, int((~finite).sum()))
        steps, losses = steps[finite], losses[finite]
    if not steps.size:
        fail(f'{where} has no finite {loss_key} value: nothing to normalize.')
    budget = run_file = None
    config_path = source.path.with_name(CONFIG_NAME) if source.path is not None else None
    if config_path is not None and config_path.is_file():
        try:
            budget = from_foundry_config(load_train_config(str(config_path)))
        except ValueError as err:
            log.warning('%s: no total steps, tau or TPP from it (%s).', config_path, err)
    json_path = _run_json(source.path) if source.path is not None else None
    if json_path is not None:
        run_file = read_run_json(json_path)
    origin = '--total-steps'
    if total_steps is None and run_file is not None and run_file.total_steps:
        total_steps, origin = run_file.total_steps, f'{json_path} (total_steps, or tokens / batch_tokens)'
    if total_steps is None and budget is not None and budget.total_steps:
        total_steps, origin = budget.total_steps, f'{config_path} (max_duration)'
    if total_steps is None:
        total_steps = int(steps[-1]) + 1
        log.info('%s: no %s or %s giving T, so T = last logged step + 1 = %d (assumes the run finished).',
                 where, RUN_JSON, CONFIG_NAME, total_steps)
    if steps[-1] > total_steps:  # an eval loss after the last batch is logged at step T itself
        fail(f'{where} logs {loss_key} at step {int(steps[-1])}, beyond T={total_steps} from {origin}. T counts '
             f'optimizer steps, as the metrics\' steps do: fix it there (tokens and batch_tokens in the same unit, '
             f'or total_steps), or give --total-steps.')
    controls = run_file.controls if run_file is not None else (budget.controls if budget is not None else None)
    return CollapseRun(name=source.name, curve=LossCurve(steps.astype(float), losses, int(total_steps)),
                       lr=lr_series(metrics), budget=budget, controls=controls)


def auto_smoothing(curves: Sequence[LossCurve]) -> int:
    """25 logged points for losses logged every step (as [SwC]'s 100-step average, for noisy per-step losses),
    else 1 (an eval loss every few hundred steps is already an average over many batches)."""
    gaps = [float(np.median(np.diff(c.steps))) for c in curves if len(c.steps) > 1]
    return 25 if gaps and max(gaps) <= 1 else 1


def fit_runs(runs: Sequence[CollapseRun], smoothing: Optional[int] = None, fit_start: Optional[float] = None,
             final_loss: str = 'fit') -> ReferenceCurve:
    """The reference ``foundry-ext collapse fit`` fits on finished runs.

    Each run is fitted from the end of its own warmup (runs that warm up for a fixed number of steps end it at
    different ``t/T``) and the reference starts at the earliest of them, unless ``fit_start`` is given; the
    smoothing defaults to :func:`auto_smoothing`; the reference is size-aware when every run has controls.
    """
    warmups = [default_fit_start(r.schedule()) for r in runs]
    controls = [r.controls for r in runs]
    first = controls[0] if all(c is not None for c in controls) else None
    return fit_reference([r.curve for r in runs], runs[0].schedule(),
                         fit_start=fit_start if fit_start is not None else min(warmups),
                         smoothing=smoothing if smoothing is not None else auto_smoothing([r.curve for r in runs]),
                         final_loss=final_loss, tau_fraction=first.tau if first else None,
                         tpp=first.tpp if first else None, controls=controls if first else None,
                         starts=warmups if fit_start is None else None)
