"""The checkpointed state of foundry-ext's callbacks and algorithms, in a shape every Composer checkpoint keeps.

Composer writes a sharded checkpoint (``fsdp_config.state_dict_type: sharded``) with
``torch.distributed.checkpoint``. That flattens nested mappings into one entry per leaf, and on load reads
exactly the entries of the *fresh* component's ``state_dict()``. State whose keys depend on what the run did
(one detector per loss stream, a ramp that exists only during a rewarm, a list of event records) therefore
either fails to load (``Missing key in checkpoint state_dict``) or is silently dropped. Every stateful
component stores its state as one JSON string instead, under the same key whatever the run did, so it
round-trips through monolithic and sharded checkpoints alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Optional

__all__ = ['pack_state', 'unpack_state']

_KEY = 'state_json'


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays (``np.float64`` is a ``float`` already)."""
    if hasattr(value, 'tolist'):
        return value.tolist()
    raise TypeError(f'{type(value).__name__} is not JSON-serializable checkpoint state')


def pack_state(state: Optional[Mapping[str, Any]]) -> dict[str, str]:
    """Returns ``state`` (plain Python values; ``None`` for no state yet) as ``{'state_json': <JSON>}``.

    Tuples come back as lists and non-finite floats are kept (``NaN``/``Infinity``).
    """
    return {_KEY: json.dumps(state, default=_plain)}


def unpack_state(packed: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """Inverse of :func:`pack_state`. A mapping without ``state_json`` is taken as unpacked state, as written by
    foundry-ext 0.1.0 before packing (monolithic checkpoints only), so those checkpoints still resume."""
    if _KEY not in packed:
        return dict(packed)
    return json.loads(packed[_KEY])
