"""A fault-injection callback: replace one training batch by random tokens.

Provokes a single-batch outlier (a loss far above the trend for one batch, normal again at the next), e.g. to
check that ``loss_spike_monitor`` reports it as a ``batch_outlier`` with the identity of those samples. Not
registered as an entry point; :func:`register_garbage_batch` registers it as ``garbage_batch`` for a Foundry YAML::

    callbacks:
      garbage_batch: {step: 80, vocab_size: 258}
"""

from __future__ import annotations

import logging

import torch
from composer.core import Callback, State
from composer.loggers import Logger

from foundry_ext.data.fingerprints import find_batch_tensor

log = logging.getLogger(__name__)

__all__ = ['GarbageBatch', 'garbage_tokens', 'register_garbage_batch']


def garbage_tokens(shape: torch.Size, vocab_size: int, seed: int) -> torch.Tensor:
    """The random token ids that replace the batch (int64, reproducible from ``seed``)."""
    return torch.randint(0, vocab_size, tuple(shape), generator=torch.Generator().manual_seed(seed))


class GarbageBatch(Callback):
    """Replaces ``input_ids`` (and ``labels``, where there are any) of the batch trained at ``step`` by random tokens.

    Args:
        step (int): Batch (``state.timestamp.batch`` when it starts) to replace.
        vocab_size (int): Token ids are drawn uniformly from ``[0, vocab_size)``.
        seed (int): Seed of the random tokens (:func:`garbage_tokens`).
    """

    def __init__(self, step: int, vocab_size: int, seed: int = 0) -> None:
        for key, value in (('step', step), ('vocab_size', vocab_size), ('seed', seed)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == 'vocab_size' else 0):
                raise ValueError(f'callbacks.garbage_batch.{key}={value!r} must be an integer >= '
                                 f'{1 if key == "vocab_size" else 0}.')
        self.step = step
        self.vocab_size = vocab_size
        self.seed = seed

    def after_dataloader(self, state: State, logger: Logger) -> None:
        if int(state.timestamp.batch) != self.step:
            return
        ids = find_batch_tensor(state.batch)
        if ids is None:
            raise ValueError('callbacks.garbage_batch: the batch has no input_ids or other tensor to replace.')
        garbage = garbage_tokens(ids.shape, self.vocab_size, self.seed).to(ids.device, ids.dtype)
        ids.copy_(garbage)
        labels = state.batch.get('labels') if isinstance(state.batch, dict) else None
        if isinstance(labels, torch.Tensor):
            labels.copy_(garbage.to(labels.dtype))
        log.warning('garbage_batch: batch %d replaced by random tokens.', self.step)


def register_garbage_batch() -> None:
    """Registers :class:`GarbageBatch` as ``garbage_batch`` in Foundry's callback registry (it has no entry point)."""
    from llmfoundry.registry import callbacks
    if 'garbage_batch' not in callbacks.get_all():
        callbacks.register('garbage_batch', func=GarbageBatch)
