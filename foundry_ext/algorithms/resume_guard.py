r"""``resume_guard``: watch Adam's state against the LR, and act before a resume (or an in-run LR jump) spikes.

Adam's second moment :math:`v` and the weights themselves settle to the LR a run trains at. A resume that
applies a much higher LR than the checkpoint was trained at (dropping the decay, WSD-S going back to the peak,
a finished run continued with a new schedule, a larger ``optimizer.lr``) multiplies the effective step
:math:`\eta / (\sqrt{\hat v} + \epsilon)` at once, and the loss spikes. Separately, Composer restores the LR
state from the checkpoint (the optimizer's ``lr``/``initial_lr`` and the scheduler's ``base_lrs``), so a new
``optimizer.lr`` in the YAML is silently ignored.

The LR plan (which LR each coming batch trains at) is explained in
:mod:`foundry_ext.algorithms.schedule_lookahead`.

At every checkpoint the guard saves a record (see :meth:`ResumeGuard.state_dict`): the step, the LR applied
by the last step and the LR of the next batch per group, the plan of the next ``rewarm_steps`` batches,
``betas``/``eps``/``weight_decay``, and the optimizer-state summary of
:mod:`foundry_ext.algorithms.optimizer_stats`. On resume (``fit_start``: after the checkpoint loads, before
the first batch) it compares, per group,

.. math::

    R = \max_{0 \le j < N} \frac{\eta_\text{new}(s+j)}{\max\big(\eta_\text{old}(s+j),\ \eta_\text{saved}\big)}

where :math:`\eta_\text{new}` is the resumed plan, :math:`\eta_\text{old}` the plan saved in the checkpoint,
:math:`\eta_\text{saved}` the LR the checkpointed run would have applied next, and :math:`N` =
``rewarm_steps``. An unchanged schedule gives :math:`R \le 1` exactly (the same floats are recomputed); an LR
that rises above both the saved LR and the saved plan gives :math:`R > 1`. A mismatch is :math:`R >`
``max_lr_ratio``. Without a record (a checkpoint written without the guard) the denominator is the restored LR.

``rewarm`` replaces the LR of batch :math:`s+j` by a linear interpolation from the reference LR
:math:`\eta_\text{ref}` (:math:`\eta_\text{saved}` on resume, the LR of the previous batch for an in-run jump)
to the scheduled LR, never above the latter:

.. math::

    \eta(s+j) = \eta_\text{sched}(s+j) \cdot \Big(\rho_j + (1 - \rho_j) \min\big(1, \tfrac{j}{N}\big)\Big),
    \qquad \rho_j = \min\Big(1, \frac{\eta_\text{ref}}{\eta_\text{sched}(s+j)}\Big),

i.e. :math:`\eta_\text{ref} + (\eta_\text{sched} - \eta_\text{ref})\, j/N` while the schedule is above the
reference. It is applied at ``batch_end``, right after Composer's scheduler step: the ``LambdaLR`` recomputes
``base_lr * multiplier`` at every step, so the factor never compounds, ``lr_monitor`` (a callback, which runs
after algorithms) logs the LR actually applied, and a checkpoint stores it. The ramp is part of the record,
so a resume in the middle of a rewarm continues it. :math:`N` defaults to
``REWARM_TIMESCALES`` :math:`/(1-\beta_2)` batches, the time :math:`v` takes to re-equilibrate.

In-run jumps (``check_in_run``): at every ``batch_end`` the LR of the next batch is compared with the LR of
the batch just trained; a ratio above ``max_lr_ratio`` is handled by ``on_mismatch`` like a resume. The check
is armed after the first batch whose successor's LR does not rise (the end of the first warmup), so warmups
are not flagged, and it is paused while a rewarm runs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Optional

from composer.core import Algorithm, Event, State
from composer.loggers import Logger
from torch.optim.lr_scheduler import LambdaLR

from foundry_ext.algorithms.optimizer_stats import (QUANTILES, GroupSummary, effective_step_lines, local_sums,
                                                    reduce_sums, summarize)
from foundry_ext.algorithms.schedule_lookahead import Ramp, continues_restored_lr, future_timestamps, lr_ratio, same_lr
from foundry_ext.core.checkpoint_state import pack_state, unpack_state
from foundry_ext.core.composer_private import lambda_lrs_at
from foundry_ext.core.errors import ConfigError, choice, flag, positive, whole
from foundry_ext.core.lifecycle import FitPhase, RunLifecycle
from foundry_ext.core.metric_names import RESUME_GUARD_PREFIX

log = logging.getLogger(__name__)

__all__ = ['ON_MISMATCH', 'REWARM_TIMESCALES', 'ResumeGuard', 'ResumeGuardError']

ON_MISMATCH = ('warn', 'rewarm', 'error')
# Default rewarm length in units of Adam's beta2 timescale 1/(1 - beta2).
REWARM_TIMESCALES = 2
_KEY = 'algorithms.resume_guard'
_RESUME = f'{RESUME_GUARD_PREFIX}/resume'  # metrics of the resume check
_RECORD_VERSION = 1


class ResumeGuardError(RuntimeError):
    """Raised by ``on_mismatch: error`` before the first step that would apply the mismatched LR."""


class ResumeGuard(Algorithm):
    """Records Adam's state at every checkpoint, checks the LR on resume and in run, and warns, rewarms or stops.

    Registered in ``llmfoundry_algorithms`` as ``resume_guard``::

        algorithms:
          resume_guard:
            on_mismatch: rewarm

    See the module docstring for the definitions and ``docs/resume_guard.md`` for the log and the metrics.

    Args:
        on_mismatch (str): ``warn`` (log a warning block), ``rewarm`` (ramp the LR up from the reference LR over
            ``rewarm_steps`` batches) or ``error`` (raise :class:`ResumeGuardError` before the first resumed
            batch; also when the YAML's ``optimizer.lr`` was overridden by the checkpoint and
            ``apply_yaml_lr`` is off). Default ``warn``.
        max_lr_ratio (float): A resume whose ratio :math:`R` exceeds this, or an in-run step whose LR rises by
            more than this factor, is a mismatch. > 1. Default 1.5.
        rewarm_steps (int, optional): Rewarm length in batches, and how far ahead the resume check looks.
            Default ``REWARM_TIMESCALES / (1 - beta2)`` (40 for ``beta2 = 0.95``).
        apply_yaml_lr (bool): On resume, replace the checkpoint's base LR by the YAML's ``optimizer.lr`` (the
            scheduler's ``base_lrs``, the optimizer's ``initial_lr``, and the restored ``lr`` in proportion).
            The next checkpoint stores the new LR, so repeated resumes do not compound. Default False.
        monitor_interval (int): Log the optimizer-state statistics every this many batches; 0 turns the
            monitoring off (the record at checkpoints and the LR checks stay). Default 100.
        check_in_run (bool): Also guard against LR jumps during training (e.g. WSD-S returning to the peak).
            Default True.
    """

    def __init__(
        self,
        on_mismatch: str = 'warn',
        max_lr_ratio: float = 1.5,
        rewarm_steps: Optional[int] = None,
        apply_yaml_lr: bool = False,
        monitor_interval: int = 100,
        check_in_run: bool = True,
    ) -> None:
        self.on_mismatch = choice(on_mismatch, f'{_KEY}.on_mismatch', ON_MISMATCH, 'warn to be told, rewarm to ramp '
                                  'the LR up smoothly, or error to stop before the first step')
        self.max_lr_ratio = positive(max_lr_ratio, f'{_KEY}.max_lr_ratio', 'the factor by which the LR may rise '
                                     'before the guard acts, e.g. 1.5', above=1.0)
        self.rewarm_steps = None if rewarm_steps is None else whole(
            rewarm_steps, f'{_KEY}.rewarm_steps', 1,
            f'a number of batches, or null for the default {REWARM_TIMESCALES}/(1 - beta2)')
        self.apply_yaml_lr = flag(apply_yaml_lr, f'{_KEY}.apply_yaml_lr')
        self.monitor_interval = whole(monitor_interval, f'{_KEY}.monitor_interval', 0,
                                      'a number of batches (0 turns the monitoring off)')
        self.check_in_run = flag(check_in_run, f'{_KEY}.check_in_run')

        self._state: Optional[State] = None
        self._steps = 0  # the resolved rewarm length / lookahead
        self._configured: list[dict[str, Any]] = []  # the optimizer's hyper-parameters before any load
        self._record: Optional[dict[str, Any]] = None  # loaded from a checkpoint, consumed at fit_start
        self._lifecycle = RunLifecycle()
        self._ramp: Optional[Ramp] = None
        self._armed = False
        self._quiet_until = 0
        self._applied: Optional[list[float]] = None  # the LR of the batch being trained (batch_start)
        # What the guard wrote into the optimizer and the scheduler's value it replaced, to recover the
        # scheduled LR when no scheduler rewrites it before the next batch_end.
        self._written: Optional[list[float]] = None
        self._unscaled: Optional[list[float]] = None
        self._scheduler_steps: Optional[tuple] = None

    def __repr__(self) -> str:
        return (f'ResumeGuard(on_mismatch={self.on_mismatch!r}, max_lr_ratio={self.max_lr_ratio}, '
                f'rewarm_steps={self.rewarm_steps}, apply_yaml_lr={self.apply_yaml_lr}, '
                f'monitor_interval={self.monitor_interval}, check_in_run={self.check_in_run})')

    def match(self, event: Event, state: State) -> bool:
        return event in (Event.INIT, Event.AFTER_LOAD, Event.FIT_START, Event.BATCH_START, Event.BATCH_END)

    def apply(self, event: Event, state: State, logger: Logger) -> None:
        if event == Event.INIT:
            self._init(state)
        elif event == Event.AFTER_LOAD:
            self._lifecycle.after_load(state)
        elif event == Event.FIT_START:
            self._fit_start(state, logger)
        elif event == Event.BATCH_START:
            self._applied = [g['lr'] for g in self._groups(state)]
        else:
            self._batch_end(state, logger)

    # ----- events -----

    def _init(self, state: State) -> None:
        if len(state.optimizers) != 1:
            raise ConfigError(f'{_KEY}: needs exactly one optimizer; the trainer has {len(state.optimizers)}.')
        optimizer = state.optimizers[0]
        if any('betas' not in g or 'eps' not in g for g in optimizer.param_groups):
            raise ConfigError(f'{_KEY}: watches Adam-family optimizers (betas, eps and exp_avg_sq, e.g. '
                              f'decoupled_adamw); {type(optimizer).__name__} has no betas/eps. Remove resume_guard '
                              f'from algorithms or use an Adam-family optimizer.')
        self._state = state
        # The LR the YAML asked for, before any checkpoint loads: decoupled_adamw and the LambdaLR keep it
        # in initial_lr (the scheduler does not exist yet at init).
        self._configured = [{
            'lr': g.get('initial_lr', g['lr']),
            'betas': tuple(g['betas']),
            'eps': g['eps'],
            'weight_decay': g.get('weight_decay'),
        } for g in optimizer.param_groups]
        self._steps = self._lookahead(state)
        log.info(f'resume_guard: {self!r}.')

    def _lookahead(self, state: State) -> int:
        """The rewarm length and resume look-ahead in batches, from the optimizer's betas as they are now."""
        beta2 = max(g['betas'][1] for g in self._groups(state))
        return self.rewarm_steps or math.ceil(REWARM_TIMESCALES / (1 - beta2))

    def _fit_start(self, state: State, logger: Logger) -> None:
        # Only the first fit() can follow a resume; a later fit() on the same trainer starts over (reset_time) or
        # continues training, maybe with a new schedule.
        start = self._lifecycle.fit_start(state)
        batch = start.batch
        if not self._steps:
            # A checkpoint restores its own betas over the YAML's, and with them Adam's timescale.
            self._steps = self._lookahead(state)
            log.info(f'resume_guard: rewarm and look-ahead: {self._steps} batches'
                     f'{"" if self.rewarm_steps else f" ({REWARM_TIMESCALES}/(1 - beta2))"}.')
        if start.phase in (FitPhase.CONTINUED, FitPhase.RESTARTED):
            self._record = None  # a record restored before fit(reset_time=True) belongs to the earlier run
            self._later_fit(state, logger, batch)
            return
        groups = len(self._groups(state))
        if self._record is not None and len(self._record['lr_next']) != groups:
            log.warning(f'resume_guard: the checkpoint\'s record has {len(self._record["lr_next"])} parameter '
                        f'group(s), the resumed optimizer {groups}: the record does not apply, so the resume is '
                        f'compared with the restored LR only.')
            self._record, self._ramp, self._written, self._unscaled = None, None, None, None
        if self._record is None and batch == 0:
            return  # a fresh run: nothing was restored
        if self._record is None:
            self._armed = True  # resumed from a checkpoint without a record: the first warmup is long over
        self._resume_check(state, logger)
        self._record = None

    def _later_fit(self, state: State, logger: Logger, batch: int) -> None:
        if batch == 0:  # fit(reset_time=True): a new run on the same trainer, with its own warmup
            self._armed, self._ramp, self._written, self._unscaled, self._applied = False, None, None, None, None
            self._quiet_until = 0
            return
        if not (self.check_in_run and self._armed and self._ramp is None and self._applied is not None):
            return
        # The next batch's LR (maybe from a new schedule) against the last batch's, as between two batches.
        self._check_jump(state, logger, batch, [g['lr'] for g in self._groups(state)])

    def _batch_end(self, state: State, logger: Logger) -> None:
        batch = int(state.timestamp.batch)
        groups = self._groups(state)
        if self._ramp is not None:
            self._write_ramp(state, batch)
            logger.log_metrics({f'{RESUME_GUARD_PREFIX}/rewarm_factor': lr_ratio(groups[0]['lr'], self._unscaled[0])})
            # Over, or the schedule fell back to where the ramp began: a later rise is then a jump of its own,
            # from the LR applied by then, for the in-run check.
            if self._ramp.done(batch) or all(u <= r for u, r in zip(self._unscaled, self._ramp.ref)):
                self._ramp = None
                self._written = self._unscaled = None
        new = [g['lr'] for g in groups]
        if self.check_in_run and self._applied is not None:
            if not self._armed:
                # Composer applies the first multiplier to the first two batches, so batch 0 proves nothing.
                self._armed = batch >= 2 and all(n <= a for n, a in zip(new, self._applied))
            elif self._ramp is None and batch >= self._quiet_until:
                self._check_jump(state, logger, batch, new)
        if self.monitor_interval and batch % self.monitor_interval == 0:
            self._log_statistics(state, logger)

    # ----- the resume check -----

    def _resume_check(self, state: State, logger: Logger) -> None:
        batch = int(state.timestamp.batch)
        record = self._record
        groups = self._groups(state)
        restored_lr = [g['lr'] for g in groups]
        restored_base = self._base_lrs(state)
        lines = [f'resume_guard: resumed at batch {batch}' +
                 (f' from a record saved at batch {record["batch"]}' if record else
                  ' from a checkpoint without a resume_guard record (comparing with the restored LR)')]

        overridden_lr = [not same_lr(b, c['lr']) for b, c in zip(restored_base, self._configured)]
        config_lines = self._config_overrides(groups, restored_base)
        if config_lines:
            lines.append('  the checkpoint overrides the YAML (Composer restores the optimizer and scheduler state):')
            lines += [f'    {line}' for line in config_lines]
        if self.apply_yaml_lr and any(overridden_lr):
            lines += self._apply_yaml_lr(state, restored_base)
        silent_override = any(overridden_lr) and not self.apply_yaml_lr

        ref = list(record['lr_next']) if record else restored_lr
        plan = self._lr_plan(state, self._steps)
        old_plan = record['plan'] if record else None
        # Without a record, a schedule that gives the restored LR at the batch before the resume is taken to
        # continue the checkpointed run's own (e.g. the rest of its warmup); any other is compared with that LR.
        expected = old_plan if record else (plan if continues_restored_lr(state, restored_lr) else None)
        ratio, group, offset = 0.0, 0, 0
        for g, lrs in enumerate(plan):
            # Past the end of the saved plan (a longer look-ahead now) the in-run check takes over.
            for j, lr in enumerate(lrs[:len(expected[g])] if expected else lrs):
                candidate = lr_ratio(lr, max(expected[g][j] if expected else 0.0, ref[g]))
                if candidate > ratio:
                    ratio, group, offset = candidate, g, j
        changed = None if old_plan is None else any(
            not same_lr(a, b) for new_lrs, old_lrs in zip(plan, old_plan) for a, b in zip(new_lrs, old_lrs))
        mismatch = ratio > self.max_lr_ratio
        lines.append(f'  LR: the checkpointed run would apply {_fmt(ref[group])} next (group {group}); the resumed '
                     f'run applies {_fmt(plan[group][0])} .. {_fmt(max(plan[group]))} over batches {batch}..'
                     f'{batch + len(plan[group]) - 1}: ratio {ratio:.3g} at batch {batch + offset} '
                     f'(max_lr_ratio {self.max_lr_ratio:g})')
        if changed is not None:
            lines.append('  schedule: ' + ('changed: the resumed LR plan differs from the one saved in the checkpoint '
                                           '(scheduler, max_duration for dur-based times, or the LR)'
                                           if changed else 'same plan as the checkpoint'))

        now = self._summaries(state)
        saved = [GroupSummary.from_dict(d) for d in record['stats']] if record and record.get('stats') else None
        saved_lr = record['lr_applied'] if record else restored_lr
        eff_ratio = effective_step_lines(lines, now, saved, saved_lr, plan, group)

        metrics = {
            f'{_RESUME}/lr_ratio': ratio,
            f'{_RESUME}/eff_step_ratio': eff_ratio,
            f'{_RESUME}/lr_overridden': float(silent_override),
            f'{_RESUME}/config_overridden': float(bool(config_lines)),
            f'{_RESUME}/rewarm_steps': float(self._steps if mismatch and self.on_mismatch == 'rewarm' else 0),
        }
        if changed is not None:
            metrics[f'{_RESUME}/schedule_changed'] = float(changed)
        logger.log_metrics(metrics)

        if self.on_mismatch == 'error' and (mismatch or silent_override):
            raise ResumeGuardError('\n'.join(lines + self._error_fix(mismatch, silent_override)))
        if mismatch:
            lines.append(self._act_on_mismatch(state, batch, ref))
        if mismatch or config_lines or any(overridden_lr):
            log.warning('\n'.join(lines))
        else:
            log.info(f'resume_guard: resumed at batch {batch}: the LR over the next {len(plan[0])} batches is '
                     f'consistent with the checkpoint (ratio {ratio:.3g}); the optimizer settings are as configured.')

    def _config_overrides(self, groups: list[dict], restored_base: list[float]) -> list[str]:
        lines = []
        for i, (group, base, configured) in enumerate(zip(groups, restored_base, self._configured)):
            restored = {'lr': base, 'betas': tuple(group['betas']), 'eps': group['eps'],
                        'weight_decay': group.get('weight_decay')}
            for key, value in restored.items():
                wanted = configured[key]
                matches = same_lr(value, wanted) if key == 'lr' else value == wanted
                if not matches and not (key == 'lr' and self.apply_yaml_lr):  # applied below, said there
                    hint = ' (set apply_yaml_lr: true to use the YAML\'s)' if key == 'lr' else ''
                    lines.append(f'group {i}: optimizer.{key}={wanted} in the YAML is ignored; the checkpoint\'s '
                                 f'{value} is used{hint}')
        return lines

    def _apply_yaml_lr(self, state: State, restored_base: list[float]) -> list[str]:
        schedulers = [s for s in state.schedulers if hasattr(s, 'base_lrs')]
        lines = []
        for i, (group, base, configured) in enumerate(zip(self._groups(state), restored_base, self._configured)):
            wanted = configured['lr']
            if same_lr(base, wanted):
                continue
            group['lr'] = group['lr'] * wanted / base if base > 0 else wanted
            group['initial_lr'] = wanted
            for scheduler in schedulers:
                scheduler.base_lrs[i] = wanted
            lines.append(f'  APPLY_YAML_LR: group {i} now uses the YAML\'s optimizer.lr={_fmt(wanted)} instead of the '
                         f'checkpoint\'s {_fmt(base)} (x{wanted / base if base else math.inf:.3g}); the next '
                         f'checkpoint stores {_fmt(wanted)}')
        return lines

    def _act_on_mismatch(self, state: State, batch: int, ref: list[float]) -> str:
        if self.on_mismatch == 'rewarm':
            self._ramp = Ramp(start=batch, steps=self._steps, ref=list(ref))
            self._write_ramp(state, batch)
            return (f'  action (on_mismatch=rewarm): the LR ramps linearly from {_fmt(ref[0])} (group 0) to the '
                    f'schedule\'s over batches {batch}..{batch + self._steps}')
        self._quiet_until = batch + self._steps  # reported once here, not again by the in-run check
        return ('  action (on_mismatch=warn): none. Expect a loss spike; set algorithms.resume_guard.on_mismatch: '
                'rewarm to ramp the LR up smoothly')

    def _error_fix(self, mismatch: bool, silent_override: bool) -> list[str]:
        fixes = ['resume_guard stopped the run before its first resumed batch (on_mismatch: error). To fix:']
        if mismatch:
            fixes.append(f'  - set algorithms.resume_guard.on_mismatch: rewarm to ramp the LR up over {self._steps} '
                         f'batches, or resume with the checkpoint\'s schedule, or raise '
                         f'algorithms.resume_guard.max_lr_ratio if the jump is intended')
        if silent_override:
            fixes.append('  - set algorithms.resume_guard.apply_yaml_lr: true to train with the YAML\'s optimizer.lr, '
                         'or put the checkpoint\'s LR back into the YAML')
        return fixes

    # ----- in-run jumps -----

    def _check_jump(self, state: State, logger: Logger, batch: int, new: list[float]) -> None:
        """Acts on the largest rise from the last batch's LRs to ``new``, if it exceeds ``max_lr_ratio``."""
        assert self._applied is not None
        ratio, group = max((lr_ratio(n, a), i) for i, (n, a) in enumerate(zip(new, self._applied)))
        if ratio > self.max_lr_ratio:
            self._in_run_jump(state, logger, batch, ratio, group)

    def _in_run_jump(self, state: State, logger: Logger, batch: int, ratio: float, group: int) -> None:
        assert self._applied is not None
        new = self._groups(state)[group]['lr']
        logger.log_metrics({f'{RESUME_GUARD_PREFIX}/lr_jump_ratio': ratio})
        message = (f'resume_guard: the LR jumps x{ratio:.3g} at batch {batch} (group {group}: '
                   f'{_fmt(self._applied[group])} -> {_fmt(new)}), above max_lr_ratio {self.max_lr_ratio:g}')
        if self.on_mismatch == 'error':
            raise ResumeGuardError(message + '. Stopped before that batch (on_mismatch: error). Set '
                                   'algorithms.resume_guard.on_mismatch: rewarm to ramp it up, or check_in_run: '
                                   'false if the jump is intended.')
        if self.on_mismatch == 'rewarm':
            self._ramp = Ramp(start=batch, steps=self._steps, ref=list(self._applied))
            self._write_ramp(state, batch)
            message += f'; rewarming linearly over batches {batch}..{batch + self._steps}.'
        else:
            message += '; set algorithms.resume_guard.on_mismatch: rewarm to ramp it up.'
        log.warning(message)

    # ----- LR bookkeeping -----

    @staticmethod
    def _groups(state: State) -> list[dict]:
        return state.optimizers[0].param_groups

    @staticmethod
    def _scheduler_positions(state: State) -> tuple:
        return tuple(getattr(s, 'last_epoch', None) for s in state.schedulers)

    def _scheduled_lrs(self, state: State) -> list[float]:
        """The LRs the scheduler set for the next batch, undoing the guard's own write if no scheduler stepped."""
        current = [g['lr'] for g in self._groups(state)]
        if self._written is None or self._scheduler_positions(state) != self._scheduler_steps:
            return current
        return [u if lr == w else lr for lr, w, u in zip(current, self._written, self._unscaled)]

    def _write_ramp(self, state: State, batch: int) -> None:
        assert self._ramp is not None
        scheduled = self._scheduled_lrs(state)
        for i, (group, lr) in enumerate(zip(self._groups(state), scheduled)):
            group['lr'] = self._ramp.lr(i, lr, batch)
        self._unscaled = scheduled
        self._written = [g['lr'] for g in self._groups(state)]
        self._scheduler_steps = self._scheduler_positions(state)

    def _base_lrs(self, state: State) -> list[float]:
        schedulers = [s for s in state.schedulers if hasattr(s, 'base_lrs')]
        if schedulers:
            return list(schedulers[0].base_lrs)
        return [g.get('initial_lr', g['lr']) for g in self._groups(state)]

    def _lr_plan(self, state: State, steps: int) -> list[list[float]]:
        """``plan[g][j]``: the LR group ``g`` trains at in batch ``s + j``, ``0 <= j < steps`` (module docstring).

        With no scheduler the LR is constant; with a scheduler other than one ``LambdaLR`` (what Composer
        compiles every ``ComposerScheduler`` into) only ``j = 0`` is known.
        """
        batch = int(state.timestamp.batch)
        current = [g['lr'] for g in self._groups(state)]
        if not state.schedulers:
            scheduled = self._scheduled_lrs(state)
            return [[lr] + [self._planned(i, s, batch + j) for j in range(1, steps)]
                    for i, (lr, s) in enumerate(zip(current, scheduled))]
        if len(state.schedulers) != 1 or not isinstance(state.schedulers[0], LambdaLR):
            return [[lr] for lr in current]
        scheduled = lambda_lrs_at(state, future_timestamps(state, steps - 1), 1)
        return [[lr] + [self._planned(i, s, batch + j) for j, s in enumerate(lrs, start=1)]
                for i, (lr, lrs) in enumerate(zip(current, scheduled))]

    def _planned(self, group: int, scheduled: float, batch: int) -> float:
        return scheduled if self._ramp is None else self._ramp.lr(group, scheduled, batch)

    # ----- statistics -----

    def _summaries(self, state: State) -> list[GroupSummary]:
        """The optimizer-state summary; under FSDP all-reduced across ranks (a collective).

        Under DDP every rank holds the whole optimizer state, so its own sums are the run's.
        """
        sums = state.device.tensor_to_device(local_sums(state.optimizers[0]))
        return summarize(reduce_sums(sums) if state.fsdp_enabled else sums)

    def _log_statistics(self, state: State, logger: Logger) -> None:
        lrs = self._applied or [g['lr'] for g in self._groups(state)]
        metrics = {}
        for i, (summary, lr) in enumerate(zip(self._summaries(state), lrs)):
            prefix = f'{RESUME_GUARD_PREFIX}/group{i}'
            metrics[f'{prefix}/lr'] = lr
            metrics[f'{prefix}/v_mean'] = summary.v_mean
            for q, e in zip(QUANTILES, summary.effective_step(lr)):
                metrics[f'{prefix}/eff_step_p{int(q * 100)}'] = e
            metrics[f'{prefix}/update_rms_ratio'] = summary.update_to_param(lr)
            metrics[f'{prefix}/nonfinite'] = summary.nonfinite
        logger.log_metrics(metrics)

    # ----- checkpointing -----

    def state_dict(self) -> dict[str, Any]:
        """The record saved in every checkpoint (see the module docstring).

        Like Composer's ``State.state_dict`` under FSDP, this is a collective (the statistics are all-reduced):
        every rank calls it, as Composer's checkpointing does.
        """
        state = self._state
        record = None
        if state is not None:  # attached to a trainer
            groups = self._groups(state)
            current = [g['lr'] for g in groups]
            record = {
                'version': _RECORD_VERSION,
                'batch': int(state.timestamp.batch),
                'lr_applied': list(self._applied or current),
                'lr_next': current,
                'base_lrs': self._base_lrs(state),
                'betas': [list(g['betas']) for g in groups],
                'eps': [g['eps'] for g in groups],
                'weight_decay': [g.get('weight_decay') for g in groups],
                'plan': self._lr_plan(state, self._steps),
                'stats': [s.to_dict() for s in self._summaries(state)],
                'ramp': dataclasses.asdict(self._ramp) if self._ramp else None,
                'armed': self._armed,
                'written': self._written,
                'unscaled': self._unscaled,
                'scheduler_steps': self._scheduler_steps,
            }
        return {**super().state_dict(), **pack_state(record)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = unpack_state(state) or {}
        if state.get('version') != _RECORD_VERSION:
            log.warning(f'resume_guard: the checkpoint has no resume_guard record of version {_RECORD_VERSION} '
                        f'(got {state.get("version")}); comparing with the restored LR only.')
            return
        self._record = state
        self._ramp = Ramp(**state['ramp']) if state['ramp'] else None
        self._armed = state['armed']
        self._written = state['written']
        self._unscaled = state['unscaled']
        steps = state['scheduler_steps']  # a tuple, compared with _scheduler_positions; JSON made it a list
        self._scheduler_steps = None if steps is None else tuple(steps)
        self._lifecycle.restored()


def _fmt(value: float) -> str:
    return f'{value:.3g}'
