"""Rolling back a run past a loss spike: the settings, the plan and its manifest, without Composer.

PaLM (Chowdhery et al. 2022, Sec. 5.1) restarted from a checkpoint about 100 steps before a spike and skipped
200-500 batches. ``loss_spike_monitor`` does this with the action ``rollback``; this module holds the parts that are
pure bookkeeping, so that they can be checked without a trainer:

* the settings (``steps_before_onset``, ``skip_batches``, ``max_rollbacks``) and how many checkpoints a run must keep
  for them;
* which checkpoint a rollback loads: the newest saved at least ``steps_before_onset`` batches before the onset;
* the window of skipped data: ``skip_batches`` batches from the onset's batch, as positions in the epoch's global
  sample order (``[first, end)``, Streaming's ``sample_in_epoch``);
* the manifest ``<save_folder>/rollbacks.json``: one entry per rollback, written atomically. It carries a decided
  rollback to the next launch (the persisted instruction) and records every rollback done.

An entry is ``pending`` from the decision until the next launch has moved the checkpoints saved after the rollback
checkpoint aside (into ``<save_folder>/rolled_back/<index>/``, so that autoresume loads the rollback checkpoint), then
``applied``. Whether its data skip still has to be made at a load is decided by the loaded checkpoint, not by the
status: a checkpoint saved after the skip carries the entry in ``loss_spike_monitor``'s state; the rollback checkpoint
itself (loaded again after a crash before the next save) does not (:func:`entries_to_apply`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from foundry_ext.core.errors import ConfigError, fail, whole
from foundry_ext.core.jsonl import write_json

log = logging.getLogger(__name__)

__all__ = ['APPLIED', 'MANIFEST', 'PENDING', 'ROLLED_BACK', 'SPIKE_DETECTION_DELAY', 'RollbackSettings',
           'check_rollback_settings', 'checkpoints_to_keep', 'entries_to_apply', 'onset_position', 'read_manifest',
           'rollback_checkpoint', 'skip_window', 'write_manifest']

MANIFEST = 'rollbacks.json'  # in the save folder
ROLLED_BACK = 'rolled_back'  # subfolder of the save folder that the abandoned checkpoints are moved into
PENDING, APPLIED = 'pending', 'applied'
# Steps from a spike's onset to its opening: the third point above the threshold, the onset walked back at most 3.
SPIKE_DETECTION_DELAY = 6


@dataclass(frozen=True)
class RollbackSettings:
    """What a rollback does (``callbacks.loss_spike_monitor.rollback``).

    Attributes:
        steps_before_onset (int): The rollback loads the newest checkpoint saved at a batch ``<= onset -
            steps_before_onset``.
        skip_batches (int): Batches of data skipped, from the onset's batch on.
        max_rollbacks (int): Rollbacks per run; the next event that asks for one stops the run instead.
    """
    steps_before_onset: int = 100
    skip_batches: int = 300
    max_rollbacks: int = 3


def check_rollback_settings(settings: Optional[Mapping[str, Any]], where: str) -> RollbackSettings:
    """Checks ``settings`` (None: the defaults) and returns them; a :class:`ConfigError` names ``<where>.<key>``."""
    if settings is None:
        return RollbackSettings()
    if not isinstance(settings, Mapping):
        fail(f'{where}={settings!r} must be a mapping, e.g. {{steps_before_onset: 100, skip_batches: 300, '
             f'max_rollbacks: 3}}.')
    defaults = RollbackSettings()
    unknown = sorted(set(settings) - set(vars(defaults)))
    if unknown:
        fail(f'{where}.{unknown[0]}={settings[unknown[0]]!r}: unknown rollback setting. Settings: '
             f'{", ".join(vars(defaults))}.')
    return RollbackSettings(
        steps_before_onset=whole(settings.get('steps_before_onset', defaults.steps_before_onset),
                                 f'{where}.steps_before_onset', 1,
                                 'a checkpoint at the onset already holds the model that gave the spiked loss'),
        skip_batches=whole(settings.get('skip_batches', defaults.skip_batches), f'{where}.skip_batches', 1,
                           'a rollback that skips no data replays the same spike'),
        max_rollbacks=whole(settings.get('max_rollbacks', defaults.max_rollbacks), f'{where}.max_rollbacks', 1,
                            'use the action stop for no rollback'),
    )


def checkpoints_to_keep(save_interval: int, steps_before_onset: int, decision_delay: int) -> int:
    """The fewest checkpoints ``save_num_checkpoints_to_keep`` must keep so that one saved at least
    ``steps_before_onset`` batches before an onset is still on disk when the rollback is decided, up to
    ``decision_delay`` batches after the onset.

    With checkpoints every ``I`` batches the newest kept one at step ``d`` is at ``I * floor(d / I)`` and the oldest
    ``K - 1`` intervals earlier; the rollback checkpoint is at ``I * floor((o - N) / I)``. For ``d - (o - N)`` up
    to ``G = decision_delay + steps_before_onset``:

    .. math::

        K \\ge \\lfloor G / I \\rfloor + 2.
    """
    return (decision_delay + steps_before_onset) // save_interval + 2


def rollback_checkpoint(saved: Sequence[tuple[int, str]], onset_step: int,
                        steps_before_onset: int) -> Optional[tuple[int, str]]:
    """The newest of ``saved`` (``(batch, path)`` pairs) at a batch ``<= onset_step - steps_before_onset``, or None.

    The model of a checkpoint at batch ``b`` computed the loss of batch ``b``: only a checkpoint before the onset has
    a model that still gave a normal loss, and ``steps_before_onset`` keeps a margin before it.
    """
    eligible = [(batch, path) for batch, path in saved if batch <= onset_step - steps_before_onset]
    return max(eligible) if eligible else None


def onset_position(step: int, batch_in_epoch: int, sample_in_epoch: int, batch_samples: int, onset_step: int,
                   first_step: int) -> tuple[int, int]:
    """Where the onset's batch was in the epoch's order, from where batch ``step`` was.

    Within an epoch every step takes the next ``batch_samples`` samples, so the onset's batch lies ``step -
    onset_step`` batches back; not before ``first_step``, the first step of this stretch of training (after a
    rollback the data before it came from another place), nor before the start of the epoch.

    Args:
        step (int): The batch the rollback is decided at.
        batch_in_epoch (int): Its index in the epoch.
        sample_in_epoch (int): The position of its first sample in the epoch's order.
        batch_samples (int): Samples per global batch.
        onset_step (int): The event's onset.
        first_step (int): The first step whose data position is continuous with ``step``'s.

    Returns:
        tuple: ``(batch_in_epoch, sample_in_epoch)`` of the window's first batch.
    """
    back = min(step - max(onset_step, first_step), batch_in_epoch)
    return batch_in_epoch - back, sample_in_epoch - back * batch_samples


def skip_window(epoch: int, batch_in_epoch: int, sample_in_epoch: int, batch_samples: int, skip_batches: int,
                batches_in_epoch: Optional[int]) -> dict[str, Any]:
    """The data a rollback skips: ``skip_batches`` global batches from the onset's batch, cut one batch before the
    end of the epoch (the next epoch starts its own order; the training resumes in this one).

    Returns:
        dict: ``{'epoch': e, 'batches': [first, end), 'samples': [first, end)}``, positions in the epoch.
    """
    skipped = skip_batches
    if batches_in_epoch is not None and batch_in_epoch + skipped > batches_in_epoch - 1:
        skipped = max(batches_in_epoch - 1 - batch_in_epoch, 0)
        log.warning(f'rollback: the window of {skip_batches} batches from batch {batch_in_epoch} of epoch {epoch} '
                    f'passes the end of the epoch ({batches_in_epoch} batches); skipping {skipped} batches, up to its '
                    f'last batch.')
    return {'epoch': epoch, 'batches': [batch_in_epoch, batch_in_epoch + skipped],
            'samples': [sample_in_epoch, sample_in_epoch + skipped * batch_samples]}


def read_manifest(folder: str) -> list[dict[str, Any]]:
    """The entries of ``<folder>/rollbacks.json``, oldest first; ``[]`` without the file."""
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path) as f:
            entries = json.load(f)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        raise ConfigError(f'{path} cannot be read ({err}). It is the rollback manifest of the run; restore it, or '
                          f'delete it to forget the rollbacks it records.') from err
    if not isinstance(entries, list) or not all(isinstance(e, dict) and 'index' in e for e in entries):
        fail(f'{path} is not a rollback manifest (a JSON list of entries with an index); restore it, or delete it '
             f'to forget the rollbacks it records.')
    return entries


def write_manifest(folder: str, entries: Sequence[Mapping[str, Any]]) -> None:
    """Replaces ``<folder>/rollbacks.json`` by ``entries``, atomically."""
    write_json(os.path.join(folder, MANIFEST), list(entries))


def entries_to_apply(file: Sequence[Mapping[str, Any]], known: Sequence[int], loaded_batch: int,
                     path: str) -> list[dict[str, Any]]:
    """The rollbacks whose data skip a run loaded at ``loaded_batch`` still has to make.

    Those of the manifest ``file`` that the loaded checkpoint's state does not ``know`` (by index): each was decided
    after that checkpoint was saved, so the run must be at its rollback checkpoint now.

    Raises:
        ConfigError: If one of them rolls back to another checkpoint: the load did not come from the save folder as
            the rollback left it (an explicit ``load_path``, a checkpoint moved back by hand, ``autoresume`` off).
    """
    todo = [dict(entry) for entry in file if entry['index'] not in set(known)]
    for entry in todo:
        if entry['checkpoint']['batch'] != loaded_batch:
            fail(f'{path}: rollback {entry["index"]} (onset step {entry["onset_step"]}) rolls back to '
                 f'{entry["checkpoint"]["name"]} (batch {entry["checkpoint"]["batch"]}), but the run loaded a '
                 f'checkpoint at batch {loaded_batch} that does not record it. Keep autoresume: true and no '
                 f'load_path override, so that the run resumes from the save folder as the rollback left it, or '
                 f'delete {path} to forget its rollbacks.')
    return todo
