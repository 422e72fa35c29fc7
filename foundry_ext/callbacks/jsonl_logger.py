"""A logger destination that appends every logged metric to a JSON Lines file.

Each line is one ``log_metrics`` call: ``{"step": 12, "loss/train/total": 5.51, ...}``. After a
resume, steps between the last checkpoint and the interruption are logged again; readers keep the
last line for a step (:func:`foundry_ext.core.metrics_io.read_metric` does). A run that starts
from batch 0 (also a ``fit(reset_time=True)`` on the same trainer) replaces what an earlier run left in the
file (with a warning), so that no stale step of a longer earlier run survives behind it. Only global rank 0
writes. Registered in ``llmfoundry_loggers`` as ``jsonl``::

    loggers:
      jsonl: {path: runs/{run_name}/metrics.jsonl}
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
import torch
from composer.core import State
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist, format_name_with_dist, parse_uri

from foundry_ext.core.errors import ConfigError, whole
from foundry_ext.core.lifecycle import FitPhase, RunLifecycle

log = logging.getLogger(__name__)

__all__ = ['JSONLLogger']


def _to_json(value: Any) -> Any:
    if isinstance(value, torch.Tensor):  # one element (Composer's losses have shape (1,)) or a list
        value = value.item() if value.numel() == 1 else value.tolist()
    elif isinstance(value, (np.ndarray, np.generic)):
        value = value.item() if value.size == 1 else value.tolist()
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping):  # e.g. a torchmetrics ClasswiseWrapper's per-class values
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # 'nan'/'inf': JSON has no literal for them, and a NaN loss must not vanish
    return value


class JSONLLogger(LoggerDestination):
    """Appends metrics to ``path`` as JSON Lines.

    Args:
        path (str): Output file; ``{run_name}`` and other Composer placeholders are filled in at ``init``.
        flush_interval (int): Flush to disk every this many lines (and always at ``fit_end``).
    """

    def __init__(self, path: str = 'runs/{run_name}/metrics.jsonl', flush_interval: int = 50) -> None:
        whole(flush_interval, 'loggers.jsonl.flush_interval', 1)
        if parse_uri(path)[0]:
            raise ConfigError(f'loggers.jsonl.path={path!r} is remote; the logger writes a local file. Set a local '
                              f'path (and copy it to object storage after the run).')
        self.path_template = path
        self.flush_interval = flush_interval
        self.path: Optional[str] = None
        self._file = None
        self._unflushed = 0
        self._earlier_bytes = 0  # what the file held before this logger opened it
        self._lifecycle = RunLifecycle()

    def init(self, state: State, logger: Logger) -> None:
        del logger
        self.path = format_name_with_dist(self.path_template, state.run_name)
        if dist.get_global_rank() == 0:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._file = open(self.path, 'a', encoding='utf-8')
            self._earlier_bytes = self._file.tell()
            log.info(f'Writing metrics to {self.path}')

    def after_load(self, state: State, logger: Logger) -> None:
        del logger
        self._lifecycle.after_load(state)

    def fit_start(self, state: State, logger: Logger) -> None:
        del logger
        start = self._lifecycle.fit_start(state)
        if self._file is None or not start.from_zero:
            return  # a resume, or a later fit that continues the run, appends
        # A new run from batch 0: an earlier run's lines would outlive ours at every step this run does not reach.
        # That is what the file held before this logger opened it or, at fit(reset_time=True), all of it.
        self._file.flush()
        earlier = self._file.tell() if start.phase is FitPhase.RESTARTED else self._earlier_bytes
        if earlier == 0:
            return
        with open(self.path, 'r+', encoding='utf-8') as f:
            f.seek(earlier)
            ours = f.read()
            f.seek(0)
            f.write(ours)
            f.truncate()
        log.warning(f'{self.path} held the metrics of an earlier run; this run starts at batch 0, so they were '
                    f'replaced. Give each run its own loggers.jsonl.path to keep them.')
        self._earlier_bytes = 0

    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        if self._file is None:
            return
        row = {'step': step, **{k: _to_json(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row, default=str) + '\n')  # an unknown type as text, not a crashed run
        self._unflushed += 1
        if self._unflushed >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._unflushed = 0

    def fit_end(self, state: State, logger: Logger) -> None:
        self.flush()

    def close(self, state: State, logger: Logger) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
