"""A fault-injection callback: train a few batches at a multiple of the scheduled learning rate.

Provokes a real loss spike (Adam's second moments lag a sudden LR rise, so the step outgrows the stable
range), e.g. to check that ``loss_spike_monitor`` sees and classifies it. Not registered as an entry point;
:func:`register_lr_jump` registers it as ``lr_jump`` for a Foundry YAML::

    callbacks:
      lr_jump: {start: 300, steps: 5, factor: 20.0}
"""

from __future__ import annotations

import logging

from composer.core import Callback, State
from composer.loggers import Logger

from foundry_ext.core.errors import positive, whole

log = logging.getLogger(__name__)

__all__ = ['LRJump', 'register_lr_jump']


class LRJump(Callback):
    """Multiplies every parameter group's LR by ``factor`` for the batches ``start <= batch < start + steps``.

    The jump ends by itself: at ``BATCH_END`` a group whose LR no scheduler has set again since (no scheduler, or
    one stepped per epoch) gets its scheduled LR back. A Composer schedule sets the LR from scratch every batch.

    Args:
        start (int): First batch (``state.timestamp.batch`` when it starts) trained at the raised LR.
        steps (int): Number of batches trained at the raised LR.
        factor (float): LR multiplier.
    """

    def __init__(self, start: int, steps: int = 1, factor: float = 10.0) -> None:
        self.start = whole(start, 'callbacks.lr_jump.start', 0)
        self.steps = whole(steps, 'callbacks.lr_jump.steps', 1)
        self.factor = positive(factor, 'callbacks.lr_jump.factor')
        self._scheduled: list[float] = []  # the groups' LRs before this batch's jump

    def batch_start(self, state: State, logger: Logger) -> None:
        batch = int(state.timestamp.batch)
        if not self.start <= batch < self.start + self.steps:
            return
        groups = _param_groups(state)
        self._scheduled = [group['lr'] for group in groups]
        for group in groups:
            group['lr'] *= self.factor
        log.warning('lr_jump: training batch %d at %g x the scheduled LR.', batch, self.factor)

    def batch_end(self, state: State, logger: Logger) -> None:
        for group, lr in zip(_param_groups(state), self._scheduled):
            if group['lr'] == lr * self.factor:  # still the raised value: no scheduler stepped in between
                group['lr'] = lr
        self._scheduled = []


def _param_groups(state: State) -> list[dict]:
    return [group for optimizer in state.optimizers for group in optimizer.param_groups]


def register_lr_jump() -> None:
    """Registers :class:`LRJump` as ``lr_jump`` in Foundry's callback registry (it has no entry point)."""
    from llmfoundry.registry import callbacks
    if 'lr_jump' not in callbacks.get_all():
        callbacks.register('lr_jump', func=LRJump)
