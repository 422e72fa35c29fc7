"""The ``resume_data_guard`` callback: after a resume, training must continue the data stream where it stopped.

A resumed run whose dataloader replays data the model has already trained on (a loader that restarts from
the beginning of the epoch, a changed sample order) under-reports its loss, because the model has memorised
those samples, and then "spikes" when new data arrives. This callback fingerprints every sample it trains
on, keeps the fingerprints of the epoch's first and most recent batches and the sample offset in its
checkpointed state, and after a resume checks, before each of the first resumed batches trains:

- the sample offset: the guard's record, the restored timestamp and (for a Streaming dataset) the position
  the dataset resumed at must agree;
- the sample order: a Streaming dataset's order-defining settings (``shuffle_seed``, ``num_canonical_nodes``,
  ``shuffle_algo``, ...) and the global batch size must be the checkpointed run's;
- the data itself: the first ``check_batches`` resumed batches must not repeat samples already trained on in
  this epoch (more than ``max_repeated_fraction`` of them).

A ``loss_spike_monitor`` rollback (``<save_folder>/rollbacks.json``) moves the data position on purpose, past the
window of data around a spike: at the load that makes the skip, the guard expects the position at the window's end
instead of its record's, and checks that none of the window's samples trained before the rollback comes back.

A violation warns or raises :class:`ResumeDataError`, naming the likely cause and the fix. Registered in
``llmfoundry_callbacks`` as ``resume_data_guard``; see ``docs/resume_data_guard.md``::

    callbacks:
      resume_data_guard: {on_violation: error, check_batches: 8, history: 1024}
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist
from streaming import StreamingDataset

from foundry_ext.callbacks.spike_rollback import rollbacks_of
from foundry_ext.core.checkpoint_state import pack_state, unpack_state
from foundry_ext.core.composer_private import streaming_train_dataset
from foundry_ext.core.errors import ConfigError, choice, fraction, whole
from foundry_ext.core.lifecycle import RunLifecycle
from foundry_ext.core.metric_names import RESUME_DATA_GUARD_PREFIX
from foundry_ext.data.fingerprints import find_batch_tensor, row_fingerprints

log = logging.getLogger(__name__)

__all__ = ['ResumeDataError', 'ResumeDataGuard']

_KEY = 'callbacks.resume_data_guard'
_STATE_VERSION = 1
# StreamingDataset attributes that define the global sample order (with the global batch size).
_STREAMING_ORDER_KEYS = ('shuffle', 'shuffle_algo', 'shuffle_seed', 'shuffle_block_size', 'num_canonical_nodes',
                         'partition_algo', 'sampling_method', 'epoch_size')
_LIKELY_CAUSES = (
    'Likely causes: a dataloader that restarts on resume (a non-Streaming loader with spin_dataloaders: false, '
    'or a dataset whose state was not restored: load_ignore_keys covering state/dataset_state, or a wrapper that '
    'hides the StreamingDataset from Composer), or a changed shuffle seed, global batch size or dataset. Resume '
    'with the checkpointed run\'s data settings.')


class ResumeDataError(RuntimeError):
    """Raised when the data after a resume does not continue the checkpointed run's data stream."""


def _warn_on_rank_zero(message: str) -> None:
    if dist.get_global_rank() == 0:
        log.warning(message)


def _streaming_position_and_order(dataset: StreamingDataset) -> tuple[tuple[int, int], dict[str, Any]]:
    """Where the dataset (re)started this epoch's iteration, and the settings that define its sample order.

    ``state_dict`` is what Composer calls at every checkpoint; with no samples counted from this run's start
    (``0, False``) it reports the epoch and the offset the dataset resumed at, from the resume state it was
    given if any, and the effective seed and canonical node count, which a restored state overrides.
    """
    resume_state = dataset.state_dict(0, False)
    order = {k: resume_state[k] if k in resume_state else getattr(dataset, k) for k in _STREAMING_ORDER_KEYS}
    return (int(resume_state['epoch']), int(resume_state['sample_in_epoch'])), order


@dataclass
class _Check:
    """The post-resume check in progress."""

    batches_left: int
    findings: list[str]  # found before the first batch (the sample offset)
    saved_order: Optional[dict[str, Any]]  # Streaming order settings of the checkpointed run
    configured: dict[str, Any]  # Streaming seed/canonical nodes as configured, before a restored state overrides them
    first: bool = True
    seen: dict[int, int] = field(default_factory=dict)  # fingerprint -> batch of the epoch it was trained in
    checked: int = 0
    repeated: int = 0
    trained_at: set[int] = field(default_factory=set)  # batches of the epoch the repeated samples were first in
    restarted_at: Optional[int] = None  # the batch of the epoch the first resumed batch is a copy of
    repeat_reported: bool = False
    skipped: frozenset[int] = frozenset()  # fingerprints of a rollback's skipped window, trained before the rollback


class ResumeDataGuard(Callback):
    """Checks after every resume that the first batches continue the checkpointed run's data stream.

    Args:
        on_violation (str): ``error`` (default) raises :class:`ResumeDataError` before the offending batch
            trains; ``warn`` logs the explanation and trains on.
        check_batches (int): How many batches after a resume are checked against the fingerprints; also how
            many batches at the start of each epoch are kept, so that a restart from the epoch start is caught
            however long ago it was.
        history (int): How many of the most recent batches' fingerprints are kept in the checkpoint (8 bytes
            per sample in the global batch, per batch).
        max_repeated_fraction (float): A violation when more than this fraction of the samples checked so
            far after the resume were already trained on in this epoch. Replays repeat all of them; the slack
            is for datasets that legitimately repeat samples within an epoch (duplicates, upsampled streams).
        batch_key (str | int, optional): What to fingerprint in ``state.batch``: a mapping key or a sequence
            index. Default: ``input_ids`` in a mapping that has it, otherwise the batch's first tensor.
    """

    def __init__(self, on_violation: str = 'error', check_batches: int = 8, history: int = 1024,
                 max_repeated_fraction: float = 0.5, batch_key: Union[str, int, None] = None) -> None:
        self.on_violation = choice(on_violation, f'{_KEY}.on_violation', ('warn', 'error'))
        self.check_batches = whole(check_batches, f'{_KEY}.check_batches', 1, 'a number of batches')
        self.history = whole(history, f'{_KEY}.history', 1, 'a number of batches')
        self.max_repeated_fraction = fraction(max_repeated_fraction, f'{_KEY}.max_repeated_fraction',
                                              'a replay repeats all (1.0) of the checked samples', high_open=True)
        if batch_key is not None and (isinstance(batch_key, bool) or not isinstance(batch_key, (str, int))):
            raise ConfigError(f'{_KEY}.batch_key={batch_key!r} must be a mapping key (str), a sequence index (int) '
                              f'or null (input_ids, else the first tensor of the batch).')
        self.batch_key = batch_key
        self._clear_record()
        self._lifecycle = RunLifecycle()
        # Per fit.
        self._first_batch = False
        self._stream_position: Optional[tuple[int, int]] = None  # (epoch, sample) the StreamingDataset started at
        self._check: Optional[_Check] = None
        self._pending: Union[torch.Tensor, np.ndarray, None] = None
        self._capacity: Optional[int] = None  # rows per rank in the all-gather

    def _clear_record(self) -> None:
        # The record of the current epoch, saved in checkpoints (all ranks hold the same, global, one).
        self._head: list[np.ndarray] = []  # the epoch's first `check_batches` batches
        self._recent: deque[np.ndarray] = deque(maxlen=self.history)
        self._position: Optional[tuple[int, int, int]] = None  # (epoch, batch, sample) in epoch after the last batch
        self._batch_size: Optional[int] = None  # global samples in the epoch's first batch
        self._order: Optional[dict[str, Any]] = None  # Streaming order settings of the run

    def state_dict(self) -> dict[str, Any]:
        return pack_state({
            'version': _STATE_VERSION,
            'position': list(self._position) if self._position is not None else None,
            'batch_size': self._batch_size,
            'head': [batch.tolist() for batch in self._head],
            'recent': [batch.tolist() for batch in self._recent],
            'streaming_order': self._order,
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = unpack_state(state)
        if state.get('version') != _STATE_VERSION:
            raise ConfigError(f'resume_data_guard state version {state.get("version")!r} is not {_STATE_VERSION}: the '
                              f'checkpoint was written by another foundry-ext version. To resume without the guard\'s '
                              f'record, set load_ignore_keys: [state/callbacks/ResumeDataGuard].')
        self._position = tuple(state['position']) if state['position'] is not None else None
        self._batch_size = state['batch_size']
        self._head = [np.asarray(batch, dtype=np.int64) for batch in state['head']]
        self._recent = deque((np.asarray(batch, dtype=np.int64) for batch in state['recent']), maxlen=self.history)
        self._order = state['streaming_order']
        self._lifecycle.restored()

    def after_load(self, state: State, logger: Logger) -> None:
        del logger
        self._lifecycle.after_load(state)

    def fit_start(self, state: State, logger: Logger) -> None:
        del logger
        self._pending, self._capacity, self._first_batch, self._check = None, None, True, None
        ts = state.timestamp
        if not self._lifecycle.fit_start(state).continues:
            # A new run, or fit(reset_time=True) after a load or an earlier fit: nothing to continue. (A load whose
            # timestamp came back as 0, e.g. load_ignore_keys: [state/timestamp], resumes and is checked below.)
            self._clear_record()
            return
        findings = []
        now = (int(ts.epoch), int(ts.batch_in_epoch), int(ts.sample_in_epoch))
        rollback = _rollback_made_now(state, now)
        skipped = frozenset(rollback['fingerprints']) if rollback is not None else frozenset()
        if rollback is not None:
            if dist.get_global_rank() == 0:
                log.info(f'resume_data_guard: rollback {rollback["index"] + 1} moved the data to sample {now[2]} of '
                         f'epoch {now[0]} on purpose; checking that none of the {len(skipped)} samples of its window '
                         f'trained before it comes back.')
        elif self._position is None:
            _warn_on_rank_zero(f'resume_data_guard: resuming at batch {int(ts.batch)}, but the checkpoint has no '
                               f'resume_data_guard state to compare with: only a StreamingDataset\'s sample offset is '
                               f'checked.')
        elif now != self._position and not (now[0] > self._position[0] and now[1:] == (0, 0)):
            findings.append(
                f'Sample offset: the restored timestamp is at epoch {now[0]}, sample {now[2]} of the epoch, but the '
                f'guard saved its record at epoch {self._position[0]}, sample {self._position[2]}: the timestamp and '
                f'the training state come from different points (load_ignore_keys covering state/timestamp, or a '
                f'checkpoint assembled from two runs), so the data position no longer matches what was trained.')
        dataset = streaming_train_dataset(state)
        # Read before iteration starts: a restored Streaming state replaces these on the first batch.
        configured = {k: getattr(dataset, k) for k in ('shuffle_seed', 'num_canonical_nodes')} if dataset else {}
        self._check = _Check(self.check_batches, findings, self._order, configured, skipped=skipped)

    def epoch_start(self, state: State, logger: Logger) -> None:
        del logger
        if self._position is None or int(state.timestamp.epoch) != self._position[0]:
            self._head, self._batch_size = [], None  # samples of earlier epochs may legitimately come again
            self._recent.clear()
            if self._check is not None:
                self._check.seen.clear()

    def after_dataloader(self, state: State, logger: Logger) -> None:
        fingerprints = self._gather(row_fingerprints(self._batch_tensor(state.batch)), state)
        if self._first_batch:  # the StreamingDataset has begun iterating: its effective order is known
            self._first_batch = False
            dataset = streaming_train_dataset(state)
            if dataset is not None:
                self._stream_position, self._order = _streaming_position_and_order(dataset)
        if self._check is None:
            self._pending = fingerprints  # fetched at batch_end, after Composer's own sync: no stall here
            return
        self._pending = self._to_host(fingerprints)
        self._check_batch(state, logger, self._pending)

    def batch_end(self, state: State, logger: Logger) -> None:
        del logger
        if self._pending is None:
            return
        rows = self._to_host(self._pending)
        self._pending = None
        ts = state.timestamp  # already advanced past this batch
        index = int(ts.batch_in_epoch) - 1
        if index == 0:
            self._batch_size = len(rows)
        if index == len(self._head) and index < self.check_batches:
            self._head.append(rows)
        self._recent.append(rows)
        self._position = (int(ts.epoch), int(ts.batch_in_epoch), int(ts.sample_in_epoch))

    def _batch_tensor(self, batch: Any) -> torch.Tensor:
        tensor = find_batch_tensor(batch, self.batch_key)
        if tensor is not None:
            return tensor
        if self.batch_key is not None:
            raise ConfigError(f'{_KEY}.batch_key={self.batch_key!r}: the batch ({type(batch).__name__}) has no '
                              f'tensor there. Set batch_key to a key or index of a tensor in the batch.')
        raise ConfigError(f'{_KEY}.batch_key is unset and the batch ({type(batch).__name__}) has no input_ids and no '
                         f'tensor at the top level: set batch_key to the key or index of the tensor to fingerprint.')

    def _gather(self, fingerprints: torch.Tensor, state: State) -> torch.Tensor:
        """All ranks' fingerprints as one ``(world, 1 + capacity)`` tensor: a row count, then the padded rows."""
        if dist.get_world_size() == 1:
            return fingerprints
        if self._capacity is None:  # agreed once per fit: all_gather needs the same shape on every rank
            capacity = state.device.tensor_to_device(torch.tensor([fingerprints.numel()]))
            dist.all_reduce(capacity, reduce_operation='MAX')
            self._capacity = int(capacity.item())
        padded = torch.full((1 + self._capacity,), -1, dtype=torch.int64, device=fingerprints.device)
        padded[0] = fingerprints.numel()
        kept = fingerprints[:self._capacity]
        padded[1:1 + kept.numel()] = kept
        return torch.stack(list(dist.all_gather(padded)))

    def _to_host(self, gathered: Union[torch.Tensor, np.ndarray]) -> np.ndarray:
        if isinstance(gathered, np.ndarray):
            return gathered
        host = gathered.cpu().numpy()
        if host.ndim == 1:
            return host
        counts = host[:, 0]
        if (counts > self._capacity).any():  # every rank sees the same counts, so all grow alike
            if dist.get_global_rank() == 0:
                log.warning(f'resume_data_guard: a batch has {counts.max()} rows on one rank, more than the '
                            f'{self._capacity} of the first batch; {int((counts - self._capacity).clip(0).sum())} '
                            f'samples of it were not fingerprinted. Later batches are, in full.')
            self._capacity = int(counts.max())
        return np.concatenate([row[1:1 + min(int(n), row.size - 1)] for row, n in zip(host, counts)])

    def _check_batch(self, state: State, logger: Logger, rows: np.ndarray) -> None:
        check = self._check
        assert check is not None
        findings = []
        first, check.first = check.first, False
        if first:
            findings += check.findings + self._first_batch_findings(state, len(rows), check)
            # After epoch_start, which drops the record of a finished epoch.
            start = self._position[1] - len(self._recent) if self._position else 0
            for index, batch in [*enumerate(self._head), *enumerate(self._recent, start)]:
                check.seen.update(dict.fromkeys(batch.tolist(), index))
        hits = [check.seen[fp] for fp in rows.tolist() if fp in check.seen]
        if first and len(hits) == len(rows) and len(set(hits)) == 1 and hits[0] >= 0:
            check.restarted_at = hits[0]
        back = sum(fp in check.skipped for fp in rows.tolist())
        if back:
            findings.append(f'Rollback skip: {back} samples of this batch lie in the window of data that the rollback '
                            f'skipped (trained just before the spike): the skip did not take effect.')
        check.checked += len(rows)
        check.repeated += len(hits)
        check.trained_at.update(hits)
        for fp in rows.tolist():  # a loader stuck on one batch repeats within the check
            check.seen.setdefault(fp, -1)
        logger.log_metrics({f'{RESUME_DATA_GUARD_PREFIX}/repeated_samples': len(hits),
                            f'{RESUME_DATA_GUARD_PREFIX}/checked_samples': len(rows)})
        if not check.repeat_reported and check.repeated > self.max_repeated_fraction * check.checked:
            check.repeat_reported = True
            trained_at = sorted(check.trained_at - {-1})
            restart = check.restarted_at
            findings.append(
                f'Repeated data: {check.repeated} of the {check.checked} samples checked since the resume were '
                f'already trained on in this epoch' + (f', in batches {trained_at[:8]} of the epoch' if trained_at else
                                                       ' (since the resume)') +
                ('' if restart is None else f': the loader restarted at batch {restart}' +
                 (', the start of the epoch' if restart == 0 else '')) + '.')
        check.batches_left -= 1
        self._decide(state, findings)
        if check.batches_left == 0:
            self._check = None
            log.info(f'resume_data_guard: checked {check.checked} samples after the resume; {check.repeated} repeated.')

    def _first_batch_findings(self, state: State, batch_size: int, check: _Check) -> list[str]:
        ts = state.timestamp
        findings = []
        last = state.dataloader_len is not None and int(ts.batch_in_epoch) + 1 == int(state.dataloader_len)
        if self._batch_size is not None and batch_size != self._batch_size and not last:
            findings.append(
                f'Global batch size: {batch_size} samples per batch now, {self._batch_size} before the checkpoint. '
                f'Composer fast-forwards non-Streaming loaders by batches, which now lands on another sample, and '
                f'Streaming\'s sample order depends on the global batch size; resume with the same global batch '
                f'size (the world size may change).')
        if self._stream_position is None or self._order is None:
            return findings
        epoch, sample = self._stream_position
        restored = bool(state.dataset_resumption.get('train'))
        if restored and (epoch, sample) != (int(ts.epoch), int(ts.sample_in_epoch)):
            at_epoch_end = epoch < int(ts.epoch) and sample == int(ts.sample_in_epoch) == 0
            findings.append(
                f'Sample offset: the StreamingDataset resumed at epoch {epoch}, sample {sample} of the epoch, but the '
                f'timestamp is at epoch {int(ts.epoch)}, sample {int(ts.sample_in_epoch)}' +
                (f'. A checkpoint taken at the end of an epoch (save_interval in epochs) stores the Streaming state of '
                 f'the finished epoch {epoch}, so its sample order is replayed as epoch {int(ts.epoch)}; save in '
                 f'batches (e.g. save_interval: 1000ba) instead.' if at_epoch_end else
                 ': the dataset state in the checkpoint does not match its timestamp.'))
        if not restored and epoch != int(ts.epoch):
            findings.append(
                f'Sample order: the StreamingDataset iterates the sample order of its epoch {epoch}, but the timestamp '
                f'is in epoch {int(ts.epoch)}, so the {int(ts.batch_in_epoch)} batches Composer skips to get back to '
                f'batch {int(ts.batch_in_epoch)} of the epoch are not the ones trained. A second fit() on the same '
                f'trainer re-iterates the dataset, which moves Streaming on to its next epoch. Continue a run in one '
                f'fit() call, or resume it from a checkpoint with a new Trainer, which restores the dataset state.')
        elif not restored and int(ts.batch_in_epoch) > 0:
            _warn_on_rank_zero(f'resume_data_guard: the StreamingDataset state was not restored, so Composer replays '
                               f'the stream up to batch {int(ts.batch_in_epoch)} of the epoch (unless spin_dataloaders '
                               f'is false); the fingerprints check where it lands.')
        if check.saved_order is not None:
            changed = {k: (v, self._order.get(k)) for k, v in check.saved_order.items() if self._order.get(k) != v}
            if changed:
                findings.append(
                    'Sample order: the StreamingDataset orders its samples differently from the checkpointed run (' +
                    ', '.join(f'{k} {old!r} -> {new!r}' for k, (old, new) in changed.items()) + ')' +
                    ('' if restored else ', and its resume state was not restored, so the new settings apply') +
                    '. Resume with the original settings and the dataset state of the checkpoint.')
        overridden = {k: (v, self._order[k]) for k, v in check.configured.items() if v not in (None, self._order[k])}
        if restored and overridden:
            _warn_on_rank_zero('resume_data_guard: ' + ', '.join(f'{k}={new!r}' for k, (new, _) in overridden.items()) +
                        ' in the config has no effect on this resume: Streaming restores ' +
                        ', '.join(f'{k}={old!r}' for k, (_, old) in overridden.items()) + ' from the checkpoint, '
                        'so the sample order continues unchanged. To reshuffle on purpose, start a new run.')
        return findings

    def _decide(self, state: State, findings: list[str]) -> None:
        """Acts on this batch's findings; every rank acts alike, whichever rank found something."""
        flag = state.device.tensor_to_device(torch.tensor([int(bool(findings))]))
        dist.all_reduce(flag, reduce_operation='MAX')
        if not int(flag.item()):
            return
        ts = state.timestamp
        message = (f'resume_data_guard: the data after the resume at batch {int(ts.batch)} (epoch {int(ts.epoch)}, '
                   f'batch {int(ts.batch_in_epoch)} of the epoch) does not continue the checkpointed run\'s data:\n'
                   + ''.join(f'  - {finding}\n' for finding in findings or ['(found on another rank: see its log)'])
                   + _LIKELY_CAUSES)
        if self.on_violation == 'error':
            raise ResumeDataError(message + f' To train on anyway, set {_KEY}.on_violation: warn.')
        if findings or dist.get_global_rank() == 0:
            log.warning(message)


def _rollback_made_now(state: State, now: tuple[int, int, int]) -> Optional[dict[str, Any]]:
    """The ``loss_spike_monitor`` rollback whose data skip put the run at ``now`` (epoch, batch, sample in epoch)
    at this load, from ``<save_folder>/rollbacks.json``; None if there is none."""
    batch = int(state.timestamp.batch)
    return next((entry for entry in rollbacks_of(state)
                 if entry['checkpoint']['batch'] == batch and entry['skip']['epoch'] == now[0] and
                 (entry['skip']['batches'][1], entry['skip']['samples'][1]) == now[1:]), None)
