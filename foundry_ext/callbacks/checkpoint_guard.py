"""Unattended recovery from a kill at any moment: the save folder is repaired before Composer's autoresume reads it.

Registered in ``llmfoundry_callbacks`` as ``checkpoint_guard``; ``scripts/train.py`` switches it on for every run
with ``autoresume: true``, and the recipes in ``yamls/`` name it, so LLM-Foundry's own ``train.py`` gets it too::

    callbacks:
      checkpoint_guard: {}

What it does, and when (details and limits: ``docs/crash_recovery.md``):

* ``Event.BEFORE_LOAD``, after the Trainer has set ``max_duration`` and before ``autoresume`` looks for a checkpoint
  (Composer 0.32.1 ``Trainer.__init__``): global rank 0 checks every checkpoint in the local ``save_folder``
  (:mod:`foundry_ext.core.checkpoint_files`), moves each incomplete or damaged one into ``<save_folder>/quarantine/``
  with a warning that names it, and points Composer's ``latest`` symlink at the newest complete one. A partial
  checkpoint newer than the resumed one would otherwise make ``CheckpointSaver.fit_start`` refuse to start
  (``FileExistsError: ... may conflict with a future checkpoint``), and a ``latest`` pointing at a broken file
  would crash the load. The other ranks wait for rank 0 and get its result in one broadcast.
* Before each checkpoint (at ``BATCH_CHECKPOINT`` / ``EPOCH_CHECKPOINT`` when a save is due; the guard runs before
  Composer's ``CheckpointSaver``, which Composer and Foundry put last): every open foundry-ext JSON Lines file is put
  on disk, so a checkpoint never outlives the lines logged before it.
* The end of a run: before the final checkpoint the guard records ``{"status": "finishing", ...}`` in
  ``<save_folder>/run_status.json``, and ``"finished"`` once the end of training has run (the end-of-run
  evaluation, the last logs, the budget manifest's evaluation) and the trainer closes. A relaunch that finds the
  final checkpoint still ``finishing`` moves it aside, so the last save interval and the end are redone exactly.
* ``Event.AFTER_LOAD``: when ``autoresume`` loaded a checkpoint at ``max_duration`` (the run is finished), the
  guard prints one line saying so and where the final checkpoint is, and ends the process with exit code 0
  (:class:`RunComplete`) instead of Composer's "No training would occur" error.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.utils import dist

from foundry_ext.core.checkpoint_files import find_checkpoints, point_latest, quarantine
from foundry_ext.core.composer_private import (checkpoint_due, checkpoint_names, checkpoint_saver_folders,
                                               evaluators_due, pending_checkpoint_name)
from foundry_ext.core.jsonl import sync_open_writers, write_json
from foundry_ext.core.ranks import on_rank_zero

log = logging.getLogger(__name__)

__all__ = ['CheckpointGuard', 'RUN_STATUS', 'RunComplete']

RUN_STATUS = 'run_status.json'
WHERE = 'callbacks.checkpoint_guard'


class RunComplete(SystemExit):
    """Ends the process with exit code 0: the run was already finished, there is nothing to train.

    A ``SystemExit``, so that LLM-Foundry's ``train.py``, which cannot be told otherwise, exits 0; Python callers
    of ``train_from_yaml`` can catch it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(0)
        self.message = message


class CheckpointGuard(Callback):
    """Repairs the save folder before autoresume, makes outputs durable before each checkpoint, and ends a
    relaunch of a finished run with exit code 0. Takes no arguments (see the module docstring)."""

    def __init__(self) -> None:
        self._ending = False  # FIT_END reached max_duration; the end-of-run evaluation may still follow
        self._ended = False  # the end of training ran in this process

    # Before the load: repair.

    def before_load(self, state: State, logger: Logger) -> None:
        del logger
        on_rank_zero(lambda: self._repair(state))

    def _repair(self, state: State) -> None:
        """Quarantines broken checkpoints, redoes an unfinished end, repoints ``latest``."""
        names = checkpoint_names(state)
        if names is None:
            return
        folder = names.folder
        checkpoints = find_checkpoints(folder, names.checkpoint, names.sharded)
        intact = []
        for ckpt in checkpoints:
            if ckpt.problem is None:
                intact.append(ckpt)
                continue
            moved = quarantine(ckpt, folder)
            log.warning(f'{WHERE}: {ckpt.path} is not a complete checkpoint ({ckpt.problem}); moved it to {moved} '
                        f'so that the run resumes from the newest complete one. Delete it once you no longer need '
                        f'it.')
        status = _read_status(folder)
        if (intact and status.get('status') == 'finishing' and status.get('checkpoint') == intact[-1].name and
                status.get('max_duration') == str(state.max_duration)):
            final = intact[-1]
            what = (f'{WHERE}: the run was stopped after its final checkpoint {final.name} but before the end of '
                    f'training (end-of-run evaluation, last logs) had run.')
            if len(intact) > 1:
                intact.pop()
                moved = quarantine(final, folder)
                log.warning(f'{what} Moved it to {moved} and resuming from {intact[-1].name}, so that Composer redoes '
                            f'the last save interval and the end exactly.')
            else:  # redoing the end would mean training from scratch
                log.warning(f'{what} No earlier checkpoint is left to redo it from (save_num_checkpoints_to_keep), so '
                            f'the run counts as finished without it.')
        if names.latest is not None:
            self._point_latest(folder, names.latest, intact[-1].name if intact else None)

    @staticmethod
    def _point_latest(folder: str, latest: str, newest: Optional[str]) -> None:
        path = os.path.join(folder, latest)
        current = os.readlink(path) if os.path.islink(path) else None
        if current == newest or (current is None and newest is None):
            return
        point_latest(folder, latest, newest)
        was = f'pointed at {current}' if current is not None else 'was missing'
        now = f'now points at {newest}' if newest is not None else 'was removed (no complete checkpoint is left)'
        log.warning(f'{WHERE}: {path} {was}; it {now}.')

    # After the load: a finished run ends here.

    def after_load(self, state: State, logger: Logger) -> None:
        del logger
        max_duration, load_path = state.max_duration, state.load_path
        if max_duration is None or load_path is None or max_duration > state.timestamp.get(max_duration.unit):
            return
        load_path = os.path.abspath(load_path)
        folders = [os.path.abspath(folder) + os.sep for folder in checkpoint_saver_folders(state)]
        if not any(load_path.startswith(folder) for folder in folders):
            return  # an explicit load_path, not autoresume: Composer's own error tells the user what is wrong
        message = (f'foundry-ext: run {state.run_name!r} is already complete ({state.timestamp.get(max_duration.unit)} '
                   f'of max_duration={max_duration}); final checkpoint: {os.path.realpath(load_path)}. Nothing to do.')
        if dist.get_global_rank() == 0:
            print(message, flush=True)
        raise RunComplete(message)

    # During training: durability before each checkpoint, and the run's end.

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        self._before_checkpoint(state, Event.BATCH_CHECKPOINT)

    def epoch_checkpoint(self, state: State, logger: Logger) -> None:
        self._before_checkpoint(state, Event.EPOCH_CHECKPOINT)

    def _before_checkpoint(self, state: State, event: Event) -> None:
        if not checkpoint_due(state, event):
            return
        sync_open_writers()
        elapsed = state.get_elapsed_duration()
        if elapsed is not None and elapsed >= 1 and dist.get_global_rank() == 0:
            self._write_status(state, 'finishing')

    def fit_end(self, state: State, logger: Logger) -> None:
        elapsed = state.get_elapsed_duration()
        if elapsed is None or elapsed < 1:  # stopped early: a relaunch trains on
            return
        self._ending = True
        self._ended = not evaluators_due(state, Event.FIT_END)

    def eval_after_all(self, state: State, logger: Logger) -> None:
        if self._ending:  # the end-of-run evaluation finished
            self._ended = True

    def close(self, state: State, logger: Logger) -> None:
        if not self._ended or dist.get_global_rank() != 0:
            return
        names = checkpoint_names(state)
        if names is not None and _read_status(names.folder).get('status') == 'finishing':
            self._write_status(state, 'finished')

    def _write_status(self, state: State, status: str) -> None:
        names = checkpoint_names(state)
        if names is None:
            return
        record = {'status': status, 'checkpoint': pending_checkpoint_name(state), 'batch': int(state.timestamp.batch),
                  'max_duration': str(state.max_duration)}
        write_json(os.path.join(names.folder, RUN_STATUS), record)


def _read_status(folder: str) -> dict[str, Any]:
    try:
        with open(os.path.join(folder, RUN_STATUS)) as f:
            status = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.warning(f'{WHERE}: {os.path.join(folder, RUN_STATUS)} cannot be read ({err}); ignoring it.')
        return {}
    return status if isinstance(status, dict) else {}
