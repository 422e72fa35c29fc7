"""Warmup and decay shapes shared by every foundry-ext schedule.

A warmup shape :math:`f` rises from :math:`f(0)=0` to :math:`f(1)=1`; a decay shape :math:`g` falls from
:math:`g(0)=1` to :math:`g(1)=0`. Schedules map them onto their multipliers, e.g. a decay from 1 to
:math:`\\alpha_f` is :math:`\\alpha_f + (1-\\alpha_f)\\,g(p)`.

Decay shapes (``p`` is the fraction of the decay done):

* ``linear``: :math:`1-p`.
* ``cosine``: :math:`\\tfrac12(1+\\cos\\pi p)`.
* ``1-sqrt``: :math:`1-\\sqrt{p}`, the cooldown Hägele et al. 2024 ("Scaling Laws and Compute-Optimal
  Training Beyond Fixed Training Durations") found to match cosine with a ~20% cooldown.
* ``1-square``: :math:`1-p^2`, which stays high longer and drops late (also ablated by Hägele et al.).

Warmup shapes (``p`` is the fraction of the warmup done):

* ``linear``: :math:`p`.
* ``cosine``: :math:`\\tfrac12(1-\\cos\\pi p)`.
* ``1-sqrt``: :math:`1-\\sqrt{1-p}`, as in HF transformers' ``get_wsd_schedule``.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

from foundry_ext.core.errors import choice, fraction

log = logging.getLogger(__name__)

__all__ = ['WARMUP_SHAPES', 'DECAY_SHAPES', 'check_shape', 'check_multiplier', 'warmup_value', 'decay_value']

Shape = Callable[[float], float]

WARMUP_SHAPES: dict[str, Shape] = {
    'linear': lambda p: p,
    'cosine': lambda p: 0.5 * (1.0 - math.cos(math.pi * p)),
    '1-sqrt': lambda p: 1.0 - math.sqrt(1.0 - p),
}

DECAY_SHAPES: dict[str, Shape] = {
    'linear': lambda p: 1.0 - p,
    'cosine': lambda p: 0.5 * (1.0 + math.cos(math.pi * p)),
    '1-sqrt': lambda p: 1.0 - math.sqrt(p),
    '1-square': lambda p: 1.0 - p * p,
}


def check_shape(name: str, shapes: dict[str, Shape], key: str) -> str:
    """Returns ``name`` if it is a known shape, else raises a ``ValueError`` naming ``key`` and the choices."""
    return choice(name, key, sorted(shapes))


def check_multiplier(value: float, key: str) -> float:
    """Returns ``value`` as a float if it is an LR multiplier in [0, 1], else raises a ``ValueError`` naming ``key``."""
    return fraction(value, key, 'it multiplies optimizer.lr (0 = zero LR, 1 = the peak LR)')


def warmup_value(shape: str, progress: float, start: float) -> float:
    """Multiplier during a warmup from ``start`` to 1 after ``progress`` of it (0..1)."""
    return start + (1.0 - start) * WARMUP_SHAPES[shape](min(max(progress, 0.0), 1.0))


def decay_value(shape: str, progress: float, end: float) -> float:
    """Multiplier during a decay from 1 to ``end`` after ``progress`` of it (0..1)."""
    return end + (1.0 - end) * DECAY_SHAPES[shape](min(max(progress, 0.0), 1.0))
