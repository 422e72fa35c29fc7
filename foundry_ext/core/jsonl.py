"""Writing JSON for people and other tools: one encoding of values, one JSON Lines writer.

Strict JSON has no NaN or infinities, yet a NaN loss must not vanish from a metrics file. Every foundry-ext output
file (``metrics.jsonl``, ``loss_events.jsonl``, reports, manifests) writes a non-finite float as the string
``'nan'``, ``'inf'`` or ``'-inf'``, which ``float()`` reads back. (Checkpointed state, which only foundry-ext reads,
keeps Python's ``NaN`` literals: :mod:`foundry_ext.core.checkpoint_state`.)

:class:`JSONLWriter` is the one JSON Lines writer: rank 0 appends one object per line; a run that starts from
batch 0 replaces what an earlier run left in the file (so no stale line of a longer earlier run survives behind
it), and a resumed run appends, so a reader keeps the last line per step.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

__all__ = ['JSONLWriter', 'dumps', 'to_json']


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
        self._file = open(path, 'a', encoding='utf-8')
        self._earlier_bytes = self._file.tell()  # what the file held before this writer opened it
        log.info(f'Writing {what} to {path}')

    def start_run(self, from_zero: bool, restarted: bool) -> None:
        """At the start of a fit: a run from batch 0 replaces the earlier run's lines, a resumed one appends.

        Args:
            from_zero (bool): The fit starts at batch 0.
            restarted (bool): It is ``fit(reset_time=True)`` on a trainer that already wrote here, so everything
                in the file belongs to the earlier run, not only what was there before this writer opened it.
        """
        if not from_zero:
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

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(dumps(record) + '\n')

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed

