"""Fault injection in the data: a copy of the demo corpus with a pocket of garbage samples.

Unlike ``garbage_batch`` (which replaces the batch trained at a step, and so again after a rollback replays that
step), the pocket here is in the data itself: a run that skips those samples never sees it again, as a run that
rolls back past a bad shard would. With ``train_loader.dataset.shuffle: false`` the epoch's order is the samples'
order, so samples ``[first, end)`` are the batches ``first / B`` to ``end / B`` of the epoch (``B`` the global batch
size)::

    root = garbage_corpus_copy(tmp / 'pocket', [(320, 560)], vocab_size=258)
    # train with train_loader.dataset.local=<root>, train_loader.dataset.shuffle=false
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
from streaming import LocalDataset, MDSWriter

from foundry_ext.data.corpus import ensure_demo_corpus
from foundry_ext.data.tokenizer import build_byte_tokenizer

log = logging.getLogger(__name__)

__all__ = ['garbage_corpus_copy']


def garbage_corpus_copy(out: Path, pockets: Sequence[tuple[int, int]], vocab_size: int, max_seq_len: int = 128,
                        train_tokens: int = 400_000, seed: int = 0) -> Path:
    """Copies the demo corpus (built if needed) to ``out`` with the train samples of each pocket ``[first, end)``
    replaced by uniformly random token ids in ``[0, vocab_size)``; returns ``out``, for
    ``train_loader.dataset.local``.

    Args:
        out (Path): The new corpus folder (must not exist).
        pockets (Sequence[tuple[int, int]]): Ranges ``[first, end)`` of garbage samples of the train split.
        vocab_size (int): Token ids are drawn from ``[0, vocab_size)``.
        max_seq_len (int): The corpus's ``max_seq_len`` (tokens per sample).
        train_tokens (int): The corpus's ``train_tokens``.
        seed (int): Seed of the random tokens.
    """
    source = ensure_demo_corpus(build_byte_tokenizer(model_max_length=max_seq_len), max_seq_len,
                                train_tokens=train_tokens)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns('train'))
    samples = LocalDataset(str(source / 'train'))
    for first, end in pockets:
        if not 0 <= first < end <= len(samples):
            raise ValueError(f'garbage samples [{first}, {end}) are not within the {len(samples)} train samples.')
    rng = np.random.default_rng(seed)
    dtype = samples[0]['tokens'].dtype
    with MDSWriter(out=str(out / 'train'), columns={'tokens': f'ndarray:{dtype.name}'}, size_limit='64mb') as w:
        for i in range(len(samples)):
            tokens = samples[i]['tokens']
            if any(first <= i < end for first, end in pockets):
                tokens = rng.integers(0, vocab_size, tokens.shape).astype(dtype)
            w.write({'tokens': tokens})
    log.info(f'garbage_corpus_copy: {out} is {source} with train samples {list(pockets)} of {len(samples)} random.')
    return out
