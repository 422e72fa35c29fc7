"""Composer checkpoints on disk: which entries of a save folder are checkpoints, whether each is complete, and
moving a broken one aside.

A monolithic checkpoint is one file that ``torch.save`` writes as a zip archive, whose central directory (the index
of its records) comes last. A sharded one (FSDP ``state_dict_type: sharded``) is a folder of ``__<rank>_0.distcp``
shards and a ``.metadata`` index that ``torch.distributed.checkpoint`` writes (to a temporary name, then renamed)
only after every rank has written its shard. A write cut off by a kill therefore leaves a zip archive without its
central directory, or a folder without ``.metadata``; a damaged copy leaves shards shorter than their index says.
These are the checks here: they read the indexes, never the tensors, so they take milliseconds per checkpoint
whatever its size. Corruption inside a record of the right length (a flipped bit) is not detected, and
compressed or tar checkpoints (``.pt.lz4``, ``.tar.gz``) are taken as they are.

Which entries are checkpoints, and their order, comes from the ``CheckpointSaver``'s name template, as Composer's
own check for conflicting files reads it (``composer.utils.file_helpers.ensure_folder_has_no_conflicting_files``):
``ep{epoch}-ba{batch}-rank0.pt`` names a checkpoint and its time.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from dataclasses import dataclass
from typing import Optional

from composer.utils import is_compressed_pt, is_tar

from foundry_ext.core.composer_private import sharded_checkpoint_extents

log = logging.getLogger(__name__)

__all__ = ['Checkpoint', 'QUARANTINE', 'checkpoint_problem', 'find_checkpoints', 'move_aside', 'point_latest',
           'quarantine']

QUARANTINE = 'quarantine'  # subfolder of the save folder that broken checkpoints are moved into
# Composer's time placeholders in checkpoint names, most significant first for ordering.
_TIME_FIELDS = ('epoch', 'batch', 'sample', 'token', 'batch_in_epoch', 'sample_in_epoch', 'token_in_epoch')
_ORDER = ('batch', 'sample', 'token', 'epoch')


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint in a save folder.

    Attributes:
        name (str): Its name in the folder (a file, or a folder of shards).
        path (str): Its path.
        order (tuple[int, ...]): Its time counts from the name (batch first): larger is newer.
        problem (Optional[str]): Why it is not a complete checkpoint; None if it is.
    """
    name: str
    path: str
    order: tuple[int, ...]
    problem: Optional[str]


def _name_pattern(template: str) -> re.Pattern:
    """A regex for names made from ``template``: time placeholders become named groups of digits."""
    parts, seen = [], set()
    for literal, field in re.findall(r'([^{]*)(?:\{(\w+)\})?', template):
        parts.append(re.escape(literal))
        if not field:
            continue
        if field in seen:
            parts.append(f'(?P={field})')
        elif field in _TIME_FIELDS:
            parts.append(f'(?P<{field}>\\d+)')
            seen.add(field)
        else:  # a placeholder Composer fills in at save time that the guard cannot know: anything
            parts.append('.+?')
    return re.compile(''.join(parts) + '$')


def checkpoint_problem(path: str, sharded: bool) -> Optional[str]:
    """Why ``path`` is not a complete checkpoint, in words; None if it is (or cannot be checked cheaply)."""
    if sharded:
        return _sharded_problem(path)
    if not os.path.isfile(path):
        return 'not a file'
    if is_tar(path) or is_compressed_pt(path):
        return None
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        return f'not a complete torch.save archive ({err}; {size} bytes): its write was cut off or it is damaged'
    if not any(record.filename.endswith('data.pkl') for record in records):
        return 'a zip archive without the data.pkl record of a torch.save checkpoint'
    return None


def _sharded_problem(path: str) -> Optional[str]:
    if not os.path.isdir(path):
        return 'not a folder of shards'
    if not os.path.exists(os.path.join(path, '.metadata')):
        return 'no .metadata: the save was cut off before every rank had written its shard'
    try:
        extents = sharded_checkpoint_extents(path)
    except Exception as err:  # a damaged .metadata fails to unpickle in many ways
        return f'its .metadata cannot be read ({type(err).__name__}: {err})'
    for shard, size in sorted(extents.items()):
        shard_path = os.path.join(path, shard)
        if not os.path.isfile(shard_path):
            return f'shard {shard} is missing'
        if os.path.getsize(shard_path) < size:
            return f'shard {shard} has {os.path.getsize(shard_path)} bytes, .metadata says at least {size}'
    return None


def find_checkpoints(folder: str, template: str, sharded: bool) -> list[Checkpoint]:
    """The checkpoints in ``folder`` named by ``template`` (see :class:`~foundry_ext.core.composer_private.
    CheckpointNames`), oldest first, each checked with :func:`checkpoint_problem`. Symlinks are skipped."""
    pattern = _name_pattern(template)
    found = []
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        path = os.path.join(folder, name)
        match = pattern.match(name)
        if match is None or os.path.islink(path):
            continue
        times = match.groupdict()
        order = tuple(int(times[field]) for field in _ORDER if field in times)
        found.append(Checkpoint(name, path, order, checkpoint_problem(path, sharded)))
    return sorted(found, key=lambda c: (c.order, c.name))


def quarantine(checkpoint: Checkpoint, folder: str) -> str:
    """Moves ``checkpoint`` into ``<folder>/quarantine/`` (never over an earlier one there); returns its new path."""
    return move_aside(checkpoint, os.path.join(folder, QUARANTINE))


def move_aside(checkpoint: Checkpoint, target_folder: str) -> str:
    """Moves ``checkpoint`` into ``target_folder`` (created; never over an earlier one there); returns its new path.

    A subfolder of the save folder is out of Composer's sight: its conflict check and ``latest`` read only the save
    folder itself.
    """
    os.makedirs(target_folder, exist_ok=True)
    target, n = os.path.join(target_folder, checkpoint.name), 0
    while os.path.lexists(target):
        n += 1
        target = os.path.join(target_folder, f'{checkpoint.name}.{n}')
    os.rename(checkpoint.path, target)
    return target


def point_latest(folder: str, latest: str, target: Optional[str]) -> None:
    """Makes the symlink ``<folder>/<latest>`` point at ``target`` (a name in ``folder``), or removes it for None.

    The new link is made beside it and renamed over it, so the folder always has the old or the new link.
    """
    path = os.path.join(folder, latest)
    if target is None:
        if os.path.lexists(path):
            os.remove(path)
        return
    tmp = os.path.join(folder, f'.{latest}.tmp')
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(target, tmp)  # relative, as Composer's own
    os.replace(tmp, path)
