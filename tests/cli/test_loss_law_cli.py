"""``foundry-ext loss-law`` end to end: fit on runs, predict a YAML or a file, forecast branches, and bad input."""

import json
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest
from typer.testing import CliRunner

from foundry_ext.cli.main import app, main
from foundry_ext.commands.loss_law import yaml_schedule
from foundry_ext.core.config import load_train_config
from tests.conftest import DEMO_YAML, REPO
from tests.loss_law.helpers import law_curve

LR_KEY = 'lr-DecoupledAdamW/group0'
MAIN = ['scheduler.t_decay_start=100000ba', 'max_duration=1000ba']


def _branch_overrides(at, decay, shape='1-sqrt'):
    return [f'scheduler.t_decay_start={at}ba', f'scheduler.t_decay={decay}ba', f'scheduler.decay_shape={shape}',
            f'max_duration={at + decay}ba']


def _lr(overrides):
    return yaml_schedule(load_train_config(DEMO_YAML, overrides))[0].lr


def _write_run(path, lr, start):
    """A run as the jsonl logger writes it: the demo YAML's LR (as lr_monitor logs it) and a known law's loss."""
    steps = np.arange(max(start, 1), lr.size + 1)
    loss = law_curve(lr, steps.astype(float))
    path.mkdir(parents=True)
    with (path / 'metrics.jsonl').open('w') as f:
        for step, value in zip(steps, loss):
            row = {'step': int(step), 'loss/train/total': float(value)}
            if step < lr.size:
                row[LR_KEY] = float(lr[step])
            f.write(json.dumps(row) + '\n')


@pytest.fixture(scope='module')
def law_path(tmp_path_factory):
    root = tmp_path_factory.mktemp('runs')
    _write_run(root / 'main', _lr(MAIN), 0)
    _write_run(root / 'at400', _lr(_branch_overrides(400, 100)), 400)
    _write_run(root / 'at600', _lr(_branch_overrides(600, 150)), 600)
    out = root / 'law.json'
    result = CliRunner().invoke(app, ['loss-law', 'fit', str(root / 'main'), str(root / 'at400'), str(root / 'at600'),
                                      '-o', str(out), '--bootstrap', '8'])
    assert result.exit_code == 0, result.output
    assert 'LR before step 400 from main' in result.output and f'wrote {out}' in result.output
    return out


def test_predict_a_yaml_schedule_as_json(law_path, tmp_path):
    png = tmp_path / 'curve.png'
    result = CliRunner().invoke(app, ['loss-law', 'predict', str(law_path), '--schedule', DEMO_YAML, '--json',
                                      '-o', str(png), 'max_duration=800ba'])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out['final_step'] == 800 and len(out['curve']['step']) > 100
    lo, hi = out['final_loss_interval']
    assert lo <= out['final_loss'] <= hi
    truth = law_curve(_lr(['max_duration=800ba']), np.array([800.0]))[0]
    assert out['final_loss'] == pytest.approx(truth, rel=2e-3)
    assert mpimg.imread(png).std() > 0.01


def test_branches_table_png_and_the_best_decay_per_budget(law_path, tmp_path):
    png = tmp_path / 'branches.png'
    result = CliRunner().invoke(app, ['loss-law', 'branches', str(law_path), DEMO_YAML, *MAIN, '--at', '400,500ba',
                                      '--decay', '100ba,200ba', '--shape', 'linear,1-sqrt', '-o', str(png)])
    assert result.exit_code == 0, result.output
    assert result.output.count('\n| 4') + result.output.count('\n| 5') == 8  # 2 steps x 2 decays x 2 shapes
    truth = {(at, d, shape): law_curve(_lr([*MAIN[:0], *_branch_overrides(at, d, shape)]), np.array([at + d + 0.0]))[0]
             for at in (400, 500) for d in (100, 200) for shape in ('linear', '1-sqrt')}
    best = min((k for k in truth if sum(k[:2]) == 600), key=truth.get)
    line = next(line for line in result.output.splitlines() if line.startswith('budget 600:'))
    assert f'best decay {best[1]} batches, {best[2]} (from step {best[0]})' in line
    assert mpimg.imread(png).std() > 0.01


def _one_line_error(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, 'argv', ['foundry-ext', 'loss-law', *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith('error: ') and '\n' not in err
    return err


def test_bad_input_fails_with_one_line(law_path, tmp_path, monkeypatch, capsys):
    no_lr = tmp_path / 'no_lr.csv'
    no_lr.write_text('step,loss\n1,3.0\n2,2.9\n')
    assert 'no LR column' in _one_line_error(monkeypatch, capsys, 'fit', str(no_lr), '-o', str(tmp_path / 'l.json'))
    old = tmp_path / 'old.json'
    old.write_text(json.dumps({**json.loads(law_path.read_text()), 'version': 0}))
    err = _one_line_error(monkeypatch, capsys, 'predict', str(old), '--schedule', DEMO_YAML)
    assert 'version 0' in err and 'Refit' in err
    multiplier = tmp_path / 'multiplier.csv'  # an LR multiplier where an LR belongs: another unit
    multiplier.write_text('step,lr\n0,0\n50,1.0\n1000,1.0\n')
    assert 'multiplier given instead of an LR' in _one_line_error(monkeypatch, capsys, 'predict', str(law_path),
                                                                      '--schedule', str(multiplier))
    assert "--fit-from='soon' must be a step" in _one_line_error(monkeypatch, capsys, 'fit', str(no_lr), '--fit-from',
                                                                  'soon')
    short = tmp_path / 'short.csv'
    short.write_text('step,lr,loss\n' + ''.join(f'{s},0.003,{3 - s / 100}\n' for s in range(1, 4)))
    assert 'at least 5 per run' in _one_line_error(monkeypatch, capsys, 'fit', str(short))
    err = _one_line_error(monkeypatch, capsys, 'branches', str(law_path), DEMO_YAML, *MAIN, '--at', '400tok',
                          '--decay', '100ba')
    assert "'400tok' is in 'tok', but steps are batches" in err
    err = _one_line_error(monkeypatch, capsys, 'branches', str(law_path), DEMO_YAML, *MAIN, '--at', '20',
                          '--decay', '100ba')
    assert 'still warming up' in err


def test_public_csvs_need_no_options(tmp_path):
    data = REPO / 'data' / 'multipowerlaw' / 'csv_25'
    out = tmp_path / 'law.json'
    result = CliRunner().invoke(app, ['loss-law', 'fit', str(data / 'constant_24000.csv'), str(data / 'wsdcon_9.csv'),
                                      '-o', str(out), '--law', 'momentum', '--bootstrap', '4'])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ['loss-law', 'predict', str(out), '--schedule', str(data / 'wsdcon_18.csv')])
    assert result.exit_code == 0 and 'predicted loss at the final step 14144' in result.output, result.output
