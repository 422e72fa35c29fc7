"""The crash fault-injection callback: a plan of crash points, each used once, across relaunches."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from foundry_ext.core.errors import ConfigError
from foundry_ext.testing.crash import Crash, InjectedCrash
from tests.conftest import REPO, tiny_trainer


def _plan(tmp_path, *points) -> str:
    path = tmp_path / 'plan.json'
    path.write_text(json.dumps(list(points)))
    return str(path)


def test_each_launch_arms_the_next_unused_point_and_the_last_runs_through(tmp_path):
    plan = _plan(tmp_path, {'event': 'batch_end', 'batch': 3, 'how': 'raise'},
                 {'event': 'fit_start', 'how': 'raise'})
    with pytest.raises(InjectedCrash, match='batch_end at batch 3'):
        tiny_trainer(None, '6ba', callbacks=[Crash(plan)]).fit()
    with pytest.raises(InjectedCrash, match='fit_start at batch 0'):
        tiny_trainer(None, '6ba', callbacks=[Crash(plan)]).fit()
    trainer = tiny_trainer(None, '6ba', callbacks=[Crash(plan)])  # every point used: trains through
    trainer.fit()
    assert int(trainer.state.timestamp.batch) == 6
    assert json.loads((tmp_path / 'plan.json.used').read_text()) == 2


def test_cut_write_kills_the_process_in_the_middle_of_the_next_large_write(tmp_path):
    """The kernel ends the process at the size limit: the file is left exactly that long."""
    plan = _plan(tmp_path, {'event': 'fit_start', 'how': 'cut_write', 'bytes': 1000})
    script = (f'from foundry_ext.testing.crash import Crash\nfrom tests.conftest import tiny_trainer\n'
              f'trainer = tiny_trainer(None, "2ba", callbacks=[Crash({plan!r})])\ntrainer.fit()\n'
              f'open({str(tmp_path / "big")!r}, "wb").write(b"x" * 5000)\nprint("not reached")\n')
    proc = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -25 and 'not reached' not in proc.stdout, proc.stderr[-2000:]  # SIGXFSZ
    assert (tmp_path / 'big').stat().st_size == 1000


@pytest.mark.parametrize('point,fragment', [
    ({'event': 'fit_start', 'how': 'explode'}, "plan[0].how='explode' must be one of kill, cut_write, raise"),
    ({'event': 'batch_ending', 'how': 'kill'}, "plan[0].event='batch_ending' is not a Composer event"),
    ({'event': 'fit_start', 'how': 'cut_write'}, 'plan[0].bytes=None must be an integer >= 1'),
])
def test_a_bad_point_is_refused(tmp_path, point, fragment):
    with pytest.raises(ConfigError, match=fragment.replace('[', r'\[').replace(']', r'\]')):
        Crash(_plan(tmp_path, point))
