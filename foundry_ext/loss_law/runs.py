"""Runs and schedules on disk for the loss laws: their loss and LR series, checked, with branches joined.

A RUN is a metrics file (JSONL from the ``jsonl`` logger, or CSV with a ``step`` column), a run folder holding
``metrics.jsonl``, or an MLflow run (``runs:/<run_id>`` or its name; :func:`foundry_ext.core.metrics_io.resolve_run`).
Its loss is ``loss_key`` (default Composer's
``loss/train/total``; a file without it but with a ``loss`` column, as public CSVs have, uses that) and its LR
``lr_key`` (default the key ``lr_monitor`` logs, ``lr-<Optimizer>/group0``; else an ``lr`` column).

**Branches are joined to their main run.** A run whose LR is first logged at step ``s0``, well after its first
logging interval (a branch made with ``foundry-ext branch``, which logs only its own steps, or a cooldown exported
on its own; a schedule file given to ``loss-law predict`` alike, against the law's fitted runs), takes its LR before
``s0`` from another run given with it that covers that history (logged from at most ``s0 / 2`` and up to ``s0``)
and whose LR at ``s0`` the branch's first logged LR does not exceed (by 5%) nor fall below by half (a decay may
have begun between the branch point and its first log). A run that is no branch itself is preferred. Only the
branch's own losses are fitted. A late run
with no such partner keeps the assumption of :mod:`foundry_ext.loss_law.schedule` (a linear warmup from zero),
which is logged.

If the run's training YAML lies beside its ``metrics.jsonl`` as ``config.yaml``, its tokens per step
(``global_train_batch_size * max_seq_len``) are recorded, so that a schedule with steps of another size is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol, Sequence, Union

import numpy as np

from foundry_ext.core.config import load_train_config
from foundry_ext.core.errors import fail
from foundry_ext.core.metric_names import (LOSS_ALIASES, LOSS_KEY, LR_ALIASES, find_loss_key, find_lr_key,
                                           is_lr_monitor_key)
from foundry_ext.core.metrics_io import CONFIG_NAME, METRICS_NAME, RunSource, resolve_run
from foundry_ext.loss_law.schedule import LRSchedule

log = logging.getLogger(__name__)

__all__ = ['LRHistory', 'Run', 'find_main', 'join_branches', 'join_lr', 'load_run', 'load_runs',
           'read_schedule', 'resolve_keys', 'starts_late']

_JOIN_ABOVE = 1.05  # the branch's first logged LR over the main run's LR at that step: at most this
_JOIN_BELOW = 0.5  # and at least this


@dataclass
class Run:
    """One run's losses and logged LRs (its main run's LRs before its own, once joined).

    Attributes:
        name (str): The run folder's name, the metrics file's stem, or the MLflow run's name.
        source (str): The metrics file, or the MLflow run as ``runs:/<id> (<name>)``.
        loss_steps (np.ndarray): Steps of the losses.
        losses (np.ndarray): The losses.
        lr_steps (np.ndarray): Steps of the logged LRs.
        lrs (np.ndarray): The logged LRs.
        loss_key (str): The loss key read.
        lr_key (str): The LR key read.
        tokens_per_step (int, optional): From ``config.yaml`` beside the metrics, if any.
        joined_to (str, optional): The run whose LR history this run continues.
    """

    name: str
    source: str
    loss_steps: np.ndarray
    losses: np.ndarray
    lr_steps: np.ndarray
    lrs: np.ndarray
    loss_key: str = ''
    lr_key: str = ''
    tokens_per_step: Optional[int] = None
    joined_to: Optional[str] = None
    own_start: int = field(init=False)

    def __post_init__(self) -> None:
        self.own_start = int(self.lr_steps[0])

    @property
    def final_step(self) -> int:
        """The last step with a loss or an LR."""
        return int(max(self.loss_steps[-1], self.lr_steps[-1]))

    def schedule(self) -> LRSchedule:
        """The per-step LR up to the final step."""
        return LRSchedule.from_logged(self.lr_steps, self.lrs, end=self.final_step + 1, source=self.source)

    def lr_at(self, step: float) -> float:
        """The logged LR interpolated at ``step``."""
        return float(np.interp(step, self.lr_steps, self.lrs))


def resolve_keys(keys: Sequence[str], source: str, loss_key: Optional[str], lr_key: Optional[str],
                 loss_option: str = '--loss-key', lr_option: str = '--lr-key',
                 need_loss: bool = True) -> tuple[Optional[str], str]:
    """The loss and LR keys to read from a file with ``keys``; a :class:`ConfigError` names what is missing.

    Args:
        keys (Sequence[str]): The metric keys the file has.
        source (str): The file, for messages.
        loss_key (str, optional): Requested loss key; default Composer's, else a ``loss`` column.
        lr_key (str, optional): Requested LR key; default ``lr_monitor``'s, else an ``lr`` column.
        loss_option (str): How the user sets the loss key, for messages.
        lr_option (str): How the user sets the LR key, for messages.
        need_loss (bool): False for a schedule file, which needs no loss.
    """
    listing = ', '.join(sorted(keys)) or 'none'
    resolved_loss = None
    if need_loss:
        if loss_key is not None:
            if loss_key not in keys:
                fail(f'{source} has no metric {loss_key!r} ({loss_option}); it has: {listing}.')
            resolved_loss = loss_key
        else:
            resolved_loss = find_loss_key(keys)
            if resolved_loss is None:
                fail(f'{source} has neither {LOSS_KEY!r} nor a column named like a loss ({", ".join(LOSS_ALIASES)}); '
                     f'name the loss with {loss_option} (it has: {listing}).')
            if resolved_loss != LOSS_KEY:
                log.info('%s has no %r; using its %r column as the loss.', source, LOSS_KEY, resolved_loss)
    if lr_key is not None:
        if lr_key not in keys:
            fail(f'{source} has no LR column {lr_key!r} ({lr_option}); it has: {listing}.')
        return resolved_loss, lr_key
    found = find_lr_key(keys)
    if found is None:
        fail(f'{source} has no LR column (lr_monitor\'s lr-<Optimizer>/group0, or {", ".join(LR_ALIASES)}); the laws '
             f'need the LR of every step. Add `callbacks: {{lr_monitor: {{}}}}` to the run\'s YAML, or name the column '
             f'with {lr_option} (it has: {listing}).')
    if not is_lr_monitor_key(found):
        log.info("%s has no lr_monitor key (lr-<Optimizer>/group0); using its %r column as the LR.", source, found)
    return resolved_loss, found


def _checked(steps: np.ndarray, values: np.ndarray, key: str, source: str, what: str) -> tuple[np.ndarray,
                                                                                               np.ndarray]:
    bad = ~np.isfinite(values)
    if bad.any():
        fail(f'{source}: {key} has {int(bad.sum())} non-finite {what} (first at step {int(steps[bad][0])}); the laws '
             f'cannot fit them. Remove those rows (a diverged run: keep only the steps before it).')
    if what == 'LRs' and (values < 0).any():
        fail(f'{source}: {key} has negative LRs (first at step {int(steps[values < 0][0])}); give the LR itself.')
    if (steps < 0).any():
        fail(f'{source}: negative steps in {key}; steps count batches from 0.')
    return steps, values


def _tokens_per_step(source: RunSource) -> Optional[int]:
    if source.path is None or source.path.name != METRICS_NAME:
        return None
    config_path = source.path.with_name(CONFIG_NAME)
    if not config_path.is_file():
        return None
    cfg = load_train_config(str(config_path))
    try:
        return int(cfg['global_train_batch_size']) * int(cfg['max_seq_len'])
    except (KeyError, TypeError, ValueError):
        return None


def load_run(path: Union[str, Path], loss_key: Optional[str] = None, lr_key: Optional[str] = None,
             loss_option: str = '--loss-key', lr_option: str = '--lr-key', tracking_uri: Optional[str] = None) -> Run:
    """Reads and checks one RUN (not joined; see :func:`load_runs`); ``tracking_uri`` is the MLflow tracking store
    of an MLflow run (default ``MLFLOW_TRACKING_URI``)."""
    source = resolve_run(path, tracking_uri)
    metrics = source.read()
    where = source.label
    resolved_loss, resolved_lr = resolve_keys(list(metrics), where, loss_key, lr_key, loss_option, lr_option)
    loss_steps, losses = _checked(*metrics[resolved_loss], resolved_loss, where, 'losses')
    lr_steps, lrs = _checked(*metrics[resolved_lr], resolved_lr, where, 'LRs')
    if lrs.max(initial=0.0) <= 0:
        fail(f'{where}: {resolved_lr} is never above 0; the laws need the LR the run trained with.')
    return Run(source.name, where, loss_steps.astype(float), losses, lr_steps.astype(float), lrs, resolved_loss,
               resolved_lr, _tokens_per_step(source))


class LRHistory(Protocol):
    """Anything with a name and logged LRs: a :class:`Run`, or a fitted run's knots in a law file."""
    name: str
    lr_steps: np.ndarray
    lrs: np.ndarray
    joined_to: Optional[str]


def find_main(start: float, first_lr: float, candidates: Sequence[LRHistory]) -> Optional[LRHistory]:
    """The run that a run whose LR is first logged at ``start`` (as ``first_lr``) branched from, if any.

    See the module docstring for the rule.
    """
    partners = [c for c in candidates
                if c.lr_steps[0] <= 0.5 * start and c.lr_steps[-1] >= start
                and _JOIN_BELOW * np.interp(start, c.lr_steps, c.lrs) <= first_lr
                <= _JOIN_ABOVE * np.interp(start, c.lr_steps, c.lrs)]
    return min(partners, key=lambda c: (c.joined_to is not None, c.lr_steps[0], -c.lr_steps[-1]), default=None)


def starts_late(lr_steps: np.ndarray) -> bool:
    """Whether an LR series starts well after its first logging interval (a branch without its main run), not
    merely logged from its first interval on (an ordinary run)."""
    return lr_steps.size < 2 or lr_steps[0] > 2 * float(np.median(np.diff(lr_steps)))


def join_lr(lr_steps: np.ndarray, lrs: np.ndarray,
            candidates: Sequence[LRHistory]) -> tuple[np.ndarray, np.ndarray, Optional[LRHistory]]:
    """An LR series with the LR of the run it branched from before its first step, and that run (see the module
    docstring); unchanged, with None, when it does not start late (a run logged from its first interval on is no
    branch) or no candidate matches."""
    if not starts_late(lr_steps):
        return lr_steps, lrs, None
    start = float(lr_steps[0])
    main = find_main(start, float(lrs[0]), candidates)
    if main is None:
        return lr_steps, lrs, None
    before = main.lr_steps < start
    return np.concatenate([main.lr_steps[before], lr_steps]), np.concatenate([main.lrs[before], lrs]), main


def join_branches(runs: Sequence[Run]) -> list[Run]:
    """Gives each run that starts late the LR history of the run it branched from (see the module docstring)."""
    joined: dict[int, Run] = {}
    for i in sorted(range(len(runs)), key=lambda i: runs[i].own_start):
        run = runs[i]
        start = run.own_start
        lr_steps, lrs, main = join_lr(run.lr_steps, run.lrs, list(joined.values()))
        if main is not None:
            run = Run(run.name, run.source, run.loss_steps, run.losses, lr_steps, lrs, run.loss_key, run.lr_key,
                      run.tokens_per_step, main.name)
            run.own_start = start
            log.info('%s: its LR is logged from step %d; joined to %s for the steps before.', run.name, start,
                     main.name)
        elif start > 1:
            late = starts_late(run.lr_steps)
            (log.warning if late else log.info)(
                '%s: no LR is logged before step %d; assuming a linear warmup from 0 at step 0. If it branched off '
                'another run, give that run too (it is joined where its LR matches), else the fit may be poor.',
                run.name, start)
        joined[i] = run
    return [joined[i] for i in range(len(runs))]


def load_runs(paths: Sequence[Union[str, Path]], loss_key: Optional[str] = None, lr_key: Optional[str] = None,
              loss_option: str = '--loss-key', lr_option: str = '--lr-key',
              tracking_uri: Optional[str] = None) -> list[Run]:
    """Reads, checks and joins RUNs; names must be unique (a folder's name, else the file's stem or the MLflow run's
    name)."""
    runs = join_branches([load_run(p, loss_key, lr_key, loss_option, lr_option, tracking_uri) for p in paths])
    seen: dict[str, str] = {}
    for run in runs:
        if run.name in seen:
            run.name = f'{run.name}@{run.source}'
        seen[run.name] = run.source
    return runs


def read_schedule(path: Union[str, Path], lr_key: Optional[str] = None,
                  tracking_uri: Optional[str] = None) -> tuple[np.ndarray, np.ndarray, Optional[int]]:
    """A schedule's logged ``(steps, lrs)``, from a metrics file or any RUN (an MLflow run too), and its tokens per
    step (if a ``config.yaml`` is beside it).

    The LR is interpolated linearly between rows and the last row is the final step; rows past the last LR (a
    final evaluation logged after the last update's LR) hold that LR up to the last of them.
    """
    source = resolve_run(path, tracking_uri)
    metrics = source.read()
    where = source.label
    if not metrics:
        fail(f'{where} has no rows with a "step": a schedule file needs a step column (batches) and an LR column. If '
             f'its steps are tokens or samples, divide them by the tokens or samples per batch first.')
    _, key = resolve_keys(list(metrics), where, None, lr_key, need_loss=False)
    steps, lrs = _checked(*metrics[key], key, where, 'LRs')
    if steps.size < 2:
        fail(f'{where}: {key} has {steps.size} row(s); a schedule needs at least 2 (the last is the final step).')
    last = max(float(series[0][-1]) for series in metrics.values() if len(series[0]))
    if last > steps[-1]:
        steps, lrs = np.append(steps, last), np.append(lrs, lrs[-1])
    return steps.astype(float), lrs, _tokens_per_step(source)
