"""Finding the ComposerScheduler behind the Trainer's compiled ``LambdaLR``.

Composer turns a ``ComposerScheduler`` into a ``torch.optim.lr_scheduler.LambdaLR`` whose lambda closes
over it (``composer.optim.scheduler.compile_composer_scheduler``); the scheduler object itself is not kept
on the ``State``. Callbacks that need the schedule's structure (where its decays end, what it will do next)
recover it from that closure, with the ``scale_schedule_ratio`` it is called with.
"""

from __future__ import annotations

import logging
from typing import NamedTuple, Optional

from composer.core import State
from composer.optim import ComposerScheduler
from torch.optim.lr_scheduler import LambdaLR

from foundry_ext.core.composer_private import composer_scheduler_of

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
        found = composer_scheduler_of(compiled)
        if found is not None:
            return CompiledSchedule(*found)
    return None
