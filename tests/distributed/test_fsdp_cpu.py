"""Two-process FSDP2 runs on CPU (gloo) through `composer -n 2`: resume after a kill and branching are exact,
and `resume_data_guard` and `loss_spike_monitor` keep their contracts with several ranks.

Composer's FSDP1 needs CUDA; its FSDP2 path (`FSDP_VERSION=2`, DTensor parameters) runs on CPU, so these
tests shard the model and optimizer state over two real processes and save sharded checkpoints.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from foundry_ext.commands.branch import find_checkpoints, plan_branch
from foundry_ext.core.metrics_io import read_metric, read_metrics
from tests.conftest import DEMO_YAML, REPO, SMALL_CORPUS, demo_yaml_with

COMPOSER = str(Path(sys.executable).with_name('composer'))
FSDP = ['fsdp_config={mixed_precision: FULL, state_dict_type: sharded}']
# resume_data_guard rides along in every run: it must not change training, and must pass every normal resume.
COMMON = ['eval_loader=null', 'python_log_level=warn', 'console_log_interval=1000ba', SMALL_CORPUS,
          'scheduler.t_warmup=2ba', 'scheduler.t_decay=4ba', 'callbacks.resume_data_guard.history=64', *FSDP]


def _launch(run_dir: Path, overrides, yaml_path: str = DEMO_YAML) -> subprocess.Popen:
    # The worker is scripts/train.py plus the test-only lr_jump callback, and a dump of the components' state.
    env = {**os.environ, 'FSDP_VERSION': '2', 'PYTHONUNBUFFERED': '1', 'STATE_OUT': str(run_dir / 'state.json')}
    args = [COMPOSER, '-n', '2', 'tests/distributed/train_worker.py', yaml_path, f'variables.run_dir={run_dir}',
            *COMMON, *overrides]
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / 'launcher.log', 'w')
    # A new session so that a kill reaches the launcher and both training processes.
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _train(run_dir: Path, overrides, yaml_path: str = DEMO_YAML) -> dict:
    proc = _launch(run_dir, overrides, yaml_path)
    assert proc.wait(timeout=600) == 0, (run_dir / 'launcher.log').read_text()[-3000:]
    steps, losses = read_metric(run_dir / 'metrics.jsonl', 'loss/train/total')
    return dict(zip(steps.tolist(), losses.tolist()))


@pytest.fixture(scope='module')
def straight(tmp_path_factory) -> dict:
    """An uninterrupted 2-process FSDP run of 16 batches, with sharded checkpoints every 8."""
    run_dir = tmp_path_factory.mktemp('straight')
    losses = _train(run_dir, ['max_duration=16ba', f'save_folder={run_dir}/ckpt', 'save_interval=8ba'])
    return {'dir': run_dir, 'losses': losses}


def test_autoresume_after_a_kill_is_exact(straight, tmp_path):
    run_dir = tmp_path / 'killed'
    overrides = ['max_duration=16ba', f'save_folder={run_dir}/ckpt', 'save_interval=8ba', 'autoresume=true',
                 'run_name=killed']
    proc = _launch(run_dir, overrides)
    # Composer points this symlink at a checkpoint once it is complete; autoresume starts from it.
    latest = run_dir / 'ckpt' / 'latest-sharded-rank0'
    deadline = time.time() + 600
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert latest.exists(), (run_dir / 'launcher.log').read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / 'ckpt' / 'ep0-ba16').exists(), 'the run finished before it was killed'

    resumed = _train(run_dir, overrides)  # autoresume picks up ep0-ba8 from the same save folder
    steps, _ = read_metric(run_dir / 'metrics.jsonl', 'loss/train/total')
    # metrics.jsonl is appended to: the killed run from step 0, then the resumed one from step 8 (not from 0 again).
    assert steps.tolist().count(0) == 1 and steps[-8:].tolist() == list(range(8, 16)), steps.tolist()
    for step in range(8, 16):
        assert resumed[step] == straight['losses'][step], step
    # resume_data_guard checked the whole global batch (both ranks' shares) of every resumed batch: no repeats.
    metrics = read_metrics(run_dir / 'metrics.jsonl')
    for name, expected in (('checked_samples', 16), ('repeated_samples', 0)):
        steps, values = metrics[f'resume_data_guard/{name}']
        assert dict(zip(steps.tolist(), values.tolist())) == {step: expected for step in range(8, 16)}, name
    assert 'WARNING: foundry_ext.callbacks.resume_data_guard' not in (run_dir / 'launcher.log').read_text()


WSD_S = {'name': 'wsd_s', 't_warmup': '2ba', 'budgets': ['4ba', '8ba', '12ba']}
EVERY_COMPONENT = ['scheduler.t_decay=2ba', 'algorithms.resume_guard={}', 'callbacks.budget_checkpoint={}',
                   'callbacks.loss_spike_monitor.detector.warmup_steps=3', 'max_duration=12ba', 'save_interval=6ba']


def test_every_component_resumes_its_state_from_a_sharded_checkpoint(tmp_path):
    """A sharded checkpoint loads only the keys of the fresh components' state (foundry_ext.core.checkpoint_state)."""
    yaml_path = demo_yaml_with(tmp_path / 'wsd_s.yaml', scheduler=WSD_S)
    straight = tmp_path / 'straight'
    losses = _train(straight, [*EVERY_COMPONENT, f'save_folder={straight}/ckpt'], yaml_path)
    resumed = tmp_path / 'resumed'
    resumed_losses = _train(resumed, [*EVERY_COMPONENT, f'save_folder={resumed}/ckpt',
                                      f'load_path={straight}/ckpt/ep0-ba6'], yaml_path)
    assert {s: resumed_losses[s] for s in range(6, 12)} == {s: losses[s] for s in range(6, 12)}
    expected, got = (json.loads((run / 'state.json').read_text()) for run in (straight, resumed))
    assert {'BudgetCheckpoint', 'LossSpikeMonitor', 'ResumeDataGuard', 'ResumeGuard'} <= set(expected)
    # The manifest names each budget's folder of shards. Budget 1 (batch 4) came back with the checkpoint.
    for state, runs in ((expected, (straight, straight, straight)), (got, (straight, resumed, resumed))):
        manifest = state['BudgetCheckpoint']['manifest']
        assert [e['checkpoint'] for e in manifest] == [f'{run}/ckpt/budgets/ep0-ba{step}'
                                                      for run, step in zip(runs, (4, 8, 12))]
        assert all(Path(e.pop('checkpoint'), '.metadata').exists() for e in manifest)
    # What each component carried over the checkpoint (the budget manifest, detector windows, fingerprints,
    # the LR record) came back: at the end, the resumed run's state is the uninterrupted run's.
    assert got == expected
    assert expected['LossSpikeMonitor']['detectors'] and expected['ResumeDataGuard']['position'] == [0, 12, 192]


def test_resume_data_guard_stops_every_rank_when_the_order_changed(straight, tmp_path):
    """The sample order changed (new shuffle seed, Streaming state not restored): no rank trains a batch."""
    run_dir = tmp_path / 'reshuffled'
    proc = _launch(run_dir, ['max_duration=16ba', f'load_path={straight["dir"]}/ckpt/ep0-ba8',
                             "load_ignore_keys=['state/dataset_state']", 'train_loader.dataset.shuffle_seed=99',
                             f'save_folder={run_dir}/ckpt', 'save_interval=1ba'])
    assert proc.wait(timeout=600) != 0
    output = (run_dir / 'launcher.log').read_text()
    assert 'ResumeDataError' in output and 'Sample order: the StreamingDataset orders its samples differently ' \
        'from the checkpointed run (shuffle_seed 17 -> 99)' in output, output[-3000:]
    # Both ranks stopped before the first resumed batch: no checkpoint after batch 8 exists.
    assert not list(run_dir.glob('ckpt/ep*-ba*'))


def test_loss_spike_monitor_stops_every_rank_once_and_names_the_sharded_checkpoint(tmp_path):
    """An LR jump at batch 40: the all-reduced loss spikes; rank 0 alone reports; both ranks stop together."""
    detector = {'warmup_steps': 25, 'fast_recovery_steps': 15, 'max_follow_steps': 30}
    overrides = ['max_duration=100ba', f'save_folder={tmp_path}/ckpt', 'save_interval=20ba',
                 'callbacks.lr_jump.start=40', 'callbacks.lr_jump.steps=3', 'callbacks.lr_jump.factor=30',
                 *(f'callbacks.loss_spike_monitor.detector.{k}={v}' for k, v in detector.items()),
                 *(f'callbacks.loss_spike_monitor.actions.{kind}=stop'
                   for kind in ('fast_recovering', 'slow_recovering', 'not_recovering', 'divergence'))]
    proc = _launch(tmp_path, overrides)
    assert proc.wait(timeout=600) == 0, (tmp_path / 'launcher.log').read_text()[-3000:]

    events = [json.loads(line) for line in (tmp_path / 'ckpt' / 'loss_events.jsonl').read_text().splitlines()]
    classified = [e for e in events if e['kind'] not in ('spike', 'batch_outlier')]
    assert len(classified) == 1 and classified[0]['action'] == 'stop', events
    event = classified[0]
    assert 40 <= event['onset_step'] <= 42, event
    newest_before_onset = (event['onset_step'] - 1) // 20 * 20  # checkpoints every 20 batches
    assert f'ep0-ba{newest_before_onset} (batch {newest_before_onset})' in event['checkpoint_before_onset'], event
    # One explanation (rank 0's), and both ranks stopped after that step: its loss is the last one logged.
    output = (tmp_path / 'launcher.log').read_text()
    stops = re.findall(r'STOPPING TRAINING after step (\d+)', output)
    assert len(stops) == 1 and 'decided to' not in output, output[-3000:]
    steps, _ = read_metric(tmp_path / 'metrics.jsonl', 'loss/train/total')
    assert steps[-1] == int(stops[0]) < 99


def test_branch_from_a_sharded_checkpoint_equals_an_uninterrupted_run(straight, tmp_path):
    assert sorted(find_checkpoints(str(straight['dir'] / 'ckpt'))) == [8, 16]
    plan = plan_branch(DEMO_YAML, str(straight['dir'] / 'ckpt'), 8, '4ba', save_folder=str(tmp_path / 'branch'),
                       overrides=['scheduler.t_decay_start=1000ba', 'scheduler.t_warmup=2ba'])
    assert plan.checkpoint.endswith('ep0-ba8') and 'max_duration=12ba' in plan.overrides
    branch = _train(tmp_path / 'branch', plan.overrides)
    # The main run above never decayed before step 16 (its decay ends at max_duration): same as a plain run
    # of 12 batches with the decay at 8..12.
    uninterrupted = _train(tmp_path / 'plain', ['max_duration=12ba', 'save_folder=null'])
    for step in range(8, 12):
        assert branch[step] == uninterrupted[step], step
