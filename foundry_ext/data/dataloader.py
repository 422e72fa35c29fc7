"""The ``demo_text`` dataloader: builds the demo corpus on first use, then hands over to Foundry's ``text``.

Use it in YAML as ``train_loader: {name: demo_text, dataset: {split: train, max_seq_len: ..., ...}}``.
Every key is LLM-Foundry's ``text`` dataloader's, with two differences: ``dataset.local`` is optional
(default: the foundry-ext cache) and ``dataset.remote`` must be unset (the corpus is built locally).
``dataset.train_tokens`` and ``dataset.val_tokens`` cap the corpus size.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Union

from composer.core import DataSpec
from composer.utils import dist
from llmfoundry.data.text_data import build_text_dataloader
from transformers import PreTrainedTokenizerBase

from foundry_ext.core.errors import ConfigError
from foundry_ext.data.corpus import MANIFEST, ensure_demo_corpus

log = logging.getLogger(__name__)

__all__ = ['build_demo_text_dataloader']


def build_demo_text_dataloader(
    tokenizer: PreTrainedTokenizerBase,
    device_batch_size: Union[int, float],
    dataset: dict[str, Any],
    **kwargs: Any,
) -> DataSpec:
    """Ensures the demo corpus exists for this tokenizer and ``max_seq_len``, then builds Foundry's text loader.

    Args:
        tokenizer (PreTrainedTokenizerBase): The run's tokenizer; it also encodes the corpus.
        device_batch_size (int | float): Per-device batch size, as Foundry passes it.
        dataset (dict): Foundry ``text`` dataset keys, plus the optional ``train_tokens``/``val_tokens``.
        **kwargs: The rest of Foundry's ``text`` dataloader keys (``drop_last``, ``num_workers``, ...).
    """
    dataset = dict(dataset)
    if dataset.get('remote') is not None:
        raise ConfigError(
            f"train_loader.dataset.remote={dataset['remote']!r}: the demo_text loader builds its corpus locally and "
            f'reads no remote. Remove remote, or use `name: text` for your own streaming data.',
        )
    if 'max_seq_len' not in dataset:
        raise ConfigError('train_loader.dataset.max_seq_len is required by the demo_text loader, e.g. max_seq_len: 128.')
    budget = {k: int(dataset.pop(k)) for k in ('train_tokens', 'val_tokens') if k in dataset}
    root = ensure_demo_corpus(tokenizer, int(dataset['max_seq_len']), dataset.get('local'), **budget)
    dataset['local'] = str(root)
    split = dataset.setdefault('split', 'train')  # the corpus has only split folders
    samples = json.loads((root / MANIFEST).read_text())['samples'].get(split)
    batch = int(device_batch_size) * dist.get_world_size()
    if kwargs.get('drop_last') and samples is not None and samples < batch:
        # Composer would loop over empty epochs forever.
        raise ConfigError(f'The demo corpus\'s {split} split holds {samples} samples, fewer than one global batch of '
                          f'{batch} with drop_last: true, so no batch could be made. Raise its train_tokens/val_tokens '
                          f'(dataset.{split}_tokens), or lower the batch size.')
    return build_text_dataloader(tokenizer, device_batch_size, dataset, **kwargs)
