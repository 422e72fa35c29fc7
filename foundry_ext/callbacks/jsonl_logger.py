"""A logger destination that appends every logged metric to a JSON Lines file.

Each line is one ``log_metrics`` call: ``{"step": 12, "loss/train/total": 5.51, ...}``, written to the file
at once (:class:`~foundry_ext.core.jsonl.JSONLWriter`), so a killed run loses no line it logged. After a
resume, steps between the last checkpoint and the interruption are logged again (an unfinished last line is
dropped first); readers keep the last line for a step (:func:`foundry_ext.core.metrics_io.read_metric` does).
A run that starts from batch 0 (also a ``fit(reset_time=True)`` on the same trainer) replaces what an earlier
run left in the file (with a warning), so that no stale step of a longer earlier run survives behind it. Only
global rank 0 writes. Registered in ``llmfoundry_loggers`` as ``jsonl``::

    loggers:
      jsonl: {path: runs/{run_name}/metrics.jsonl}
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from composer.core import State
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist, format_name_with_dist, parse_uri

from foundry_ext.core.errors import ConfigError, whole
from foundry_ext.core.jsonl import JSONLWriter
from foundry_ext.core.lifecycle import FitPhase, RunLifecycle

log = logging.getLogger(__name__)

__all__ = ['JSONLLogger']


class JSONLLogger(LoggerDestination):
    """Appends metrics to ``path`` as JSON Lines.

    Args:
        path (str): Output file; ``{run_name}`` and other Composer placeholders are filled in at ``init``.
        flush_interval (int, optional): Accepted for recipes written for foundry-ext 0.1, and ignored with a warning:
            every line now reaches the file as it is logged.
    """

    def __init__(self, path: str = 'runs/{run_name}/metrics.jsonl', flush_interval: Optional[int] = None) -> None:
        if flush_interval is not None:
            whole(flush_interval, 'loggers.jsonl.flush_interval', 1)
            log.warning(f'loggers.jsonl.flush_interval={flush_interval} has no effect any more: every line is written '
                        f'through to the file as it is logged, so a kill loses none. Remove the key.')
        if parse_uri(path)[0]:
            raise ConfigError(f'loggers.jsonl.path={path!r} is remote; the logger writes a local file. Set a local '
                              f'path (and copy it to object storage after the run).')
        self.path_template = path
        self.path: Optional[str] = None
        self._writer: Optional[JSONLWriter] = None  # rank 0 only
        self._lifecycle = RunLifecycle()

    def init(self, state: State, logger: Logger) -> None:
        del logger
        self.path = format_name_with_dist(self.path_template, state.run_name)
        if dist.get_global_rank() == 0:
            self._writer = JSONLWriter(self.path, 'metrics')

    def after_load(self, state: State, logger: Logger) -> None:
        del logger
        self._lifecycle.after_load(state)

    def fit_start(self, state: State, logger: Logger) -> None:
        del logger
        start = self._lifecycle.fit_start(state)
        if self._writer is not None:
            self._writer.start_run(start.from_zero, start.phase is FitPhase.RESTARTED)

    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        if self._writer is None:
            return
        self._writer.write({'step': step, **metrics})

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self, state: State, logger: Logger) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
