"""Warnings a component gives once per run, on rank 0 only."""

from __future__ import annotations

import logging
from typing import Any

from composer.utils import dist

__all__ = ['warn_once']


def warn_once(logger: logging.Logger, warned: set[str], key: str, message: str, *args: Any) -> None:
    """Logs ``message % args`` as a warning on rank 0 the first time ``key`` is seen.

    Every rank records ``key`` in ``warned`` (which the component checkpoints), so all ranks agree on what was said.
    """
    if key in warned:
        return
    warned.add(key)
    if dist.get_global_rank() == 0:
        logger.warning(message, *args)
