"""MLflow runs as the RUN of analyze-loss, collapse and loss-law: the same results as from the run's metrics.jsonl
(one real demo run logged to both, in a real SQLite store), and one-line errors."""

import json
import socket
import subprocess
import sys

from typer.testing import CliRunner

from foundry_ext.cli.main import app

# A short run has fewer points than the default warmup (100): detect on a short warmup, with a low threshold,
# so that the real curve yields events to compare.
DETECTOR = ['-d', 'warmup_steps=10', '-d', 'z_threshold=1.5', '-d', 'min_height=0.002', '-d', 'recover_window=3',
            '-d', 'recover_confirm=3']


def _events(tmp_path, name, *run):
    report = tmp_path / f'{name}.json'
    result = CliRunner().invoke(app, ['analyze-loss', *map(str, run), '--report', str(report),
                                      '-o', str(tmp_path / f'{name}.png'), *DETECTOR])
    assert result.exit_code == 0, result.output
    return json.loads(report.read_text()), result.output


def test_runs_id_and_run_name_give_the_events_of_metrics_jsonl(mlflow_demo_run, tmp_path, monkeypatch):
    run_dir, uri, run_id, _ = mlflow_demo_run
    from_file, _ = _events(tmp_path, 'file', run_dir / 'metrics.jsonl')
    from_id, output = _events(tmp_path, 'id', f'runs:/{run_id}', '--tracking-uri', uri)
    monkeypatch.setenv('MLFLOW_TRACKING_URI', uri)
    from_name, _ = _events(tmp_path, 'name', 'mlflow-demo')
    assert from_file['events'], 'the settings should find events on the real curve'
    assert from_id['events'] == from_file['events'] == from_name['events']
    assert from_id['points'] == from_file['points'] == 80
    assert from_id['source'] == from_name['source'] == f'runs:/{run_id} (mlflow-demo)' and from_id['file'] is None
    assert output.startswith(f'runs:/{run_id} (mlflow-demo): loss/train/total, 80 points')
    # Without -o the plot and report go to the working folder, named after the run.
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ['analyze-loss', f'runs:/{run_id}']).exit_code == 0
    assert (tmp_path / 'mlflow-demo.loss_train_total.events.png').is_file()


def test_bad_mlflow_input_names_the_fix(mlflow_demo_run):
    _, uri, run_id, _ = mlflow_demo_run
    for args, message in ((['analyze-loss', 'runs:/0123abcd'], "no run with id '0123abcd'"),
                          (['analyze-loss', f'runs:/{run_id}', '--key', 'loss'], "has no metric 'loss'; it has ["),
                          (['collapse', 'plot', 'runs:/0123abcd'], "no run with id '0123abcd'"),
                          (['collapse', 'fit', f'runs:/{run_id}', '--loss-key', 'loss'], "has no metric 'loss'"),
                          (['loss-law', 'fit', 'runs:/0123abcd'], "no run with id '0123abcd'"),
                          (['loss-law', 'fit', f'runs:/{run_id}', '--lr-key', 'lr'], "has no LR column 'lr'")):
        result = CliRunner().invoke(app, [*args, '--tracking-uri', uri])
        assert result.exit_code == 2 and 'error: runs:/' in result.output and message in result.output, result.output
        assert result.output.count('\n') == 1, result.output


def test_an_unreachable_server_is_one_line():
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(('127.0.0.1', 0))
        dead = f'http://127.0.0.1:{s.getsockname()[1]}'
    done = subprocess.run([sys.executable, '-m', 'foundry_ext.cli.main', 'analyze-loss', 'runs:/0123abcd',
                           '--tracking-uri', dead], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and f'tracking URI {dead}: cannot connect to an MLflow server' in done.stderr
    assert 'Traceback' not in done.stderr and done.stderr.count('error: ') == 1, done.stderr
    # How fast: tests/core/test_mlflow_source.py (in-process; a subprocess mostly times importing Foundry).


def _invoke(*args):
    result = CliRunner().invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result.output


def test_collapse_reads_an_mlflow_run_as_its_run_folder(mlflow_demo_run, tmp_path):
    run_dir, uri, run_id, _ = mlflow_demo_run
    refs = {}
    for name, run in (('folder', run_dir), ('mlflow', f'runs:/{run_id}')):
        ref = tmp_path / f'{name}.json'
        _invoke('collapse', 'fit', run, '-o', ref, '--tracking-uri', uri)
        refs[name] = json.loads(ref.read_text())
        predicted = _invoke('collapse', 'predict', run, '--ref', tmp_path / 'folder.json', '--fraction', 0.5,
                            '--tracking-uri', uri)
        refs[name, 'predict'] = predicted.replace('mlflow-demo:', 'run:')
        _invoke('collapse', 'plot', run, '-o', tmp_path / f'{name}.png', '--tracking-uri', uri)
        assert (tmp_path / f'{name}.png').stat().st_size > 0
    assert refs['mlflow'] == refs['folder']
    assert refs['mlflow', 'predict'] == refs['folder', 'predict']


def test_loss_law_reads_an_mlflow_run_as_its_run_folder(mlflow_demo_run, tmp_path, monkeypatch):
    run_dir, uri, run_id, _ = mlflow_demo_run
    laws, predictions = {}, {}
    monkeypatch.setenv('MLFLOW_TRACKING_URI', uri)  # the other way to name the store
    for name, run in (('folder', run_dir), ('mlflow', f'runs:/{run_id}')):
        law = tmp_path / f'{name}.json'
        _invoke('loss-law', 'fit', run, '-o', law, '--bootstrap', 4)
        laws[name] = json.loads(law.read_text())
        predictions[name] = json.loads(_invoke('loss-law', 'predict', tmp_path / 'folder.json', '--schedule', run,
                                               '--json'))
    for name, source in (('folder', ('run', str(run_dir / 'metrics.jsonl'))),
                         ('mlflow', ('mlflow-demo', f'runs:/{run_id} (mlflow-demo)'))):
        [run] = laws[name].pop('runs')
        assert (run.pop('name'), run.pop('source')) == source
        laws[name]['run'] = run
    assert laws['mlflow'] == laws['folder']
    assert predictions['mlflow'] == predictions['folder']
