"""Tests for foundry_ext.collapse.schedule: the LR schedule over t/T, from a YAML's scheduler or a logged LR."""

from typing import Any

import numpy as np
import pytest

from foundry_ext.collapse.controls import from_foundry_config
from foundry_ext.collapse.schedule import LRSchedule
from tests.collapse.test_controls import _foundry_cfg


def test_schedule_from_foundry_cosine_linear_constant():
    budget = from_foundry_config(_foundry_cfg())  # 1000 steps of 32 x 128 tokens

    def schedule(name: str, t_warmup: str, max_duration: str = '1000ba', **kwargs: Any) -> LRSchedule:
        return LRSchedule.from_foundry_scheduler({'name': name, 't_warmup': t_warmup, **kwargs}, budget, max_duration)

    cosine = schedule('cosine_with_warmup', '100ba', alpha_f=0.1)
    t = np.array([0.0, 0.05, 0.1, 0.55, 1.0])
    np.testing.assert_allclose(cosine(t), [0.0, 0.5, 1.0, 0.55, 0.1], atol=1e-4)
    linear = schedule('linear_decay_with_warmup', '0.1dur')
    np.testing.assert_allclose(linear(np.array([0.05, 0.55, 1.0])), [0.5, 0.5, 0.0], atol=1e-9)
    # Composer's warmup schedulers need max_duration in the unit of t_warmup.
    constant = schedule('constant_with_warmup', f'{100 * 32 * 128}tok', f'{1000 * 32 * 128}tok')
    np.testing.assert_allclose(constant(np.array([0.05, 0.5])), [0.5, 1.0])
    assert schedule('constant_with_warmup', '3200sp', '32000sp') == constant  # 3200 samples = 100 batches


@pytest.mark.parametrize('scheduler, message', [
    ({'name': 'inv_sqrt_wth_warmup', 't_warmup': '100ba'}, "scheduler.name='inv_sqrt_wth_warmup'"),
    ({'name': 'cosine_with_warmup', 't_warmup': '100ba', 'alpha': 0.1}, "unexpected keyword argument 'alpha'"),
    ({'name': 'cosine_with_warmup', 't_warmup': '1ep'}, 'write its times in ba, tok or sp'),
    ({'t_warmup': '100ba'}, 'scheduler.name is missing'),
])
def test_schedule_from_foundry_errors(scheduler: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=message):
        LRSchedule.from_foundry_scheduler(scheduler, from_foundry_config(_foundry_cfg()))


def test_any_registered_scheduler_is_evaluated_as_composer_evaluates_it():
    # Shapes the old formula table refused: t_max beyond the run, Foundry's inv_sqrt, foundry-ext's wsd.
    budget = from_foundry_config(_foundry_cfg())  # 1000 steps
    half_cosine = LRSchedule.from_foundry_scheduler({'name': 'cosine_with_warmup', 't_warmup': '0ba',
                                                     't_max': '2dur'}, budget)
    assert half_cosine(np.array([1.0]))[0] == pytest.approx(0.5, abs=1e-3)  # cos(pi/2) halfway to zero
    inv_sqrt = LRSchedule.from_foundry_scheduler({'name': 'inv_sqrt_with_warmup', 't_warmup': '100ba',
                                                  't_scale': '100ba', 't_cooldown': '0ba'}, budget)
    assert inv_sqrt(np.array([0.1, 0.4]))[1] == pytest.approx(0.5, abs=1e-3)  # sqrt(100 / 400)
    wsd = LRSchedule.from_foundry_scheduler({'name': 'wsd', 't_warmup': '100ba', 't_decay': '200ba'}, budget)
    np.testing.assert_allclose(wsd(np.array([0.05, 0.5, 0.9, 1.0])), [0.5, 1.0, 0.5, 0.0], atol=1e-3)


def test_schedule_from_a_logged_lr_series_keeps_corners_and_drops_collinear_points():
    steps = np.arange(1, 1001)
    lr = 3e-3 * np.interp(steps - 1, [0, 100, 1000], [0.0, 1.0, 0.0])  # lr_monitor: alpha(k - 1) at step k
    schedule = LRSchedule.from_series(steps, lr, 1000)
    assert len(schedule.fractions) <= 5 and max(schedule.multipliers) == 1.0
    t = np.linspace(0, 1, 501)
    np.testing.assert_allclose(schedule(t), np.interp(t * 1000 - 1, [0, 100, 1000], [0.0, 1.0, 0.0]), atol=2e-3)
    curved = LRSchedule.from_series(steps, 1 - np.sqrt(steps / 1000), 1000, max_knots=64)
    assert len(curved.fractions) <= 64 and max(curved.multipliers) == 1.0
    with pytest.raises(ValueError, match='outside 0..total_steps=500'):
        LRSchedule.from_series(steps, lr, 500)
