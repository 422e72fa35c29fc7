import numpy as np
import pytest
from composer.optim import CosineAnnealingWithWarmupScheduler

from foundry_ext.schedulers import CyclicCosineScheduler, WSDScheduler, WSDSScheduler
from foundry_ext.schedulers.preview import schedule_multipliers
from tests.conftest import tiny_trainer


def _alphas(scheduler, max_duration):
    return schedule_multipliers(scheduler, max_duration, samples_per_batch=8, tokens_per_batch=1024)[1]


def test_wsd_s_decays_into_each_budget_and_jumps_back():
    a = _alphas(WSDSScheduler(budgets=['40ba', '80ba', '120ba'], t_warmup='5ba', decay_fraction=0.25), '140ba')
    assert a[0] == 0 and a[5:30].tolist() == [1.0] * 25
    np.testing.assert_allclose(a[30:40], 1 - np.arange(10) / 10)  # decay 25% of [0, 40): 30..40
    assert a[40] == 1.0 and a[69] == 1.0 and a[70] == 1.0 and a[79] == pytest.approx(0.1)
    assert a[80] == 1.0 and a[110] == 1.0 and a[119] == pytest.approx(0.1) and a[120:].tolist() == [1.0] * 21


def test_wsd_s_absolute_decay_rewarmup_and_alpha_f():
    a = _alphas(WSDSScheduler(budgets=['30ba', '60ba'], t_decay='10ba', t_rewarmup='4ba', alpha_f=0.2,
                              decay_shape='cosine'), '60ba')
    assert a[0] == 1.0 and a[19] == 1.0 and a[20] == 1.0 and a[25] == pytest.approx(0.6)
    assert a[30] == pytest.approx(0.2) and a[32] == pytest.approx(0.6) and a[34] == 1.0 and a[50] == 1.0


def test_wsd_s_with_one_budget_is_wsd_until_the_budget():
    for fraction, decay in [(0.2, 20), (0.5, 50)]:
        wsd_s = _alphas(WSDSScheduler(budgets=['100ba'], t_warmup='10ba', decay_fraction=fraction), '100ba')
        np.testing.assert_array_equal(wsd_s[:100], _alphas(WSDScheduler(t_warmup='10ba', t_decay=f'{decay}ba'),
                                                           '100ba')[:100])
        assert wsd_s[100] == 1.0  # at the budget itself WSD-S is back at the peak, ready to go on


def test_wsd_s_decay_fraction_floors_the_exact_product():
    # 0.35 * 180 is 62.999... in floats; the documented floor(0.35 * 180) is 63, so the decay starts at 117.
    a = _alphas(WSDSScheduler(budgets=['180ba'], decay_fraction=0.35), '180ba')
    assert a[116] == 1.0 and a[117] == 1.0 and a[118] == pytest.approx(1 - 1 / 63)


@pytest.mark.parametrize('alpha_f', [0.0, 0.1])
def test_cyclic_cosine_first_cycle_is_composer_cosine_with_warmup_then_restarts(alpha_f):
    ours = _alphas(CyclicCosineScheduler(budgets=['60ba', '100ba'], t_warmup='10ba', alpha_f=alpha_f), '100ba')
    composer = _alphas(CosineAnnealingWithWarmupScheduler(t_warmup='10ba', alpha_f=alpha_f), '60ba')
    np.testing.assert_allclose(ours[:60], composer[:60], atol=1e-6, rtol=0)
    assert ours[60] == 1.0 and ours[80] == pytest.approx(alpha_f + (1 - alpha_f) * 0.5)


@pytest.mark.parametrize('cls,kwargs,fragment', [
    (WSDSScheduler, {}, 'scheduler.budgets=() must be a non-empty list'),
    (WSDSScheduler, {'budgets': '100ba'}, "scheduler.budgets='100ba' must be a non-empty list"),
    (WSDSScheduler, {'budgets': ['100ba', '0.5dur']}, "scheduler.budgets[1]='0.5dur'"),
    (WSDSScheduler, {'budgets': ['100ba'], 't_decay': '10ba', 'decay_fraction': 0.1}, 'both set the decay length'),
    (WSDSScheduler, {'budgets': ['100ba'], 'decay_fraction': 1.5}, 'scheduler.decay_fraction=1.5 must be'),
    (WSDSScheduler, {'budgets': ['100ba'], 'decay_fraction': 0}, 'scheduler.decay_fraction=0 must be'),
    (WSDSScheduler, {'budgets': ['100ba', '200tok']}, 'must share one unit'),
    (CyclicCosineScheduler, {'budgets': ['100ba'], 'decay_shape': 'step'}, "scheduler.decay_shape='step'"),
])
def test_bad_arguments_fail_when_built(cls, kwargs, fragment):
    with pytest.raises(ValueError) as err:
        cls(**kwargs)
    assert fragment in str(err.value)


@pytest.mark.parametrize('scheduler,fragment', [
    (WSDSScheduler(budgets=['20ba', '10ba']), r'budgets\[1\]=10ba comes after budgets\[0\]=20ba'),
    (WSDSScheduler(budgets=['10ba', '10ba']), 'strictly increasing'),
    (WSDSScheduler(budgets=['10ba', '20ba'], t_decay='12ba'), r'budgets\[0\]=10ba \(12ba long\) would start at -2ba'),
    (WSDSScheduler(budgets=['10ba', '20ba'], t_decay='5ba', t_rewarmup='6ba'), r're-warmup after budgets\[0\]'),
    (CyclicCosineScheduler(budgets=['10ba'], t_warmup='10ba'), r'would last 0ba, but it needs at least 1'),
    (WSDSScheduler(budgets=['10ba'], t_warmup='8ba', t_decay='4ba'), 'would start at 6ba, before the warmup ends at 8ba'),
])
def test_budgets_that_do_not_fit_fail_at_trainer_construction(scheduler, fragment):
    with pytest.raises(ValueError, match=fragment):
        tiny_trainer(scheduler, '20ba')


def test_decay_ends_are_the_budgets():
    trainer = tiny_trainer(None, '20ba')
    assert WSDSScheduler(budgets=['5ba', '20ba']).decay_ends(trainer.state) == [5, 20]
    assert WSDScheduler(t_decay='4ba').decay_ends(trainer.state) == [20]
