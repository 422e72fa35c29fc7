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
from composer.optim import ComposerScheduler, ConstantWithWarmupScheduler, LinearWithWarmupScheduler
from torch.optim.lr_scheduler import LambdaLR

from foundry_ext.core.composer_private import composer_scheduler_of

log = logging.getLogger(__name__)

__all__ = ['CompiledSchedule', 'compiled_schedule_of', 'peak_multiplier']


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


def peak_multiplier(scheduler: Optional[ComposerScheduler]) -> float:
    """The largest LR multiplier of a schedule: Composer's ``linear_decay_with_warmup`` peaks at ``alpha_i`` and
    ``constant_with_warmup`` at ``alpha``; the others (cosine, WSD and the budget schedules) peak at 1."""
    if isinstance(scheduler, LinearWithWarmupScheduler):
        return float(scheduler.alpha_i)
    if isinstance(scheduler, ConstantWithWarmupScheduler):
        return float(scheduler.alpha)
    return 1.0
