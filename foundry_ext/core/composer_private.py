"""Every access foundry-ext makes to a private or undocumented part of Composer or LLM-Foundry, in one place.

Each function says what it reaches into and the version it was checked against (Composer 0.32.1, LLM-Foundry
0.22.0). ``tests/core/test_composer_private.py`` exercises each one against the installed packages, so an upgrade
that removes or renames one fails there, loudly, instead of deep inside a training run.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from composer.callbacks import CheckpointSaver
from composer.core import State, Timestamp
from composer.loggers import Logger
from composer.optim import ComposerScheduler
from composer.utils import format_name_with_dist
from torch.optim.lr_scheduler import LambdaLR

if TYPE_CHECKING:
    from composer import Trainer

log = logging.getLogger(__name__)

__all__ = [
    'SavedCheckpoint',
    'checkpoint_saver',
    'checkpoints_saved_before',
    'composer_scheduler_of',
    'exempt_from_rotation',
    'hf_export',
    'lambda_lrs_at',
    'local_save_folder',
    'remote_save_folder',
]


def composer_scheduler_of(compiled: LambdaLR) -> Optional[tuple[ComposerScheduler, float]]:
    """The ``ComposerScheduler`` a compiled ``LambdaLR`` calls, and the ``scale_schedule_ratio`` it calls it with.

    Composer 0.32.1: ``composer.optim.scheduler.compile_composer_scheduler`` keeps the scheduler only in the
    closure of the lambda it builds, under the free variable names ``scheduler`` and ``ssr``.
    """
    for fn in compiled.lr_lambdas:
        nonlocals = inspect.getclosurevars(fn).nonlocals
        scheduler = nonlocals.get('scheduler')
        if isinstance(scheduler, ComposerScheduler):
            return scheduler, float(nonlocals.get('ssr', 1.0))
    return None


def lambda_lrs_at(state: State, timestamps: Sequence[Timestamp], offset: int) -> list[list[float]]:
    """Per param group, the LRs the run's single ``LambdaLR`` gives at ``timestamps``, stepped ``offset``,
    ``offset + 1``, ... steps past its current ``last_epoch``.

    Composer 0.32.1: the compiled lambda ignores its step argument and reads ``state.timestamp`` (see
    ``compile_composer_scheduler``), so each timestamp is set on the State for the call and restored after.
    """
    scheduler = state.schedulers[0]
    lrs: list[list[float]] = [[] for _ in scheduler.base_lrs]
    saved = state.timestamp
    try:
        for j, timestamp in enumerate(timestamps, start=offset):
            state.timestamp = timestamp
            for i, (base, fn) in enumerate(zip(scheduler.base_lrs, scheduler.lr_lambdas)):
                lrs[i].append(base * fn(scheduler.last_epoch + j))
    finally:
        state.timestamp = saved
    return lrs


def checkpoint_saver(trainer: 'Trainer') -> Optional[CheckpointSaver]:
    """The ``CheckpointSaver`` the Trainer built from ``save_folder``, or None.

    Composer 0.32.1: kept as ``Trainer._checkpoint_saver``.
    """
    return trainer._checkpoint_saver


def _savers(state: State) -> list[CheckpointSaver]:
    return [cb for cb in state.callbacks if isinstance(cb, CheckpointSaver)]


def local_save_folder(state: State) -> Optional[str]:
    """The local folder of the run's ``save_folder``; None when the run saves nothing or saves remotely.

    Composer stages a remote ``save_folder`` (``s3://...``) in a temporary local folder that is never kept, so a
    file a callback wrote there would be lost. Composer 0.32.1: ``CheckpointSaver.folder`` and
    ``CheckpointSaver.remote_uploader`` (None for a local folder).
    """
    for saver in _savers(state):
        if saver.remote_uploader is None:
            return format_name_with_dist(saver.folder, state.run_name)
    return None


def remote_save_folder(saver: CheckpointSaver, run_name: str) -> Optional[str]:
    """Where ``saver`` uploads checkpoints (the remote ``save_folder``), or None for a local folder.

    Composer 0.32.1: ``CheckpointSaver.remote_uploader.remote_folder``.
    """
    if saver.remote_uploader is None:
        return None
    return format_name_with_dist(saver.remote_uploader.remote_folder, run_name)


class SavedCheckpoint(NamedTuple):
    """A checkpoint some ``CheckpointSaver`` of the run saved (this session or, restored, an earlier one)."""
    batch: int
    path: str
    saver: CheckpointSaver


def checkpoints_saved_before(state: State, batch: int) -> list[SavedCheckpoint]:
    """The run's checkpoints saved at a batch before ``batch``, oldest first.

    Composer 0.32.1: ``CheckpointSaver.all_saved_checkpoints_to_timestamp`` maps every checkpoint the saver wrote
    (kept in its checkpointed state, so also those of earlier sessions) to its timestamp. A sharded checkpoint
    is listed by one of its ``.distcp`` files; its path here is the folder of shards, what ``load_path`` takes.
    """
    saved = []
    for saver in _savers(state):
        for name, timestamp in saver.all_saved_checkpoints_to_timestamp.items():
            if int(timestamp.batch) < batch:
                path = os.path.dirname(name) if name.endswith('.distcp') else name
                saved.append(SavedCheckpoint(int(timestamp.batch), path, saver))
    return sorted(saved, key=lambda s: (s.batch, s.path))


def exempt_from_rotation(checkpoint: SavedCheckpoint) -> bool:
    """Takes ``checkpoint`` out of ``save_num_checkpoints_to_keep``'s rotation; True if it was in it.

    Composer 0.32.1: ``CheckpointSaver.saved_checkpoints`` lists this session's checkpoints in save order and the
    saver deletes the oldest beyond ``num_checkpoints_to_keep``; a name no longer in the list is never deleted.
    """
    saver = checkpoint.saver
    for name in list(saver.saved_checkpoints):
        if name == checkpoint.path or os.path.dirname(name) == checkpoint.path:
            saver.saved_checkpoints.remove(name)
            return saver.num_checkpoints_to_keep >= 0
    return False


def hf_export(checkpointer: Any, state: State, logger: Logger, folder: str, name: str) -> None:
    """Writes the model as a Hugging Face folder ``<folder>/<name>`` with Foundry's ``HuggingFaceCheckpointer``.

    LLM-Foundry 0.22.0: the checkpointer has no public "save now" call; its ``_save_checkpoint(state, logger,
    upload_to_save_folder, register_to_mlflow)`` does the export, into ``save_dir_format_str`` /
    ``huggingface_folder_name_fstr`` (``{batch}`` and other placeholders filled in).
    """
    checkpointer.save_dir_format_str = folder
    checkpointer.huggingface_folder_name_fstr = name
    checkpointer._save_checkpoint(state, logger, upload_to_save_folder=True, register_to_mlflow=False)
