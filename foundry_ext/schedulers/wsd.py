r"""Warmup-Stable-Decay (WSD): a learning-rate schedule whose shape is set in absolute time.

Which LR a batch trains at. Composer compiles the scheduler into a ``LambdaLR`` that evaluates
:math:`\alpha` once when the Trainer is built and then once after every batch, *before* the timestamp
advances. So the batch that starts at ``state.timestamp.batch == k`` trains at :math:`\alpha(k-1)` for
:math:`k \ge 1`, and the first batch (:math:`k = 0`) at :math:`\alpha(0)`: :math:`\alpha(0)` is applied
twice and the LR lags the timestamp by one batch. ``lr_monitor`` logs, at step :math:`k`, the LR the
batch at timestamp :math:`k` will train with, i.e. :math:`\alpha(k-1)`. The same holds for every
``ComposerScheduler``, Composer's own included.
"""

from __future__ import annotations

import logging
from typing import Optional

from composer.core import State, Time, TimeUnit
from composer.optim import ComposerScheduler

from foundry_ext.core.errors import ConfigError
from foundry_ext.schedulers.shapes import (DECAY_SHAPES, WARMUP_SHAPES, check_multiplier, check_shape, decay_value,
                                           warmup_value)
from foundry_ext.schedulers.time_spec import (TimeLike, check_same_unit, current_time, max_duration_is_final,
                                              parse_time, resolve_max_duration, resolve_time)

log = logging.getLogger(__name__)

__all__ = ['WSDScheduler', 'wsd_multiplier']


def wsd_multiplier(
    t: int,
    warmup: int,
    decay_start: int,
    decay: int,
    alpha_i: float,
    alpha_f: float,
    warmup_shape: str,
    decay_shape: str,
) -> float:
    """The WSD multiplier at time ``t``; all times are integer counts in one unit."""
    if t < warmup:
        return warmup_value(warmup_shape, t / warmup, alpha_i)
    if t < decay_start:
        return 1.0
    if t < decay_start + decay:
        return decay_value(decay_shape, (t - decay_start) / decay, alpha_f)
    return alpha_f


class WSDScheduler(ComposerScheduler):
    r"""Warmup-Stable-Decay: linear (or other) warmup, a flat peak, and a decay whose length is absolute.

    With :math:`t` the elapsed time in the schedule's unit, :math:`t_w` = ``t_warmup``,
    :math:`t_s` = ``t_decay_start`` and :math:`t_d` = ``t_decay``:

    .. math::

        \alpha(t) =
        \begin{cases}
            \alpha_i + (1 - \alpha_i)\, f(t / t_w) & t < t_w \\
            1 & t_w \le t < t_s \\
            \alpha_f + (1 - \alpha_f)\, g\big((t - t_s) / t_d\big) & t_s \le t < t_s + t_d \\
            \alpha_f & t \ge t_s + t_d
        \end{cases}

    where :math:`f` is ``warmup_shape`` and :math:`g` is ``decay_shape``
    (see :mod:`foundry_ext.schedulers.shapes`). The LR is :math:`\alpha(t)` times ``optimizer.lr``.

    Up to :math:`t_s` the multiplier does not depend on ``max_duration``; by default
    :math:`t_s = \text{max\_duration} - t_d`, so changing the run length moves only the decay.
    For an open-ended main run that later branches into decays, set ``t_decay_start`` past
    ``max_duration``.

    Equivalences (checked in the tests):

    * HF transformers ``get_wsd_schedule(num_warmup_steps=W, num_stable_steps=S, num_decay_steps=D,
      min_lr_ratio=m, warmup_type=..., decay_type=...)`` is ``t_warmup=Wba, t_decay_start=(W+S)ba,
      t_decay=Dba, alpha_i=m, alpha_f=m`` with the same shape names, step for step.
    * Composer's ``cosine_with_warmup(t_warmup=W, alpha_f=a)`` on a run of ``max_duration=M`` is
      ``t_warmup=W, t_decay_start=W, t_decay=M-W, decay_shape=cosine, alpha_f=a``.

    ``scale_schedule_ratio`` (Composer only) scales the decay times and not the warmup, as Composer's
    own schedulers do.

    Args:
        t_warmup (str | Time): Warmup length, e.g. ``'100ba'``. Default ``'0ba'`` (no warmup).
        t_decay (str | Time): Decay length, e.g. ``'200ba'``. Required.
        t_decay_start (str | Time, optional): When the decay starts. Default: ``max_duration - t_decay``.
        alpha_i (float): Multiplier at the start of warmup, in [0, 1]. Default 0.
        alpha_f (float): Multiplier at the end of the decay and after it, in [0, 1]. Default 0.
        warmup_shape (str): ``linear``, ``cosine`` or ``1-sqrt``. Default ``linear``.
        decay_shape (str): ``linear``, ``cosine``, ``1-sqrt`` or ``1-square``. Default ``linear``.
    """

    def __init__(
        self,
        t_warmup: TimeLike = '0ba',
        t_decay: Optional[TimeLike] = None,
        t_decay_start: Optional[TimeLike] = None,
        alpha_i: float = 0.0,
        alpha_f: float = 0.0,
        warmup_shape: str = 'linear',
        decay_shape: str = 'linear',
    ) -> None:
        if t_decay is None:
            raise ConfigError(
                'scheduler.t_decay is required: the length of the decay in absolute time, e.g. t_decay: 200ba. '
                'Hägele et al. 2024 use about 20% of the run with a 1-sqrt decay.',
            )
        self.t_warmup = parse_time(t_warmup, 'scheduler.t_warmup')
        self.t_decay = parse_time(t_decay, 'scheduler.t_decay', allow_zero=False)
        self.t_decay_start = None if t_decay_start is None else parse_time(t_decay_start, 'scheduler.t_decay_start')
        self.unit = check_same_unit({
            'scheduler.t_warmup': self.t_warmup,
            'scheduler.t_decay': self.t_decay,
            'scheduler.t_decay_start': self.t_decay_start,
        })
        self.alpha_i = check_multiplier(alpha_i, 'scheduler.alpha_i')
        self.alpha_f = check_multiplier(alpha_f, 'scheduler.alpha_f')
        self.warmup_shape = check_shape(warmup_shape, WARMUP_SHAPES, 'scheduler.warmup_shape')
        self.decay_shape = check_shape(decay_shape, DECAY_SHAPES, 'scheduler.decay_shape')
        self._warned_unfinished = False

    def __call__(self, state: State, ssr: float = 1.0) -> float:
        warmup, decay_start, decay = self.resolve(state, ssr)
        return wsd_multiplier(
            current_time(state, self.unit),
            warmup,
            decay_start,
            decay,
            self.alpha_i,
            self.alpha_f,
            self.warmup_shape,
            self.decay_shape,
        )

    def resolve(self, state: State, ssr: float = 1.0) -> tuple[int, int, int]:
        """Converts the schedule to ``(warmup, decay_start, decay)`` counts in its unit, validating them.

        Raises:
            ValueError: If the phases do not fit together or into the run (see the class docstring).
        """
        warmup = resolve_time(self.t_warmup, state)
        decay = resolve_time(self.t_decay, state, ssr)
        if self.t_decay_start is None:
            max_duration = resolve_max_duration(state, self.unit, 'scheduler.t_decay_start (unset)')
            decay_start = max_duration - decay
            if not max_duration_is_final(state, ssr):
                return warmup, max(decay_start, warmup), decay
            if decay_start < warmup:
                raise ConfigError(
                    f'scheduler.t_warmup={self.t_warmup} plus scheduler.t_decay={self.t_decay} is longer than '
                    f'max_duration={state.max_duration}, so the decay would start before the warmup ends. Shorten '
                    f't_warmup or t_decay, or raise max_duration.',
                )
            return warmup, decay_start, decay

        decay_start = resolve_time(self.t_decay_start, state, ssr)
        if decay_start < warmup:
            raise ConfigError(
                f'scheduler.t_decay_start={self.t_decay_start} is before the warmup ends '
                f'(scheduler.t_warmup={self.t_warmup}). Set t_decay_start >= t_warmup.',
            )
        self._warn_if_unfinished(state, ssr, decay_start + decay)
        return warmup, decay_start, decay

    def configured_decay_start(self, max_duration: Optional[TimeLike]) -> Optional[Time]:
        """The decay start read from the config alone, without a run's state.

        ``t_decay_start`` if set, else ``max_duration - t_decay`` when both are in the same unit; None when
        only a running trainer could convert it (epochs, which need the dataloader's length, another unit, or
        no ``max_duration``).
        """
        if self.t_decay_start is not None:
            return self.t_decay_start if self.t_decay_start.unit != TimeUnit.EPOCH else None
        if max_duration is None:
            return None
        end = max_duration if isinstance(max_duration, Time) else Time.from_timestring(str(max_duration))
        if end.unit != self.t_decay.unit or end.unit == TimeUnit.EPOCH:
            return None
        return Time(end.value - self.t_decay.value, end.unit)

    def decay_ends(self, state: State, ssr: float = 1.0) -> list[int]:
        """When the decayed model is due (the decay's end), as a count in :attr:`unit`."""
        _, decay_start, decay = self.resolve(state, ssr)
        return [decay_start + decay]

    def _warn_if_unfinished(self, state: State, ssr: float, decay_end: int) -> None:
        # An open-ended main run (decay past max_duration) is legitimate, but say so once.
        if self._warned_unfinished or state.max_duration is None or not max_duration_is_final(state, ssr):
            return
        try:
            max_duration = resolve_max_duration(state, self.unit, 'checking the decay end')
        except ValueError:
            return
        if decay_end > max_duration:
            log.warning(
                f'scheduler: the decay ends at {decay_end}{self.unit.value}, after max_duration={state.max_duration}; '
                f'this run ends before its LR reaches alpha_f={self.alpha_f} (fine for a main branch that you '
                f'will branch decays from).',
            )
        self._warned_unfinished = True
