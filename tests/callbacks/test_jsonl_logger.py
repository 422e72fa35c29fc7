import json

import pytest
from composer.callbacks import LRMonitor

from foundry_ext.callbacks.jsonl_logger import JSONLLogger
from foundry_ext.core.errors import ConfigError
from foundry_ext.core.metrics_io import read_metric, read_metrics
from tests.conftest import tiny_trainer


def test_logs_every_step_from_a_real_trainer(tmp_path):
    logger = JSONLLogger(path=str(tmp_path / '{run_name}' / 'm.jsonl'))
    trainer = tiny_trainer(None, '7ba', callbacks=[LRMonitor()], loggers=[logger], run_name='r1')
    trainer.fit()
    trainer.close()
    steps, losses = read_metric(tmp_path / 'r1' / 'm.jsonl', 'loss/train/total')
    assert steps.tolist() == list(range(7)) and (losses > 0).all()
    assert read_metric(tmp_path / 'r1' / 'm.jsonl', 'lr-SGD/group0')[0].tolist() == list(range(1, 8))


def test_later_rows_win_and_non_finite_values_survive(tmp_path):
    path = tmp_path / 'm.jsonl'
    path.write_text('\n'.join(json.dumps(r) for r in [
        {'step': 1, 'loss': 2.0}, {'step': 2, 'loss': 'nan'}, {'step': 1, 'loss': 1.5, 'note': 'x'}]))
    steps, values = read_metrics(path)['loss']
    assert steps.tolist() == [1, 2] and values[0] == 1.5 and values[1] != values[1]
    with pytest.raises(ConfigError, match="no metric 'acc'.*'loss'"):
        read_metric(path, 'acc')


def test_csv_is_read_too(tmp_path):
    path = tmp_path / 'm.csv'
    path.write_text('step,loss/train/total\n0,3.0\n1,2.5\n')
    steps, values = read_metric(path, 'loss/train/total')
    assert steps.tolist() == [0, 1] and values.tolist() == [3.0, 2.5]


def _run(tmp_path, duration, **kwargs):
    """A tiny run logging to ``tmp_path/m.jsonl`` and saving a checkpoint every 3 batches into ``tmp_path/ck``."""
    trainer = tiny_trainer(None, duration, loggers=[JSONLLogger(path=str(tmp_path / 'm.jsonl'))],
                           save_folder=str(tmp_path / 'ck'), save_interval='3ba', save_overwrite=True, **kwargs)
    trainer.fit()
    trainer.close()


def test_a_new_run_replaces_an_earlier_runs_lines_and_a_resume_appends(tmp_path, caplog):
    path = tmp_path / 'm.jsonl'
    _run(tmp_path, '6ba')
    with caplog.at_level('WARNING', logger='foundry_ext.callbacks.jsonl_logger'):
        _run(tmp_path, '3ba')  # shorter: steps 3-5 of the first run must not survive behind it
    assert read_metric(path, 'loss/train/total')[0].tolist() == [0, 1, 2]
    assert 'held the metrics of an earlier run' in caplog.text
    _run(tmp_path, '5ba', load_path=str(tmp_path / 'ck' / 'ep0-ba3-rank0.pt'))  # a resume continues the file
    assert read_metric(path, 'loss/train/total')[0].tolist() == [0, 1, 2, 3, 4]


def test_fit_with_reset_time_replaces_the_earlier_fit_and_a_continuing_fit_appends(tmp_path):
    path = tmp_path / 'm.jsonl'
    trainer = tiny_trainer(None, '6ba', loggers=[JSONLLogger(path=str(path))])
    trainer.fit()
    trainer.fit(duration='3ba', reset_time=True)  # a new run on the same trainer: steps 3-5 must not survive
    assert read_metric(path, 'loss/train/total')[0].tolist() == [0, 1, 2]
    trainer.fit(duration='2ba')  # continues the new run
    trainer.close()
    assert read_metric(path, 'loss/train/total')[0].tolist() == [0, 1, 2, 3, 4]


def test_tensor_and_array_metrics_are_written_as_numbers_or_lists(tmp_path):
    import numpy as np
    import torch

    logger = JSONLLogger(path=str(tmp_path / 'm.jsonl'))
    trainer = tiny_trainer(None, '1ba', loggers=[logger])
    trainer.logger.log_metrics({'scalar': torch.tensor([2.5]), 'vector': torch.tensor([1.0, float('inf')]),
                                'array': np.arange(3), 'np_scalar': np.float32(0.5),
                                'per_class': {'a': torch.tensor(0.25), 'b': torch.tensor(float('nan'))}})
    trainer.close()
    row = json.loads((tmp_path / 'm.jsonl').read_text().splitlines()[-1])
    assert row['scalar'] == 2.5 and row['vector'] == [1.0, 'inf'] and row['array'] == [0, 1, 2]
    assert row['np_scalar'] == 0.5 and row['per_class'] == {'a': 0.25, 'b': 'nan'}


def test_a_remote_path_is_refused_at_construction():
    with pytest.raises(ValueError, match="path='s3://bucket/m.jsonl' is remote"):
        JSONLLogger(path='s3://bucket/m.jsonl')


def test_the_old_flush_interval_key_is_checked_and_said_to_have_no_effect(tmp_path, caplog):
    with pytest.raises(ConfigError, match='loggers.jsonl.flush_interval=0 must be an integer >= 1'):
        JSONLLogger(path=str(tmp_path / 'm.jsonl'), flush_interval=0)
    JSONLLogger(path=str(tmp_path / 'm.jsonl'), flush_interval=50)
    assert 'loggers.jsonl.flush_interval=50 has no effect any more' in caplog.text


def test_every_line_is_in_the_file_as_soon_as_it_is_logged(tmp_path):
    """A kill loses nothing logged: no line waits in a buffer (it used to wait for 50 lines or fit_end)."""
    path = tmp_path / 'm.jsonl'
    trainer = tiny_trainer(None, '2ba', loggers=[JSONLLogger(path=str(path))])
    trainer.fit()
    trainer.logger.log_metrics({'probe': 1.5})
    lines = path.read_text().splitlines()  # read by another file handle, before any flush or close
    trainer.close()
    assert read_metric(path, 'loss/train/total')[0].tolist() == [0, 1]
    assert json.loads(lines[-1]) == {'step': 2, 'probe': 1.5}


def test_a_resume_drops_an_unfinished_last_line(tmp_path, caplog):
    path = tmp_path / 'm.jsonl'
    _run(tmp_path, '3ba')
    with path.open('a') as f:
        f.write('{"step": 3, "loss/tra')  # a write cut off
    _run(tmp_path, '4ba', load_path=str(tmp_path / 'ck' / 'ep0-ba3-rank0.pt'))
    assert read_metric(path, 'loss/train/total')[0].tolist() == [0, 1, 2, 3]
    assert 'ended in an unfinished line' in caplog.text
