"""Work that one rank does for all: a shared folder repaired or read once, its outcome seen by every rank alike."""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

from composer.utils import dist

log = logging.getLogger(__name__)

__all__ = ['on_rank_zero']

T = TypeVar('T')


def on_rank_zero(work: Callable[[], T]) -> T:
    """Runs ``work()`` on global rank 0 and gives every rank its result, or raises its error on every rank.

    The other ranks wait in the broadcast until rank 0 is done, so none of them reads a folder rank 0 is changing.
    """
    result: list = [None, None]
    if dist.get_global_rank() == 0:
        try:
            result[0] = work()
        except Exception as err:  # every rank must leave the broadcast, and fail alike
            result[1] = err
    if dist.get_world_size() > 1:
        dist.broadcast_object_list(result, src=0)
    if result[1] is not None:
        raise result[1]
    return result[0]
