r"""Per-step learning rates rebuilt from logged ones, and the LR areas the loss laws are written in.

Steps follow Composer: update :math:`\tau` is the optimizer step of the batch at timestamp :math:`\tau`, and
``lr_monitor`` logs its LR :math:`\eta_\tau` at step :math:`\tau`. A loss logged at step :math:`s` (the training
loss of batch :math:`s`, or an evaluation after :math:`s` batches) is measured on the weights after updates
:math:`0 \ldots s-1`, so the laws see the *area before* :math:`s`:

.. math::

    S(s) = \sum_{\tau < s} \eta_\tau .

Logged LRs are interpolated linearly to every step between two logged steps. Before the first logged step the LR
is assumed to rise linearly from 0 at step 0 to the first logged value (a linear warmup from zero, what Composer,
LLM-Foundry and most public runs use; ``lr_monitor`` itself logs from step 1). After the last logged step the last
value is held. A run that only logs from late on (a branch off a main run, a cooldown export) gets its early
history from the run it started from: :meth:`LRSchedule.after`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from foundry_ext.core.errors import fail

log = logging.getLogger(__name__)

__all__ = ['MAX_STEPS', 'LRSchedule', 'compress_knots']

# More updates than any training run takes: steps counted in tokens or samples (and arrays of gigabytes).
MAX_STEPS = 20_000_000


@dataclass(frozen=True)
class LRSchedule:
    """The LR of every update ``0 .. n-1`` of one run.

    Attributes:
        lr (np.ndarray): ``lr[tau]`` is the LR of update ``tau``, in the run's own units.
    """

    lr: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, 'lr', np.asarray(self.lr, dtype=float))

    @classmethod
    def from_logged(cls, steps: np.ndarray, values: np.ndarray, end: Optional[int] = None,
                    source: str = 'the run') -> 'LRSchedule':
        """Rebuilds the per-step LR from logged ``(step, lr)`` pairs.

        Args:
            steps (np.ndarray): Logged steps, increasing, >= 0.
            values (np.ndarray): The LR logged at each step.
            end (int, optional): Number of updates to rebuild (the run's final step); default the last logged
                step + 1, so the last logged LR is the last update's.
            source (str): The run or file, for the error on more than ``MAX_STEPS`` updates.
        """
        steps = np.asarray(steps, dtype=float)
        values = np.asarray(values, dtype=float)
        n = int(steps[-1]) + 1 if end is None else int(end)
        if n > MAX_STEPS:
            fail(f'{source}: its steps go up to {n - 1:,}, more optimizer steps than any training run takes (at most '
                 f'{MAX_STEPS:,} here). Are they tokens or samples? The laws count steps (batches): divide by the '
                 f'tokens or samples per batch, or log against the batch count.')
        tau = np.arange(n, dtype=float)
        if steps[0] > 0:  # the assumed linear warmup from zero
            steps, values = np.concatenate([[0.0], steps]), np.concatenate([[0.0], values])
        return cls(np.interp(tau, steps, values))

    @property
    def n(self) -> int:
        """Number of updates."""
        return int(self.lr.size)

    @property
    def cumulative(self) -> np.ndarray:
        """``S(s)`` for ``s = 0 .. n``: the LR area before step ``s``."""
        return np.concatenate([[0.0], np.cumsum(self.lr)])

    def area(self, steps: np.ndarray) -> np.ndarray:
        """``S(s)`` at (possibly fractional) steps, linear between whole steps."""
        return np.interp(np.asarray(steps, dtype=float), np.arange(self.n + 1, dtype=float), self.cumulative)

    @property
    def peak_step(self) -> int:
        """The first update at the largest LR: where the warmup ends and the laws start counting LR changes."""
        return int(np.argmax(self.lr)) if self.n else 0

    @property
    def peak(self) -> float:
        """The largest LR."""
        return float(self.lr.max()) if self.n else 0.0

    def decayed_share(self, steps: np.ndarray) -> np.ndarray:
        r"""The share of the LR area at the peak given up by decaying, from the peak update :math:`p` to each step:

        .. math::

            d(t) = 1 - \frac{S(t) - S(p)}{(t - p)\,\eta_{max}}

        0 at a constant LR (and at or before :math:`p`), 0.1 at the end of a linear cooldown to zero over the last
        20%, 0.5 at the end of a linear or cosine decay to zero over the whole run.
        """
        steps = np.asarray(steps, dtype=float)
        span = steps - self.peak_step
        given_up = span * self.peak - (self.area(steps) - self.area(np.array([self.peak_step]))[0])
        with np.errstate(invalid='ignore', divide='ignore'):
            return np.where(span > 0, given_up / np.where(span > 0, span * self.peak, 1.0), 0.0)

    def after(self, prefix: 'LRSchedule', start: int) -> 'LRSchedule':
        """This schedule from update ``start`` on, with ``prefix``'s LRs before it (a branch joined to its main run)."""
        if prefix.n < start:
            raise ValueError(f'the prefix has {prefix.n} updates, fewer than the {start} needed')
        return LRSchedule(np.concatenate([prefix.lr[:start], self.lr[start:]]))

    def scaled(self, factor: float) -> 'LRSchedule':
        """The same schedule times ``factor`` (e.g. divided by a reference LR)."""
        return LRSchedule(self.lr * factor)


def compress_knots(schedule: LRSchedule, tolerance: float = 1e-4) -> list[list[float]]:
    """``[[step, lr], ...]`` knots whose linear interpolation reproduces ``schedule`` within ``tolerance`` x its peak.

    A constant or WSD schedule needs a handful of knots, a cosine a few hundred: small enough for a law file.
    Greedy: each segment is extended while every step it spans stays within the tolerance.
    """
    lr = schedule.lr
    if lr.size == 0:
        return []
    limit = tolerance * max(schedule.peak, 1e-300)
    knots = [0]
    start = 0
    while start < lr.size - 1:
        # Grow the segment geometrically, then bisect back to the longest one that fits.
        length, good = 1, 1
        while start + length < lr.size and _fits(lr, start, start + length, limit):
            good = length
            length *= 2
        lo, hi = good, min(length, lr.size - 1 - start)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _fits(lr, start, start + mid, limit):
                lo = mid
            else:
                hi = mid - 1
        start += max(lo, 1)
        knots.append(start)
    return [[int(k), float(lr[k])] for k in knots]


def _fits(lr: np.ndarray, a: int, b: int, limit: float) -> bool:
    line = np.linspace(lr[a], lr[b], b - a + 1)
    return bool(np.max(np.abs(lr[a:b + 1] - line)) <= limit)
