"""Live loss-law forecasts on a WSD main run: the loss "if decayed now over d", and the run's own final loss.

Registered in ``llmfoundry_callbacks`` as ``loss_law_forecast``::

    callbacks:
      lr_monitor: {}
      loss_law_forecast:
        decays: [100ba, 200ba]                 # forecast a decay from the current step over each length (required)
        branches: [runs/wsd-demo/branches/*]   # finished (or running) branches of this run; globs, re-read each time
        law: null                              # a law file whose decay term stands in while nothing here decays
        loss_key: loss/train/total             # or an eval metric, e.g. metrics/eval/LanguageCrossEntropy
        interval: null                         # forecast every N batches; default: after each evaluation
        law_name: multi-power                  # or momentum
        level: 0.9                             # level of the intervals
        bootstrap: 16                          # bootstrap refits per forecast
        max_points: 256                        # loss windows per run in a fit
        max_history: 1024                      # bins of this run's history kept (and checkpointed)

**History.** Every batch the callback records the LR the batch trains at and its loss (the all-reduced training
loss, or with an eval ``loss_key`` the value after each evaluation), summed into bins of ``w`` consecutive steps
(``w`` = 1 at first; when there are more than ``max_history`` bins, neighbours merge and ``w`` doubles). The bins
are the callback's checkpointed state (one JSON string, bounded), so a resumed run forecasts from the same
history as an uninterrupted one.

**Forecast** (after each evaluation, or every ``interval`` batches, on rank 0). The law (:mod:`foundry_ext.loss_law`)
is fitted on this run's history plus the branches found, each joined to this run (a branch that did not start
from this run is skipped with a warning). A fit of the same runs as the last forecast starts from its parameters
(every 8th starts from the grid again), which makes a forecast a fraction of a second. Then, at the current step
``t``, it logs through the run's loggers

* ``loss_law/decay_<d>`` with ``_lower`` / ``_upper``: the final loss of a branch that starts its decay now and
  decays over ``d`` with this run's ``decay_shape`` and ``alpha_f`` (exactly the schedule ``foundry-ext branch``
  would run), for each ``d`` in ``decays``;
* ``loss_law/final`` with ``_lower`` / ``_upper``: the final loss of this run's own schedule up to
  ``max_duration``;
* ``loss_law/fit_rmse`` (RMS relative misfit of this run's history) and ``loss_law/fit_runs`` (runs fitted).

**Identifiability.** A stable phase at a constant LR says nothing about how much a decay will gain. Until some
fitted run decays (a branch found, or this run's own decay), the decay term is unknown: with ``law`` given, its
decay parameters are held (the rest refitted on this run); without it, the ``decay_*`` forecasts (and ``final``, if
this run's own schedule decays) are not logged, and a warning says so once.
"""

from __future__ import annotations

import glob
import logging
import math
from typing import Any, Optional, Sequence

import numpy as np
from composer.core import Callback, State, TimeUnit
from composer.loggers import Logger
from composer.utils import dist

from foundry_ext.core.checkpoint_state import pack_state, unpack_state
from foundry_ext.core.once import warn_once
from foundry_ext.core.errors import ConfigError, choice, fail, fraction, whole
from foundry_ext.core.metric_names import LOSS_KEY, LOSS_LAW_PREFIX, is_eval_metric
from foundry_ext.loss_law.from_runs import MIN_POINTS, fit_runs
from foundry_ext.loss_law.law_file import LossLaw, read_law
from foundry_ext.loss_law.laws import LAWS
from foundry_ext.loss_law.predict import predict
from foundry_ext.loss_law.runs import Run, join_branches, load_run
from foundry_ext.loss_law.schedule import LRSchedule
from foundry_ext.schedulers.compiled import compiled_schedule_of
from foundry_ext.schedulers.preview import schedule_multipliers, update_multipliers
from foundry_ext.schedulers.shapes import decay_value
from foundry_ext.schedulers.time_spec import batches_in, parse_time
from foundry_ext.schedulers.wsd import WSDScheduler

log = logging.getLogger(__name__)

__all__ = ['LossLawForecast']

WHERE = 'callbacks.loss_law_forecast'
_STATE_VERSION = 1
_MAIN = 'main'
_FULL_FIT_EVERY = 8  # forecasts of the same runs start from the last fit, except every 8th: a fresh grid


class _History:
    """Per-step LR and loss of this run, summed into bins of ``width`` steps; at most ``limit`` bins."""

    def __init__(self, limit: int) -> None:
        self.limit, self.width = limit, 1
        self.sums: dict[int, list[float]] = {}  # bin -> [lr sum, lr count, loss sum, loss count, loss-step sum]

    def _bin(self, step: int) -> list[float]:
        b = step // self.width
        if b not in self.sums:
            self.sums[b] = [0.0, 0.0, 0.0, 0.0, 0.0]
            if len(self.sums) > self.limit:
                self._merge()
                return self._bin(step)
        return self.sums[b]

    def _merge(self) -> None:
        merged: dict[int, list[float]] = {}
        for b, sums in self.sums.items():
            target = merged.setdefault(b // 2, [0.0] * 5)
            for i, value in enumerate(sums):
                target[i] += value
        self.sums, self.width = merged, self.width * 2

    def add_lr(self, step: int, lr: float) -> None:
        sums = self._bin(step)
        sums[0] += lr
        sums[1] += 1

    def add_loss(self, step: int, loss: float) -> None:
        sums = self._bin(step)
        sums[2] += loss
        sums[3] += 1
        sums[4] += step

    def run(self, name: str, loss_key: str) -> Optional[Run]:
        """The history as a run (bin means), or None before any loss and LR."""
        bins = sorted(self.sums)
        lr = [(b * self.width + (self.width - 1) / 2, s[0] / s[1]) for b in bins if (s := self.sums[b])[1] > 0]
        loss = [(s[4] / s[3], s[2] / s[3]) for b in bins if (s := self.sums[b])[3] > 0]
        if len(lr) < 2 or not loss:
            return None
        lr_steps, lrs = (np.array(v) for v in zip(*lr))
        loss_steps, losses = (np.array(v) for v in zip(*loss))
        return Run(name, '(this run)', loss_steps, losses, lr_steps, lrs, loss_key, 'lr')

    def state(self) -> dict[str, Any]:
        return {'width': self.width, 'sums': [[b, *s] for b, s in sorted(self.sums.items())]}

    def load(self, state: dict[str, Any]) -> None:
        self.width = int(state['width'])
        self.sums = {int(row[0]): [float(v) for v in row[1:]] for row in state['sums']}


class LossLawForecast(Callback):
    """Forecasts the loss of decaying now and of the run's own schedule, with a loss law; see the module docstring.

    Args:
        decays (Sequence[str]): Decay lengths to forecast, e.g. ``['100ba', '2e8tok']`` (``ba``, ``tok`` or ``sp``).
        branches (Sequence[str]): Paths or globs of branch runs (metrics files or run folders) to fit with this run.
        law (str, optional): A law file (``foundry-ext loss-law fit``) whose decay term is held while no fitted run
            decays.
        loss_key (str): ``loss/train/total`` (default) or an eval metric ``metrics/<label>/<name>``.
        interval (int, optional): Forecast every this many batches; default after each evaluation.
        law_name (str): ``multi-power`` (default) or ``momentum``.
        level (float): Level of the intervals, in (0, 1). Default 0.9.
        bootstrap (int): Bootstrap refits per forecast. Default 16.
        max_points (int): Loss windows per run in a fit. Default 256.
        max_history (int): Most history bins kept. Default 1024.

    Raises:
        ConfigError: For a bad value, naming ``callbacks.loss_law_forecast.<key>``, the value and the fix.
    """

    def __init__(
        self,
        decays: Sequence[str],
        branches: Sequence[str] = (),
        law: Optional[str] = None,
        loss_key: str = LOSS_KEY,
        interval: Optional[int] = None,
        law_name: str = 'multi-power',
        level: float = 0.9,
        bootstrap: int = 16,
        max_points: int = 256,
        max_history: int = 1024,
    ) -> None:
        if isinstance(decays, str) or not decays:
            fail(f'{WHERE}.decays={decays!r} must be a list of decay lengths, e.g. [100ba, 200ba].')
        self.decays = {str(d): parse_time(str(d), f'{WHERE}.decays', allow_zero=False) for d in decays}
        if isinstance(branches, str):
            branches = [branches]
        self.branches = [str(b) for b in branches]
        self.prior: Optional[LossLaw] = None
        if law is not None:
            try:
                self.prior = read_law(law)
            except ConfigError as err:
                fail(f'{WHERE}.law: {err}')
        if loss_key != LOSS_KEY and not (is_eval_metric(loss_key) and loss_key.count('/') == 2):
            fail(f'{WHERE}.loss_key={loss_key!r} must be {LOSS_KEY} or an eval metric metrics/<label>/<name>, e.g. '
                 f'metrics/eval/LanguageCrossEntropy.')
        self.loss_key = loss_key
        self.interval = None if interval is None else whole(interval, f'{WHERE}.interval', 1)
        self.law_name = choice(law_name, f'{WHERE}.law_name', list(LAWS))
        self.level = fraction(level, f'{WHERE}.level')
        if not 0 < self.level < 1:
            fail(f'{WHERE}.level={level!r} must be strictly between 0 and 1, e.g. 0.9.')
        self.bootstrap = whole(bootstrap, f'{WHERE}.bootstrap', 0)
        self.max_points = whole(max_points, f'{WHERE}.max_points', 10)
        self.history = _History(whole(max_history, f'{WHERE}.max_history', 16))
        self._warned: set[str] = set()
        self._last_forecast = -1
        self._scheduler: Optional[WSDScheduler] = None
        self._own: Optional[np.ndarray] = None  # multipliers of this run's schedule at timestamps 0..n
        self._last_fit: Optional[tuple[tuple[str, ...], np.ndarray]] = None  # runs fitted and their parameters
        self._forecasts = 0

    def fit_start(self, state: State, logger: Logger) -> None:
        del logger
        compiled = compiled_schedule_of(state)
        if compiled is None or not isinstance(compiled.scheduler, WSDScheduler):
            fail(f'{WHERE} forecasts branches of a wsd main run; this run\'s scheduler is '
                 f'{type(compiled.scheduler).__name__ if compiled else "not a Composer scheduler"}. Use '
                 f'`scheduler: {{name: wsd, ...}}`.')
        if compiled.ssr != 1.0:
            fail(f'{WHERE} does not support scale_schedule_ratio={compiled.ssr}; leave it at 1.')
        self._scheduler = compiled.scheduler
        if self.interval is None and not state.evaluators:
            fail(f'{WHERE}: the run has no evaluation, so "after each evaluation" never comes; set {WHERE}.interval '
                 f'(batches between forecasts) or add an eval_loader.')
        if state.timestamp.batch.value == 0 and self.history.sums:
            self.history = _History(self.history.limit)  # fit(reset_time=True): a new run

    def batch_start(self, state: State, logger: Logger) -> None:
        del logger
        if state.optimizers:
            self.history.add_lr(int(state.timestamp.batch.value), float(state.optimizers[0].param_groups[0]['lr']))

    def batch_end(self, state: State, logger: Logger) -> None:
        batch = int(state.timestamp.batch.value)
        if self.loss_key == LOSS_KEY:
            loss = state.total_loss_dict.get(LOSS_KEY)
            if loss is not None and math.isfinite(float(loss)):
                self.history.add_loss(batch - 1, float(loss))
        if self.interval is not None and batch % self.interval == 0:
            self._forecast(state, logger)

    def eval_end(self, state: State, logger: Logger) -> None:
        if self.loss_key != LOSS_KEY:
            _, label, name = self.loss_key.split('/')
            metric = state.eval_metrics.get(label, {}).get(name)
            if metric is None:
                if state.dataloader_label == label:
                    self._warn_once('metric', 'evaluator %r has no metric %r; nothing is recorded.', label, name)
                return
            if state.dataloader_label != label:
                return
            value = float(metric.compute())
            if math.isfinite(value):
                self.history.add_loss(int(state.timestamp.batch.value), value)
        if self.interval is None:
            self._forecast(state, logger)

    def _forecast(self, state: State, logger: Logger) -> None:
        step = int(state.timestamp.batch.value)
        if step == self._last_forecast or dist.get_global_rank() != 0:
            return
        self._last_forecast = step
        main = self.history.run(_MAIN, self.loss_key)
        if main is None or main.loss_steps.size < MIN_POINTS:
            return
        group = state.optimizers[0].param_groups[0]
        samples, tokens = self._per_batch(state)
        metrics = self.forecast(main, self._branch_runs(), step, float(group['lr']),
                                float(group.get('initial_lr', group['lr'])), samples, tokens,
                                self._own_schedule(state, samples, tokens))
        if metrics:
            logger.log_metrics(metrics)

    def forecast(self, main: Run, branches: Sequence[Run], step: int, current_lr: float, initial_lr: float,
                 samples: int, tokens: int, own: Optional[np.ndarray]) -> dict[str, float]:
        """The metrics of one forecast at ``step`` (no Composer state: also what the overhead benchmark times).

        Args:
            main (Run): This run's history.
            branches (Sequence[Run]): Branch runs found (those starting after ``step`` wait).
            step (int): The current timestamp: updates ``0 .. step-1`` are done.
            current_lr (float): The LR of update ``step``.
            initial_lr (float): ``optimizer.lr`` (the multipliers' unit).
            samples (int): Samples per batch.
            tokens (int): Tokens per batch.
            own (np.ndarray, optional): The multiplier every update of this run's own schedule trains at.
        """
        # A branch can only continue history this run has: one that starts later (a replay of a run) waits.
        runs = join_branches([main, *(r for r in branches if r.own_start < step)])
        runs = [runs[0], *(r for r in runs[1:] if self._is_branch(r) and r.loss_steps.size >= MIN_POINTS)]
        fitted = tuple(r.source for r in runs)
        self._forecasts += 1
        warm = self._last_fit is not None and self._last_fit[0] == fitted and self._forecasts % _FULL_FIT_EVERY
        start = self._last_fit[1] if warm else None
        try:
            law = fit_runs(runs, self.law_name, max_points=self.max_points, n_boot=self.bootstrap, interval=self.level,
                           prior=self.prior, start=start)
        except ConfigError as err:
            self._warn_once('fit', 'no forecast yet: %s', err)
            return {}
        self._last_fit = (fitted, law.theta)  # the next forecast of the same runs starts here
        metrics = {f'{LOSS_LAW_PREFIX}/fit_rmse': law.runs[0].rel_rmse, f'{LOSS_LAW_PREFIX}/fit_runs': len(runs)}
        history = LRSchedule.from_logged(main.lr_steps, main.lrs, end=step).lr
        if law.decay_identified:
            for label, decay in self.decays.items():
                length = batches_in(decay, samples, tokens, key=f'{WHERE}.decays')
                tail = [decay_value(self._scheduler.decay_shape, (k - 1 - step) / length, self._scheduler.alpha_f)
                        for k in range(step + 1, step + length)]
                schedule = LRSchedule(np.concatenate([history, [current_lr], initial_lr * np.array(tail)]))
                self._log_final(metrics, f'decay_{label}', law, schedule)
        else:
            self._warn_once('identify', 'no fitted run decays its LR yet and no law file is given, so the gain of a '
                            'decay is unknown: loss_law/decay_* is not logged. Add finished branches (%s.branches) '
                            'or a law fitted on runs that decay (%s.law).', WHERE, WHERE)
        if own is not None and own.size > step:
            schedule = LRSchedule(np.concatenate([history, initial_lr * own[step:]]))
            if law.decay_identified or schedule.lr[step:].min() >= 0.9 * schedule.peak:
                self._log_final(metrics, 'final', law, schedule)
        return metrics

    def _log_final(self, metrics: dict[str, float], name: str, law: LossLaw, schedule: LRSchedule) -> None:
        try:
            pred = predict(law, schedule, steps=np.array([float(schedule.n)]), source=f'{WHERE} {name}')
        except ConfigError as err:
            self._warn_once(name, 'no %s forecast: %s', name, err)
            return
        key = f'{LOSS_LAW_PREFIX}/{name}'
        metrics[key] = pred.final_loss
        metrics[f'{key}_lower'], metrics[f'{key}_upper'] = pred.final_interval

    def _own_schedule(self, state: State, samples: int, tokens: int) -> Optional[np.ndarray]:
        """The multiplier each update of this run trains at, up to ``max_duration`` (computed once)."""
        if self._own is None and state.max_duration is not None:
            duration = state.max_duration
            if duration.unit == TimeUnit.EPOCH:
                self._warn_once('epochs', 'max_duration=%s is in epochs; loss_law/final is not logged.', duration)
                return None
            _, alphas = schedule_multipliers(self._scheduler, f'{duration.value}{duration.unit.value}', samples, tokens)
            self._own = update_multipliers(alphas)
        return self._own

    @staticmethod
    def _per_batch(state: State) -> tuple[int, int]:
        batches = max(int(state.timestamp.batch.value), 1)
        return (max(int(state.timestamp.sample.value) // batches, 1),
                max(int(state.timestamp.token.value) // batches, 1))

    def _branch_runs(self) -> list[Run]:
        runs = []
        for pattern in self.branches:
            paths = sorted(glob.glob(pattern)) or [pattern]
            for path in paths:
                try:
                    runs.append(load_run(path, self.loss_key, loss_option=f'{WHERE}.loss_key',
                                         lr_option='lr_monitor in the branch'))
                except (ConfigError, OSError) as err:
                    self._warn_once(f'branch:{path}', 'branch %s is not used: %s', path, err)
        return runs

    def _is_branch(self, run: Run) -> bool:
        if run.joined_to is None:
            self._warn_once(f'unjoined:{run.source}', 'branch %s is not used: its LR at its first step %d does not '
                            'continue this run (or it starts at step 0), so it did not branch off this run.',
                            run.source, run.own_start)
            return False
        return True

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        warn_once(log, self._warned, key, f'{WHERE}: {message}', *args)

    def state_dict(self) -> dict[str, Any]:
        return pack_state({'version': _STATE_VERSION, 'history': self.history.state(), 'warned': sorted(self._warned)})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = unpack_state(state)
        if state.get('version') != _STATE_VERSION:
            raise ValueError(f'{WHERE}: checkpoint state version {state.get("version")!r} is not {_STATE_VERSION}.')
        self.history.load(state['history'])
        self._warned = set(state['warned'])
