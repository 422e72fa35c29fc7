"""MLflow runs as a RUN: a real demo run logged to a real MLflow SQLite store reads back as its metrics.jsonl."""

import logging
import shutil
import socket
import time

import numpy as np
import pytest

from foundry_ext.core.errors import ConfigError
from foundry_ext.core.metric_names import LOSS_KEY, find_lr_key
from foundry_ext.core.metrics_io import lr_series, read_metric, read_run, resolve_run

NAME = 'mlflow-demo'


def _same(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.array_equal(a[key][0], b[key][0]), key
        assert np.array_equal(a[key][1], b[key][1], equal_nan=True), key


def test_an_mlflow_run_reads_back_as_its_metrics_jsonl(mlflow_demo_run, monkeypatch, tmp_path):
    run_dir, uri, run_id, _ = mlflow_demo_run
    monkeypatch.chdir(tmp_path)
    jsonl = read_run(run_dir)
    assert len(jsonl[LOSS_KEY][0]) == 80 and find_lr_key(jsonl) == 'lr-DecoupledAdamW/group0'
    by_id = read_run(f'runs:/{run_id}', uri)
    by_name = read_run(NAME, uri)
    _same(jsonl, by_id)
    _same(jsonl, by_name)
    # The LR is found as in JSONL, with every step (the demo logs repeated values too).
    assert np.array_equal(lr_series(by_id)[1], lr_series(jsonl)[1])
    # MLFLOW_TRACKING_URI is MLflow's own way to name the store.
    monkeypatch.setenv('MLFLOW_TRACKING_URI', uri)
    source = resolve_run(f'runs:/{run_id}/')
    assert source.name == NAME and source.label == f'runs:/{run_id} ({NAME})' and source.path is None
    assert np.array_equal(read_metric(NAME, LOSS_KEY)[1], jsonl[LOSS_KEY][1])
    assert not (tmp_path / 'mlruns').exists()  # reading leaves no empty artifact folder behind


def test_the_train_summary_names_the_mlflow_run(mlflow_demo_run):
    _, uri, run_id, summary = mlflow_demo_run
    assert f'MLflow: runs:/{run_id} ({NAME}) in {uri}; browse it with `mlflow ui --backend-store-uri {uri}`' in summary


def test_unknown_run_id_and_missing_metric_name_the_fix(mlflow_demo_run):
    _, uri, run_id, _ = mlflow_demo_run
    with pytest.raises(ConfigError, match=r"runs:/0123abcd: no run with id '0123abcd' in sqlite:///.*Copy the id "
                       r'from the run page of `mlflow ui`'):
        read_run('runs:/0123abcd', uri)
    with pytest.raises(ConfigError, match=rf"runs:/{run_id} \({NAME}\) has no metric 'loss/train'; it has \[.*"
                       r"'loss/train/total'.*\]. Pick one of those."):
        read_metric(f'runs:/{run_id}', 'loss/train', uri)
    with pytest.raises(ConfigError, match=r"'no-such-run' is not a metrics file or folder, and no MLflow run in .* is "
                       rf'named so \(runs there: {NAME}\)'):
        read_run('no-such-run', uri)
    with pytest.raises(ConfigError, match='give its tracking store with --tracking-uri or MLFLOW_TRACKING_URI'):
        read_run(f'runs:/{run_id}')
    with pytest.raises(ConfigError, match=r'no-such-run: no such file or folder.*--tracking-uri'):
        read_run('no-such-run')


def test_a_missing_database_is_not_created(tmp_path):
    missing = tmp_path / 'typo.db'
    with pytest.raises(ConfigError, match=r'tracking URI sqlite:///.*typo.db: no database at .*typo.db'):
        read_run('runs:/0123abcd', f'sqlite:///{missing}')
    assert not missing.exists()


def test_an_unreachable_server_fails_in_seconds():
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf'tracking URI http://127.0.0.1:{port}: cannot connect to an MLflow server '
                       r'within 5 s \(ConnectionError\). Start it'):
        read_run('runs:/0123abcd', f'http://127.0.0.1:{port}')
    assert time.monotonic() - start < 10


def test_a_name_shared_by_several_runs_reads_the_newest(mlflow_demo_run, tmp_path, caplog):
    from mlflow import MlflowClient

    _, uri, run_id, _ = mlflow_demo_run
    copy = tmp_path / 'mlflow.db'
    shutil.copy(uri[len('sqlite:///'):], copy)
    copy_uri = f'sqlite:///{copy}'
    client = MlflowClient(copy_uri)
    experiment = client.get_run(run_id).info.experiment_id
    time.sleep(0.01)  # a later start time than the demo run's
    newer = client.create_run(experiment, run_name=NAME).info.run_id
    # A step logged again (a resume): the later value wins. MLflow stores inf as the largest double.
    for value, step, timestamp in ((1.5, 3, 2000), (float('inf'), 4, 2500), (1.25, 3, 3000)):
        client.log_metric(newer, LOSS_KEY, value, timestamp=timestamp, step=step)
    with caplog.at_level(logging.WARNING, logger='foundry_ext.core.mlflow_source'):
        steps, values = read_metric(NAME, LOSS_KEY, copy_uri)
    assert steps.tolist() == [3, 4] and values.tolist() == [1.25, float('inf')]
    assert f"2 MLflow runs in {copy_uri} are named '{NAME}'; reading the newest, runs:/{newer}" in caplog.text
    assert run_id in caplog.text
