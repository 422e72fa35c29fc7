r"""The shared machinery of schedules that deliver a decayed model at each of several budgets.

A budget schedule has sorted budgets :math:`b_1 < \dots < b_n` (with :math:`b_0 = 0`). Segment :math:`i`
runs from :math:`b_{i-1}` to :math:`b_i`: after the initial warmup (segment 1) or an optional re-warmup
from :math:`\alpha_f` (later segments) it holds the peak, then decays from its decay start :math:`s_i` to
:math:`\alpha_f` exactly at :math:`b_i`. After :math:`b_n` it returns to the peak, so the run can go on and
more budgets can be added later. Subclasses choose the decay starts: WSD-S decays for a short part of
each segment, cyclic cosine for all of it.

.. math::

    \alpha(t) =
    \begin{cases}
        \alpha_i + (1 - \alpha_i)\, f(t / t_w) & i = 1,\ t < t_w \\
        \alpha_f + (1 - \alpha_f)\, f\big((t - b_{i-1}) / t_r\big) & i > 1,\ t < b_{i-1} + t_r \\
        1 & t < s_i \text{ or } t \ge b_n + t_r \\
        \alpha_f + (1 - \alpha_f)\, g\big((t - s_i) / (b_i - s_i)\big) & s_i \le t < b_i
    \end{cases}

where :math:`i` is the segment holding :math:`t`, :math:`t_w` the warmup, :math:`t_r` the re-warmup, and
:math:`f`, :math:`g` the warmup and decay shapes (:mod:`foundry_ext.schedulers.shapes`).

The model for budget :math:`b_i` is the checkpoint at timestamp :math:`b_i` (the ``budget_checkpoint``
callback saves it). Because Composer applies :math:`\alpha(k-1)` to the batch at timestamp :math:`k`, the
jump back to the peak first trains the batch at :math:`b_i + 1`.
"""

from __future__ import annotations

import bisect
import logging
from typing import Sequence

from composer.core import State, Time
from composer.optim import ComposerScheduler

from foundry_ext.core.errors import ConfigError
from foundry_ext.schedulers.shapes import (DECAY_SHAPES, WARMUP_SHAPES, check_multiplier, check_shape, decay_value,
                                           warmup_value)
from foundry_ext.schedulers.time_spec import (TimeLike, check_same_unit, current_time, max_duration_is_final,
                                              parse_time, resolve_max_duration, resolve_time)

log = logging.getLogger(__name__)

__all__ = ['BudgetSchedule', 'ResolvedBudgets']

# (warmup, budgets, decay starts, rewarmup), integer counts in the schedule's unit.
ResolvedBudgets = tuple[int, list[int], list[int], int]


class BudgetSchedule(ComposerScheduler):
    """Base class: parses and validates budgets and evaluates the multiplier; subclasses place the decays.

    Args:
        budgets (Sequence[str | Time]): When a decayed model is due, sorted, absolute times.
        t_warmup (str | Time): Warmup length before the first segment's peak.
        t_rewarmup (str | Time): Re-warmup length from ``alpha_f`` back to the peak after each budget.
        alpha_i (float): Multiplier at the start of warmup, in [0, 1].
        alpha_f (float): Multiplier at each budget (end of each decay), in [0, 1].
        warmup_shape (str): Shape of the warmup and re-warmups.
        decay_shape (str): Shape of the decays.
        extra_times (dict[str, Time | None]): The subclass's own parsed times, checked for a common unit.
    """

    def __init__(
        self,
        budgets: Sequence[TimeLike],
        t_warmup: TimeLike,
        t_rewarmup: TimeLike,
        alpha_i: float,
        alpha_f: float,
        warmup_shape: str,
        decay_shape: str,
        extra_times: dict[str, Time | None],
    ) -> None:
        if isinstance(budgets, (str, Time)) or not isinstance(budgets, Sequence) or not budgets:
            raise ConfigError(
                f'scheduler.budgets={budgets!r} must be a non-empty list of absolute times at which a decayed '
                f'model is due, e.g. budgets: [1000ba, 2000ba, 4000ba].',
            )
        self.budgets = [parse_time(b, f'scheduler.budgets[{i}]', allow_zero=False) for i, b in enumerate(budgets)]
        self.t_warmup = parse_time(t_warmup, 'scheduler.t_warmup')
        self.t_rewarmup = parse_time(t_rewarmup, 'scheduler.t_rewarmup')
        self.unit = check_same_unit({
            'scheduler.t_warmup': self.t_warmup,
            'scheduler.t_rewarmup': self.t_rewarmup,
            **{f'scheduler.budgets[{i}]': b for i, b in enumerate(self.budgets)},
            **extra_times,
        })
        self.alpha_i = check_multiplier(alpha_i, 'scheduler.alpha_i')
        self.alpha_f = check_multiplier(alpha_f, 'scheduler.alpha_f')
        self.warmup_shape = check_shape(warmup_shape, WARMUP_SHAPES, 'scheduler.warmup_shape')
        self.decay_shape = check_shape(decay_shape, DECAY_SHAPES, 'scheduler.decay_shape')
        self._warned_beyond_run = False

    def decay_lengths(self, warmup: int, budgets: list[int], state: State, ssr: float) -> list[int]:
        """The decay length of each segment; subclasses define it."""
        raise NotImplementedError

    def resolve(self, state: State, ssr: float = 1.0) -> ResolvedBudgets:
        """Converts the schedule to integer counts in its unit, validating that every phase fits.

        Raises:
            ValueError: For unsorted or duplicate budgets, or a decay that would start before its segment's
                (re-)warmup ends.
        """
        warmup = resolve_time(self.t_warmup, state)
        rewarmup = resolve_time(self.t_rewarmup, state, ssr)
        budgets = [resolve_time(b, state, ssr) for b in self.budgets]
        for i in range(1, len(budgets)):
            if budgets[i] <= budgets[i - 1]:
                raise ConfigError(
                    f'scheduler.budgets must be strictly increasing, but budgets[{i}]={self.budgets[i]} comes after '
                    f'budgets[{i - 1}]={self.budgets[i - 1]}. Sort them and remove duplicates.',
                )
        starts = []
        for i, (budget, decay) in enumerate(zip(budgets, self.decay_lengths(warmup, budgets, state, ssr))):
            start = budget - decay
            ramp_end, ramp = (warmup, 'the warmup') if i == 0 else (budgets[i - 1] + rewarmup,
                                                                     f'the re-warmup after budgets[{i - 1}]')
            if decay < 1:
                raise ConfigError(
                    f'The decay into scheduler.budgets[{i}]={self.budgets[i]} would last {decay}{self.unit.value}, but '
                    f'it needs at least 1: {ramp} ends at {ramp_end}{self.unit.value}. Space the budgets further apart.',
                )
            if start < ramp_end:
                raise ConfigError(
                    f'The decay into scheduler.budgets[{i}]={self.budgets[i]} ({decay}{self.unit.value} long) would '
                    f'start at {start}{self.unit.value}, before {ramp} ends at {ramp_end}{self.unit.value}. Shorten the '
                    f'decay or the (re-)warmup, or space the budgets further apart.',
                )
            starts.append(start)
        self._warn_if_beyond_run(state, ssr, budgets[-1])
        return warmup, budgets, starts, rewarmup

    def __call__(self, state: State, ssr: float = 1.0) -> float:
        warmup, budgets, starts, rewarmup = self.resolve(state, ssr)
        t = current_time(state, self.unit)
        segment = bisect.bisect_right(budgets, t)  # budgets already reached
        if segment == 0 and t < warmup:
            return warmup_value(self.warmup_shape, t / warmup, self.alpha_i)
        if segment > 0 and t < budgets[segment - 1] + rewarmup:
            return warmup_value(self.warmup_shape, (t - budgets[segment - 1]) / rewarmup, self.alpha_f)
        if segment == len(budgets) or t < starts[segment]:
            return 1.0
        return decay_value(self.decay_shape, (t - starts[segment]) / (budgets[segment] - starts[segment]), self.alpha_f)

    def decay_ends(self, state: State, ssr: float = 1.0) -> list[int]:
        """The times at which a decayed model is due: the budgets, as counts in :attr:`unit`."""
        return self.resolve(state, ssr)[1]

    def _warn_if_beyond_run(self, state: State, ssr: float, last_budget: int) -> None:
        if self._warned_beyond_run or state.max_duration is None or not max_duration_is_final(state, ssr):
            return
        try:
            max_duration = resolve_max_duration(state, self.unit, 'checking the budgets')
        except ValueError:
            return
        if last_budget > max_duration:
            log.warning(
                f'scheduler.budgets: the last budget ({last_budget}{self.unit.value}) is after '
                f'max_duration={state.max_duration}; this run ends before reaching it.',
            )
        self._warned_beyond_run = True
