"""pack_state / unpack_state. The sharded resume of every component that uses them is tested with two
processes in ``tests/distributed/test_fsdp_cpu.py``."""

import math

import numpy as np

from foundry_ext.core.checkpoint_state import pack_state, unpack_state


def test_pack_round_trip_keeps_nesting_and_non_finite_numbers():
    state = {'a': {'b': [1, 2.5, None]}, 'inf': math.inf, 'pair': (1, 2), 'np': np.int64(3), 'arr': np.arange(2)}
    assert unpack_state(pack_state(state)) == {'a': {'b': [1, 2.5, None]}, 'inf': math.inf, 'pair': [1, 2],
                                               'np': 3, 'arr': [0, 1]}
    assert math.isnan(unpack_state(pack_state({'x': math.nan}))['x'])
    assert unpack_state(pack_state(None)) is None


def test_packed_keys_do_not_depend_on_the_state():
    # What a sharded checkpoint needs: the fresh component's keys are those of the saved one.
    assert list(pack_state({'k': {'any': 'shape'}})) == list(pack_state({})) == list(pack_state(None))


def test_unpacked_state_from_older_checkpoints_is_taken_as_is():
    assert unpack_state({'version': 1, 'manifest': []}) == {'version': 1, 'manifest': []}
