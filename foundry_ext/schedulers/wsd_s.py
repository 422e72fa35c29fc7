r"""WSD-S (Wen et al. 2024): one main branch that decays into every budget and goes back to the peak.

Wen, Li, Wang, Hall, Liang, Ma, "Understanding Warmup-Stable-Decay Learning Rates: A River Valley Loss
Landscape Perspective" (arXiv 2410.05192). WSD-S keeps the decayed weights at each budget and continues
from them at the high LR, with no rewinding and no second branch; the paper finds it matches or beats WSD
branches and cyclic cosine for several budgets from one run.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Optional, Sequence

from composer.core import State

from foundry_ext.core.errors import ConfigError, fraction
from foundry_ext.schedulers.budget_schedule import BudgetSchedule
from foundry_ext.schedulers.time_spec import TimeLike, parse_time, resolve_time

log = logging.getLogger(__name__)

__all__ = ['WSDSScheduler']


class WSDSScheduler(BudgetSchedule):
    r"""Warmup, then for each budget: stable, decay into the budget, and back to the peak.

    The multiplier is that of :class:`~foundry_ext.schedulers.budget_schedule.BudgetSchedule`, with the
    decay into budget :math:`b_i` starting at :math:`s_i = b_i - d_i`, where :math:`d_i` is either the
    absolute ``t_decay`` or ``decay_fraction`` of the segment, :math:`d_i = \lfloor \phi\,(b_i - b_{i-1})
    \rfloor` with :math:`b_0 = 0`.

    Defaults follow the published recipes: a decay of 10% of each segment (Levanter's WSD-S default,
    used for Marin's 8B run, decays for 10% of every cycle) and no re-warmup (``t_rewarmup: 0ba``: jump
    straight back to the peak, as in the paper and OLMo-core's ``WSDS``).

    Args:
        budgets (Sequence[str | Time]): When a decayed model is due, e.g. ``[1000ba, 2000ba, 4000ba]``;
            sorted; the last may equal ``max_duration``.
        t_warmup (str | Time): Initial warmup length. Default ``'0ba'``.
        t_decay (str | Time, optional): Absolute decay length for every budget. Give this or ``decay_fraction``.
        decay_fraction (float, optional): Decay length as a fraction of each segment, in (0, 1]. Default 0.1
            when ``t_decay`` is unset.
        t_rewarmup (str | Time): Re-warmup from ``alpha_f`` back to the peak after each budget. Default ``'0ba'``.
        alpha_i (float): Multiplier at the start of warmup. Default 0.
        alpha_f (float): Multiplier at each budget. Default 0.
        warmup_shape (str): ``linear``, ``cosine`` or ``1-sqrt``. Default ``linear``.
        decay_shape (str): ``linear``, ``cosine``, ``1-sqrt`` or ``1-square``. Default ``linear`` (the paper's).
    """

    def __init__(
        self,
        budgets: Sequence[TimeLike] = (),
        t_warmup: TimeLike = '0ba',
        t_decay: Optional[TimeLike] = None,
        decay_fraction: Optional[float] = None,
        t_rewarmup: TimeLike = '0ba',
        alpha_i: float = 0.0,
        alpha_f: float = 0.0,
        warmup_shape: str = 'linear',
        decay_shape: str = 'linear',
    ) -> None:
        if t_decay is not None and decay_fraction is not None:
            raise ConfigError(
                f'scheduler.t_decay={t_decay!r} and scheduler.decay_fraction={decay_fraction!r} both set the decay '
                f'length. Keep one: t_decay for an absolute length, decay_fraction for a share of each segment.',
            )
        self.t_decay = None if t_decay is None else parse_time(t_decay, 'scheduler.t_decay', allow_zero=False)
        if self.t_decay is None:
            decay_fraction = fraction(0.1 if decay_fraction is None else decay_fraction, 'scheduler.decay_fraction',
                                      'the share of each segment spent decaying, e.g. 0.1', low_open=True)
        self.decay_fraction = decay_fraction
        super().__init__(budgets, t_warmup, t_rewarmup, alpha_i, alpha_f, warmup_shape, decay_shape,
                         {'scheduler.t_decay': self.t_decay})

    def decay_lengths(self, warmup: int, budgets: list[int], state: State, ssr: float) -> list[int]:
        if self.t_decay is not None:
            return [resolve_time(self.t_decay, state, ssr)] * len(budgets)
        assert self.decay_fraction is not None
        # Exact decimal arithmetic: in floats, 0.35 * 180 floors to 62, not the documented 63.
        phi = Fraction(repr(self.decay_fraction))
        return [max(1, int(phi * (b - a))) for a, b in zip([0, *budgets[:-1]], budgets)]
