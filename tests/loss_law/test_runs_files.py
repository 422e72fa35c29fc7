import copy
import json

import numpy as np
import pytest

from foundry_ext.commands.loss_law import format_fit
from foundry_ext.core.errors import ConfigError
from foundry_ext.loss_law.from_runs import fit_runs
from foundry_ext.loss_law.law_file import read_law, write_law
from foundry_ext.loss_law.laws import BETA_MIN
from foundry_ext.loss_law.predict import predict
from foundry_ext.loss_law.runs import join_branches, load_runs, read_schedule
from foundry_ext.loss_law.schedule import LRSchedule
from tests.loss_law.helpers import synthetic_run, wsd_lr


def _write_jsonl(path, steps, **series):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open('w') as f:
        for i, step in enumerate(steps):
            f.write(json.dumps({'step': int(step), **{k: v[i] for k, v in series.items()}}) + '\n')
    return path


def test_default_keys_are_composer_and_lr_monitor(tmp_path):
    steps = np.arange(1, 40)
    _write_jsonl(tmp_path / 'run' / 'metrics.jsonl', steps, **{
        'loss/train/total': list(5.0 / np.sqrt(steps)), 'lr-DecoupledAdamW/group0': [1e-3] * 39, 'loss': [9.0] * 39})
    run = load_runs([tmp_path / 'run'])[0]
    assert run.name == 'run' and run.loss_key == 'loss/train/total' and run.lr_key == 'lr-DecoupledAdamW/group0'


def test_public_columns_are_used_when_the_defaults_are_absent(tmp_path, caplog):
    path = tmp_path / 'public.csv'
    path.write_text('step,lr,loss\n' + ''.join(f'{s},0.001,{5 / np.sqrt(s)}\n' for s in range(1, 30)))
    with caplog.at_level('INFO'):
        run = load_runs([path])[0]
    assert (run.loss_key, run.lr_key) == ('loss', 'lr')
    assert "using its 'loss' column" in caplog.text and "using its 'lr' column" in caplog.text


@pytest.mark.parametrize('content,message', [
    ('step,loss\n1,3.0\n2,2.9\n', 'no LR column'),
    ('step,lr,val\n1,0.1,3.0\n2,0.1,2.9\n', "neither 'loss/train/total' nor a column named like a loss"),
    ('step,lr,loss\n1,0.1,3.0\n2,0.1,nan\n3,0.1,2.8\n', 'non-finite losses .first at step 2.'),
    ('step,lr,loss\n1,-0.1,3.0\n2,0.1,2.9\n', 'negative LRs'),
])
def test_bad_runs_fail_with_the_fix(tmp_path, content, message):
    path = tmp_path / 'bad.csv'
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_runs([path])


def test_explicit_missing_keys_name_the_option(tmp_path):
    path = tmp_path / 'run.csv'
    path.write_text('step,lr,loss\n1,0.1,3.0\n2,0.1,2.9\n')
    with pytest.raises(ConfigError, match=r"no metric 'val_loss' \(--loss-key\)"):
        load_runs([path], loss_key='val_loss')
    with pytest.raises(ConfigError, match=r"no LR column 'lr2' \(--lr-key\)"):
        load_runs([path], lr_key='lr2')


def test_a_one_sqrt_branch_logged_sparsely_still_joins(tmp_path):
    main = tmp_path / 'main.csv'
    main.write_text('step,lr,loss\n' + ''.join(f'{s},0.001,{3 / s**0.1}\n' for s in range(50, 4001, 50)))
    branch = tmp_path / 'branch.csv'  # 1-sqrt decay from 2000: the first log (2050) is already 7% below the peak
    branch.write_text('step,lr,loss\n' + ''.join(
        f'{s},{0.001 * (1 - ((s - 2000) / 2000)**0.5)},{3 / s**0.1}\n' for s in range(2050, 4001, 50)))
    assert load_runs([main, branch])[1].joined_to == 'main'
    assert load_runs([branch])[0].joined_to is None  # alone: the warmup assumption, logged


def test_schedule_files(tmp_path):
    path = tmp_path / 'sched.csv'
    path.write_text('step,lr\n0,0\n100,0.001\n1000,0.0001\n')
    steps, lrs, tokens = read_schedule(path)
    assert steps.tolist() == [0, 100, 1000] and tokens is None
    # A final evaluation logged after the last update's LR ends the schedule, at that LR.
    (tmp_path / 'eval.csv').write_text('step,lr,loss\n0,0,\n100,0.001,\n999,0.0001,\n1000,,3.1\n')
    steps, lrs, _ = read_schedule(tmp_path / 'eval.csv')
    assert steps.tolist() == [0, 100, 999, 1000] and lrs[-1] == lrs[-2] == 0.0001
    (tmp_path / 'tokens.csv').write_text('tokens,lr\n0,0\n1000,0.1\n')
    with pytest.raises(ConfigError, match='needs a step column'):
        read_schedule(tmp_path / 'tokens.csv')
    (tmp_path / 'one.csv').write_text('step,lr\n5,0.1\n')
    with pytest.raises(ConfigError, match='at least 2'):
        read_schedule(tmp_path / 'one.csv')


@pytest.fixture(scope='module')
def small_law():
    lr = wsd_lr(5000, 4000)
    return fit_runs(join_branches([synthetic_run('a', wsd_lr(5000, None)), synthetic_run('b', lr, start=4000)]),
                    n_boot=4)


def test_law_file_round_trip_and_refusals(tmp_path, small_law):
    path = write_law(small_law, tmp_path / 'law.json')
    again = read_law(path)
    assert again.params == small_law.params and again.runs[1].joined_to == 'a'
    schedule = LRSchedule(wsd_lr(5000, 3000))
    assert predict(again, schedule).final_loss == pytest.approx(predict(small_law, schedule).final_loss)
    assert predict(again, schedule).final_interval == pytest.approx(predict(small_law, schedule).final_interval)
    data = json.loads(path.read_text())
    older = copy.deepcopy(data)  # written before runs recorded their trend misfit: read, with none
    for run in older['runs']:
        del run['trend_rmse']
    (tmp_path / 'older.json').write_text(json.dumps(older))
    assert [run.trend_rmse for run in read_law(tmp_path / 'older.json').runs] == [0.0, 0.0]
    for change, message in [({'version': 99}, 'version 99; this foundry-ext reads version 1'),
                            ({'format': 'other'}, 'is not a loss-law file'),
                            ({'law': 'cubic'}, "unknown law 'cubic'"),
                            ({'params': {'L0': 1.0}}, 'do not match the multi-power law')]:
        (tmp_path / 'bad.json').write_text(json.dumps({**data, **change}))
        with pytest.raises(ConfigError, match=message):
            read_law(tmp_path / 'bad.json')
    (tmp_path / 'text.json').write_text('not json')
    with pytest.raises(ConfigError, match='is not JSON'):
        read_law(tmp_path / 'text.json')


@pytest.mark.parametrize('factor,steps,warmup,tokens,message', [
    (1000.0, 5000, 100, None, r'peak LR .* 1e\+03x the fitted runs'),
    (1.0, 200_000, 100, None, 'Are its steps tokens or samples'),
    (1.0, 5000, 100, 4096, 'tokens per step, but the law was fitted on runs of 2048'),
    # samples for batches: warmup and length both 16x (the length alone is only warned about)
    (1.0, 80_000, 1600, None, r'its warmup ends at step 1600 and it runs to step 80000: 16x and 16x .* tokens or samples'),
    (1.0, 90, 10, None, r'ends at step 90, before the first fitted loss \(step 10\d\).* tokens or samples'),
    (1.0, 5, 100, None, 'its LR still rises at its last step .* ends inside its warmup'),
])
def test_schedules_in_other_units_are_refused(small_law, factor, steps, warmup, tokens, message):
    small_law.tokens_per_step = 2048
    try:
        with pytest.raises(ConfigError, match=message):
            predict(small_law, LRSchedule(wsd_lr(steps, None, warmup) * factor), tokens_per_step=tokens)
    finally:
        small_law.tokens_per_step = None


def test_a_longer_schedule_with_a_longer_warmup_is_predicted(small_law):
    assert np.isfinite(predict(small_law, LRSchedule(wsd_lr(30_000, 25_000, 600))).final_loss)  # 6x both


def test_steps_counted_in_tokens_are_refused_before_any_per_step_array(tmp_path):
    path = tmp_path / 'tokens_as_steps.csv'
    path.write_text('step,lr,loss\n' + ''.join(f'{s * 102400},0.001,{3 - s / 1e4}\n' for s in range(1, 200)))
    with pytest.raises(ConfigError, match=r'tokens_as_steps\.csv: its steps go up to 20,377,600.*tokens or samples'):
        load_runs([path])[0].schedule()


def test_a_peak_lr_off_the_fitted_runs_is_warned_about(caplog):
    law = fit_runs([synthetic_run('constant', wsd_lr(3000, None)), synthetic_run('wsd', wsd_lr(3000, 2000))],
                   'multi-power')
    for factor, warned in ((1.0, False), (1.5, True)):
        caplog.clear()
        predict(law, LRSchedule(factor * wsd_lr(3000, 2400)), source='s')
        assert any('1.5x the fitted runs' in r.getMessage() for r in caplog.records) == warned


def test_a_fit_names_parameters_left_on_a_bound(tmp_path):
    law_path = tmp_path / 'law.json'
    write_law(fit_runs([synthetic_run('constant', wsd_lr(3000, None)), synthetic_run('wsd', wsd_lr(3000, 2000))],
                       'multi-power'), law_path)
    law = read_law(law_path)
    assert 'at a bound' not in format_fit(law, str(law_path))
    law.params['beta'] = BETA_MIN
    assert 'at a bound of the fit: beta=0.001.' in format_fit(law, str(law_path))
    momentum = read_law(law_path)
    momentum.law, momentum.params = 'momentum', {'L0': 2.0, 'A': 5.0, 'alpha': 0.3, 'C': 1e-3, 'lambda': 0.0}
    momentum.param_std = dict.fromkeys(momentum.params, 0.0)
    assert 'at a bound of the fit: lambda=0.' in format_fit(momentum, str(law_path))  # log tau at 0: tau = 1


def test_an_interval_wider_than_the_loss_is_warned_about_and_stays_positive(small_law, caplog):
    wild = copy.deepcopy(small_law)
    l0 = wild.model.names.index('L0')
    for i, sample in enumerate(wild.samples):
        sample[l0] *= 1.0 + (-1.0)**i * 0.9  # bootstrap replicates 10% to 190% of L0
    pred = predict(wild, LRSchedule(wsd_lr(5000, 4000)))
    assert pred.lower.min() >= 0.0 and 'interval is +-' in caplog.text and 'do not rely on it' in caplog.text
    caplog.clear()
    predict(small_law, LRSchedule(wsd_lr(5000, 4000)))
    assert 'interval is +-' not in caplog.text


def test_runs_logged_from_their_first_interval_are_not_joined_as_branches():
    a, b = synthetic_run('a', wsd_lr(3000, None)), synthetic_run('b', wsd_lr(3000, 2000))
    a.lr_steps, a.lrs = np.concatenate([[0.0], a.lr_steps]), np.concatenate([[0.0], a.lrs])  # 'a' from step 0
    assert [r.joined_to for r in join_branches([a, b])] == [None, None]
    branch = synthetic_run('c', wsd_lr(3000, 2000), start=2000)
    assert join_branches([a, branch])[1].joined_to == 'a'
