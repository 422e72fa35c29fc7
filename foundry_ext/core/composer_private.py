"""Every access foundry-ext makes to a private or undocumented part of Composer or LLM-Foundry (or of the torch
checkpoint format Composer writes), in one place.

Each function says what it reaches into and the version it was checked against (Composer 0.32.1, LLM-Foundry
0.22.0, torch 2.7). ``tests/core/test_composer_private.py`` exercises each one against the installed packages, so an
upgrade that removes or renames one fails there, loudly, instead of deep inside a training run.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from composer.callbacks import CheckpointSaver
from composer.core import DataSpec, Event, State, Time, Timestamp
from composer.loggers import Logger
from composer.optim import ComposerScheduler
from composer.utils import checkpoint, format_name_with_dist
from streaming import StreamingDataset
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from composer import Trainer

log = logging.getLogger(__name__)

__all__ = [
    'CheckpointNames',
    'SavedCheckpoint',
    'checkpoint_due',
    'checkpoint_interval',
    'checkpoint_names',
    'checkpoint_saver',
    'checkpoint_saver_folders',
    'checkpoints_saved_before',
    'composer_scheduler_of',
    'evaluators_due',
    'exempt_from_rotation',
    'hf_export',
    'lambda_lrs_at',
    'local_checkpoint_saver',
    'local_save_folder',
    'pending_checkpoint_name',
    'remote_save_folder',
    'sharded_checkpoint_extents',
    'streaming_train_dataset',
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
    saver = local_checkpoint_saver(state)
    return None if saver is None else format_name_with_dist(saver.folder, state.run_name)


def local_checkpoint_saver(state: State) -> Optional[CheckpointSaver]:
    """The run's ``CheckpointSaver`` that saves into a local folder, or None (Composer 0.32.1:
    ``CheckpointSaver.remote_uploader`` is None for a local ``save_folder``)."""
    return next((saver for saver in _savers(state) if saver.remote_uploader is None), None)


class CheckpointNames(NamedTuple):
    """How the run's ``CheckpointSaver`` names what it writes into its local folder, for global rank 0.

    Attributes:
        folder (str): The local save folder.
        checkpoint (str): Name template of a checkpoint in ``folder``, with the run name and rank 0 filled in and
            the time placeholders (``{epoch}``, ``{batch}``, ...) left: a file (``ep{epoch}-ba{batch}-rank0.pt``), or
            for sharded checkpoints the folder of shards (``ep{epoch}-ba{batch}``).
        latest (Optional[str]): Name of the symlink to the newest checkpoint (``latest-rank0.pt``), or None.
        sharded (bool): Whether checkpoints are folders of shards.
    """
    folder: str
    checkpoint: str
    latest: Optional[str]
    sharded: bool


def checkpoint_names(state: State) -> Optional[CheckpointNames]:
    """How the run's local ``CheckpointSaver`` names its checkpoints; None without a local save folder.

    Composer 0.32.1: ``CheckpointSaver.filename`` and ``.latest_filename`` are ``PartialFilePath`` objects whose
    ``filename`` is the template; a sharded checkpoint goes to ``<dirname of filename>/<sharded_ckpt_prefix_dir>``
    (``checkpoint.get_save_filename``). Called on global rank 0, ``format_name_with_dist`` fills in ``{rank}`` = 0,
    the rank whose names ``autoresume`` reads.
    """
    saver = local_checkpoint_saver(state)
    if saver is None:
        return None
    template = saver.filename.filename
    sharded = state.fsdp_sharded_state_dict_enabled
    if sharded:
        assert state.fsdp_config is not None
        template = os.path.join(os.path.dirname(template), state.fsdp_config.sharded_ckpt_prefix_dir)
    latest = None if saver.latest_filename is None else format_name_with_dist(saver.latest_filename.filename,
                                                                               state.run_name)
    return CheckpointNames(format_name_with_dist(saver.folder, state.run_name),
                           format_name_with_dist(template, state.run_name), latest, sharded)


def pending_checkpoint_name(state: State) -> Optional[str]:
    """The name (in the save folder) of the checkpoint the local ``CheckpointSaver`` saves at this timestamp.

    Composer 0.32.1: ``CheckpointSaver._save_checkpoint`` saves to ``checkpoint.get_save_filename(state,
    saver.filename.format(state, keep_placeholders=True))``, inside a folder of shards when sharded.
    """
    saver = local_checkpoint_saver(state)
    if saver is None:
        return None
    path = checkpoint.get_save_filename(state, saver.filename.format(state, keep_placeholders=True))
    return os.path.basename(os.path.dirname(path) if state.fsdp_sharded_state_dict_enabled else path)


def checkpoint_due(state: State, event: Event) -> bool:
    """Whether a ``CheckpointSaver`` of the run saves a checkpoint at this ``event`` (before it does).

    Composer 0.32.1: ``CheckpointSaver.batch_checkpoint`` / ``epoch_checkpoint`` save when
    ``saver.save_interval(state, event)`` and ``saver.last_checkpoint_batch != state.timestamp.batch``. The
    interval function of ``create_interval_scheduler`` gives the same answer when asked twice at one event (its
    only state, ``last_batch_seen``, is set where it already returns True).
    """
    return any(callable(saver.save_interval) and saver.save_interval(state, event) and
               saver.last_checkpoint_batch != state.timestamp.batch for saver in _savers(state))


def evaluators_due(state: State, event: Event) -> bool:
    """Whether any evaluator runs after ``event`` (Composer runs the due evaluators right after the event).

    Composer 0.32.1: ``Evaluator.eval_interval(state, event)`` decides; for ``Event.FIT_END`` the function that
    ``create_interval_scheduler`` builds from an ``eval_interval`` only reads the state.
    """
    return any(evaluator.eval_interval is not None and evaluator.eval_interval(state, event)
               for evaluator in state.evaluators)


def sharded_checkpoint_extents(folder: str) -> dict[str, int]:
    """For a sharded checkpoint, the size each of its shard files must have at least, from its ``.metadata``.

    torch 2.7: ``FileSystemWriter.finish`` stores, per entry, a ``_StorageInfo(relative_path, offset, length)`` in
    ``Metadata.storage_data``. Raises ``OSError`` or ``pickle.UnpicklingError`` if ``.metadata`` cannot be read.
    """
    from torch.distributed.checkpoint import FileSystemReader
    extents: dict[str, int] = {}
    for info in FileSystemReader(folder).read_metadata().storage_data.values():
        extents[info.relative_path] = max(extents.get(info.relative_path, 0), info.offset + info.length)
    return extents


def remote_save_folder(saver: CheckpointSaver, run_name: str) -> Optional[str]:
    """Where ``saver`` uploads checkpoints (the remote ``save_folder``), or None for a local folder.

    Composer 0.32.1: ``CheckpointSaver.remote_uploader.remote_folder``.
    """
    if saver.remote_uploader is None:
        return None
    return format_name_with_dist(saver.remote_uploader.remote_folder, run_name)


def checkpoint_saver_folders(state: State) -> list[str]:
    """Every folder the run's checkpoint savers save into: the local one, or the remote ``save_folder``.

    Composer 0.32.1: autoresume loads ``<save_folder>/<latest>``, downloaded first when ``save_folder`` is remote
    (to that path taken as a local one), or the sharded folder that the local ``latest`` symlink points at.
    """
    return [remote_save_folder(saver, state.run_name) or format_name_with_dist(saver.folder, state.run_name)
            for saver in _savers(state)]


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


def checkpoint_interval(saver: CheckpointSaver) -> Optional[Time]:
    """The ``save_interval`` a ``CheckpointSaver`` was given (e.g. ``Time(1000, 'ba')``); None for a custom callable.

    Composer 0.32.1: ``CheckpointSaver.__init__`` turns a string or ``Time`` into the function that
    ``composer.utils.misc.create_interval_scheduler`` builds, which keeps it only in its closure, as
    ``time_interval``.
    """
    if not callable(saver.save_interval):
        return None
    nonlocals = inspect.getclosurevars(saver.save_interval).nonlocals
    interval = nonlocals.get('time_interval')
    return interval if isinstance(interval, Time) else None


def streaming_train_dataset(state: State) -> Optional[StreamingDataset]:
    """The train ``StreamingDataset`` whose state Composer checkpoints, or None for other loaders.

    Composer 0.32.1: ``State._dataset_of`` takes the dataset of the train ``DataLoader`` (inside a ``DataSpec``) and
    checkpoints it if it has a ``state_dict``; a loader that hides the dataset (a wrapper) is not resumed by state.
    """
    loader = state.train_dataloader
    if isinstance(loader, DataSpec):
        loader = loader.dataloader
    dataset = loader.dataset if isinstance(loader, DataLoader) else None
    return dataset if isinstance(dataset, StreamingDataset) else None
