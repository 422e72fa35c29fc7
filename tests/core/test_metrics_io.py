"""metrics_io: one metric read in bulk equals the row-by-row reader, on odd files too."""

import numpy as np
import pytest

from foundry_ext.core.errors import ConfigError
from foundry_ext.core.metrics_io import read_metric, read_metrics

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
