"""``tests/test_rollback.py`` with two FSDP2 processes (gloo) and sharded checkpoints: the pocket of garbage data
is rolled back past on both ranks alike (exit code 75 from the launch, then 0), the relaunch moves the sharded
checkpoints after the rollback checkpoint aside and loads it, and a SIGKILL of both ranks after the rollback resumes
to bitwise the same sharded weights and optimizer state."""

from __future__ import annotations

import json

import pytest

from tests.conftest import assert_same_tensors, checkpoint_tensors
from tests.test_rollback import MAX, POCKET, ROLLBACK, _losses, rollback_runs

FSDP = 'fsdp_config={mixed_precision: FULL, state_dict_type: sharded}'


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> dict:
    return rollback_runs(tmp_path_factory.mktemp('rollback_fsdp'), nproc=2, extra=[FSDP], env={'FSDP_VERSION': '2'})


def test_both_ranks_roll_back_together_past_the_pocket(runs):
    log = runs['log']
    assert runs['codes']['straight'] == [75, 0], log[-3000:]
    assert log.count('ROLLING BACK') == 1 and 'Traceback' not in log and 'ResumeDataError' not in log
    ckpt = runs['straight'] / 'ckpt'
    (entry,) = json.loads((ckpt / 'rollbacks.json').read_text())
    batch = entry['checkpoint']['batch']
    assert entry['checkpoint']['name'] == f'ep0-ba{batch}'
    assert batch <= entry['onset_step'] - ROLLBACK['steps_before_onset']
    assert entry['skip']['samples'][1] >= POCKET[1]
    aside = ckpt / 'rolled_back' / '0'
    assert all((aside / f'ep0-ba{b}').is_dir() for b in range(batch + 4, entry['decided_at_step'] + 1, 4))
    assert f'resumed from ep0-ba{batch} (batch {batch})' in log
    assert max(v for s, v in _losses(runs['straight']).items() if s >= batch) < 5  # no garbage after the rollback


def test_a_kill_of_both_ranks_after_the_rollback_resumes_bitwise(runs):
    codes = runs['codes']['killed']
    assert codes[0] == 75 and codes[-1] == 0 and len(codes) == 3, codes
    assert_same_tensors(checkpoint_tensors(runs['killed'] / 'ckpt' / f'ep0-ba{MAX}'),
                        checkpoint_tensors(runs['straight'] / 'ckpt' / f'ep0-ba{MAX}'))
    assert _losses(runs['killed']) == _losses(runs['straight'])
