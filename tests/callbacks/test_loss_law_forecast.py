"""loss_law_forecast on real train_from_yaml runs of the demo: a WSD main run, a real branch, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from composer.optim import ConstantScheduler
from llmfoundry.utils.builders import build_callback

from foundry_ext.callbacks.loss_law_forecast import LossLawForecast
from foundry_ext.commands.branch import plan_branch, run_branches
from foundry_ext.commands.loss_law import yaml_schedule
from foundry_ext.core.config import load_train_config
from foundry_ext.core.errors import ConfigError
from foundry_ext.core.metrics_io import read_metrics
from foundry_ext.schedulers import WSDScheduler
from tests.conftest import DEMO_YAML, SMALL_CORPUS, foundry_run, tiny_trainer

MAIN = ['max_duration=60ba', 'scheduler.t_warmup=10ba', 'scheduler.t_decay_start=100000ba', 'save_interval=30ba']
FORECAST = 'callbacks.loss_law_forecast={{decays: [15ba, 30ba], branches: [{branches}], interval: 10}}'


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """A main run, a 15-batch branch off its step-30 checkpoint, and the main run again with the forecast."""
    root = tmp_path_factory.mktemp('loss_law_forecast')
    foundry_run(root / 'main', MAIN, metrics=None)
    overrides = [f'variables.run_dir={root / "main"}', 'eval_loader=null', 'eval_interval=1', SMALL_CORPUS, *MAIN]
    plan = plan_branch(DEMO_YAML, str(root / 'main' / 'checkpoints'), 30, '15ba', overrides=overrides)
    run_branches([plan], DEMO_YAML)
    trainer, series = foundry_run(root / 'forecast', [*MAIN, FORECAST.format(branches=f'{root}/main/branches/*')],
                                  metrics=None)
    return root, trainer, series


def test_yaml_schedule_is_the_lr_that_lr_monitor_logs(runs):
    root, _, _ = runs
    steps, logged = read_metrics(root / 'main' / 'metrics.jsonl')['lr-DecoupledAdamW/group0']
    cfg = load_train_config(DEMO_YAML, [f'variables.run_dir={root}', *MAIN])
    assert np.allclose(yaml_schedule(cfg)[0].lr[steps.astype(int)[steps < 60]], logged[steps < 60], rtol=1e-12)


def test_forecasts_are_logged_with_intervals_and_a_decay_beats_the_stable_phase(runs):
    _, _, series = runs
    # Step 10 ends the warmup: nothing to fit yet. The branch (from step 30) is fitted once the history covers it,
    # so the forecasts of a decay start at step 40; this run's own (stable) schedule is forecast before.
    expected = {'decay_15ba': [40, 50, 60], 'decay_30ba': [40, 50, 60], 'final': [20, 30, 40, 50]}
    for name, steps_logged in expected.items():
        steps, values = series[f'loss_law/{name}']
        lower, upper = series[f'loss_law/{name}_lower'][1], series[f'loss_law/{name}_upper'][1]
        assert steps.tolist() == steps_logged and np.all(np.isfinite(values))
        assert np.all(lower <= values) and np.all(values <= upper)
    assert series['loss_law/fit_runs'][1].tolist() == [1, 1, 2, 2, 2]  # this run, then with the branch
    decay = {int(s): v for s, v in zip(*series['loss_law/decay_15ba'])}
    final = {int(s): v for s, v in zip(*series['loss_law/final'])}
    assert decay[40] < final[40]  # decaying from 40 to 55 beats staying at the peak to batch 60


def test_history_survives_resume(runs, tmp_path):
    root, trainer, _ = runs
    resumed, _ = foundry_run(tmp_path, [*MAIN, FORECAST.format(branches=f'{root}/main/branches/*'),
                                        f'load_path={root}/forecast/checkpoints/ep0-ba30-rank0.pt'], metrics=None)
    mine = next(cb for cb in trainer.state.callbacks if isinstance(cb, LossLawForecast))
    theirs = next(cb for cb in resumed.state.callbacks if isinstance(cb, LossLawForecast))
    assert mine.history.width == theirs.history.width == 1
    assert mine.history.sums.keys() == theirs.history.sums.keys()
    for b, sums in mine.history.sums.items():
        assert np.allclose(sums, theirs.history.sums[b], rtol=1e-6), b


@pytest.mark.parametrize('kwargs,message', [
    ({'decays': []}, 'decays=.* must be a list of decay lengths'),
    ({'decays': ['0.2dur']}, "the 'dur' unit"),
    ({'decays': ['10ba'], 'loss_key': 'loss'}, 'loss_key=.loss. must be'),
    ({'decays': ['10ba'], 'law': 'missing.json'}, 'callbacks.loss_law_forecast.law: missing.json: no such law file'),
    ({'decays': ['10ba'], 'level': 1.0}, 'level=1.0 must be strictly between 0 and 1'),
    ({'decays': ['10ba'], 'law_name': 'cubic'}, "law_name='cubic' must be one of"),
])
def test_bad_config_is_refused_naming_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_callback('loss_law_forecast', kwargs)


def test_needs_a_wsd_run_and_a_time_to_forecast():
    with pytest.raises(ConfigError, match='forecasts branches of a wsd main run'):
        tiny_trainer(ConstantScheduler(), '20ba', callbacks=[LossLawForecast(['5ba'], interval=5)]).fit()
    with pytest.raises(ConfigError, match='has no evaluation'):
        tiny_trainer(WSDScheduler(t_decay='5ba', t_decay_start='1000ba'), '20ba',
                     callbacks=[LossLawForecast(['5ba'])]).fit()


def test_without_a_decay_only_the_stable_forecast_is_logged(caplog):
    from composer.loggers import InMemoryLogger

    memory = InMemoryLogger()
    torch.manual_seed(0)
    trainer = tiny_trainer(WSDScheduler(t_decay='5ba', t_decay_start='1000ba'), '40ba', lr=0.05, batches=40,
                           callbacks=[LossLawForecast(['5ba'], interval=20)], loggers=[memory])
    with caplog.at_level('WARNING'):
        trainer.fit()
    assert 'the gain of a decay is unknown' in caplog.text
    assert 'loss_law/final' in memory.data and not any(k.startswith('loss_law/decay') for k in memory.data)


def test_history_stays_bounded():
    from foundry_ext.callbacks.loss_law_forecast import _History

    history = _History(limit=16)
    for step in range(1000):
        history.add_lr(step, 1.0)
        history.add_loss(step, 3.0)
    assert len(history.sums) <= 16 and history.width == 64
    run = history.run('main', 'loss')
    assert run.losses == pytest.approx(3.0) and run.lr_steps[0] == pytest.approx(31.5)
    assert run.loss_steps[-1] == pytest.approx(np.mean(np.arange(960, 1000)))
