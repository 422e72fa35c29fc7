"""Bad input gives one line and exit code 2; a bug in our code keeps its traceback (the console script itself)."""

import subprocess
import sys

from tests.conftest import DEMO_YAML


def _foundry_ext(*args: str, prelude: str = '') -> subprocess.CompletedProcess:
    """Runs the console script's entry point in a fresh interpreter, after ``prelude`` (e.g. an injected bug)."""
    code = f'{prelude}\nimport sys\nfrom foundry_ext.cli.main import main\nsys.argv = ["foundry-ext", *{list(args)!r}]\n' \
           f'main()'
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)


def test_a_bad_yaml_value_is_one_line_with_exit_code_2(tmp_path):
    result = _foundry_ext('plot-schedule', DEMO_YAML, 'scheduler.t_decay=0ba', '-o', str(tmp_path / 'lr.png'))
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and "scheduler.t_decay='0ba' must be > 0" in lines[0], result.stderr


def test_a_missing_file_is_one_line_with_exit_code_2(tmp_path):
    result = _foundry_ext('analyze-loss', str(tmp_path / 'nowhere.csv'))
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert f'error: {tmp_path / "nowhere.csv"}: no such file or folder. A RUN is a metrics file' in result.stderr


def test_an_injected_bug_reaches_the_user_with_its_traceback(tmp_path):
    metrics = tmp_path / 'm.csv'
    metrics.write_text('step,loss/train/total\n0,2.0\n1,1.9\n')
    bug = ('import foundry_ext.commands.analyze_loss as command\n'
           'def broken(*args, **kwargs):\n'
           '    return {}["a key our code forgot"]\n'
           'command.analyze_loss = broken')
    result = _foundry_ext('analyze-loss', str(metrics), prelude=bug)
    assert result.returncode == 1
    assert 'Traceback (most recent call last)' in result.stderr
    assert "KeyError: 'a key our code forgot'" in result.stderr
    assert 'error:' not in result.stderr
