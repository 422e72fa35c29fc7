"""``scripts/train.py`` for the multi-process tests, run as ``composer -n 2 tests/distributed/train_worker.py``.

Registers the fault-injection callbacks ``lr_jump`` and ``crash`` (they have no entry point) and, when ``STATE_OUT``
is set, writes rank 0's checkpointable state of every foundry-ext component there as JSON once training ends.
"""

import json
import os
import sys
from pathlib import Path

from composer.utils import dist

from foundry_ext.core.checkpoint_state import unpack_state
from foundry_ext.testing.crash import register_crash
from foundry_ext.testing.lr_jump import register_lr_jump

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for scripts/
from scripts.train import main  # noqa: E402

if __name__ == '__main__':
    register_lr_jump()
    register_crash()
    trainer = main()
    objects = [*trainer.state.algorithms, *trainer.state.callbacks]
    # state_dict() can be a collective (resume_guard all-reduces its statistics): every rank calls it.
    states = {type(o).__name__: unpack_state(o.state_dict()) for o in objects
              if type(o).__module__.startswith('foundry_ext.')}
    if os.environ.get('STATE_OUT') and dist.get_global_rank() == 0:
        with open(os.environ['STATE_OUT'], 'w') as f:
            json.dump(states, f)
