"""`foundry-ext collapse` on real train_from_yaml runs (tau, fit, predict, plot)."""

from __future__ import annotations

import json
import re
import shutil

import matplotlib.image as mpimg
import numpy as np
import pytest
from typer.testing import CliRunner

from foundry_ext.cli.main import app
from foundry_ext.collapse.curves import smooth_curve
from foundry_ext.collapse.prediction import CollapseResidual, final_window_losses, predict_final_loss
from foundry_ext.collapse.reference import ReferenceCurve
from foundry_ext.commands.collapse import _band_verdict
from foundry_ext.core.metric_names import EVAL_CROSS_ENTROPY
from scripts.experiments.collapse_family import BASE_YAML, REPO
from tests.collapse_family_runs import SPEC, reference_family


@pytest.fixture(scope='module')
def family(tmp_path_factory: pytest.TempPathFactory):
    return reference_family(tmp_path_factory.getbasetemp() / 'collapse_family')


def _invoke(*args: str):
    return CliRunner().invoke(app, ['collapse', *args])


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f'{pattern!r} not in:\n{text}'
    return float(match.group(1))


def test_tau_prints_tpp_tau_and_the_weight_decay_for_a_target():
    result = _invoke('tau', str(BASE_YAML), 'max_duration=1000ba', 'optimizer.weight_decay=0.002', '--target', '0.25')
    assert result.exit_code == 0, result.output
    # d_model 64, 2 layers, vocab 320, learned positions: 128,768 parameters; B = 16 x 128 tokens.
    assert _number(r'TPP = D/N:\s+([\d.]+)', result.output) == pytest.approx(1000 * 2048 / 128768, rel=1e-3)
    assert _number(r'tau_iter:\s+([\d.]+) steps', result.output) == pytest.approx(500)
    assert _number(r'tau = tau_iter/T:\s+([\d.]+)', result.output) == pytest.approx(0.5)
    assert _number(r'optimizer.weight_decay=([\d.e-]+)', result.output) == pytest.approx(1 / (0.25 * 1000))


def test_tau_counts_the_schedule_peak_and_refuses_typos():
    # linear_decay_with_warmup peaking at alpha_i = 0.5 halves decoupled_adamw's decay at the peak.
    result = _invoke('tau', str(BASE_YAML), 'max_duration=1000ba', 'optimizer.weight_decay=0.002',
                     'scheduler.alpha_i=0.5', '--target', '0.25')
    assert result.exit_code == 0, result.output
    assert _number(r'tau_iter:\s+([\d.]+) steps', result.output) == pytest.approx(1000)
    assert _number(r'optimizer.weight_decay=([\d.e-]+)', result.output) == pytest.approx(2 / (0.25 * 1000))
    assert _invoke('tau', str(BASE_YAML), '--targt', '0.25').exit_code == 2
    result = _invoke('tau', str(BASE_YAML), 'max_duration=1000ba', '0.25')
    assert result.exit_code == 2 and "error: '0.25' is not an override: write key=value" in result.output


def test_tau_reports_a_duration_it_cannot_convert():
    result = _invoke('tau', str(BASE_YAML), 'max_duration=2ep')
    assert result.exit_code == 2
    assert "error: max_duration='2ep' is in 'ep'" in result.output


def test_fit_predict_and_plot_real_runs(family, tmp_path):
    runs, ref_path = family
    folders = [ref_path.parent / f'ref-s{seed}' for seed in SPEC.seeds]
    out = tmp_path / 'ref.json'
    result = _invoke('fit', *map(str, folders), '-o', str(out), '--smooth', str(SPEC.smoothing))
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == json.loads(ref_path.read_text()), 'the CLI must fit what the API fits'
    ref = ReferenceCurve.from_json(out.read_text())
    assert ref.smoothing == SPEC.smoothing and ref.tau_fraction == pytest.approx(SPEC.tau)
    assert ref.tpp == pytest.approx(SPEC.tpp, rel=0.01)

    # A metrics file as the run; the config.yaml beside it gives T.
    result = _invoke('predict', str(folders[1] / 'metrics.jsonl'), '--ref', str(out), '--fraction', '0.5')
    assert result.exit_code == 0, result.output
    run = runs[1]
    steps, losses = smooth_curve(run.curve.steps, run.curve.losses, SPEC.smoothing)
    keep = steps / run.total_steps <= 0.5
    expected = predict_final_loss(steps[keep], losses[keep], run.total_steps, ref).final_loss
    assert _number(r'predicted L\(T\) = ([\d.]+)', result.output) == pytest.approx(expected, abs=6e-5)
    measured, predicted = final_window_losses(*run.curve, ref, expected)
    assert _number(r'mean loss over the last 5% of steps ([\d.]+)', result.output) == pytest.approx(measured, abs=6e-5)
    assert _number(r', predicted ([\d.]+):', result.output) == pytest.approx(predicted, abs=6e-5)
    assert 0.45 < _number(r'collapse residual at t/T = ([\d.]+)', result.output) <= 0.5

    # An unfinished run: the first 40 of 78 steps, with the run's config.yaml.
    partial = tmp_path / 'partial'
    partial.mkdir()
    shutil.copy(folders[0] / 'config.yaml', partial)
    lines = (folders[0] / 'metrics.jsonl').read_text().splitlines()
    (partial / 'metrics.jsonl').write_text('\n'.join(l for l in lines if json.loads(l).get('step', 0) < 40))
    result = _invoke('predict', str(partial), '--ref', str(out))
    assert result.exit_code == 0, result.output
    assert f'T={run.total_steps}' in result.output and 'finished' not in result.output
    # Without its config.yaml, T is taken as its last step + 1; its LR there, far from the schedule's end, warns.
    no_config = tmp_path / 'no_config'
    no_config.mkdir()
    shutil.copy(partial / 'metrics.jsonl', no_config)
    result = _invoke('predict', str(no_config), '--ref', str(out))
    assert result.exit_code == 0 and 'yet T=40 makes it finished. If it is still training, give --total-steps' in \
        ' '.join(result.output.split())

    png = tmp_path / 'collapse.png'
    result = _invoke('plot', *map(str, folders), str(partial), '--ref', str(out), '--residuals', '-o', str(png))
    assert result.exit_code == 0, result.output
    image = mpimg.imread(png)
    assert image.shape[1] > 2 * image.shape[0] and image.std() > 0.01

    result = _invoke('fit', str(folders[0]), str(partial), '-o', str(tmp_path / 'x.json'))
    assert result.exit_code == 2 and "runs ['partial'] did not log a loss at their last step" in result.output
    result = _invoke('plot', str(partial), '-o', str(tmp_path / 'y.png'))
    assert result.exit_code == 2 and 'partial is unfinished: pass --ref' in result.output


def test_missing_files_and_all_nan_runs_are_one_line_errors(family, tmp_path):
    result = _invoke('tau', str(tmp_path / 'missing.yaml'))
    assert result.exit_code == 2 and 'missing.yaml' in result.output and 'error: 2' not in result.output
    nan_run = tmp_path / 'nan'
    nan_run.mkdir()
    (nan_run / 'metrics.jsonl').write_text(''.join(f'{{"step": {s}, "loss/train/total": NaN}}\n' for s in range(5)))
    result = _invoke('fit', str(nan_run), '-o', str(tmp_path / 'ref.json'))
    assert result.exit_code == 2 and 'has no finite loss/train/total value' in result.output
    _, ref_path = family
    run = ref_path.parent / f'ref-s{SPEC.seeds[0]}'
    for text in ('{', '{"format": "foundry_ext.loss_law", "version": 1}'):
        (tmp_path / 'other.json').write_text(text)
        result = _invoke('predict', str(run), '--ref', str(tmp_path / 'other.json'))
        assert result.exit_code == 2 and 'other.json is not a collapse reference' in ' '.join(result.output.split())


def test_fit_creates_the_output_folder(family, tmp_path):
    _, ref_path = family
    out = tmp_path / 'refs' / 'new' / 'ref.json'
    result = _invoke('fit', *(str(ref_path.parent / f'ref-s{seed}') for seed in SPEC.seeds), '-o', str(out))
    assert result.exit_code == 0, result.output
    assert ReferenceCurve.from_json(out.read_text()).smoothing == 25


def test_fit_and_predict_runs_of_another_trainer_from_their_run_json(tmp_path):
    # W&B exports of a real family (data/lr_scheduling_families): metrics.csv with an eval loss every 200 steps and
    # a run.json with the controls. No config.yaml, no training.
    data = REPO / 'data' / 'lr_scheduling_families' / 'slimpajama-cosine'
    refs = [data / name for name in ('33m-7000ba-lr0.002', '53m-11250ba-lr0.002', '60m-12500ba-lr0.002')]
    out = tmp_path / 'ref.json'
    result = _invoke('fit', *map(str, refs), '-o', str(out), '--loss-key', EVAL_CROSS_ENTROPY)
    assert result.exit_code == 0, result.output
    assert 'size-aware' in result.output and 'smoothing 1' in result.output
    big = str(data / '360m-37500ba-lr0.001')
    result = _invoke('predict', big, '--ref', str(out), '--fraction', '0.1', '--loss-key', EVAL_CROSS_ENTROPY)
    assert result.exit_code == 0, result.output
    assert 'reference runs weighed' in result.output
    assert abs(_number(r'error ([+-][\d.]+)%', result.output)) < 5
    result = _invoke('predict', big, '--ref', str(out), '--fraction', '0.01', '--loss-key', EVAL_CROSS_ENTROPY)
    assert result.exit_code == 2 and 'need at least 2 logged points' in result.output
    assert 'use a fraction of at least that' in result.output
    for bad in ('1.5', '0', '-0.1'):
        result = _invoke('predict', big, '--ref', str(out), '--fraction', bad, '--loss-key', EVAL_CROSS_ENTROPY)
        assert result.exit_code == 2 and 'must be in (0, 1]' in result.output, result.output


def test_points_beyond_the_band_short_of_the_alert_rule_are_counted_not_called_never():
    def verdict(z):
        z = np.asarray(z, dtype=float)
        return _band_verdict(CollapseResidual(np.linspace(0.1, 0.2, z.size), z, z, z, 1.0), 3.0, 5)

    assert verdict([np.nan, 0.5, -8.3, -8.4]) == ('not out of band by the rule (|z| > 3, 5 in a row): 2 of its 3 '
                                                  'points lie beyond |z| > 3, never 5 in a row')
    assert verdict([0.1, 0.2, -0.5]) == 'never out of band (|z| > 3, 5 in a row)'
    assert verdict([4.0] * 6) == 'out of band (|z| > 3, 5 in a row) from t/T = 0.100'
