"""The action ``rollback`` of ``loss_spike_monitor`` refuses, before training, a run in which it could not work.

The rollback itself (exit code 75, the relaunch, the skip, determinism, a kill after it) is ``tests/test_rollback.py``.
"""

from __future__ import annotations

import pytest

from foundry_ext.callbacks.loss_spike_monitor import LossSpikeMonitor
from foundry_ext.core.errors import ConfigError
from tests.conftest import TINY_MODEL, foundry_run, tiny_trainer

ACTIONS = {'not_recovering': 'rollback'}
ROLLBACK = {'steps_before_onset': 10, 'skip_batches': 20}


def _monitor(**kwargs) -> LossSpikeMonitor:
    return LossSpikeMonitor(actions=ACTIONS, rollback=ROLLBACK, detector={'fast_recovery_steps': 10, 'max_follow_steps': 30},
                            **kwargs)


def test_rollback_settings_without_a_rollback_action_are_refused():
    with pytest.raises(ConfigError, match=r'loss_spike_monitor\.rollback=.* no kind in callbacks\.loss_spike_monitor'
                                          r'\.actions is rollback'):
        LossSpikeMonitor(actions={'not_recovering': 'stop'}, rollback=ROLLBACK)
    with pytest.raises(ConfigError, match=r'actions\.divergence=.undo. must be one of log, stop, rollback'):
        LossSpikeMonitor(actions={'divergence': 'undo'})


@pytest.mark.parametrize('kwargs, message', [
    ({}, r'the run saves no local checkpoints\. Set save_folder'),
    ({'save_interval': '1ep'}, r'save_interval=.*needs checkpoints at a fixed interval of batches'),
    ({'save_interval': '5ba', 'save_num_checkpoints_to_keep': 3},
     r'save_num_checkpoints_to_keep=3: .* needs the last 11 checkpoints\. Set save_num_checkpoints_to_keep: 11'),
    ({'save_interval': '5ba'}, r'not one \(its dataset is TensorDataset\)\. Use a Streaming loader'),
])
def test_a_run_without_what_a_rollback_needs_is_refused_before_it_trains(tmp_path, kwargs, message):
    if kwargs:
        kwargs = {'save_folder': str(tmp_path / 'ckpt'), **kwargs}
    trainer = tiny_trainer(None, '20ba', callbacks=[_monitor()], **kwargs)
    with pytest.raises(ConfigError, match=message):
        trainer.fit()
    assert int(trainer.state.timestamp.batch) == 0
    trainer.close()


def test_a_skip_beyond_the_epoch_is_refused(tmp_path):
    # The small corpus has 390 batches of 8 samples per epoch.
    with pytest.raises(ConfigError, match=r'rollback\.skip_batches=400: the train dataset has only 390 batches per '
                                          r'epoch'):
        foundry_run(tmp_path, [*TINY_MODEL, 'max_duration=4ba', 'save_interval=2ba', 'scheduler.t_warmup=1ba',
                               'scheduler.t_decay=2ba',
                               'callbacks.loss_spike_monitor.actions.divergence=rollback',
                               'callbacks.loss_spike_monitor.rollback.skip_batches=400'])
