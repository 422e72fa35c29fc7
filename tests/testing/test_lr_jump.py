"""The lr_jump fault-injection callback on a real Composer Trainer."""

from __future__ import annotations

import pytest
from composer.core import Callback
from composer.optim import ConstantScheduler, LinearScheduler

from foundry_ext.testing.lr_jump import LRJump
from tests.conftest import tiny_trainer


class _LRBeforeTrainBatch(Callback):

    def __init__(self) -> None:
        self.lrs: dict[int, float] = {}

    def before_train_batch(self, state, logger) -> None:
        self.lrs[int(state.timestamp.batch)] = state.optimizers[0].param_groups[0]['lr']


@pytest.mark.parametrize('scheduler', [None, ConstantScheduler(), LinearScheduler(alpha_i=1.0, alpha_f=0.5)],
                         ids=['no scheduler', 'constant', 'linear'])
def test_batches_in_the_window_train_at_factor_times_the_schedule_and_then_it_ends(scheduler):
    plain, jumped = _LRBeforeTrainBatch(), _LRBeforeTrainBatch()
    tiny_trainer(scheduler, '8ba', callbacks=[plain], lr=0.1).fit()
    tiny_trainer(scheduler, '8ba', callbacks=[LRJump(start=2, steps=2, factor=10.0), jumped], lr=0.1).fit()
    expected = {batch: lr * (10.0 if batch in (2, 3) else 1.0) for batch, lr in plain.lrs.items()}
    assert jumped.lrs == pytest.approx(expected)


@pytest.mark.parametrize('kwargs, message', [({'start': -1}, 'start=-1 must be an integer >= 0'),
                                             ({'start': 1, 'steps': 0}, 'steps=0 must be an integer >= 1'),
                                             ({'start': 1, 'factor': 0}, 'factor=0 must be a number > 0')])
def test_bad_arguments_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=f'callbacks.lr_jump.{message}'):
        LRJump(**kwargs)
