"""Branching decays off a WSD main run, checked with real training, checkpoints and resumes."""

import pytest
import torch

from foundry_ext.commands.branch import find_checkpoints, plan_branch, run_branches
from tests.conftest import DEMO_YAML, foundry_run

MAIN = ['scheduler.t_warmup=4ba', 'scheduler.t_decay=8ba', 'scheduler.t_decay_start=1000ba', 'save_interval=12ba']
COMMON = ['python_log_level=null', 'eval_loader=null', 'console_log_interval=1000ba']


def _weights(path):
    return torch.load(path, map_location='cpu', weights_only=False)['state']['model']


def test_branch_equals_one_uninterrupted_run_and_leaves_the_main_run_alone(tmp_path, capsys):
    main_dir = tmp_path / 'main'
    foundry_run(main_dir, [*MAIN, 'max_duration=24ba', f'save_folder={main_dir}/checkpoints'])
    latest = (main_dir / 'checkpoints' / 'latest-rank0.pt').resolve()
    assert latest.name == 'ep0-ba24-rank0.pt'

    overrides = [f'variables.run_dir={main_dir}', 'train_loader.dataset.train_tokens=400000', *COMMON, *MAIN]
    plan = plan_branch(DEMO_YAML, str(main_dir / 'checkpoints'), 12, '8ba', overrides=overrides)
    assert plan.save_folder == str(main_dir / 'branches' / 'at12ba-decay8ba')
    run_branches([plan], DEMO_YAML)
    assert 'equivalent command: composer scripts/train.py' in capsys.readouterr().out
    branch_final = main_dir / 'branches' / 'at12ba-decay8ba' / 'branch-at12ba-decay8ba-ep0-ba20-rank0.pt'

    straight = tmp_path / 'straight'
    foundry_run(straight, ['scheduler.t_warmup=4ba', 'scheduler.t_decay=8ba', 'max_duration=20ba',
                           f'save_folder={straight}/checkpoints', 'save_interval=20ba'])
    expected = _weights(straight / 'checkpoints' / 'ep0-ba20-rank0.pt')
    got = _weights(branch_final)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    # The main run's folder is untouched: same checkpoints, same `latest`.
    assert sorted(find_checkpoints(str(main_dir / 'checkpoints'))) == [12, 24]
    assert (main_dir / 'checkpoints' / 'latest-rank0.pt').resolve() == latest


def test_branch_refuses_the_main_folder_bad_steps_and_non_wsd(tmp_path):
    main_dir = tmp_path / 'main'
    foundry_run(main_dir, [*MAIN, 'max_duration=12ba', f'save_folder={main_dir}/checkpoints'])
    ckpts = str(main_dir / 'checkpoints')
    base = [f'variables.run_dir={main_dir}', *MAIN]
    with pytest.raises(ValueError, match='inside the main run\'s checkpoint folder'):
        plan_branch(DEMO_YAML, ckpts, 12, '8ba', save_folder=f'{ckpts}/sub', overrides=base)
    with pytest.raises(ValueError, match=r'--at 5: no checkpoint at that step .* \[12\]'):
        plan_branch(DEMO_YAML, ckpts, 5, '8ba', overrides=base)
    with pytest.raises(ValueError, match="--decay 100tok: give it in the schedule's unit, 'ba'"):
        plan_branch(DEMO_YAML, ckpts, None, '100tok', overrides=base)
    with pytest.raises(ValueError, match="scheduler.name='cosine_with_warmup': branching decays needs a wsd"):
        plan_branch(DEMO_YAML, ckpts, None, '8ba', overrides=[*base, 'scheduler.name=cosine_with_warmup'])
    with pytest.raises(ValueError, match='--at 12: the main run was already decaying there'):
        plan_branch(DEMO_YAML, ckpts, 12, '8ba', overrides=[*base, 'scheduler.t_decay_start=10ba'])
    # A decay start in epochs is not compared with a step in batches (only a run knows an epoch's length).
    assert plan_branch(DEMO_YAML, ckpts, 12, '8ba', overrides=[*base, 'scheduler.t_decay_start=1ep']).step == 12
    plan = plan_branch(DEMO_YAML, ckpts, None, '8ba', overrides=base)  # newest checkpoint by default
    assert plan.step == 12 and 'max_duration=20ba' in plan.overrides
    from typer.testing import CliRunner

    from foundry_ext.cli.main import app
    for at, message in (('abc', "'abc' is not a whole number of batches"), (',', 'names no step'),
                        ('12tok', "'12tok' is in 'tok', but steps are batches")):
        result = CliRunner().invoke(app, ['branch', DEMO_YAML, '--from', ckpts, '--at', at, '--decay', '8ba'])
        assert result.exit_code == 2 and message in result.output, result.output
    result = CliRunner().invoke(app, ['branch', DEMO_YAML, '--from', ckpts, '--at', '12,12', '--decay', '8ba'])
    assert result.exit_code == 2 and 'names a step twice' in result.output
    # --at and --decay written the same way, with a unit: both accepted.
    result = CliRunner().invoke(app, ['branch', DEMO_YAML, *base, '--from', ckpts, '--at', '12ba', '--decay', '8ba',
                                      '--dry-run'])
    assert result.exit_code == 0 and 'max_duration=20ba' in result.output, result.output
    # Refused before any branch trains: a step inside the main run's warmup would decay from below the peak.
    with pytest.raises(ValueError, match=r'--at 12: the main run was still warming up there \(scheduler.t_warmup=20ba'):
        plan_branch(DEMO_YAML, ckpts, 12, '8ba', overrides=[*base, 'scheduler.t_warmup=20ba'])


def test_branch_folders_beside_a_remote_or_templated_main_folder(tmp_path):
    main_dir = tmp_path / 'main'
    foundry_run(main_dir, [*MAIN, 'max_duration=12ba', f'save_folder={main_dir}/checkpoints'])
    ckpts = str(main_dir / 'checkpoints')
    base = [f'variables.run_dir={main_dir}', *MAIN, 'run_name=pre']
    remote = plan_branch(DEMO_YAML, ckpts, 12, '8ba', overrides=[*base, 'save_folder=s3://bucket/pre/checkpoints'])
    assert remote.save_folder == 's3://bucket/pre/branches/at12ba-decay8ba'
    # The metrics logger writes locally: beside the run's other local outputs, under the branch's run name.
    assert 'loggers.jsonl.path=runs/pre-at12ba-decay8ba/metrics.jsonl' in remote.overrides
    # {run_name} is the main run's: the branch's own run_name must not move its folder elsewhere.
    templated = plan_branch(DEMO_YAML, ckpts, 12, '8ba',
                            overrides=[*base, f'save_folder={tmp_path}/{{run_name}}/checkpoints'])
    assert templated.save_folder == str(tmp_path / 'pre' / 'branches' / 'at12ba-decay8ba')
