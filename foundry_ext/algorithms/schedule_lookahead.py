r"""What the run's schedule will do next, read from Composer's compiled scheduler: the pieces of ``resume_guard``
that look ahead (future timestamps, the schedule one batch back) and the linear rewarm ramp it writes.

Composer compiles every ``ComposerScheduler`` into one ``LambdaLR`` whose lambda reads ``state.timestamp``
(:func:`foundry_ext.core.composer_private.lambda_lrs_at`); these functions advance or rewind a copy of the timestamp
as the training loop would and ask that lambda.

Which LR a batch trains at. Composer steps the scheduler after every batch, *before* the timestamp advances,
so at any point between batches the optimizer's ``lr`` is the LR of the next batch, and the batch at
timestamp :math:`k \ge 1` trains at ``base_lr`` times the multiplier evaluated at timestamp :math:`k-1`. After
a resume the first batch trains at the LR restored from the checkpoint; the resumed schedule takes over from
the second. The guard's *LR plan* follows exactly this: ``plan[j]`` is the LR of batch :math:`s+j`,
``plan[0]`` being the optimizer's current ``lr`` and ``plan[j >= 1]`` the compiled ``LambdaLR``'s lambda
evaluated on the timestamp advanced :math:`j-1` batches (set on the ``State`` for the call and restored).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Sequence

from composer.core import State, Timestamp
from torch.optim.lr_scheduler import LambdaLR

from foundry_ext.core.composer_private import lambda_lrs_at

log = logging.getLogger(__name__)

__all__ = ['Ramp', 'continues_restored_lr', 'future_timestamps', 'lr_ratio', 'per_batch', 'same_lr']

# LRs within this relative distance are the same LR (recomputation noise, float printing in YAMLs).
_REL_TOL = 1e-6


def per_batch(timestamp: Timestamp) -> tuple[int, int]:
    """The run's mean samples and tokens per batch so far (0 before the first batch)."""
    batches = int(timestamp.batch)
    return (int(timestamp.sample) // batches, int(timestamp.token) // batches) if batches else (0, 0)


def same_lr(a: float, b: float) -> bool:
    return abs(a - b) <= _REL_TOL * max(abs(a), abs(b))


def lr_ratio(new: float, old: float) -> float:
    if old > 0:
        return new / old
    return 1.0 if new <= 0 else math.inf


@dataclasses.dataclass
class Ramp:
    """A linear rewarm from ``ref`` (per group) to the scheduled LR over ``steps`` batches from ``start``."""
    start: int
    steps: int
    ref: list[float]

    def lr(self, group: int, scheduled: float, batch: int) -> float:
        ref = self.ref[group]
        if scheduled <= ref or batch - self.start >= self.steps:
            return scheduled
        return ref + (scheduled - ref) * (batch - self.start) / self.steps

    def done(self, batch: int) -> bool:
        return batch - self.start >= self.steps


def future_timestamps(state: State, count: int) -> list[Timestamp]:
    """The timestamp now and after each of the next ``count - 1`` batches, advanced as the training loop does.

    Samples and tokens per batch are the run's averages so far (0 before the first batch).
    """
    timestamp = state.timestamp
    samples, tokens = per_batch(timestamp)
    epoch_length = int(state.dataloader_len) if state.dataloader_len is not None else None
    out = []
    for _ in range(count):
        out.append(timestamp)
        timestamp = timestamp.to_next_batch(samples=samples, tokens=tokens)
        if epoch_length and int(timestamp.batch_in_epoch) >= epoch_length:
            timestamp = timestamp.to_next_epoch()
    return out


def continues_restored_lr(state: State, restored_lr: Sequence[float]) -> bool:
    """Whether the resumed schedule, at the batch before the resume, gives the LR the checkpoint restored.

    That LR is what the checkpointed run's schedule set there; the first resumed batch trains at it whatever
    the new schedule is, so only the schedule's value one batch earlier tells whether it is the same one.
    """
    if len(state.schedulers) != 1 or not isinstance(state.schedulers[0], LambdaLR):
        return not state.schedulers  # no scheduler: a constant LR; another torch scheduler: unknown
    timestamp = state.timestamp
    samples, tokens = per_batch(timestamp)
    before = timestamp.copy(
        epoch=int(timestamp.epoch) - (int(timestamp.epoch) > 0 and int(timestamp.batch_in_epoch) == 0),
        batch=int(timestamp.batch) - 1, sample=int(timestamp.sample) - samples, token=int(timestamp.token) - tokens,
        batch_in_epoch=max(0, int(timestamp.batch_in_epoch) - 1),
        sample_in_epoch=max(0, int(timestamp.sample_in_epoch) - samples),
        token_in_epoch=max(0, int(timestamp.token_in_epoch) - tokens))
    lrs = lambda_lrs_at(state, [before], 0)
    return all(same_lr(lr[0], restored) for lr, restored in zip(lrs, restored_lr))
