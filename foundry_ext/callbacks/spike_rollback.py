"""The ``rollback`` action of ``loss_spike_monitor``: back to a checkpoint before a spike, past the data around it.

Composer cannot load a checkpoint into a running ``fit()`` and restart the train dataloader's iterator at another
place (``Trainer._train_loop`` holds one iterator per epoch), so a rollback goes through a relaunch:

1. **Decision** (at the batch or evaluation whose event asks for it, on every rank alike): the rollback checkpoint is
   the newest saved at least ``steps_before_onset`` batches before the onset; the skipped window is ``skip_batches``
   batches from the onset's batch. Rank 0 appends the entry to ``<save_folder>/rollbacks.json`` (``pending``) and
   every rank ends with exit code 75 (:data:`~foundry_ext.core.exits.EXIT_ROLLBACK`): "relaunch the same command".
2. **Next launch, before the load** (``BEFORE_LOAD``, before autoresume looks for a checkpoint): rank 0 moves every
   checkpoint saved after the rollback checkpoint into ``<save_folder>/rolled_back/<index>/`` and points Composer's
   ``latest`` at the rollback checkpoint; the entry becomes ``applied``.
3. **After the load** (``AFTER_LOAD``): for each entry the loaded checkpoint does not record, the data position jumps
   past the window: the restored ``StreamingDataset`` state and the timestamp's ``batch_in_epoch`` /
   ``sample_in_epoch`` move to the window's end. The global ``batch`` (the step) stays the checkpoint's, so the
   schedule and ``max_duration`` count trained steps; Composer saves the dataset position from
   ``sample_in_epoch``, so every later checkpoint resumes the post-rollback data.

``token_in_epoch`` is not moved (the tokens of the skipped samples are not known without reading them).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Optional

import torch
from composer.core import State, TimeUnit
from composer.loggers import Logger
from composer.utils import dist

from foundry_ext.core.checkpoint_files import find_checkpoints, move_aside, point_latest
from foundry_ext.core.composer_private import (checkpoint_interval, checkpoint_names, checkpoints_saved_before,
                                               exempt_from_rotation, local_checkpoint_saver, local_save_folder,
                                               streaming_train_dataset)
from foundry_ext.core.errors import ConfigError, fail
from foundry_ext.core.exits import EXIT_ROLLBACK, exit_every_rank
from foundry_ext.core.metric_names import ROLLBACK_PREFIX
from foundry_ext.core.ranks import on_rank_zero
from foundry_ext.spikes.rollback import (APPLIED, MANIFEST, PENDING, ROLLED_BACK, RollbackSettings, checkpoints_to_keep,
                                         entries_to_apply, onset_position, read_manifest, rollback_checkpoint,
                                         skip_window, write_manifest)

log = logging.getLogger(__name__)

__all__ = ['SpikeRollback', 'rollbacks_of']


class SpikeRollback:
    """The rollback machinery of one ``loss_spike_monitor`` (see the module docstring).

    Args:
        settings (RollbackSettings): ``steps_before_onset``, ``skip_batches``, ``max_rollbacks``.
        where (str): The config key of the settings, for messages.
    """

    def __init__(self, settings: RollbackSettings, where: str) -> None:
        self.settings = settings
        self.where = where
        # The rollbacks whose skip the current timeline has made (manifest entries without their fingerprints):
        # checkpointed, so every checkpoint carries the record of the rollbacks behind it.
        self.made: list[dict[str, Any]] = []
        self.first_step = 0  # the first step whose data position is continuous with the current one

    # Before training: the refusals.

    def check(self, state: State, decision_delay: int) -> None:
        """Refuses a run in which a rollback could not work, before it trains.

        Args:
            state (State): The trainer's state.
            decision_delay (int): The most steps after an onset at which a rollback can be decided.
        """
        names = checkpoint_names(state)
        if names is None:
            fail(f'{self.where}: the action rollback loads a checkpoint saved before the spike, but the run saves no '
                 f'local checkpoints. Set save_folder (a local folder) and save_interval, e.g. save_interval: '
                 f'{self.settings.steps_before_onset}ba.')
        saver = local_checkpoint_saver(state)
        assert saver is not None, 'checkpoint_names found it'
        interval = checkpoint_interval(saver)
        if interval is None or interval.unit != TimeUnit.BATCH:
            fail(f'save_interval={"a function" if interval is None else interval}: the action rollback of '
                 f'{self.where} needs checkpoints at a fixed interval of batches, to find one saved '
                 f'{self.settings.steps_before_onset} steps before an onset. Set save_interval in batches, e.g. '
                 f'{self.settings.steps_before_onset}ba.')
        keep = saver.num_checkpoints_to_keep
        needed = checkpoints_to_keep(int(interval.value), self.settings.steps_before_onset, decision_delay)
        if 0 <= keep < needed:
            fail(f'save_num_checkpoints_to_keep={keep}: with save_interval={interval} a rollback to a checkpoint '
                 f'{self.settings.steps_before_onset} steps before an onset decided up to {decision_delay} steps '
                 f'after it needs the last {needed} checkpoints. Set save_num_checkpoints_to_keep: {needed} (or -1 '
                 f'to keep all).')
        dataset = streaming_train_dataset(state)
        if dataset is None:
            fail(f'{self.where}: the action rollback skips data by moving a StreamingDataset\'s position, but the '
                 f'train dataloader is not one (its dataset is {_dataset_type(state)}). Use a Streaming loader '
                 f'(LLM-Foundry\'s text or finetuning loaders), or the action stop.')
        batches = state.dataloader_len
        if batches is not None and self.settings.skip_batches >= int(batches):
            fail(f'{self.where}.skip_batches={self.settings.skip_batches}: the train dataset has only {int(batches)} '
                 f'batches per epoch, so the skip would pass its end. Set skip_batches below {int(batches)}.')

    # The decision.

    def checkpoint_for(self, state: State, onset_step: int) -> Optional[tuple[int, str]]:
        """The rollback checkpoint for ``onset_step`` (batch, path), kept out of checkpoint rotation; or None."""
        saved = checkpoints_saved_before(state, onset_step + 1)
        chosen = rollback_checkpoint([(s.batch, s.path) for s in saved], onset_step,
                                     self.settings.steps_before_onset)
        if chosen is not None:
            exempt_from_rotation(next(s for s in saved if (s.batch, s.path) == chosen))
        return chosen

    def decide(self, state: State, logger: Logger, record: dict[str, Any],
               batches: Mapping[int, tuple[Optional[torch.Tensor], int, int]]) -> bool:
        """Decides the rollback that the event ``record`` asks for, records it and ends the process with exit code
        75 (on every rank: all call this alike); False when it cannot be done (then the run stops instead).

        Args:
            state (State): The trainer's state, after the batch (or evaluation) the event was found at.
            logger (Logger): The run's loggers.
            record (dict): The event's record; ``action`` and ``checkpoint_before_onset`` are filled in.
            batches (Mapping): Per recent step, this rank's fingerprints of the batch (or None).
        """
        onset, settings = record['onset_step'], self.settings
        done = rollbacks_of(state)
        chosen = self.checkpoint_for(state, onset) if len(done) < settings.max_rollbacks else None
        if chosen is None:
            record['action'] = 'stop'
            if dist.get_global_rank() == 0:
                why = (f'max_rollbacks={settings.max_rollbacks} rollbacks were done already (see '
                       f'{MANIFEST} in the save folder)' if len(done) >= settings.max_rollbacks else
                       f'no checkpoint was saved at least steps_before_onset={settings.steps_before_onset} steps '
                       f'before the onset at step {onset}')
                log.error(f'{self.where}: NOT ROLLING BACK: {why}; the run stops.')
            return False
        ts, prev = state.timestamp, state.previous_timestamp
        last = int(ts.batch) - 1  # the last batch trained; its data position is where prev was
        batch_samples = int(ts.sample_in_epoch) - int(prev.sample_in_epoch)
        first_batch, first_sample = onset_position(last, int(prev.batch_in_epoch), int(prev.sample_in_epoch),
                                                   batch_samples, onset, self.first_step)
        window = skip_window(int(ts.epoch), first_batch, first_sample, batch_samples, settings.skip_batches,
                             None if state.dataloader_len is None else int(state.dataloader_len))
        fingerprints = []  # of the window's batches that were trained and are still known: to check the skip
        last_in_window = last - max(int(prev.batch_in_epoch) + 1 - window['batches'][1], 0)
        for step in range(max(onset, self.first_step), last_in_window + 1):
            rows = batches.get(step, (None,))[0]
            rows = None if rows is None else rows.cpu().tolist()
            gathered = dist.all_gather_object(rows) if dist.get_world_size() > 1 else [rows]
            fingerprints += [fp for r in gathered if r is not None for fp in r]
        entry = {'index': len(done), 'onset_step': onset, 'decided_at_step': last, 'event': dict(record),
                 'checkpoint': {'batch': chosen[0], 'name': os.path.basename(chosen[1]), 'path': chosen[1]},
                 'skip': window, 'fingerprints': fingerprints}
        record['checkpoint_before_onset'] = chosen[1]
        self.record(state, logger, entry)
        if dist.get_global_rank() == 0:
            log.error(f'{self.where}: ROLLING BACK after step {last} (rollback {len(done) + 1} of at most '
                      f'{settings.max_rollbacks}): {record["kind"]} on {record["stream"]}, onset step {onset}, peak '
                      f'loss {record["peak_loss"]} at step {record["peak_step"]}. The relaunch resumes from '
                      f'{chosen[1]} (batch {chosen[0]}) and skips samples [{window["samples"][0]}, '
                      f'{window["samples"][1]}) of epoch {window["epoch"]} '
                      f'({window["batches"][1] - window["batches"][0]} batches from the onset\'s). Exit code '
                      f'{EXIT_ROLLBACK}: relaunch the same command.')
        exit_every_rank(EXIT_ROLLBACK)

    def record(self, state: State, logger: Logger, entry: dict[str, Any]) -> None:
        """Adds the decided rollback to the manifest (``pending``), logs it, and waits until it is on disk."""
        folder = local_save_folder(state)

        def append() -> None:
            entries = read_manifest(folder)
            write_manifest(folder, [*entries, {**entry, 'status': PENDING}])

        on_rank_zero(append)
        if dist.get_global_rank() == 0:
            logger.log_metrics({f'{ROLLBACK_PREFIX}/decided': entry['index'] + 1,
                                f'{ROLLBACK_PREFIX}/onset_step': entry['onset_step'],
                                f'{ROLLBACK_PREFIX}/checkpoint_batch': entry['checkpoint']['batch']})

    # The next launch.

    def before_load(self, state: State) -> None:
        """Moves the checkpoints after each pending rollback's checkpoint aside and points ``latest`` at it."""
        names = checkpoint_names(state)
        if names is not None:
            on_rank_zero(lambda: _prepare_folder(names))

    def after_load(self, state: State, logger: Logger) -> None:
        """Makes the data skip of every rollback the loaded checkpoint does not record (at the rollback
        checkpoint: just rolled back, or crashed again before the next checkpoint)."""
        folder = local_save_folder(state)
        if folder is None:
            return
        entries = rollbacks_of(state)
        loaded = int(state.timestamp.batch) if state.load_path is not None else -1
        todo = entries_to_apply(entries, [entry['index'] for entry in self.made], loaded,
                                os.path.join(folder, MANIFEST))
        if not todo:
            return
        window = todo[-1]['skip']  # a later rollback's window lies past an earlier one's: the last one counts
        self._skip_to(state, window)
        self.made += [{k: v for k, v in entry.items() if k not in ('fingerprints', 'status')} for entry in todo]
        self.first_step = int(state.timestamp.batch)
        for entry in todo:
            log.warning(f'{self.where}: rollback {entry["index"] + 1}: resumed from {entry["checkpoint"]["name"]} '
                        f"(batch {entry['checkpoint']['batch']}), {entry['onset_step'] - entry['checkpoint']['batch']}"
                        f' steps from the {entry["event"]["kind"]} with onset at step {entry["onset_step"]}; the data '
                        f'moves past samples [{window["samples"][0]}, {window["samples"][1]}) of epoch '
                        f'{window["epoch"]}.')
        if dist.get_global_rank() == 0:
            logger.log_metrics({f'{ROLLBACK_PREFIX}/count': len(entries),
                                f'{ROLLBACK_PREFIX}/skipped_from_sample': window['samples'][0],
                                f'{ROLLBACK_PREFIX}/skipped_to_sample': window['samples'][1]})

    def _skip_to(self, state: State, window: Mapping[str, Any]) -> None:
        ts = state.timestamp
        if int(ts.epoch) != window['epoch']:
            raise ConfigError(f'{self.where}: the rollback checkpoint is in epoch {int(ts.epoch)}, the skipped window '
                              f'in epoch {window["epoch"]}; a rollback across an epoch boundary is not supported. '
                              f'Lower steps_before_onset, or save checkpoints more often.')
        dataset = streaming_train_dataset(state)
        assert dataset is not None, 'checked before training'
        resume = dataset.state_dict(int(ts.sample_in_epoch), True)
        dataset.load_state_dict({**resume, 'sample_in_epoch': window['samples'][1]})
        state.dataset_resumption['train'] = True
        state.timestamp = ts.copy(batch_in_epoch=window['batches'][1], sample_in_epoch=window['samples'][1])

    # Checkpointed state.

    def state_dict(self) -> dict[str, Any]:
        return {'made': [dict(entry) for entry in self.made], 'first_step': self.first_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.made = [dict(entry) for entry in state.get('made', [])]
        self.first_step = int(state.get('first_step', 0))


def rollbacks_of(state: State) -> list[dict[str, Any]]:
    """Every rollback of the run so far (``<save_folder>/rollbacks.json`` as global rank 0 reads it), on every rank;
    ``[]`` without a local save folder."""
    folder = local_save_folder(state)
    return [] if folder is None else on_rank_zero(lambda: read_manifest(folder))


def _dataset_type(state: State) -> str:
    loader = getattr(state.train_dataloader, 'dataloader', state.train_dataloader)
    return type(getattr(loader, 'dataset', loader)).__name__


def _prepare_folder(names) -> None:
    folder = names.folder
    entries = read_manifest(folder)
    pending = [entry for entry in entries if entry['status'] == PENDING]
    if not pending:
        return
    for entry in pending:
        target = entry['checkpoint']['name']
        checkpoints = find_checkpoints(folder, names.checkpoint, names.sharded)
        chosen = next((c for c in checkpoints if c.name == target), None)
        if chosen is None or chosen.problem is not None:
            where = f'not in {folder}' if chosen is None else f'broken ({chosen.problem})'
            fail(f'{os.path.join(folder, MANIFEST)}: rollback {entry["index"]} needs the checkpoint {target}, which '
                 f'is {where}. Put it back, or delete the entry to train on without the rollback.')
        aside = os.path.join(folder, ROLLED_BACK, str(entry['index']))
        for ckpt in checkpoints:
            if ckpt.order > chosen.order:
                log.warning(f'rollback {entry["index"]}: moved {ckpt.name}, saved after the rollback checkpoint, to '
                            f'{move_aside(ckpt, aside)}.')
        if names.latest is not None:
            point_latest(folder, names.latest, chosen.name)
        entry['status'] = APPLIED
    write_manifest(folder, entries)
