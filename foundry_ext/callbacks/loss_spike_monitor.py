"""Online detection and classification of loss spikes and divergences, with checkpointed state.

Registered in ``llmfoundry_callbacks`` as ``loss_spike_monitor``::

    callbacks:
      loss_spike_monitor:
        streams: [loss/train/total, 'metrics/*/*CrossEntropy']   # the default
        detector: {z_threshold: 4.5}          # SpikeDetector settings for every stream (see docs/loss_spikes.md)
        eval_detector: {warmup_steps: 10}     # overrides for eval streams (sparse: one point per evaluation)
        actions: {not_recovering: stop, divergence: stop}   # per kind: log (default), stop or rollback
        rollback: {steps_before_onset: 100, skip_batches: 300, max_rollbacks: 3}   # for the action rollback
        events_path: null                     # default: <save_folder>/loss_events.jsonl

Each stream gets one :class:`~foundry_ext.spikes.detector.SpikeDetector`:

* training losses (``loss/train/...``) are read at ``BATCH_END`` from ``state.total_loss_dict``, which Composer
  has all-reduced over ranks (not ``state.loss``, one rank's last micro-batch); the step is the batch's index,
  the step the loss is logged at;
* eval metrics (``metrics/<label>/<name>``) are read at ``EVAL_END`` from the values the trainer just
  computed (synchronised over ranks) and logged, at the step they are logged at.

Every notification (an event opening, an event classified) goes to Python logging, the run's loggers
(``loss_spike/<stream>/...`` metrics) and one JSON line of ``events_path``, all on global rank 0 only. Batch
outliers (one or two batches above the threshold) are not spikes: they are logged at ``INFO``, counted
(``loss_spike/<stream>/batch_outlier`` and ``.../outliers_per_1k``), never stop training, and their line in the
events file names the samples of the batches (position in the epoch and fingerprints of the token ids, kept
for the last few batches where the batch was, and gathered only when an outlier is confirmed). The
detectors run on every rank with identical inputs; a ``stop`` is agreed on by an all-reduce of every rank's
decision, so all ranks stop after the same batch, through ``state.stop_training()``. The stop message names the
newest checkpoint saved before the event's onset. The action ``rollback`` (PaLM's recipe) ends the run with exit
code 75 and an instruction in ``<save_folder>/rollbacks.json`` that the relaunch applies: it resumes from a
checkpoint ``steps_before_onset`` before the onset, past ``skip_batches`` batches of data from the onset's batch
(:mod:`foundry_ext.callbacks.spike_rollback`, ``docs/loss_spikes.md``). The detector states, the list of
notifications and the rollbacks made are in the callback's ``state_dict``, so a resumed run continues detection
exactly where the checkpoint left it.
"""

from __future__ import annotations

import logging
import os
from fnmatch import fnmatchcase
from typing import Any, Mapping, Optional, Sequence

import torch
from composer.callbacks import CheckpointSaver
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist, format_name_with_dist

from foundry_ext.core.checkpoint_state import pack_state, unpack_state
from foundry_ext.callbacks.spike_rollback import SpikeRollback
from foundry_ext.core.composer_private import checkpoints_saved_before, exempt_from_rotation, local_save_folder
from foundry_ext.core.errors import ConfigError
from foundry_ext.core.jsonl import JSONLWriter
from foundry_ext.core.lifecycle import FitPhase, RunLifecycle
from foundry_ext.core.metric_names import (EVAL_CROSS_ENTROPY, EVAL_CROSS_ENTROPY_PATTERN, LOSS_KEY, LOSS_SPIKE_PREFIX,
                                           is_eval_metric, is_train_loss)
from foundry_ext.data.fingerprints import find_batch_tensor, row_fingerprints
from foundry_ext.spikes.config import check_detector_kwargs, event_record, stream_detector_kwargs
from foundry_ext.spikes.detector import (BATCH_OUTLIER, DIVERGENCE, EVENT_KINDS, SPIKE, STATUS_OPEN, LossEvent,
                                         SpikeDetector)
from foundry_ext.spikes.rollback import SPIKE_DETECTION_DELAY, check_rollback_settings

log = logging.getLogger(__name__)

__all__ = ['ACTIONS', 'DEFAULT_STREAMS', 'EVENTS_FILENAME', 'LossSpikeMonitor']

WHERE = 'callbacks.loss_spike_monitor'
DEFAULT_STREAMS = (LOSS_KEY, EVAL_CROSS_ENTROPY_PATTERN)
EVENTS_FILENAME = 'loss_events.jsonl'
# What to do per kind of notification: 'spike' is a spike opening (before it is classified); a divergence is
# acted on when it opens (its kind is known then), the spike kinds when they are classified.
ACTIONS = ('log', 'stop', 'rollback')
_ACTION_KINDS = (SPIKE, *EVENT_KINDS)
_STATE_VERSION = 4
_NONE, _STOP, _ROLLBACK = 0, 1, 2  # a rank's decision at a point
# Batches whose sample identities are kept until their outlier could be confirmed (it is, at most 3 later).
_KEPT_BATCHES = 8


class LossSpikeMonitor(Callback):
    """Detects loss spikes and divergences in the run's loss streams, classifies them, logs them, or stops.

    Args:
        streams (Sequence[str], optional): Metric keys or ``fnmatch`` patterns of the streams to watch: training
            losses ``loss/train/<name>`` or eval metrics ``metrics/<eval label>/<metric>``. Default:
            ``['loss/train/total', 'metrics/*/*CrossEntropy']`` (the train loss and every eval cross-entropy).
        detector (Mapping[str, Any], optional): :class:`SpikeDetector` settings for every stream.
        eval_detector (Mapping[str, Any], optional): Settings for eval streams, over ``detector`` and
            :data:`~foundry_ext.spikes.config.EVAL_DETECTOR_DEFAULTS`.
        actions (Mapping[str, str], optional): ``log``, ``stop`` or ``rollback`` per kind: ``spike`` (when a
            spike opens), ``fast_recovering``, ``slow_recovering``, ``not_recovering`` (when classified),
            ``divergence`` (when it opens). Default: ``log`` for all.
        rollback (Mapping[str, int], optional): ``steps_before_onset`` (default 100), ``skip_batches`` (300),
            ``max_rollbacks`` (3), for the action ``rollback``; only with it.
        events_path (str, optional): JSON Lines file of the notifications (``{run_name}`` is filled in). Default:
            ``<save_folder>/loss_events.jsonl``; without either, events go only to the loggers (with a warning).

    Raises:
        ConfigError: At construction, for any bad key or value, naming ``callbacks.loss_spike_monitor.<key>``.
    """

    def __init__(
        self,
        streams: Optional[Sequence[str]] = None,
        detector: Optional[Mapping[str, Any]] = None,
        eval_detector: Optional[Mapping[str, Any]] = None,
        actions: Optional[Mapping[str, str]] = None,
        rollback: Optional[Mapping[str, int]] = None,
        events_path: Optional[str] = None,
    ) -> None:
        self.streams = _check_streams(DEFAULT_STREAMS if streams is None else streams)
        self.detector_kwargs = check_detector_kwargs(detector, f'{WHERE}.detector')
        self.eval_detector_kwargs = check_detector_kwargs(eval_detector, f'{WHERE}.eval_detector')
        # Check the settings of a train and of an eval stream now, not at the first point of a stream.
        for stream in (LOSS_KEY, EVAL_CROSS_ENTROPY):
            self._kwargs_for(stream)
        self.actions = _check_actions(actions)
        self._rollback: Optional[SpikeRollback] = None
        if 'rollback' in self.actions.values():
            self._rollback = SpikeRollback(check_rollback_settings(rollback, f'{WHERE}.rollback'), f'{WHERE}.rollback')
        elif rollback is not None:
            raise ConfigError(f'{WHERE}.rollback={dict(rollback)!r} is set, but no kind in {WHERE}.actions is '
                              f'rollback, so it would have no effect. Add e.g. actions: {{not_recovering: rollback}}, '
                              f'or remove rollback.')
        if events_path is not None and (not isinstance(events_path, str) or not events_path):
            raise ConfigError(f'{WHERE}.events_path={events_path!r} must be a file path, or null for '
                              f'<save_folder>/{EVENTS_FILENAME}.')
        self.events_path_template = events_path
        self.events_path: Optional[str] = None
        self.detectors: dict[str, SpikeDetector] = {}
        # Every spike and divergence notification (the events file also holds the batch outliers).
        self.events: list[dict[str, Any]] = []
        # Batch outliers per stream (their records go to the file and the loggers only: there can be thousands).
        self.outliers: dict[str, int] = {}
        # Records written to the events file (events and outliers), so a resume keeps exactly the checkpoint's.
        self._written: Optional[int] = 0  # None: a checkpoint from before the count was kept
        # Per recent step: the fingerprints of this rank's samples (where the batch is), the epoch and the sample
        # offset in the epoch before the batch.
        self._batches: dict[int, tuple[Optional[torch.Tensor], int, int]] = {}
        self._writer: Optional[JSONLWriter] = None  # rank 0 only
        self._warned_no_file = False
        self._loss_dict_at_batch_start: Optional[dict] = None
        self._lifecycle = RunLifecycle()

    # Configuration.

    def _kwargs_for(self, stream: str) -> dict[str, Any]:
        where = f'{WHERE}.detector' + (' and eval_detector' if is_eval_metric(stream) else '')
        return stream_detector_kwargs(stream, self.detector_kwargs, self.eval_detector_kwargs, where)

    def _tracks(self, key: str) -> bool:
        return any(fnmatchcase(key, pattern) for pattern in self.streams)

    def _detector(self, stream: str) -> SpikeDetector:
        if stream not in self.detectors:
            self.detectors[stream] = SpikeDetector(**self._kwargs_for(stream))
        return self.detectors[stream]

    # Checkpointed state.

    def state_dict(self) -> dict[str, Any]:
        return pack_state({
            'version': _STATE_VERSION,
            'detectors': {stream: d.state_dict() for stream, d in self.detectors.items()},
            'events': [dict(e) for e in self.events],
            'outliers': dict(self.outliers),
            'written': self._written,
            'rollback': None if self._rollback is None else self._rollback.state_dict(),
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = unpack_state(state)
        # Version 1 had no outlier counts, version 2 no count of written records.
        if state.get('version') not in (1, 2, 3, _STATE_VERSION):
            raise ConfigError(f'{WHERE}: unsupported state version {state.get("version")!r} in the checkpoint.')
        self.detectors = {}
        for stream, detector_state in state['detectors'].items():
            if not self._tracks(stream):
                log.warning('%s: the checkpoint has a detector for %r, which streams=%s no longer matches; '
                            'dropping it.', WHERE, stream, list(self.streams))
                continue
            self._detector(stream).load_state_dict(detector_state)
        self.events = [dict(e) for e in state['events']]
        self.outliers = dict(state.get('outliers', {}))
        self._written = state.get('written')
        if self._rollback is not None:
            self._rollback.load_state_dict(state.get('rollback') or {})
        self._lifecycle.restored()

    # Events.

    def before_load(self, state: State, logger: Logger) -> None:
        if self._rollback is not None:
            self._rollback.before_load(state)

    def after_load(self, state: State, logger: Logger) -> None:
        self._lifecycle.after_load(state)
        if self._rollback is not None:
            self._rollback.after_load(state, logger)

    def fit_start(self, state: State, logger: Logger) -> None:
        if self._rollback is not None:
            self._rollback.check(state, self._decision_delay())
        start = self._lifecycle.fit_start(state)
        if start.from_zero and self.detectors:
            # A new run from batch 0 (fit(reset_time=True), or a load that reset the timestamp): the earlier run's
            # steps and trend do not apply.
            log.info('%s: training restarts at batch 0; the detectors start over.', WHERE)
            self.detectors, self.events, self.outliers, self._batches, self._written = {}, [], {}, {}, 0
        if self.events_path is None:
            self.events_path = self._resolve_events_path(state)
        if dist.get_global_rank() != 0:
            return
        if self.events_path is None:
            if not self._warned_no_file:
                log.warning('%s: no events_path and no local save_folder, so loss events go to the loggers and the '
                            'log only. Set %s.events_path to keep them in a file.', WHERE, WHERE)
                self._warned_no_file = True
        else:
            if self._writer is None:
                self._writer = JSONLWriter(self.events_path, 'loss events')
            if start.phase is FitPhase.RESUMED:  # the file becomes what the checkpoint knew; replays add the rest
                self._writer.replace(self._records_at_checkpoint())
            else:  # a run from batch 0 replaces an earlier run's notifications, a continuing fit adds to them
                self._writer.start_run(start.from_zero, start.phase is FitPhase.RESTARTED)

    def _records_at_checkpoint(self) -> list[dict[str, Any]]:
        """The events file as it was when the checkpoint was saved: its first records, which hold the outliers
        (not checkpointed: there can be thousands) between the checkpointed events. Only the checkpointed events
        when the file does not agree with the checkpoint (another folder, an older checkpoint, a lost file)."""
        known = self._written
        records = self._writer.records()[:known] if known else []
        events = [r for r in records if r['kind'] != BATCH_OUTLIER]
        if known is None or len(records) < known or events != self.events:
            if known:
                log.warning('%s: %s does not hold the %d records the checkpoint knew; it restarts from the '
                            'checkpointed events, without the batch outliers before the checkpoint (the loggers '
                            'have them).', WHERE, self.events_path, known)
            records = list(self.events)
        self._written = len(records)
        return records

    def _resolve_events_path(self, state: State) -> Optional[str]:
        if self.events_path_template is not None:
            return format_name_with_dist(self.events_path_template, state.run_name)
        folder = local_save_folder(state)
        return None if folder is None else os.path.join(folder, EVENTS_FILENAME)

    def batch_start(self, state: State, logger: Logger) -> None:
        self._loss_dict_at_batch_start = state.total_loss_dict

    def batch_end(self, state: State, logger: Logger) -> None:
        step = int(state.timestamp.batch) - 1  # the batch's index, i.e. the step its loss is logged at
        self._keep_batch(state, step)
        losses = state.total_loss_dict
        if losses is self._loss_dict_at_batch_start:
            # The trainer replaces the dict after every batch it all-reduces; an unchanged one is stale.
            log.warning('%s: no all-reduced loss for batch %d (the trainer skipped it, e.g. after a gradient-'
                        'scaler overflow); nothing fed to the detectors for it.', WHERE, step)
            losses = {}
        self._feed(state, logger, step, {k: v for k, v in losses.items() if self._tracks(k)})

    def eval_end(self, state: State, logger: Logger) -> None:
        label = state.dataloader_label
        # The trainer has just computed and logged these, as metrics/<label>/<name>, at the current batch.
        values = {f'metrics/{label}/{name}': state.eval_metric_values[name] for name in state.eval_metrics[label]}
        self._feed(state, logger, int(state.timestamp.batch), {k: v for k, v in values.items() if self._tracks(k)})

    def _decision_delay(self) -> int:
        """The most steps after an onset at which an event whose action is rollback is acted on."""
        kinds = [kind for kind, action in self.actions.items() if action == 'rollback']
        follow = max(SpikeDetector(**self._kwargs_for(stream)).config['max_follow_steps']
                     for stream in (LOSS_KEY, EVAL_CROSS_ENTROPY))
        return max(SPIKE_DETECTION_DELAY if kind in (SPIKE, DIVERGENCE) else follow + SPIKE_DETECTION_DELAY
                   for kind in kinds)

    def _feed(self, state: State, logger: Logger, step: int, values: Mapping[str, Any]) -> None:
        acts = []
        for stream, value in sorted(values.items()):
            if isinstance(value, torch.Tensor):
                value = value.item()
            for event in self._detector(stream).update(step, float(value)):
                record = self._notify(state, logger, stream, event)
                if record['action'] in ('stop', 'rollback'):
                    acts.append(record)
        if {'stop', 'rollback'} & set(self.actions.values()):
            self._act_if_any_rank_says_so(state, logger, step, acts)

    def _keep_batch(self, state: State, step: int) -> None:
        """Keeps the identity of the batch just trained until its outlier could be confirmed. The fingerprints are
        computed where the batch is (Composer has restored the whole host-side batch at ``BATCH_END``) and stay
        there: no device-to-host copy unless an outlier is confirmed."""
        if not any(is_train_loss(stream) for stream in self.streams):
            return
        tensor = find_batch_tensor(state.batch)
        ts = state.timestamp  # already advanced past the batch
        self._batches[step] = (None if tensor is None else row_fingerprints(tensor), int(ts.epoch),
                               int(ts.sample_in_epoch))
        for old in [s for s in self._batches if s <= step - _KEPT_BATCHES]:
            del self._batches[old]

    def _batch_identities(self, state: State, event: LossEvent) -> list[dict[str, Any]]:
        """The samples of an outlier's batches: the epoch, the batch's range of samples in the epoch's (global)
        order, and every rank's fingerprints of them (None for a batch trained before a resume). All ranks confirm
        the same outliers at the same step, so all take part in the gather."""
        identities = []
        for step in event.above_steps or ():
            fingerprints, epoch, end = self._batches.get(step, (None, None, None))
            rows = None if fingerprints is None else fingerprints.cpu().tolist()
            if dist.get_world_size() > 1:
                gathered = dist.all_gather_object(rows)
                rows = None if any(r is None for r in gathered) else [fp for r in gathered for fp in r]
            identities.append({'step': step, 'epoch': epoch,
                               'sample_range': None if rows is None else [end - len(rows), end],
                               'fingerprints': rows})
        return identities

    def _notify(self, state: State, logger: Logger, stream: str, event: LossEvent) -> dict[str, Any]:
        if event.kind == BATCH_OUTLIER:  # never an action: always logged
            batches = self._batch_identities(state, event) if is_train_loss(stream) else None
            record = event_record(stream, event, action='log', batches=batches)
            self.outliers[stream] = self.outliers.get(stream, 0) + 1
            if dist.get_global_rank() == 0:
                self._report_outlier(logger, stream, event, record)
            return record
        if event.status == STATUS_OPEN:
            action = self.actions[event.kind]  # 'spike' or 'divergence'
        else:
            # A divergence was acted on when it opened; its closing is only reported.
            action = 'log' if event.kind == DIVERGENCE else self.actions[event.kind]
        extra: dict[str, Any] = {'action': action}
        if action in ('stop', 'rollback'):  # a rollback that cannot be done stops
            extra['checkpoint_before_onset'] = _checkpoint_before(state, event.onset_step, keep=True)
        record = event_record(stream, event, **extra)
        self.events.append(record)
        if dist.get_global_rank() == 0:
            self._report(logger, stream, event, record)
        return record

    def _report(self, logger: Logger, stream: str, event: LossEvent, record: dict[str, Any]) -> None:
        if event.status == STATUS_OPEN:
            what = f'{event.kind} opened at step {event.detect_step}'
        else:
            recovered = ('not recovered' if event.recovered_step is None else
                         f'recovered at step {event.recovered_step} ({event.steps_to_recover} steps)')
            what = f'{event.kind} ({event.status}), {recovered}, level shift {event.level_shift:+.1%}'
        log.warning('%s: %s on %s: onset step %d, peak %.4g at step %d vs baseline %.4g (height %+.1f%%).',
                    WHERE, what, stream, event.onset_step, event.peak_loss, event.peak_step, event.baseline_loss,
                    100 * event.height)
        prefix = f'{LOSS_SPIKE_PREFIX}/{stream}'
        notifications = [e for e in self.events if e['stream'] == stream]
        opened = sum(e['status'] == STATUS_OPEN for e in notifications)
        metrics: dict[str, Any] = {
            f'{prefix}/open': opened - (len(notifications) - opened),  # events of this stream open now
            f'{prefix}/height': event.height,
            f'{prefix}/onset_step': event.onset_step,
        }
        if event.status != STATUS_OPEN:
            metrics[f'{prefix}/{event.kind}'] = sum(
                e['kind'] == event.kind and e['status'] != STATUS_OPEN for e in notifications)
            metrics[f'{prefix}/level_shift'] = event.level_shift
            if event.steps_to_recover is not None:
                metrics[f'{prefix}/steps_to_recover'] = event.steps_to_recover
        logger.log_metrics(metrics)
        self._write(record)

    def _report_outlier(self, logger: Logger, stream: str, event: LossEvent, record: dict[str, Any]) -> None:
        count = self.outliers[stream]
        points = max(self.detectors[stream].points, 1)
        log.info('%s: batch outlier on %s at step(s) %s: loss %.4g vs trend %.4g (%+.1f%%), back at step %s; %d so '
                 'far (%.2f per 1k steps).', WHERE, stream, event.above_steps, event.peak_loss, event.baseline_loss,
                 100 * event.height, event.recovered_step, count, 1000.0 * count / points)
        logger.log_metrics({f'{LOSS_SPIKE_PREFIX}/{stream}/{BATCH_OUTLIER}': count,
                            f'{LOSS_SPIKE_PREFIX}/{stream}/outliers_per_1k': 1000.0 * count / points,
                            f'{LOSS_SPIKE_PREFIX}/{stream}/outlier_height': event.height})
        self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        if self._writer is not None:
            self._writer.write(record)
            self._writer.flush()
            self._written += 1

    def _act_if_any_rank_says_so(self, state: State, logger: Logger, step: int, acts: list[dict[str, Any]]) -> None:
        # Every rank calls this at every point when some action is 'stop' or 'rollback', so the collective cannot
        # deadlock. The inputs are identical on all ranks; gathering every rank's decision makes the action identical
        # even if they were not, and tells which rank has to explain it.
        rank = dist.get_global_rank()
        rollbacks = [record for record in acts if record['action'] == 'rollback']
        flags = torch.zeros(dist.get_world_size(), dtype=torch.uint8)
        flags[rank] = _ROLLBACK if rollbacks else _STOP if acts else _NONE
        flags = state.device.tensor_to_device(flags)
        dist.all_reduce(flags, reduce_operation='SUM')
        decisions = flags.tolist()
        deciders = [r for r, flag in enumerate(decisions) if flag]
        if not deciders:
            return
        if all(flag == _ROLLBACK for flag in decisions) and self._rollback is not None and \
                self._rollback.decide(state, logger, rollbacks[0], self._batches):
            return
        # Rank 0 explains the stop; another rank only when rank 0 did not decide it.
        if acts and (rank == 0 or 0 not in deciders):
            for record in acts:
                log.error('%s: STOPPING TRAINING after step %d: %s event on %s, onset step %d, peak loss %s at '
                          'step %d, baseline %s (actions.%s = %s). Last checkpoint before the onset: %s. Roll '
                          'back to it and skip the data around the onset to continue.', WHERE, step,
                          record['kind'], record['stream'], record['onset_step'], _short(record['peak_loss']),
                          record['peak_step'], _short(record['baseline_loss']), record['kind'],
                          self.actions[record['kind']], record['checkpoint_before_onset'])
        if rank == 0 and not acts:
            log.error('%s: STOPPING TRAINING after step %d because rank(s) %s decided to (their logs say why). The '
                      'ranks disagree, so their losses or settings differ.', WHERE, step, deciders)
        state.stop_training()

    def fit_end(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() != 0:
            return
        for stream, detector in sorted(self.detectors.items()):
            if not detector.fitted:
                log.warning('%s: %s has had fewer than warmup_steps=%d points, so nothing could be detected on it '
                            'yet (eval streams get one point per evaluation; see eval_detector).', WHERE, stream,
                            detector.config['warmup_steps'])
            if detector.has_open_event:
                log.warning('%s: an event on %s is still open at the end of training (step %s); it is kept in '
                            'the checkpointed state and classified if training resumes. '
                            '`foundry-ext analyze-loss` closes it as truncated.', WHERE, stream,
                            int(state.timestamp.batch))
        for pattern in self.streams:
            if not any(ch in pattern for ch in '*?[') and pattern not in self.detectors:
                log.warning('%s: stream %r was never logged by this run, so it was not monitored.', WHERE, pattern)

    def close(self, state: State, logger: Logger) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _short(value: Any) -> str:
    # Record floats may be the strings 'inf' / 'nan' (strict JSON).
    return f'{value:.4g}' if isinstance(value, float) else str(value)


def _check_streams(streams: Any) -> tuple[str, ...]:
    if isinstance(streams, str) or not isinstance(streams, Sequence) or not streams:
        raise ConfigError(f'{WHERE}.streams={streams!r} must be a non-empty list of metric keys or patterns, e.g. '
                          f'{list(DEFAULT_STREAMS)}.')
    for index, stream in enumerate(streams):
        if not isinstance(stream, str) or not (is_train_loss(stream) or is_eval_metric(stream)):
            raise ConfigError(
                f'{WHERE}.streams[{index}]={stream!r} is neither a training loss (loss/train/<name>, e.g. '
                f'loss/train/total) nor an eval metric (metrics/<eval label>/<metric>, e.g. '
                f'metrics/eval/LanguageCrossEntropy). Train metrics (metrics/train/...) are not monitored; use '
                f'loss/train/total.')
    return tuple(streams)


def _check_actions(actions: Any) -> dict[str, str]:
    checked = dict.fromkeys(_ACTION_KINDS, 'log')
    if actions is None:
        return checked
    if not isinstance(actions, Mapping):
        raise ConfigError(f'{WHERE}.actions={actions!r} must map event kinds to log or stop, e.g. '
                          f'{{not_recovering: stop}}.')
    for kind, action in actions.items():
        if kind == BATCH_OUTLIER:
            raise ConfigError(f'{WHERE}.actions.{kind}={action!r}: batch outliers (one or two bad batches) are never '
                              f'a reason to stop; they are always logged. Remove {kind} from actions.')
        if kind not in checked:
            raise ConfigError(f'{WHERE}.actions.{kind}={action!r}: unknown event kind. Kinds: '
                              f'{", ".join(_ACTION_KINDS)}.')
        if action not in ACTIONS:
            raise ConfigError(f'{WHERE}.actions.{kind}={action!r} must be one of {", ".join(ACTIONS)}.')
        checked[kind] = action
    return checked


def _checkpoint_before(state: State, onset_step: int, keep: bool = False) -> str:
    """The newest checkpoint saved before ``onset_step``, i.e. whose model still gave a normal loss, in words.

    With ``keep``, it is taken out of ``save_num_checkpoints_to_keep``'s rotation: the checkpoint Composer saves
    when the run stops would otherwise delete the very one the user is told to roll back to.
    """
    if not any(isinstance(cb, CheckpointSaver) for cb in state.callbacks):
        return 'none (the run saves no checkpoints: set save_folder)'
    saved = checkpoints_saved_before(state, onset_step)
    if not saved:
        return f'none (no checkpoint was saved before batch {onset_step})'
    newest = saved[-1]
    kept = ', kept out of save_num_checkpoints_to_keep' if keep and exempt_from_rotation(newest) else ''
    gone = '' if os.path.exists(newest.path) else ', since deleted or not local'
    return f'{newest.path} (batch {newest.batch}{gone}{kept})'
