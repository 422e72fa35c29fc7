"""Writing JSON for people and other tools: one encoding of values, one JSON Lines writer.

Strict JSON has no NaN or infinities, yet a NaN loss must not vanish from a metrics file. Every foundry-ext output
file (``metrics.jsonl``, ``loss_events.jsonl``, reports, manifests) writes a non-finite float as the string
``'nan'``, ``'inf'`` or ``'-inf'``, which ``float()`` reads back. (Checkpointed state, which only foundry-ext reads,
keeps Python's ``NaN`` literals: :mod:`foundry_ext.core.checkpoint_state`.)

:class:`JSONLWriter` is the one JSON Lines writer: rank 0 appends one object per line; a run that starts from
batch 0 replaces what an earlier run left in the file (so no stale line of a longer earlier run survives behind
it), and a resumed run appends, so a reader keeps the last line per step.

Durability (a training process can be killed at any moment): every line reaches the operating system with the
``write`` that adds it, in one system call, so a killed process loses no line it wrote and leaves no half line;
:func:`sync_open_writers` also puts every open file on disk (``fsync``), which the ``checkpoint_guard`` callback
does before each checkpoint, so a checkpoint never outlives the lines logged before it, even on a machine crash.
A whole file that must never be seen half written (a manifest, a status record) is replaced atomically by
:func:`write_json` or :meth:`JSONLWriter.replace`: a temporary file beside it, ``fsync``, then a rename.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

__all__ = ['JSONLWriter', 'dumps', 'sync_open_writers', 'to_json', 'write_json']


def to_json(value: Any) -> Any:
    """``value`` as plain JSON data: one-element tensors and arrays as numbers, others as lists, mappings with string
    keys, non-finite floats as ``'nan'``/``'inf'``/``'-inf'``."""
    if hasattr(value, 'tolist') and not isinstance(value, (str, bytes)):  # torch tensors, numpy arrays and scalars
        size = value.numel() if hasattr(value, 'numel') else getattr(value, 'size', 1)
        value = value.item() if size == 1 else value.tolist()
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`to_json` (``value``); an unknown type is written as its text rather than failing."""
    return json.dumps(to_json(value), default=str, allow_nan=False, **kwargs)


def _write_atomically(path: str, text: str) -> None:
    """Replaces ``path`` by ``text`` all at once: a reader (or a relaunch after a kill) sees the old or the new file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    """Puts a rename in ``folder`` on disk (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str, value: Any) -> None:
    """Writes ``value`` (:func:`dumps`, indented) to ``path`` atomically (temporary file, ``fsync``, rename)."""
    _write_atomically(path, dumps(value, indent=2) + '\n')


_OPEN_WRITERS: 'weakref.WeakSet[JSONLWriter]' = weakref.WeakSet()


def sync_open_writers() -> None:
    """Puts every open :class:`JSONLWriter`'s file on disk (``fsync``)."""
    for writer in list(_OPEN_WRITERS):
        writer.sync()


class JSONLWriter:
    """Appends JSON objects to ``path``, one per line.

    Args:
        path (str): The file; its folder is created.
        what (str): What the file holds, for the log (e.g. ``'metrics'``).
    """

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._open()
        self._earlier_bytes = self._file.tell()  # what the file held before this writer opened it
        _OPEN_WRITERS.add(self)
        log.info(f'Writing {what} to {path}')

    def _open(self) -> None:
        # Line buffering: each line goes to the OS in one write() with the newline, so a kill loses nothing.
        self._file = open(self.path, 'a', encoding='utf-8', buffering=1)

    def start_run(self, from_zero: bool, restarted: bool) -> None:
        """At the start of a fit: a run from batch 0 replaces the earlier run's lines, a resumed one appends.

        Args:
            from_zero (bool): The fit starts at batch 0.
            restarted (bool): It is ``fit(reset_time=True)`` on a trainer that already wrote here, so everything
                in the file belongs to the earlier run, not only what was there before this writer opened it.
        """
        if not from_zero:
            self._drop_partial_line()
            return
        self._file.flush()
        earlier = self._file.tell() if restarted else self._earlier_bytes
        self._earlier_bytes = 0
        if earlier == 0:
            return
        with open(self.path, 'r+', encoding='utf-8') as f:
            f.seek(earlier)
            ours = f.read()
            f.seek(0)
            f.write(ours)
            f.truncate()
        log.warning(f'{self.path} held the {self.what} of an earlier run; this run starts at batch 0, so they were '
                    f'replaced. Give each run its own file to keep them.')

    def _drop_partial_line(self) -> None:
        """Cuts an unfinished last line (a write cut off by a full disk or a killed copy) before appending."""
        self._file.flush()
        with open(self.path, 'rb+') as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(max(0, size - (1 << 20)))
            tail = f.read()
            if tail.endswith(b'\n'):
                return
            cut = size - len(tail) + tail.rfind(b'\n') + 1
            f.truncate(cut)
        log.warning(f'{self.path} ended in an unfinished line ({size - cut} bytes), dropped before resuming.')

    def replace(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Replaces the whole file by ``records``, atomically; later :meth:`write` calls append to it."""
        self._file.close()
        _write_atomically(self.path, ''.join(dumps(record) + '\n' for record in records))
        self._open()
        self._earlier_bytes = 0

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(dumps(record) + '\n')

    def records(self) -> list[dict[str, Any]]:
        """The objects of the file's complete lines, in order (an unfinished last line is not one)."""
        self._file.flush()
        with open(self.path, encoding='utf-8') as f:
            lines = f.read().split('\n')[:-1]
        return [json.loads(line) for line in lines if line.strip()]

    def flush(self) -> None:
        self._file.flush()

    def sync(self) -> None:
        """Flushes and puts the file on disk (``fsync``)."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
        _OPEN_WRITERS.discard(self)

    @property
    def closed(self) -> bool:
        return self._file.closed

