"""Finding the ComposerScheduler behind the Trainer's compiled ``LambdaLR``.

Composer turns a ``ComposerScheduler`` into a ``torch.optim.lr_scheduler.LambdaLR`` whose lambda closes
over it (``composer.optim.scheduler.compile_composer_scheduler``); the scheduler object itself is not kept
on the ``State``. Callbacks that need the schedule's structure (where its decays end, what it will do next)
recover it from that closure, with the ``scale_schedule_ratio`` it is called with.
"""

from __future__ import annotations

import inspect
import logging
from typing import NamedTuple, Optional

from composer.core import State
from composer.optim import ComposerScheduler
from torch.optim.lr_scheduler import LambdaLR

log = logging.getLogger(__name__)

__all__ = ['CompiledSchedule', 'compiled_schedule_of']


class CompiledSchedule(NamedTuple):
    """A run's ``ComposerScheduler`` and the ``scale_schedule_ratio`` the Trainer calls it with."""
    scheduler: ComposerScheduler
    ssr: float


def compiled_schedule_of(state: State) -> Optional[CompiledSchedule]:
    """Returns the run's ``ComposerScheduler`` and its ``ssr``, or None if the run has none (or a PyTorch one)."""
    for compiled in state.schedulers:
        if not isinstance(compiled, LambdaLR):
            continue
        for fn in compiled.lr_lambdas:
            # The closure variables' names in compile_composer_scheduler (Composer 0.32).
            nonlocals = inspect.getclosurevars(fn).nonlocals
            scheduler = nonlocals.get('scheduler')
            if isinstance(scheduler, ComposerScheduler):
                return CompiledSchedule(scheduler, float(nonlocals.get('ssr', 1.0)))
    return None
