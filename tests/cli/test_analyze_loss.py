"""foundry-ext analyze-loss: JSONL and CSV inputs, the text and JSON reports, the PNG, and bad settings."""

import json

import numpy as np
from typer.testing import CliRunner

from foundry_ext.cli.main import app
from foundry_ext.spikes.detector import FAST_RECOVERING, NOT_RECOVERING, SLOW_RECOVERING
from foundry_ext.spikes.offline import detect_events
from foundry_ext.spikes.synthetic import EventSpec, make_curve

LOSS = 'loss/train/total'
LABELS = [
    EventSpec(FAST_RECOVERING, 1500, height=0.4, rise_steps=2, recovery_steps=40),
    EventSpec(SLOW_RECOVERING, 3000, height=0.5, recovery_steps=800, recovery_curvature=0.8),
    EventSpec(NOT_RECOVERING, 5000, height=0.6, recovery_steps=20, level_shift=0.2),
]


def _invoke(*args):
    return CliRunner().invoke(app, ['analyze-loss', *map(str, args)])


def _flat(output):
    """The output without the box and line breaks typer draws around errors."""
    return ' '.join(output.replace('│', ' ').split())


def _is_png(path):
    return path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and path.stat().st_size > 20_000


def test_jsonl_from_the_jsonl_logger(tmp_path):
    steps, losses, _ = make_curve(8000, LABELS, noise=0.01, seed=0, autocorr=0.2)
    losses[7500] = np.nan  # the jsonl logger writes a NaN loss as "nan"
    path = tmp_path / 'metrics.jsonl'
    with path.open('w') as f:
        for step, loss in zip(steps.tolist(), losses.tolist()):
            f.write(json.dumps({'step': step, LOSS: loss if loss == loss else 'nan', 'lr': 1e-3}) + '\n')
        f.write(json.dumps({'step': 10, LOSS: losses[10]}) + '\n')  # a resumed run logs a step again

    result = _invoke(path)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / 'metrics.loss_train_total.events.json').read_text())
    found = [(e['kind'], e['onset_step']) for e in report['events']]
    assert [k for k, _ in found] == [FAST_RECOVERING, SLOW_RECOVERING, NOT_RECOVERING, FAST_RECOVERING]
    for (_, onset), label in zip(found, LABELS):
        assert abs(onset - label.onset_step) <= 3
    # A lone NaN is a spike of infinite height that recovers at once (e.g. a skipped overflow step).
    nan_event = report['events'][3]
    assert nan_event['onset_step'] == 7500 and nan_event['height'] == 'inf' and nan_event['status'] == 'resolved'
    assert report['points'] == 8000 and report['counts'][FAST_RECOVERING] == 2
    assert report['detector']['z_threshold'] == 4.5
    assert any('1 non-finite' in note for note in report['notes'])
    # The same detector path as the benchmark's.
    assert found == [(e.kind, e.onset_step) for e in detect_events(steps, losses)]
    assert 'fast_recovering  resolved' in result.output and 'plot: ' in result.output
    assert _is_png(tmp_path / 'metrics.loss_train_total.events.png')


def test_csv_eval_series_with_settings_and_explicit_outputs(tmp_path):
    # A sparse eval stream: one point every 50 steps, a jump at step 1500 that stays (a new level).
    steps = np.arange(50, 3001, 50)
    values = 2.0 + 30.0 / np.sqrt(steps) + np.where(steps >= 1500, 0.8, 0.0)
    path = tmp_path / 'export.csv'
    rows = ['step,metrics/eval/LanguageCrossEntropy,other'] + [f'{s},{v},' for s, v in zip(steps, values)]
    path.write_text('\n'.join(rows) + '\n')

    png, report = tmp_path / 'out' / 'eval.png', tmp_path / 'out' / 'eval.json'
    result = _invoke(path, '--key', 'metrics/eval/LanguageCrossEntropy', '-o', png, '--report', report,
                     '-d', 'max_follow_steps=500', '-d', 'fast_recovery_steps=100')
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    # Eval keys get the sparse defaults (warmup of 10 points, not 100), so the jump is seen.
    assert data['detector']['warmup_steps'] == 10 and data['detector']['max_follow_steps'] == 500
    assert [(e['kind'], e['onset_step']) for e in data['events']] == [(NOT_RECOVERING, 1500)]
    assert _is_png(png)


def test_bad_settings_and_short_series_are_reported(tmp_path):
    path = tmp_path / 'm.csv'
    path.write_text('step,loss/train/total\n' + ''.join(f'{s},{3.0 - s / 100}\n' for s in range(20)))
    result = _invoke(path, '-d', 'z_thresh=4')
    assert result.exit_code == 2
    assert 'analyze-loss --detector.z_thresh=4: unknown detector setting. Valid settings:' in _flat(result.output)
    result = _invoke(path, '-d', 'warmup_steps')
    assert result.exit_code == 2 and 'expected KEY=VALUE' in _flat(result.output)
    result = _invoke(path, '--key', 'loss')
    assert result.exit_code == 2 and "no metric 'loss'" in _flat(result.output)
    result = _invoke(path)
    assert result.exit_code == 0 and 'note: Only 20 finite points, fewer than warmup_steps=100' in result.output
    result = _invoke(path, '-d', 'warmup_steps=5')
    assert result.exit_code == 0 and 'note: Detection starts after warmup_steps=5 points: steps 0 to 4' in result.output
    (tmp_path / 'header.csv').write_text('step,loss/train/total\n')
    result = _invoke(tmp_path / 'header.csv')
    assert result.exit_code == 2 and 'header.csv has no rows' in _flat(result.output)


def test_a_metric_that_is_not_a_loss_is_one_line_and_its_points_one_warning(tmp_path, caplog):
    path = tmp_path / 'm.csv'
    path.write_text('step,grad,loss/train/total\n' + ''.join(f'{s},{-1 - s},{3 - s / 500}\n' for s in range(300)))
    result = _invoke(path, '--key', 'grad')
    assert result.exit_code == 2 and 'grad: all 300 values are <= 0' in _flat(result.output)
    path.write_text('step,loss/train/total\n' + ''.join(f'{s},{3 - s / 500 if s % 7 else -1}\n' for s in range(300)))
    caplog.clear()
    result = _invoke(path)
    assert result.exit_code == 0 and '43 values <= 0 were left out' in result.output
    ignoring = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Ignoring')]
    assert ignoring == ['Ignoring 43 non-positive loss(es) (first: -1 at step 0): they have no log.']


def test_the_console_script_prints_bad_input_as_one_line(tmp_path):
    import subprocess
    import sys

    path = tmp_path / 'm.csv'
    path.write_text('step,loss/train/total\n0,3.0\n1,2.9\n')
    for args, message in ((['analyze-loss', str(tmp_path / 'missing.jsonl')], 'missing.jsonl'),
                          (['analyze-loss', str(path), '--key', 'loss'], "has no metric 'loss'")):
        done = subprocess.run([sys.executable, '-m', 'foundry_ext.cli.main', *args], capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert 'Traceback' not in done.stderr and done.stderr.count('error: ') == 1
