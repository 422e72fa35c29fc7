"""Two-process FSDP2 runs on CPU (gloo) through `composer -n 2`: resume after a kill and branching are exact,
and `resume_data_guard` and `loss_spike_monitor` keep their contracts with several ranks.

Composer's FSDP1 needs CUDA; its FSDP2 path (`FSDP_VERSION=2`, DTensor parameters) runs on CPU, so these
tests shard the model and optimizer state over two real processes and save sharded checkpoints.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

from foundry_ext.commands.branch import find_checkpoints, plan_branch
from foundry_ext.core.metrics_io import read_metric, read_metrics
from tests.conftest import DEMO_YAML, SMALL_CORPUS, assert_same_tensors, checkpoint_tensors, demo_yaml_with, launch

FSDP = ['fsdp_config={mixed_precision: FULL, state_dict_type: sharded}']
# resume_data_guard rides along in every run: it must not change training, and must pass every normal resume.
COMMON = ['eval_loader=null', 'python_log_level=warn', 'console_log_interval=1000ba', SMALL_CORPUS,
          'scheduler.t_warmup=2ba', 'scheduler.t_decay=4ba', 'callbacks.resume_data_guard.history=64', *FSDP]


def _launch(run_dir: Path, overrides, yaml_path: str = DEMO_YAML) -> subprocess.Popen:
    return launch(run_dir, [yaml_path, f'variables.run_dir={run_dir}', *COMMON, *overrides], nproc=2,
                  env={'FSDP_VERSION': '2', 'STATE_OUT': str(run_dir / 'state.json')})


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


def test_a_kill_during_a_sharded_save_is_recovered_exactly(straight, tmp_path):
    """Rank 0 dies half way through writing its shard of batch 12's checkpoint; the same command, relaunched,
    moves the partial folder aside, resumes from batch 8 and ends with the uninterrupted run's weights and optimizer
    state, bit for bit."""
    run_dir = tmp_path / 'killed'
    shard = (straight['dir'] / 'ckpt' / 'ep0-ba8' / '__0_0.distcp').stat().st_size
    plan = tmp_path / 'crash.json'
    plan.write_text(json.dumps([{'event': 'batch_checkpoint', 'batch': 12, 'how': 'cut_write', 'bytes': shard // 2}]))
    overrides = ['max_duration=16ba', f'save_folder={run_dir}/ckpt', 'save_interval=4ba', 'autoresume=true',
                 'run_name=killed', f'callbacks.crash.plan={plan}']
    assert _launch(run_dir, overrides).wait(timeout=600) != 0
    partial = run_dir / 'ckpt' / 'ep0-ba12'
    assert partial.is_dir() and not (partial / '.metadata').exists(), (run_dir / 'launcher.log').read_text()[-3000:]
    assert (partial / '__0_0.distcp').stat().st_size == shard // 2

    resumed = _train(run_dir, overrides)  # checkpoint_guard quarantines ep0-ba12; autoresume picks up ep0-ba8
    output = (run_dir / 'launcher.log').read_text()
    assert f'{partial} is not a complete checkpoint (no .metadata' in output, output[-3000:]
    assert (run_dir / 'ckpt' / 'quarantine' / 'ep0-ba12').is_dir()
    assert_same_tensors(checkpoint_tensors(run_dir / 'ckpt' / 'ep0-ba16'),
                        checkpoint_tensors(straight['dir'] / 'ckpt' / 'ep0-ba16'))
    assert resumed == straight['losses']
    # The end of training ran: a relaunch would exit 0 at once (the guard names the sharded folder it records).
    assert json.loads((run_dir / 'ckpt' / 'run_status.json').read_text()) == {
        'status': 'finished', 'checkpoint': 'ep0-ba16', 'batch': 16, 'max_duration': '16ba'}
    # resume_data_guard checked the whole global batch (both ranks' shares) of every resumed batch: no repeats.
    metrics = read_metrics(run_dir / 'metrics.jsonl')
    for name, expected in (('checked_samples', 16), ('repeated_samples', 0)):
        steps, values = metrics[f'resume_data_guard/{name}']
        assert dict(zip(steps.tolist(), values.tolist())) == {step: expected for step in range(8, 16)}, name
    assert 'WARNING: foundry_ext.callbacks.resume_data_guard' not in output


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
