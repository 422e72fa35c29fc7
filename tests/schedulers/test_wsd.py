import numpy as np
import pytest
import torch
from composer.callbacks import LRMonitor
from composer.core import Callback
from composer.loggers import InMemoryLogger
from composer.optim import CosineAnnealingWithWarmupScheduler
from transformers.optimization import get_wsd_schedule

from foundry_ext.schedulers import WSDScheduler, WSDSScheduler
from foundry_ext.schedulers.preview import schedule_multipliers
from tests.conftest import tiny_trainer


def _alphas(scheduler, max_duration='100ba'):
    return schedule_multipliers(scheduler, max_duration, samples_per_batch=8, tokens_per_batch=1024)[1]


@pytest.mark.parametrize('warmup_type', ['linear', 'cosine', '1-sqrt'])
@pytest.mark.parametrize('decay_type', ['linear', 'cosine', '1-sqrt'])
@pytest.mark.parametrize('min_lr_ratio', [0.0, 0.1])
def test_matches_hf_get_wsd_schedule(warmup_type, decay_type, min_lr_ratio):
    warmup, stable, decay, total = 7, 50, 23, 100
    hf = get_wsd_schedule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), num_warmup_steps=warmup,
                          num_stable_steps=stable, num_decay_steps=decay, warmup_type=warmup_type,
                          decay_type=decay_type, min_lr_ratio=min_lr_ratio)
    ours = WSDScheduler(t_warmup=f'{warmup}ba', t_decay_start=f'{warmup + stable}ba', t_decay=f'{decay}ba',
                        alpha_i=min_lr_ratio, alpha_f=min_lr_ratio, warmup_shape=warmup_type, decay_shape=decay_type)
    expected = np.array([hf.lr_lambdas[0](s) for s in range(total + 1)])
    np.testing.assert_allclose(_alphas(ours, f'{total}ba'), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize('alpha_f', [0.0, 0.1])
@pytest.mark.parametrize('max_duration', ['60ba', '200ba'])
def test_zero_stable_cosine_equals_composer_cosine_with_warmup(alpha_f, max_duration):
    total = int(max_duration[:-2])
    ours = WSDScheduler(t_warmup='10ba', t_decay_start='10ba', t_decay=f'{total - 10}ba', alpha_f=alpha_f,
                        decay_shape='cosine')
    composer = CosineAnnealingWithWarmupScheduler(t_warmup='10ba', alpha_f=alpha_f)
    np.testing.assert_allclose(_alphas(ours, max_duration), _alphas(composer, max_duration), atol=1e-6, rtol=0)


def test_shape_is_independent_of_max_duration_until_the_decay():
    short, long = (_alphas(WSDScheduler(t_warmup='10ba', t_decay='20ba'), d) for d in ('60ba', '120ba'))
    np.testing.assert_array_equal(short[:40], long[:40])  # the short run's decay starts at 40
    assert short[-1] == 0.0 and long[-1] == 0.0 and long[60] == 1.0


def test_token_units_follow_the_token_count():
    alphas = _alphas(WSDScheduler(t_warmup='10240tok', t_decay='20480tok'), '102400tok')  # 1024 tok/batch
    np.testing.assert_allclose(alphas, _alphas(WSDScheduler(t_warmup='10ba', t_decay='20ba'), '100ba'))


def test_explicit_decay_start_and_alphas():
    alphas = _alphas(WSDScheduler(t_warmup='10ba', t_decay_start='30ba', t_decay='20ba', alpha_i=0.2, alpha_f=0.1),
                     '100ba')
    assert alphas[0] == pytest.approx(0.2) and alphas[5] == pytest.approx(0.6)
    assert alphas[10:30].tolist() == [1.0] * 20
    assert alphas[40] == pytest.approx(0.55) and alphas[50:].tolist() == [0.1] * 51


def test_configured_decay_start_without_a_run():
    default = WSDScheduler(t_warmup='10ba', t_decay='20ba')
    assert default.configured_decay_start('100ba').value == 80
    assert default.configured_decay_start('1000sp') is None  # needs the batch size: only a run can convert
    assert default.configured_decay_start(None) is None
    assert WSDScheduler(t_decay='20ba', t_decay_start='30ba').configured_decay_start('100ba').value == 30
    # Epochs need the dataloader's length, which only a run knows.
    assert WSDScheduler(t_decay='1ep').configured_decay_start('1000ba') is None
    assert WSDScheduler(t_decay='20ba').configured_decay_start('4ep') is None
    assert WSDScheduler(t_decay='20ba', t_decay_start='1ep').configured_decay_start('100ba') is None


class _LRAtBatchStart(Callback):

    def __init__(self):
        self.lrs = {}

    def batch_start(self, state, logger):
        self.lrs[int(state.timestamp.batch)] = state.optimizers[0].param_groups[0]['lr']


def test_batch_k_trains_at_alpha_k_minus_1_through_the_real_trainer():
    scheduler = WSDScheduler(t_warmup='4ba', t_decay='6ba')
    probe, memory = _LRAtBatchStart(), InMemoryLogger()
    trainer = tiny_trainer(scheduler, '12ba', callbacks=[probe, LRMonitor()], loggers=[memory], lr=2.0)
    trainer.fit()
    alpha = _alphas(scheduler, '12ba')
    assert probe.lrs[0] == pytest.approx(2.0 * alpha[0])
    for k in range(1, 12):
        assert probe.lrs[k] == pytest.approx(2.0 * alpha[k - 1]), k
    # lr_monitor logs at step k the LR that the batch at timestamp k trains with.
    logged = {int(t.batch): v for t, v in memory.data['lr-SGD/group0']}
    for k, lr in logged.items():
        if k in probe.lrs:
            assert lr == pytest.approx(probe.lrs[k]), k
    assert len(logged) == 12


@pytest.mark.parametrize('kwargs,fragment', [
    ({'t_decay': '0.2dur'}, "scheduler.t_decay='0.2dur'"),
    ({'t_decay': '0ba'}, 'scheduler.t_decay'),
    ({}, 'scheduler.t_decay is required'),
    ({'t_decay': '10ba', 'alpha_f': 1.5}, 'scheduler.alpha_f=1.5 must be a number in [0, 1]'),
    ({'t_decay': '10ba', 'alpha_i': -0.1}, 'scheduler.alpha_i=-0.1'),
    ({'t_decay': '10ba', 'decay_shape': 'exp'}, "scheduler.decay_shape='exp' must be one of"),
    ({'t_decay': '10ba', 'warmup_shape': '1-square'}, "scheduler.warmup_shape='1-square'"),
    ({'t_decay': '10ba', 't_warmup': '5tok'}, 'must share one unit'),
])
def test_bad_arguments_fail_when_built(kwargs, fragment):
    with pytest.raises(ValueError) as err:
        WSDScheduler(**kwargs)
    assert fragment in str(err.value)


@pytest.mark.parametrize('kwargs,max_duration,fragment', [
    ({'t_warmup': '8ba', 't_decay': '8ba'}, '12ba', 'longer than max_duration=12ba'),
    ({'t_warmup': '8ba', 't_decay': '4ba', 't_decay_start': '5ba'}, '20ba', 'before the warmup ends'),
    ({'t_warmup': '100tok', 't_decay': '400tok'}, '20ba', "max_duration=20ba in the schedule's unit 'tok'"),
])
def test_run_dependent_errors_fail_at_trainer_construction(kwargs, max_duration, fragment):
    with pytest.raises(ValueError, match=fragment.replace('(', r'\(')):
        tiny_trainer(WSDScheduler(**kwargs), max_duration)


def test_epoch_times_convert_through_the_dataloader_length():
    scheduler = WSDScheduler(t_warmup='1ep', t_decay='1ep')
    trainer = tiny_trainer(scheduler, '4ep', batches=8)  # 8 batches an epoch
    assert scheduler.resolve(trainer.state) == (8, 24, 8)


def test_unfinished_decay_is_allowed_and_logged(caplog):
    tiny_trainer(WSDScheduler(t_decay_start='50ba', t_decay='10ba'), '20ba').fit()
    assert 'this run ends before its LR reaches alpha_f' in caplog.text


def test_scale_schedule_ratio_is_checked_against_the_scaled_run(caplog):
    # Composer compiles the schedule before it scales max_duration: 10ba warmup + 2 x 60ba decay fits the scaled
    # 200ba run but not the unscaled 100ba, and must not be refused for it.
    scheduler = WSDScheduler(t_warmup='10ba', t_decay='60ba')
    probe = _LRAtBatchStart()
    trainer = tiny_trainer(scheduler, '100ba', callbacks=[probe], lr=1.0, batches=200, scale_schedule_ratio=2.0)
    trainer.fit()
    assert trainer.state.max_duration.value == 200 and scheduler.resolve(trainer.state, 2.0) == (10, 80, 120)
    assert probe.lrs[80] == 1.0 and probe.lrs[81] == 1.0 and probe.lrs[82] == pytest.approx(1 - 1 / 120)
    # Nor warned about: the scaled budgets fit the scaled run.
    tiny_trainer(WSDSScheduler(budgets=['10ba', '20ba']), '20ba', scale_schedule_ratio=2.0)
    assert 'after max_duration' not in caplog.text
