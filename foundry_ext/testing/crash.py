"""Fault injection: end the training process at a chosen moment, as a preemption, a dead node or a bug would.

Not registered as an entry point; :func:`register_crash` registers :class:`Crash` as ``crash`` for a Foundry YAML::

    callbacks:
      crash: {plan: /tmp/run/crash_plan.json}

The plan is a JSON list of crash points, used in order, each once: every launch arms the first point not yet used
and records it as used (in ``<plan>.used``) just before it fires. So the same command, relaunched after each crash
as a supervisor would, runs into the next point, and finally through. A point::

    {"event": "batch_checkpoint", "batch": 12, "how": "cut_write", "bytes": 500000, "rank": 0}

* ``event`` (a Composer event name) and ``batch`` (``state.timestamp.batch`` then; omit for any): when.
* ``how``: ``kill`` sends SIGKILL to the process group (the launcher and every rank, as a preemption does);
  ``cut_write`` lets the process write files only up to ``bytes`` bytes from then on: the kernel kills it
  (SIGXFSZ) in the middle of the next write that goes past, e.g. the checkpoint Composer saves right after this
  event, which is left exactly ``bytes`` long; ``raise`` raises :class:`InjectedCrash` (in-process tests).
* ``rank``: the global rank that crashes (default 0); the other ranks go on until the launcher stops them.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
from typing import Any, Optional

from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.utils import dist

from foundry_ext.core.errors import ConfigError, choice, whole
from foundry_ext.core.jsonl import write_json

log = logging.getLogger(__name__)

__all__ = ['Crash', 'InjectedCrash', 'register_crash']

HOWS = ('kill', 'cut_write', 'raise')


class InjectedCrash(RuntimeError):
    """The crash of a ``how: raise`` point: stands for a bug (nothing treats it as bad input)."""


class Crash(Callback):
    """Crashes the process at the next unused point of a plan (see the module docstring).

    Args:
        plan (str): Path of the plan, a JSON list of points.
    """

    def __init__(self, plan: str) -> None:
        self.plan = plan
        with open(plan) as f:
            points = json.load(f)
        if not isinstance(points, list):
            raise ConfigError(f'callbacks.crash.plan={plan!r} must hold a JSON list of crash points.')
        used_path = f'{plan}.used'
        self._used = 0
        if os.path.exists(used_path):
            with open(used_path) as f:
                self._used = json.load(f)
        self.point: Optional[dict[str, Any]] = None
        if self._used < len(points):
            self.point = _check_point(points[self._used], f'callbacks.crash.plan[{self._used}]')

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        point = self.point
        if point is None or event.value != point['event'] or dist.get_global_rank() != point.get('rank', 0):
            return
        if point.get('batch') is not None and int(state.timestamp.batch) != point['batch']:
            return
        self.point = None
        write_json(f'{self.plan}.used', self._used + 1)
        log.warning('crash: %s at %s, batch %d', point['how'], event.value, int(state.timestamp.batch))
        if point['how'] == 'raise':
            raise InjectedCrash(f'{event.value} at batch {int(state.timestamp.batch)}')
        if point['how'] == 'kill':
            os.killpg(os.getpgid(0), signal.SIGKILL)
        # Python ignores SIGXFSZ (a write past the limit would only fail); the default action kills the process.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_FSIZE, (point['bytes'], point['bytes']))


def _check_point(point: Any, where: str) -> dict[str, Any]:
    if not isinstance(point, dict):
        raise ConfigError(f'{where}={point!r} must be a mapping with event, how and optionally batch, bytes, rank.')
    try:
        Event(point.get('event'))
    except ValueError:
        raise ConfigError(f'{where}.event={point.get("event")!r} is not a Composer event, e.g. batch_checkpoint.') \
            from None
    choice(point.get('how'), f'{where}.how', HOWS)
    if point.get('batch') is not None:
        whole(point['batch'], f'{where}.batch')
    whole(point.get('rank', 0), f'{where}.rank')
    if point['how'] == 'cut_write':
        whole(point.get('bytes'), f'{where}.bytes', 1)
    return point


def register_crash() -> None:
    """Registers :class:`Crash` as ``crash`` in Foundry's callback registry (it has no entry point)."""
    from llmfoundry.registry import callbacks
    if 'crash' not in callbacks.get_all():
        callbacks.register('crash', func=Crash)
