"""metrics_io: one metric read in bulk equals the row-by-row reader, on odd files too; a RUN from files (run
folders, CSV exports of W&B runs) and what a wrong RUN says."""

import numpy as np
import pytest

from foundry_ext.core.errors import ConfigError
from foundry_ext.core.metric_names import LOSS_KEY
from foundry_ext.core.metrics_io import read_metric, read_metrics, read_run, resolve_run

LR = 'lr-DecoupledAdamW/group0'


def test_a_run_folder_is_its_metrics_jsonl(tmp_path):
    run = tmp_path / 'wsd-demo'
    run.mkdir()
    (run / 'metrics.jsonl').write_text('{"step": 0, "loss/train/total": 3.0}\n{"step": 1, "loss/train/total": 2.5}\n')
    source = resolve_run(run)
    assert (source.name, source.path, source.label) == ('wsd-demo', run / 'metrics.jsonl', str(run / 'metrics.jsonl'))
    assert read_run(run, keys=[LOSS_KEY])[LOSS_KEY][1].tolist() == [3.0, 2.5]
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ConfigError, match=r'empty is a folder without metrics.jsonl \(or metrics.csv\); give the '
                       'metrics file'):
        resolve_run(empty)
    with pytest.raises(ConfigError, match=r"has no metric 'loss'; it has \['loss/train/total'\]. Pick one of those."):
        read_run(run, keys=['loss'])


def test_wandb_history_export(tmp_path):
    # wandb.Api().run(...).history().to_csv(): pandas' unnamed index, W&B's _step, _runtime and _timestamp.
    path = tmp_path / 'history.csv'
    path.write_text(f',_step,_runtime,_timestamp,{LOSS_KEY},{LR}\n'
                    '0,0,1.5,1700000000.1,3.0,0.001\n'
                    '1,1,2.5,1700000001.1,2.5,\n'
                    '2,2,3.5,1700000002.1,2.25,0.002\n')
    metrics = read_run(path)
    assert sorted(metrics) == ['_runtime', '_timestamp', LOSS_KEY, LR]
    assert metrics[LOSS_KEY][0].tolist() == [0, 1, 2] and metrics[LR][0].tolist() == [0, 2]


def test_wandb_chart_export(tmp_path):
    # A line chart's "Export CSV" for one run: Step, then "<run name> - <key>" with __MIN/__MAX columns.
    path = tmp_path / 'chart.csv'
    run = 'wsd-demo'
    path.write_text(f'"Step","{run} - {LOSS_KEY}","{run} - {LOSS_KEY}__MIN","{run} - {LOSS_KEY}__MAX"\n'
                    '"10","3","2.9","3.1"\n"20","2.5","2.4","2.6"\n')
    metrics = read_run(path)
    assert sorted(metrics) == [LOSS_KEY, f'{LOSS_KEY}__MAX', f'{LOSS_KEY}__MIN']
    assert metrics[LOSS_KEY][0].tolist() == [10, 20] and metrics[LOSS_KEY][1].tolist() == [3.0, 2.5]
    # Two runs in one chart: the run names stay, so each run's columns are told apart.
    path.write_text(f'Step,a - {LOSS_KEY},b - {LOSS_KEY}\n10,3,4\n')
    assert sorted(read_run(path)) == [f'a - {LOSS_KEY}', f'b - {LOSS_KEY}']


JSONL = ('{"step": 1, "x": 1.0}\n\n  \n{"step": 0, "x": "nan", "y": 3}\r\n{"step": 1, "x": 2.0, "t": "text"}\n'
         '{"x": 5}\n{"step": 2, "y": 4.5}\n')
CSV = 'step,x,y\n1,1.0,\n0,nan,3\n1,2.0,4\n3,inf,5\n'
# As the jsonl logger writes: one line per log_metrics call, step first (the bulk path reads it).
LOGGER = ('{"step": 0, "time/batch": 0}\n{"step": 0, "x": 6.5}\n{"step": 0, "y": 1, "x2": 3}\n'
          '{"step": 1, "x": "nan", "y": 2.5e-3}\n{"step": 2, "x": NaN}\n{"step": 1, "x": -1e-05}\n')


@pytest.mark.parametrize('name, text', [('m.jsonl', JSONL), ('m.csv', CSV), ('logger.jsonl', LOGGER)])
def test_one_metric_equals_the_general_reader(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    everything = read_metrics(path)
    for key in ('x', 'y'):
        steps, values = read_metric(path, key)
        np.testing.assert_array_equal(steps, everything[key][0])
        np.testing.assert_array_equal(values, everything[key][1])
    if name != 'logger.jsonl':
        np.testing.assert_array_equal(read_metric(path, 'x')[1][:2], [np.nan, 2.0])  # the later row for step 1
    with pytest.raises(ConfigError, match="has no metric 'z'; it has "):
        read_metric(path, 'z')


def test_a_large_file_is_read_in_bulk(tmp_path):
    steps = np.arange(200_000)
    path = tmp_path / 'big.csv'
    path.write_text('step,loss\n' + ''.join(f'{s},{2.0 + s * 1e-6}\n' for s in steps.tolist()) + '5,9.0\n')
    got_steps, got = read_metric(path, 'loss')
    np.testing.assert_array_equal(got_steps, steps)
    assert got[5] == 9.0 and got[6] == pytest.approx(2.000006)
