"""Rollback end to end: a pocket of garbage data makes the loss spike and not recover; ``loss_spike_monitor``'s action
``rollback`` ends the run with exit code 75, the relaunch resumes from a checkpoint before the onset past the pocket,
and the run ends as if the pocket had not been there. Two such runs, one of them killed (SIGKILL) after the rollback
and resumed, end bitwise equal.

Each run is ``composer scripts/train.py`` (through ``tests/distributed/train_worker.py``, for the ``crash`` callback)
relaunched by a supervisor loop until it exits 0, on a copy of the demo corpus whose train samples
``POCKET`` are random tokens (``foundry_ext.testing.garbage_data``), read in order (``shuffle: false``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import pytest
import torch

from foundry_ext.core.checkpoint_state import unpack_state
from foundry_ext.core.metrics_io import read_metrics
from foundry_ext.testing.garbage_data import garbage_corpus_copy
from tests.conftest import (DEMO_YAML, SMALL_CORPUS, TINY_MODEL, assert_same_tensors, checkpoint_tensors, launch,
                            relaunch)

BATCH = 8  # global batch of TINY_MODEL
POCKET = (24 * BATCH, 40 * BATCH)  # garbage samples: batches 24 to 39 of the epoch
MAX = 56
SPIKE = {'warmup_steps': 8, 'fast_recovery_steps': 4, 'max_follow_steps': 8}
ROLLBACK = {'steps_before_onset': 6, 'skip_batches': 20, 'max_rollbacks': 2}
KILL_AT = 38  # a batch the run reaches only after the rollback (it is decided at about step 33)


def _args(run_dir: Path, corpus: Path, plan: Path, action: str = 'rollback') -> list[str]:
    return [DEMO_YAML, *TINY_MODEL, SMALL_CORPUS, f'variables.run_dir={run_dir}', f'save_folder={run_dir}/ckpt',
            'run_name=rollback', f'train_loader.dataset.local={corpus}', 'train_loader.dataset.shuffle=false',
            'eval_loader=null', 'eval_interval=1', f'max_duration={MAX}ba', 'save_interval=4ba', 'autoresume=true',
            'python_log_level=warn', 'console_log_interval=1000ba', 'scheduler.t_warmup=8ba',
            'scheduler.t_decay=16ba', 'callbacks.resume_data_guard={}', f'callbacks.crash.plan={plan}',
            *(f'callbacks.loss_spike_monitor.detector.{k}={v}' for k, v in SPIKE.items()),
            *(f'callbacks.loss_spike_monitor.actions.{kind}={action}' for kind in ('not_recovering', 'divergence')),
            *([f'callbacks.loss_spike_monitor.rollback.{k}={v}' for k, v in ROLLBACK.items()]
              if action == 'rollback' else [])]


def _losses(run_dir: Path) -> dict[int, float]:
    steps, values = read_metrics(run_dir / 'metrics.jsonl')['loss/train/total']
    return dict(zip(steps.tolist(), values.tolist()))


def rollback_runs(root: Path, nproc: int = 1, extra: Sequence[str] = (), env: Optional[dict] = None) -> dict:
    """Two runs over the pocket, each relaunched until it exits 0: ``straight``, and ``killed`` (SIGKILL at batch
    ``KILL_AT``, after the rollback); returns their folders, exit codes and the straight run's output."""
    corpus = garbage_corpus_copy(root / 'pocket', [POCKET], vocab_size=258)
    (root / 'no_crash.json').write_text('[]')
    (root / 'kill.json').write_text(json.dumps([{'event': 'batch_end', 'batch': KILL_AT, 'how': 'kill'}]))
    runs: dict = {'codes': {}}
    for name, plan, launches in (('straight', 'no_crash.json', 3), ('killed', 'kill.json', 4)):
        run_dir = runs[name] = root / name
        args = [*_args(run_dir, corpus, root / plan), *extra]
        runs['codes'][name] = relaunch(run_dir, args, launches, nproc=nproc, env=env)
    runs['log'] = (runs['straight'] / 'launcher.log').read_text()
    return runs


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> dict:
    return rollback_runs(tmp_path_factory.mktemp('rollback'))


def test_the_run_rolls_back_once_with_exit_code_75_and_then_finishes(runs):
    assert runs['codes']['straight'] == [75, 0], runs['log'][-3000:]
    assert runs['codes']['killed'][0] == 75 and runs['codes']['killed'][-1] == 0 and len(runs['codes']['killed']) == 3
    assert 'Traceback' not in runs['log'] and 'ResumeDataError' not in runs['log']


def test_the_manifest_records_the_onset_the_checkpoint_and_the_skipped_samples(runs):
    ckpt = runs['straight'] / 'ckpt'
    (entry,) = json.loads((ckpt / 'rollbacks.json').read_text())
    onset, batch = entry['onset_step'], entry['checkpoint']['batch']
    assert entry['status'] == 'applied' and entry['event']['kind'] in ('not_recovering', 'divergence')
    assert POCKET[0] // BATCH - 3 <= onset <= POCKET[0] // BATCH + 1  # the detector walks the onset back a little
    assert batch <= onset - ROLLBACK['steps_before_onset'] and batch % 4 == 0 and batch > onset - 6 - 4
    assert entry['skip']['batches'] == [onset, onset + ROLLBACK['skip_batches']]
    assert entry['skip']['samples'] == [onset * BATCH, (onset + ROLLBACK['skip_batches']) * BATCH]
    assert entry['skip']['samples'][1] >= POCKET[1]  # past the pocket
    # The checkpoints of the abandoned stretch are kept aside; autoresume took the rollback checkpoint.
    aside = sorted(p.name for p in (ckpt / 'rolled_back' / '0').iterdir())
    assert aside and all(int(name.split('-ba')[1].split('-')[0]) > batch for name in aside)
    assert f'resumed from {entry["checkpoint"]["name"]}' in runs['log']
    # Every checkpoint after the rollback carries it in loss_spike_monitor's state.
    state = torch.load(ckpt / f'ep0-ba{MAX}-rank0.pt', map_location='cpu', weights_only=False)['state']
    made = unpack_state(state['callbacks']['LossSpikeMonitor'])['rollback']['made']
    assert made == [{k: v for k, v in entry.items() if k not in ('fingerprints', 'status')}]


def test_the_rollback_is_logged_and_the_data_guard_checked_the_skip(runs):
    metrics = read_metrics(runs['straight'] / 'metrics.jsonl')
    (entry,) = json.loads((runs['straight'] / 'ckpt' / 'rollbacks.json').read_text())
    assert metrics['loss_spike/rollback/count'][1].tolist() == [1]
    assert metrics['loss_spike/rollback/skipped_to_sample'][1].tolist() == [entry['skip']['samples'][1]]
    # resume_data_guard checked the first batches after the skip: none repeated, none from the skipped window.
    assert metrics['resume_data_guard/checked_samples'][1].sum() > 0
    assert metrics['resume_data_guard/repeated_samples'][1].sum() == 0
    assert len(entry['fingerprints']) > 0


def test_after_the_rollback_no_garbage_is_trained(runs):
    (entry,) = json.loads((runs['straight'] / 'ckpt' / 'rollbacks.json').read_text())
    losses = _losses(runs['straight'])
    # Random tokens cost at least ln(258) = 5.55 nats (more on a model that has learnt text: the spike peaked at 8);
    # the text around the pocket costs 2-4.5.
    assert entry['event']['peak_loss'] > 7
    assert max(losses[s] for s in range(entry['checkpoint']['batch'], MAX)) < 5


def test_a_kill_after_the_rollback_and_autoresume_end_bitwise_equal(runs):
    name = f'ep0-ba{MAX}-rank0.pt'
    assert_same_tensors(checkpoint_tensors(runs['killed'] / 'ckpt' / name),
                        checkpoint_tensors(runs['straight'] / 'ckpt' / name))
    assert _losses(runs['killed']) == _losses(runs['straight'])


def test_after_max_rollbacks_the_next_event_stops_the_run_with_exit_0(tmp_path):
    # A second pocket, at batches 64-79 of the epoch, which the run reaches at step 36 after the rollback's skip.
    corpus = garbage_corpus_copy(tmp_path / 'pocket', [POCKET, (64 * BATCH, 80 * BATCH)], vocab_size=258)
    (tmp_path / 'no_crash.json').write_text('[]')
    run_dir = tmp_path / 'run'
    args = [*_args(run_dir, corpus, tmp_path / 'no_crash.json'),
            'callbacks.loss_spike_monitor.rollback.max_rollbacks=1']
    codes = [launch(run_dir, args).wait(timeout=900)]
    codes.append(launch(run_dir, args).wait(timeout=900))
    log = (run_dir / 'launcher.log').read_text()
    assert codes == [75, 0], log[-3000:]
    assert len(json.loads((run_dir / 'ckpt' / 'rollbacks.json').read_text())) == 1
    assert 'NOT ROLLING BACK: max_rollbacks=1 rollbacks were done already' in log and 'STOPPING TRAINING' in log
    assert max(_losses(run_dir)) < MAX - 1  # stopped early
