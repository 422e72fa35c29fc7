"""Online loss-curve collapse monitoring: residual against a reference curve and the predicted final loss.

Registered in ``llmfoundry_callbacks`` as ``collapse_monitor``::

    callbacks:
      collapse_monitor:
        reference: refs/family.json   # from `foundry-ext collapse fit RUN... -o refs/family.json` (required)
        interval: 10                  # evaluate every 10 batches (and at the last batch)
        consecutive: 5                # alert after 5 consecutive out-of-band evaluations
        threshold: 3.0                # out of band: |z| > 3 reference band widths
        smoothing: null               # moving-average window in batches; default: the reference's
        action: warn                  # warn | stop
        schedule_tolerance: 0.05      # warn once if lr/initial_lr strays this far from the reference schedule

At every ``BATCH_END`` the callback reads the training loss from ``state.total_loss_dict`` (all-reduced over
ranks by Composer, unlike ``state.loss``) and keeps the last ``smoothing`` losses. Every ``interval`` batches
it takes their mean, placed at their mean step (:func:`~foundry_ext.collapse.curves.smooth_curve`, the
smoothing the reference was fitted with), and, once the run is past the reference's ``fit_start``, logs

* the collapse residual of that point, ``collapse/residual`` (``L/L(T) - ref``) and ``collapse/residual_z`` (in
  reference band widths), normalizing by the early-aligned ``L(T)`` ([SwC] Sec. 4;
  :func:`~foundry_ext.collapse.prediction.collapse_residual`);
* ``collapse/predicted_final_loss`` with ``collapse/predicted_final_loss_lower`` / ``_upper`` (the interval at
  2 standard errors), aligning the newest evaluations with the reference ([SwC] Sec. 5;
  :func:`~foundry_ext.collapse.prediction.predict_final_loss`);
* ``collapse/out_of_band_streak``: how many evaluations in a row had ``|z| > threshold``.

Each evaluation costs the same however long the run has been going: :class:`~foundry_ext.collapse.online.
OnlineCollapse` keeps sums over the early-align windows and only the points of the prediction window, and gives
exactly what those two functions compute over the whole history. A size-aware reference (fitted on runs whose
controls differ) is specialized once, at the first evaluation, to this run's ``tau``, TPP and parameter count.

The metrics are logged at the ``BATCH_END`` step (one after the step of the newest loss, as ``lr_monitor``
does). When the streak reaches ``consecutive`` the callback warns, naming the step where the streak began,
and with ``action: stop`` ends training after that batch (every rank computes the same all-reduced numbers,
so all ranks stop together). It also warns once when the run's ``tau`` or TPP differ from the reference's by
more than 10%, or its LR multiplier from the reference schedule by more than ``schedule_tolerance``: collapse
is only expected when schedule, TPP and ``tau`` match ([SwC] Sec. 3).

Total steps ``T`` come from ``max_duration`` in batches, or in epochs with a sized dataloader. The window, the
run's controls, the online sums, the streak and the alerts are in the callback's ``state_dict`` (bounded: it does
not grow with the run), so a resumed run logs exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from pathlib import Path
from typing import Any, Optional

import numpy as np
from composer.core import Callback, State, TimeUnit
from composer.loggers import Logger
from composer.utils import dist

from foundry_ext.collapse.controls import Controls, per_step_decay, schedule_peak
from foundry_ext.collapse.curves import smooth_curve
from foundry_ext.collapse.online import OnlineCollapse
from foundry_ext.collapse.reference import ReferenceCurve
from foundry_ext.core.checkpoint_state import pack_state, unpack_state
from foundry_ext.core.errors import ConfigError
from foundry_ext.core.lifecycle import RunLifecycle
from foundry_ext.core.metric_names import LOSS_KEY
from foundry_ext.core.once import warn_once
from foundry_ext.schedulers.compiled import compiled_schedule_of

log = logging.getLogger(__name__)

__all__ = ['ACTIONS', 'CollapseMonitor']

WHERE = 'callbacks.collapse_monitor'
ACTIONS = ('warn', 'stop')
_STATE_VERSION = 2


def _bad(key: str, value: Any, fix: str) -> ConfigError:
    return ConfigError(f'{WHERE}.{key}={value!r} {fix}')


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(key, value, 'must be a whole number >= 1.')
    return value


def _positive_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise _bad(key, value, 'must be a positive number.')
    return float(value)


class CollapseMonitor(Callback):
    """Logs the collapse residual and the predicted final loss, and alerts when the run leaves the band.

    Args:
        reference (str): Path of a reference curve JSON (``foundry-ext collapse fit``), fitted on runs with the
            same LR schedule, TPP and ``tau``.
        interval (int): Evaluate every this many batches (and at the last batch). Default 10.
        consecutive (int): Alert after this many consecutive out-of-band evaluations. Default 5.
        threshold (float): A point is out of band when ``|z| > threshold``. Default 3.0.
        smoothing (int, optional): Moving-average window in batches; default the reference's ``smoothing``.
            Use the reference's: its band measures curves smoothed that way.
        action (str): ``warn`` (log a warning) or ``stop`` (also end training). Default ``warn``.
        schedule_tolerance (float): Warn once if ``lr / initial_lr`` differs from the reference schedule by
            more than this. Default 0.05.

    Raises:
        ConfigError: At construction, for a missing or unreadable reference or a bad value, naming
            ``callbacks.collapse_monitor.<key>``, the value and the fix.
    """

    def __init__(
        self,
        reference: str,
        interval: int = 10,
        consecutive: int = 5,
        threshold: float = 3.0,
        smoothing: Optional[int] = None,
        action: str = 'warn',
        schedule_tolerance: float = 0.05,
    ) -> None:
        self.reference_path = str(reference)
        self.ref = self._load_reference(self.reference_path)
        self.interval = _positive_int('interval', interval)
        self.consecutive = _positive_int('consecutive', consecutive)
        self.threshold = _positive_float('threshold', threshold)
        self.smoothing = self.ref.smoothing if smoothing is None else _positive_int('smoothing', smoothing)
        if action not in ACTIONS:
            raise _bad('action', action, f'must be one of {list(ACTIONS)}.')
        self.action = action
        self.schedule_tolerance = _positive_float('schedule_tolerance', schedule_tolerance)
        if self.smoothing != self.ref.smoothing:
            log.warning('%s.smoothing=%d differs from the reference\'s %d: the band no longer matches the noise '
                        'of the smoothed loss, so z is mis-scaled.', WHERE, self.smoothing, self.ref.smoothing)
        self.total_steps: Optional[int] = None
        self._peak = 1.0  # the largest LR multiplier of the run's schedule, read at fit_start
        self._lifecycle = RunLifecycle()
        self._start_history()

    def _start_history(self) -> None:
        self._window: deque[tuple[int, float]] = deque(maxlen=self.smoothing)
        self._evaluations = 0
        self._recent: deque[float] = deque(maxlen=self.consecutive)  # t/T of the newest evaluations
        self._controls: Optional[Controls] = None  # the run's, read at its first evaluation
        self._online: Optional[OnlineCollapse] = None  # residual and prediction, updated per evaluation
        self._online_state: Optional[dict[str, Any]] = None  # a checkpoint's, until T is known again
        self._streak = 0
        self._alerts: list[int] = []  # step at which each alerted streak began
        self._warned: set[str] = set()

    @staticmethod
    def _load_reference(path: str) -> ReferenceCurve:
        if not Path(path).is_file():
            raise _bad('reference', path, 'does not exist. Fit a reference with `foundry-ext collapse fit RUN... '
                       '-o ref.json` on finished runs with this run\'s schedule, TPP and tau, and give its path.')
        try:
            return ReferenceCurve.from_json(Path(path).read_text())
        except (ValueError, KeyError, TypeError) as err:
            raise _bad('reference', path, f'is not a collapse reference ({err}); write one with '
                       '`foundry-ext collapse fit`.') from err

    def fit_start(self, state: State, logger: Logger) -> None:
        del logger
        self.total_steps = self._total_steps(state)
        compiled = compiled_schedule_of(state)
        self._peak = schedule_peak(compiled.scheduler if compiled is not None else None)
        self._check_evaluations_fit(self.total_steps)
        start = self._lifecycle.fit_start(state)
        if start.from_zero:
            self._start_history()  # a new run (or fit(reset_time=True)), whose curve starts over
        elif not self._window:
            self._warn_once('history', 'starting at batch %d with no history (the checkpoint has no %s state): '
                            'the early-align window may be incomplete.', state.timestamp.batch.value, WHERE)

    def _check_evaluations_fit(self, total: int) -> None:
        """Refuses settings under which no evaluation of the whole run would log (fewer than two past fit_start)."""
        batches = {*range(self.interval, total + 1, self.interval), total}
        # An evaluation at batch b averages the losses of steps b - smoothing .. b - 1.
        centers = [b - 1 - (self.smoothing - 1) / 2 for b in batches if b >= self.smoothing]
        if sum(c / total >= self.ref.fit_start for c in centers) < 2:
            raise ConfigError(
                f'{WHERE}: with interval={self.interval} and smoothing={self.smoothing}, this run of {total} batches '
                f'has fewer than 2 evaluations past the reference\'s fit_start={self.ref.fit_start:g} of the run, so '
                f'nothing would be logged. Lower {WHERE}.interval (and smoothing) or lengthen the run.')

    @staticmethod
    def _total_steps(state: State) -> int:
        duration = state.max_duration
        if duration is None:
            raise ConfigError(f'{WHERE} needs max_duration to know the run length T.')
        if duration.unit == TimeUnit.BATCH:
            return int(duration.value)
        if duration.unit == TimeUnit.EPOCH and state.dataloader_len is not None:
            return int(duration.value) * int(state.dataloader_len)
        raise ConfigError(
            f"{WHERE} needs max_duration in batches ('ba'), or epochs with a sized dataloader, to know the run "
            f"length T; got max_duration={duration}. Set max_duration in 'ba' (tokens / (global_train_batch_size "
            "* max_seq_len) for 'tok').",
        )

    def batch_end(self, state: State, logger: Logger) -> None:
        loss = state.total_loss_dict.get(LOSS_KEY)
        if loss is None:
            return
        batch = state.timestamp.batch.value  # the loss belongs to the batch that just ran: step batch - 1
        if not math.isfinite(float(loss)):
            # The curve has no normalized value there, and a kept NaN would poison every later evaluation.
            self._warn_once('nonfinite', 'the training loss at step %d is %s; it is left out of the curve '
                            '(loss_spike_monitor reports such steps).', batch - 1, float(loss))
            return
        self._window.append((batch - 1, float(loss)))
        if batch % self.interval == 0 or batch >= self.total_steps:
            self._evaluate(state, logger, batch)

    def _evaluate(self, state: State, logger: Logger, batch: int) -> None:
        if len(self._window) < self.smoothing:
            return
        steps, losses = zip(*self._window)
        mean_step, mean_loss = (float(v[-1]) for v in smooth_curve(steps, losses, self.smoothing))
        total = self.total_steps
        assert total is not None
        self._evaluations += 1
        if self._online is None:
            if self._controls is None:
                self._check_controls(state, total)
            self._online = OnlineCollapse(self.ref.for_controls(self._controls), total)
            if self._online_state is not None:  # resumed: T is known again from fit_start
                self._online.load_state_dict(self._online_state)
                self._online_state = None
        self._check_schedule(state, batch / total)
        self._recent.append(mean_step / total)
        ev = self._online.add(mean_step, mean_loss)
        if ev is None:
            return  # the reference is undefined before fit_start (warmup)
        self._streak = self._streak + 1 if abs(ev.z) > self.threshold else 0
        logger.log_metrics({
            'collapse/residual': ev.residual,
            'collapse/residual_z': ev.z,
            'collapse/predicted_final_loss': ev.final_loss,
            'collapse/predicted_final_loss_lower': ev.lower,
            'collapse/predicted_final_loss_upper': ev.upper,
            'collapse/out_of_band_streak': self._streak,
        })
        if self._streak == self.consecutive:
            self._alert(state, self._recent[0], ev.z)

    def _alert(self, state: State, onset_fraction: float, z: float) -> None:
        total = self.total_steps
        assert total is not None
        onset = int(round(onset_fraction * total))
        self._alerts.append(onset)
        if dist.get_global_rank() == 0:
            log.warning(
                'Loss curve left the collapse band: %d consecutive evaluations with |z| > %.3g since step %d '
                '(t/T = %.3f; now batch %d of %d, z = %+.2f). Reference: %s.%s', self.consecutive, self.threshold,
                onset, onset_fraction, state.timestamp.batch.value, total, z, self.reference_path,
                ' Stopping (action: stop).' if self.action == 'stop' else '')
        if self.action == 'stop':
            state.stop_training()

    def _tau(self, state: State, total: int) -> Optional[float]:
        """``tau = 1 / (eta lambda T)`` from the optimizer, or None for optimizers without a known convention."""
        if not state.optimizers:
            return None
        optimizer = state.optimizers[0]
        group = optimizer.param_groups[0]
        per_step = per_step_decay(type(optimizer).__name__, group['weight_decay'], group.get('initial_lr', group['lr']),
                                  self._peak)
        if per_step is None:
            return None
        return 1.0 / (per_step * total) if per_step > 0 else math.inf

    @staticmethod
    def _tpp_and_params(state: State, total: int) -> tuple[Optional[float], Optional[int]]:
        """``D / N`` with tokens per batch so far, and ``N``; None under FSDP, whose ``numel()`` counts one shard."""
        batches, tokens = state.timestamp.batch.value, state.timestamp.token.value
        if state.fsdp_enabled:
            return None, None
        params = sum(p.numel() for p in state.model.parameters())
        return (tokens / batches * total / params if tokens > 0 and batches > 0 else None), params

    def _check_controls(self, state: State, total: int) -> None:
        """Reads the run's controls (for a size-aware reference) and warns once if ``tau`` or TPP differ from the
        reference's ([SwC] Sec. 3)."""
        tau, (tpp, params) = self._tau(state, total), self._tpp_and_params(state, total)
        self._controls = Controls(tau=tau if tau is not None and math.isfinite(tau) else None, tpp=tpp, params=params)
        problems = self.ref.controls_mismatch(tau, tpp)
        if problems:
            self._warn_once('controls', 'this run\'s controls differ from the reference\'s (%s): curves only '
                            'collapse when LR schedule, TPP and tau match, so residuals will drift.',
                            '; '.join(problems))

    def _check_schedule(self, state: State, fraction: float) -> None:
        """Warns once if ``lr / initial_lr`` (the multiplier of the next batch) strays from the reference."""
        group = state.optimizers[0].param_groups[0] if state.optimizers else {}
        if 'initial_lr' not in group or not group['initial_lr']:
            return
        mine = group['lr'] / group['initial_lr'] / self._peak  # the reference's schedule peaks at 1
        expected = float(self.ref.schedule(np.array([fraction]))[0])
        if abs(mine - expected) > self.schedule_tolerance:
            self._warn_once('schedule', 'LR multiplier %.3f at t/T = %.3f differs from the reference schedule\'s '
                            '%.3f by more than schedule_tolerance=%.3g: the run does not follow the reference\'s '
                            'LR schedule, so it cannot collapse onto it.', mine, fraction, expected,
                            self.schedule_tolerance)

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        warn_once(log, self._warned, key, f'{WHERE}: {message}', *args)

    def state_dict(self) -> dict[str, Any]:
        return pack_state({
            'version': _STATE_VERSION,
            'window': list(self._window),
            'evaluations': self._evaluations,
            'recent': list(self._recent),
            'controls': self._controls.known() if self._controls is not None else None,
            'online': self._online.state_dict() if self._online is not None else None,
            'streak': self._streak,
            'alerts': list(self._alerts),
            'warned': sorted(self._warned),
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = unpack_state(state)
        if state.get('version') != _STATE_VERSION:
            raise ValueError(f'{WHERE}: checkpoint state version {state.get("version")!r} is not {_STATE_VERSION}.')
        self._window = deque((tuple(item) for item in state['window']), maxlen=self.smoothing)
        self._evaluations = int(state['evaluations'])
        self._recent = deque(state['recent'], maxlen=self.consecutive)
        self._controls = Controls(**state['controls']) if state['controls'] is not None else None
        self._online, self._online_state = None, state['online']
        self._streak = int(state['streak'])
        self._alerts = list(state['alerts'])
        self._warned = set(state['warned'])
        self._lifecycle.restored()

    def after_load(self, state: State, logger: Logger) -> None:
        del logger
        self._lifecycle.after_load(state)

    @property
    def alerts(self) -> list[int]:
        """Step at which each alerted out-of-band streak began."""
        return list(self._alerts)
