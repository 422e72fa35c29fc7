"""Evaluating a ComposerScheduler over a whole run without training, e.g. to plot it.

The scheduler is called exactly as the Trainer calls it, on a real Composer :class:`~composer.core.State`
whose timestamp is advanced batch by batch. Tokens and samples per batch come from the caller (for
Foundry's concatenated text data: ``global_train_batch_size`` and ``global_train_batch_size *
max_seq_len``, :func:`batch_size`), so schedules given in ``tok`` or ``sp`` can be previewed too.
:func:`config_multipliers` does it for a whole Foundry config through the scheduler registry, and
:func:`update_multipliers` shifts multipliers to the batches that train at them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from composer.core import State, Time, Timestamp
from composer.devices import DeviceCPU
from composer.optim import ComposerScheduler

from foundry_ext.core.errors import ConfigError
from foundry_ext.schedulers.time_spec import batches_in

log = logging.getLogger(__name__)

__all__ = ['batch_size', 'config_multipliers', 'schedule_multipliers', 'update_multipliers', 'yaml_scheduler']


def schedule_multipliers(
    scheduler: ComposerScheduler,
    max_duration: str,
    samples_per_batch: int,
    tokens_per_batch: int,
    start: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(steps, alpha)``: the scheduler's multiplier at each batch timestamp ``start..n``.

    Args:
        scheduler (ComposerScheduler): E.g. built with ``llmfoundry.utils.builders.build_scheduler``.
        max_duration (str): The run length, e.g. ``'2000ba'`` or ``'1e9tok'``.
        samples_per_batch (int): Global batch size in samples.
        tokens_per_batch (int): Global batch size in tokens.
        start (int): First timestamp evaluated (a pure schedule needs no earlier call).
    """
    duration = Time.from_timestring(max_duration)
    state = State(
        model=torch.nn.Linear(1, 1),
        rank_zero_seed=0,
        run_name='preview',
        device=DeviceCPU(),
        max_duration=duration,
    )
    n = batches_in(duration, samples_per_batch, tokens_per_batch)
    steps = np.arange(start, n + 1)
    alphas = np.empty(steps.size)
    for i, k in enumerate(steps):
        state.timestamp = Timestamp(batch=int(k), sample=int(k) * samples_per_batch, token=int(k) * tokens_per_batch)
        alphas[i] = scheduler(state)
    return steps, alphas


def yaml_scheduler(section: Mapping[str, Any]) -> ComposerScheduler:
    """Builds a YAML's ``scheduler:`` section through Foundry's registry (``build_scheduler``), as training does.

    Raises:
        ConfigError: For a missing or unknown ``scheduler.name`` or arguments its constructor refuses.
    """
    from llmfoundry.utils.builders import build_scheduler

    kwargs = dict(section)
    name = kwargs.pop('name', None)
    if not name:
        raise ConfigError('scheduler.name is missing from the training config; set it in the YAML.')
    try:
        return build_scheduler(name, kwargs)
    except ConfigError:
        raise  # our own schedulers name the key already
    except Exception as err:  # catalogue's RegistryError, or the constructor's TypeError/ValueError
        raise ConfigError(f'scheduler.name={name!r} with {kwargs} cannot be built ({err}); fix the scheduler '
                          'section.') from err


def batch_size(cfg: dict) -> tuple[int, int]:
    """``(samples, tokens)`` per batch of a Foundry config: ``global_train_batch_size`` and that times
    ``max_seq_len`` (concatenated text data)."""
    samples = int(cfg['global_train_batch_size'])
    return samples, samples * int(cfg['max_seq_len'])


def config_multipliers(cfg: dict, max_duration: str, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`schedule_multipliers` of a Foundry config's ``scheduler``, built through Foundry's registry."""
    return schedule_multipliers(yaml_scheduler(cfg['scheduler']), max_duration, *batch_size(cfg), start=start)


def update_multipliers(alphas: np.ndarray) -> np.ndarray:
    """The multiplier each batch trains at, from the multipliers at timestamps ``0..n``: Composer calls the
    scheduler before the timestamp advances, so batch ``k >= 1`` trains at ``alpha(k - 1)`` and batch 0 at
    ``alpha(0)`` (what ``lr_monitor`` logs at step ``k``). Returns ``n`` values, for batches ``0..n-1``."""
    alphas = np.asarray(alphas, dtype=float)
    return np.concatenate([alphas[:1], alphas[:-2]])
