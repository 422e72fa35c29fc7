"""Tests for foundry_ext.collapse.runs: runs with a run.json (other trainers, W&B exports) and fitting them."""

import json
import math
import shutil
from pathlib import Path

import pytest

from foundry_ext.collapse.reference import ReferenceCurve
from foundry_ext.collapse.runs import fit_runs, load_run, read_run_json
from foundry_ext.core.errors import ConfigError
from foundry_ext.core.metric_names import EVAL_CROSS_ENTROPY

DATA = Path(__file__).resolve().parents[2] / 'data' / 'lr_scheduling_families'
SMALL = DATA / 'slimpajama-cosine' / '33m-7000ba-lr0.002'


def test_a_run_folder_with_metrics_csv_and_run_json():
    run = load_run(SMALL, loss_key=EVAL_CROSS_ENTROPY)
    assert run.total_steps == 7000  # tokens / batch_tokens
    assert run.finished, 'an eval loss every 200 steps ends at step 6800 of 7000'
    assert run.controls.params == 33_479_040
    assert run.controls.tpp == pytest.approx(7000 * 102_400 / 33_479_040)
    assert run.controls.tau == pytest.approx(1 / (0.002 * 0.1 * 7000))  # B / (lr * wd * D), [SwC] Eq. (2)
    after_warmup = (0.5 - 300 / 7000) / (1 - 300 / 7000)  # cosine to 10% over the steps after the warmup
    assert run.schedule()(0.5) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * after_warmup)), abs=0.002)
    assert run.budget is None


def test_a_metrics_file_takes_its_own_run_json_before_the_shared_one(tmp_path):
    shutil.copy(SMALL / 'metrics.csv', tmp_path / 'small.csv')
    (tmp_path / 'run.json').write_text(json.dumps({'params': 1e6, 'tokens': 1e9}))
    (tmp_path / 'small.run.json').write_text(json.dumps({'params': 2e6, 'tokens': 1e9, 'total_steps': 7000,
                                                         'tau': 0.3}))
    run = load_run(tmp_path / 'small.csv', loss_key=EVAL_CROSS_ENTROPY)
    assert (run.name, run.total_steps, run.controls.params, run.controls.tau) == ('small', 7000, 2e6, 0.3)


@pytest.mark.parametrize('content, message', [
    ({'params': 1e6}, '"tokens" is missing'),
    ({'params': 1e6, 'tokens': 1e9, 'lr': 1e-3}, "unknown keys ['lr']"),
    ({'params': -1, 'tokens': 1e9}, 'params=-1 must be a finite number > 0'),
    ({'params': 1e6, 'tokens': '1.7e9'}, "tokens='1.7e9' must be a finite number > 0 .a JSON number, not a string"),
    ({'params': 1e6, 'tokens': 1e9, 'weight_decay': None}, 'weight_decay=None must be a finite number >= 0'),
    ({'params': 1e6, 'tokens': 1e9, 'total_steps': 10.5}, 'total_steps=10.5 must be a whole number'),
    ([1, 2], 'must hold a JSON object'),
])
def test_bad_run_json_names_the_file_key_and_fix(tmp_path, content, message):
    path = tmp_path / 'run.json'
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=message.replace('[', r'\[').replace(']', r'\]')) as err:
        read_run_json(path)
    assert str(path) in str(err.value)


def test_fitting_runs_whose_sizes_differ_gives_a_size_aware_reference():
    runs = [load_run(DATA / 'slimpajama-cosine' / name, loss_key=EVAL_CROSS_ENTROPY)
            for name in ('33m-7000ba-lr0.002', '53m-11250ba-lr0.002', '60m-12500ba-lr0.002')]
    ref = fit_runs(runs)
    assert ref.smoothing == 1, 'an eval loss every 200 steps is not smoothed'
    assert ref.fit_start == pytest.approx(300 / 12500, abs=0.03) or ref.fit_start == 0.05
    assert ref.drift is not None and {'tau', 'params'} <= set(ref.drift.keys)
    weights = ref.weights(runs[2].controls)
    assert max(weights) == weights[2] and math.isclose(sum(weights), 1.0)
    # Each reference run is closest to its own specialized reference.
    for run in runs:
        own = ref.for_controls(run.controls)
        assert own.correction and ReferenceCurve.from_json(own.to_json()) == own
    assert ReferenceCurve.from_json(ref.to_json()) == ref


def test_an_export_of_another_trainer_names_its_step_and_lr_its_own_way(tmp_path):
    # e.g. a W&B CSV: `_step`, `learning_rate` and the loss under its own name; the controls in run.json.
    rows = [(s, 3.0 * (s / 1000) ** -0.05, 1e-3 * min(1.0, s / 50) * (1 - s / 1001)) for s in range(10, 1001, 10)]
    (tmp_path / 'export.csv').write_text('_step,val/loss,learning_rate\n' + ''.join(f'{s},{l},{lr}\n' for s, l, lr in rows))
    (tmp_path / 'run.json').write_text(json.dumps({'params': 1e8, 'tokens': 2e9, 'total_steps': 1000}))
    run = load_run(tmp_path / 'export.csv', loss_key='val/loss')
    assert run.finished and run.total_steps == 1000 and len(run.curve.steps) == 100
    assert run.schedule()(0.05) == pytest.approx(1.0, abs=0.02)


def test_a_loss_column_is_read_by_default_and_a_t_beyond_the_steps_names_where_t_came_from(tmp_path):
    lines = (SMALL / 'metrics.csv').read_text().splitlines()
    header = lines[0].split(',')
    column = header.index(EVAL_CROSS_ENTROPY)
    rows = [line.split(',') for line in lines[1:]]
    text = 'step,loss\n' + ''.join(f'{r[header.index("step")]},{r[column]}\n' for r in rows if r[column])
    (tmp_path / 'metrics.csv').write_text(text)
    shutil.copy(SMALL / 'run.json', tmp_path / 'run.json')
    run = load_run(tmp_path)  # no loss/train/total: its 'loss' column
    assert run.total_steps == 7000 and run.curve.losses.size == len(text.splitlines()) - 1
    with pytest.raises(ConfigError, match="no metric 'val'.* Name the loss with --loss-key"):
        load_run(tmp_path, loss_key='val')
    (tmp_path / 'run.json').write_text(json.dumps({'params': 1e6, 'tokens': 20 * 102_400, 'batch_tokens': 102_400}))
    with pytest.raises(ConfigError, match=r'beyond T=20 from .*run\.json \(total_steps, or tokens / batch_tokens\)'):
        load_run(tmp_path)
