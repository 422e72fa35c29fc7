"""Identities of the samples in a batch: deterministic fingerprints of their token ids, computed on the device.

``resume_data_guard`` fingerprints every batch to catch replayed data after a resume; ``loss_spike_monitor``
fingerprints the batches behind batch outliers, so that the same samples can be recognised when they cause an
outlier again. Both hash the same tensor of the batch (:func:`find_batch_tensor`) with :func:`row_fingerprints`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ['find_batch_tensor', 'row_fingerprints']

_PRIME = 2**31 - 1  # modulus of the two row hashes; each 31-bit half keeps every product inside int64


@functools.lru_cache(maxsize=8)
def _hash_weights(width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two fixed vectors of weights in [1, _PRIME), from splitmix64: the same in every process and version."""
    x = (np.arange(2 * width, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    weights = torch.from_numpy((x % np.uint64(_PRIME - 1) + np.uint64(1)).astype(np.int64)).to(device)
    return weights[:width], weights[width:]


def row_fingerprints(tensor: torch.Tensor) -> torch.Tensor:
    """62-bit fingerprints of the rows (first dimension) of ``tensor``, computed on its device.

    Each row's bytes, read as 8/16/32-bit words, go through two polynomial hashes modulo ``2**31 - 1`` with
    fixed weights. The result is deterministic across processes, devices and runs (unlike Python's salted
    ``hash``), and only a vector of one int64 per row has to leave the device. Two different rows collide
    with probability about ``2**-62``. Fingerprints identify bytes: the same token ids stored as int32 and as
    int64 fingerprint differently.

    Args:
        tensor (torch.Tensor): A batch, e.g. ``input_ids`` of shape ``(batch, seq_len)``; a 0-d tensor is one row.

    Returns:
        torch.Tensor: int64 fingerprints in ``[0, 2**62)``, one per row, on ``tensor``'s device.
    """
    rows = tensor.reshape(tensor.shape[0] if tensor.dim() else 1, -1).contiguous()
    word = {1: torch.int8, 2: torch.int16}.get(rows.element_size(), torch.int32)
    words = rows.view(word).to(torch.int64)  # |word| < 2**31 and weight < 2**31: products fit in int64
    w1, w2 = _hash_weights(words.shape[1], words.device)
    h1 = (words * w1).remainder_(_PRIME).sum(dim=1).remainder_(_PRIME)
    h2 = (words * w2).remainder_(_PRIME).sum(dim=1).remainder_(_PRIME)
    return h1 * 2**31 + h2


def find_batch_tensor(batch: Any, key: Union[str, int, None] = None) -> Optional[torch.Tensor]:
    """The tensor of ``batch`` that identifies its samples.

    Args:
        batch (Any): ``state.batch``: a tensor, a mapping or a sequence.
        key (str | int, optional): A mapping key or sequence index. Default: ``input_ids`` in a mapping that has
            it, otherwise the batch's first tensor at the top level.

    Returns:
        torch.Tensor | None: The tensor, or None if there is none (at ``key``, or anywhere for the default).
    """
    if isinstance(batch, torch.Tensor):
        return batch
    if key is not None:
        try:
            tensor = batch[key]
        except (KeyError, IndexError, TypeError):
            return None
        return tensor if isinstance(tensor, torch.Tensor) else None
    if isinstance(batch, Mapping) and isinstance(batch.get('input_ids'), torch.Tensor):
        return batch['input_ids']
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, Sequence) else ()
    return next((value for value in values if isinstance(value, torch.Tensor)), None)
