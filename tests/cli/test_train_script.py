"""``scripts/train.py``, the ``composer`` entry point: bad input is one line from rank 0 and exit code 2 on every
rank, with the key, the value and the fix; a bug keeps its traceback."""

import json
import os
import re

import pytest

from foundry_ext.testing.crash import InjectedCrash, register_crash
from scripts.train import main
from tests.conftest import DEMO_YAML, SMALL_CORPUS, TINY_MODEL, demo_yaml_with, launch

RUN = [*TINY_MODEL, SMALL_CORPUS, 'max_duration=4ba', 'scheduler.t_warmup=1ba', 'scheduler.t_decay=2ba',
       'eval_loader=null', 'eval_interval=1', 'python_log_level=null']


def _one_line_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith('error: ') and 'Traceback' not in err, err
    return err.strip()


def test_a_missing_load_path_is_named_with_the_fix(tmp_path, capsys):
    missing = tmp_path / 'gone' / 'ep0-ba8-rank0.pt'
    err = _one_line_error(capsys, [DEMO_YAML, f'variables.run_dir={tmp_path}', f'load_path={missing}', *RUN])
    assert err == (f"error: load_path='{missing}' does not exist. Set load_path to a Composer checkpoint (a .pt file, "
                   f"or the folder of a sharded one), or remove it to train from scratch.")


def test_a_load_path_that_autoresume_ignores_may_be_gone(tmp_path, capsys):
    """With autoresume and a checkpoint of its own, Composer never reads load_path: no error for a stale one."""
    args = [DEMO_YAML, f'variables.run_dir={tmp_path}', 'autoresume=true', 'run_name=stale', *RUN]
    main(args).close()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # finished: checkpoint_guard ends the relaunch with code 0
        main([*args, f'load_path={tmp_path}/gone.pt'])
    assert exit_info.value.code == 0 and 'already complete' in capsys.readouterr().out


@pytest.mark.parametrize('kind', ['under_a_file', 'read_only'])
def test_a_save_folder_that_cannot_be_written_is_named_with_the_fix(tmp_path, capsys, kind):
    if kind == 'under_a_file':
        (tmp_path / 'file').write_text('')
        folder = tmp_path / 'file' / 'ckpt'
        reason = f'Not a directory: {folder}'
    else:
        if os.geteuid() == 0:
            pytest.skip('root writes into read-only folders')
        folder = tmp_path / 'ro'
        folder.mkdir(mode=0o555)
        reason = f'Permission denied: {folder}'
    err = _one_line_error(capsys, [DEMO_YAML, f'variables.run_dir={tmp_path}', f'save_folder={folder}', *RUN])
    assert err.startswith(f"error: save_folder='{folder}' cannot be written ({reason}")
    assert err.endswith('Set save_folder to a folder this user can write, or fix the permissions of that one.')


def test_our_own_config_errors_are_one_line_too(tmp_path, capsys):
    unsorted = demo_yaml_with(tmp_path / 'unsorted.yaml',
                              scheduler={'name': 'wsd_s', 't_warmup': '1ba', 'budgets': ['4ba', '2ba']})
    err = _one_line_error(capsys, [unsorted, f'variables.run_dir={tmp_path}', *RUN])
    assert err == ('error: scheduler.budgets must be strictly increasing, but budgets[1]=2ba comes after '
                   'budgets[0]=4ba. Sort them and remove duplicates.')
    err = _one_line_error(capsys, [DEMO_YAML, f'variables.run_dir={tmp_path}',
                                   'algorithms.resume_guard.rewarm_steps=-1', *RUN])
    assert err.startswith('error: algorithms.resume_guard.rewarm_steps=-1 must be'), err


def test_a_bug_keeps_its_traceback(tmp_path):
    register_crash()
    plan = tmp_path / 'crash.json'
    plan.write_text(json.dumps([{'event': 'fit_start', 'how': 'raise'}]))
    with pytest.raises(InjectedCrash):
        main([DEMO_YAML, f'variables.run_dir={tmp_path}', f'callbacks.crash.plan={plan}', *RUN])


def test_through_the_launcher_with_two_ranks_the_error_is_one_line(tmp_path):
    missing = tmp_path / 'gone.pt'
    proc = launch(tmp_path, [DEMO_YAML, f'variables.run_dir={tmp_path}', f'load_path={missing}', *RUN], nproc=2,
                  script='scripts/train.py')
    assert proc.wait(timeout=600) == 2
    output = (tmp_path / 'launcher.log').read_text()
    # Besides the one line: what Composer's launcher itself always prints when a rank exits non-zero.
    launcher = re.compile(r'(ERROR:composer\.cli\.launcher:)?(Rank 0 crashed with exit code 2\.|Global rank 0 \(PID '
                          r'\d+\) exited with code 2)$|Waiting up to 30 seconds')
    assert [line for line in output.splitlines() if line and not launcher.match(line)] == [
        f"error: load_path='{missing}' does not exist. Set load_path to a Composer checkpoint (a .pt file, or the "
        f"folder of a sharded one), or remove it to train from scratch."], output
