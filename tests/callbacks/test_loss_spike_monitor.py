"""loss_spike_monitor through real Composer Trainers (and one Foundry run): detection, stop, resume, config.

The Composer runs train a linear classifier with SGD on data whose labels are corrupted on purpose for known
batches, so the loss really spikes: all labels flipped for 3 batches (fast recovery), 35% flipped for 60
batches (slow recovery), 30% flipped from some batch on (a new, higher level: not recovering), or label noise
that grows slowly (divergence without a spike).
"""

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from composer import Evaluator, Trainer
from composer.loggers import InMemoryLogger
from composer.models import ComposerClassifier
from composer.utils import dist
from torch.utils.data import DataLoader, TensorDataset

from foundry_ext.callbacks.loss_spike_monitor import LossSpikeMonitor
from foundry_ext.core.checkpoint_state import unpack_state
from foundry_ext.core.metrics_io import read_metrics
from foundry_ext.data.fingerprints import row_fingerprints
from foundry_ext.spikes.detector import (BATCH_OUTLIER, DIVERGENCE, FAST_RECOVERING, NOT_RECOVERING, SLOW_RECOVERING,
                                         SPIKE, STATUS_OPEN)
from foundry_ext.spikes.offline import detect_events
from tests.conftest import REPO, foundry_run

BATCH = 64
N_BATCHES = 450
LOSS = 'loss/train/total'
# Short windows, so a few hundred batches hold several events; max_follow_steps must exceed warmup_steps so
# the level after a not_recovering spike can be refitted.
DETECTOR = {'warmup_steps': 50, 'fast_recovery_steps': 30, 'max_follow_steps': 100}
# (kind, true onset) of the corruption schedule of _spiky_data.
SPIKES = [(FAST_RECOVERING, 100), (SLOW_RECOVERING, 180), (NOT_RECOVERING, 320)]


@pytest.fixture(autouse=True)
def one_thread():
    # A linear model gains nothing from threads, and on a busy 2-core machine they make every batch 10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data(flip: np.ndarray, label_noise: np.ndarray, seed: int = 0) -> TensorDataset:
    """Batch k's labels are ``x0 + x1/2 + label_noise[k] * eps > 0``, each flipped with probability ``flip[k]``."""
    g = torch.Generator().manual_seed(seed)
    n = len(flip) * BATCH
    x = torch.randn(n, 4, generator=g)
    noise = torch.as_tensor(np.repeat(label_noise, BATCH), dtype=torch.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + noise * torch.randn(n, generator=g) > 0).long()
    flipped = torch.rand(n, generator=g) < torch.as_tensor(np.repeat(flip, BATCH), dtype=torch.float32)
    return TensorDataset(x, torch.where(flipped, 1 - y, y))


def _spiky_data() -> TensorDataset:
    flip = np.zeros(N_BATCHES)
    flip[70] = 1.0  # one bad batch: an outlier
    flip[100:103] = 1.0
    flip[180:240] = 0.35
    flip[320:] = 0.3
    return _data(flip, np.full(N_BATCHES, 0.4))


def _trainer(data: TensorDataset, monitor: LossSpikeMonitor, **kwargs) -> Trainer:
    torch.manual_seed(0)
    model = ComposerClassifier(torch.nn.Linear(4, 2), num_classes=2)
    # With several ranks, each trains on its share of every global batch of BATCH samples.
    loader = DataLoader(data, batch_size=BATCH // dist.get_world_size(), sampler=dist.get_sampler(data, shuffle=False))
    return Trainer(model=model, train_dataloader=loader,
                   max_duration=f'{len(data) // BATCH}ba', optimizers=torch.optim.SGD(model.parameters(), lr=0.5),
                   callbacks=[monitor], progress_bar=False, **kwargs)


def _classified(records, stream=LOSS):
    return [(r['kind'], r['onset_step']) for r in records
            if r['stream'] == stream and r['status'] != STATUS_OPEN and r['kind'] != BATCH_OUTLIER]


def _assert_spikes(records):
    found = _classified(records)
    assert [kind for kind, _ in found] == [kind for kind, _ in SPIKES], found
    for (_, onset), (_, true_onset) in zip(found, SPIKES):
        assert abs(onset - true_onset) <= 2, found


def test_classifies_real_spikes_on_every_stream_and_logs_them(tmp_path):
    monitor = LossSpikeMonitor(detector=DETECTOR, events_path=str(tmp_path / '{run_name}' / 'events.jsonl'))
    memory = InMemoryLogger()
    eval_data = _data(np.zeros(10), np.full(10, 0.4), seed=1)
    evaluator = Evaluator(label='eval', dataloader=DataLoader(eval_data, batch_size=BATCH),
                          metric_names=['CrossEntropy'])
    trainer = _trainer(_spiky_data(), monitor, loggers=[memory], run_name='spiky', eval_dataloader=evaluator,
                       eval_interval='20ba')
    trainer.fit()
    trainer.close()

    # The third spike comes 320 batches in, many windows of every size after the first one.
    _assert_spikes(monitor.events)
    opened = [r for r in monitor.events if r['stream'] == LOSS and r['status'] == STATUS_OPEN]
    assert [r['kind'] for r in opened] == [SPIKE] * 3 and all(r['action'] == 'log' for r in monitor.events)
    # Online equals offline: the same detector over the logged all-reduced losses finds the same events.
    timestamps, losses = zip(*memory.data[LOSS])
    offline = [e for e in detect_events([int(t.batch) for t in timestamps], losses, **DETECTOR)
               if e.kind != BATCH_OUTLIER]
    assert [(e.kind, e.onset_step) for e in offline] == _classified(monitor.events)

    # The eval cross-entropy is a stream of its own, fed one point per evaluation at the eval's step.
    eval_stream = 'metrics/eval/CrossEntropy'
    assert sorted(monitor.detectors) == [LOSS, eval_stream]
    assert monitor.detectors[eval_stream].state_dict()['last_step'] == N_BATCHES
    assert all(r['detect_step'] % 20 == 0 for r in monitor.events if r['stream'] == eval_stream)

    lines = [json.loads(line) for line in (tmp_path / 'spiky' / 'events.jsonl').read_text().splitlines()]
    assert [line for line in lines if line['kind'] != BATCH_OUTLIER] == monitor.events
    # The one bad batch (all labels flipped) is an outlier, in the file and the loggers only, with its 64 samples.
    outliers = [line for line in lines if line['kind'] == BATCH_OUTLIER]
    [outlier] = [o for o in outliers if o['stream'] == LOSS]
    assert outlier['above_steps'] == [70] and outlier['batches'][0]['sample_range'] == [70 * BATCH, 71 * BATCH]
    assert outlier['batches'][0]['fingerprints'] == row_fingerprints(_spiky_data().tensors[0][70 * BATCH:
                                                                                               71 * BATCH]).tolist()
    assert monitor.outliers[LOSS] == 1 and memory.data[f'loss_spike/{LOSS}/{BATCH_OUTLIER}'][-1][1] == 1
    heights = [v for _, v in memory.data[f'loss_spike/{LOSS}/height']]
    assert len(heights) == 6 and min(heights) > 1.0  # every spike here more than doubles the loss
    assert [v for _, v in memory.data[f'loss_spike/{LOSS}/open']] == [1, 0, 1, 0, 1, 0]
    assert memory.data[f'loss_spike/{LOSS}/{NOT_RECOVERING}'][-1][1] == 1


def test_divergence_without_a_spike_is_caught():
    label_noise = np.full(N_BATCHES, 0.4)
    label_noise[100:] = np.linspace(0.4, 1.5, N_BATCHES - 100)  # harder and harder labels: a smooth climb
    monitor = LossSpikeMonitor(detector=DETECTOR)
    _trainer(_data(np.zeros(N_BATCHES), label_noise), monitor).fit()
    assert [(r['kind'], r['status']) for r in monitor.events] == [(DIVERGENCE, STATUS_OPEN)]
    assert 100 <= monitor.events[0]['onset_step'] < monitor.events[0]['detect_step']


def test_stop_ends_training_and_names_the_checkpoint_before_the_onset(tmp_path, caplog):
    monitor = LossSpikeMonitor(detector=DETECTOR, actions={SLOW_RECOVERING: 'stop'})
    trainer = _trainer(_spiky_data(), monitor, save_folder=str(tmp_path / 'ckpt'), save_interval='50ba')
    with caplog.at_level(logging.WARNING, logger='foundry_ext'):
        trainer.fit()
    trainer.close()

    fast, slow = [r for r in monitor.events if r['status'] != STATUS_OPEN]
    assert fast['kind'] == FAST_RECOVERING and fast['action'] == 'log'
    assert slow['kind'] == SLOW_RECOVERING and slow['action'] == 'stop'
    # Classified at some batch after its recovery; training ends with that batch.
    stop_batch = int(trainer.state.timestamp.batch)
    assert slow['recovered_step'] < stop_batch < N_BATCHES
    assert monitor.detectors[LOSS].state_dict()['last_step'] == stop_batch - 1
    # Onset ~180: the newest checkpoint whose model still gave a normal loss is the one at batch 150.
    assert 'ep0-ba150-rank0.pt (batch 150)' in slow['checkpoint_before_onset']
    message = [r.getMessage() for r in caplog.records if 'STOPPING TRAINING' in r.getMessage()]
    assert len(message) == 1 and 'slow_recovering' in message[0] and 'ep0-ba150-rank0.pt' in message[0]
    # Without events_path, the events go next to the checkpoints.
    lines = (tmp_path / 'ckpt' / 'loss_events.jsonl').read_text().splitlines()
    assert [r for r in map(json.loads, lines) if r['kind'] != BATCH_OUTLIER] == monitor.events


def test_stop_keeps_the_rollback_checkpoint_out_of_the_rotation(tmp_path):
    # Saves at 50 and 100 (keep 2); a spike at 100 stops the run at once, and Composer saves once more at the
    # stop, which would rotate away ep0-ba50, the checkpoint the stop message names.
    flip = np.zeros(300)
    flip[100:103] = 1.0
    monitor = LossSpikeMonitor(detector=DETECTOR, actions={SPIKE: 'stop'})
    trainer = _trainer(_data(flip, np.full(300, 0.4)), monitor, save_folder=str(tmp_path / 'ckpt'),
                       save_interval='50ba', save_num_checkpoints_to_keep=2)
    trainer.fit()
    trainer.close()
    [stop] = [e for e in monitor.events if e['action'] == 'stop']
    assert 'ep0-ba50-rank0.pt (batch 50, kept out of save_num_checkpoints_to_keep)' in stop['checkpoint_before_onset']
    assert (tmp_path / 'ckpt' / 'ep0-ba50-rank0.pt').exists()


def test_fit_with_reset_time_starts_the_detectors_over():
    flip = np.zeros(300)
    flip[100:103] = 1.0
    monitor = LossSpikeMonitor(detector=DETECTOR)
    trainer = _trainer(_data(flip, np.full(300, 0.4)), monitor)
    trainer.fit(duration='150ba')
    first = _classified(monitor.events)
    assert [kind for kind, _ in first] == [FAST_RECOVERING]
    # A new run on the same trainer and data, from batch 0: its spike is found again, its own events only.
    trainer.fit(duration='140ba', reset_time=True)
    assert _classified(monitor.events) == first
    assert monitor.detectors[LOSS].state_dict()['last_step'] == 139


def test_resume_continues_detection_exactly(tmp_path):
    uninterrupted = LossSpikeMonitor(detector=DETECTOR)
    first = _trainer(_spiky_data(), uninterrupted, save_folder=str(tmp_path / 'a'), save_interval='200ba')
    first.fit()
    first.close()
    full_file = (tmp_path / 'a' / 'loss_events.jsonl').read_text()
    assert any(json.loads(line)['kind'] == BATCH_OUTLIER for line in full_file.splitlines())
    checkpoint = tmp_path / 'a' / 'ep0-ba200-rank0.pt'
    # At batch 200 the slow spike (onset ~180) is open: the checkpoint must carry it.
    saved = unpack_state(torch.load(checkpoint, weights_only=False)['state']['callbacks']['LossSpikeMonitor'])
    assert saved['detectors'][LOSS]['spike'] is not None and saved['events'][-1]['status'] == STATUS_OPEN

    # As after a kill past the checkpoint: the file holds lines of steps after it, which the resume replays.
    events_file = tmp_path / 'b' / 'loss_events.jsonl'
    events_file.parent.mkdir()
    events_file.write_text(full_file)
    resumed = LossSpikeMonitor(detector=DETECTOR, events_path=str(events_file))
    second = _trainer(_spiky_data(), resumed, load_path=str(checkpoint))
    second.fit()
    second.close()
    _assert_spikes(resumed.events)
    assert resumed.events == uninterrupted.events
    assert resumed.state_dict() == uninterrupted.state_dict()
    # The batch outlier before the checkpoint (not in the checkpointed events) is kept, once, in its place.
    assert events_file.read_text() == full_file


@pytest.mark.parametrize('kwargs, match', [
    ({'streams': 'loss/train/total'}, r'callbacks\.loss_spike_monitor\.streams=.*non-empty list'),
    ({'streams': ['train_loss']}, r"streams\[0\]='train_loss' is neither a training loss"),
    ({'streams': ['metrics/train/LanguageCrossEntropy']}, r'streams\[0\].*not monitored; use loss/train/total'),
    ({'detector': {'z_thresh': 3}}, r"detector\.z_thresh=3: unknown detector setting\. Valid settings: .*z_threshold"),
    ({'detector': {'warmup_steps': 2.5}}, r'detector\.warmup_steps=2\.5 must be an integer \(default 100\)'),
    ({'detector': {'z_threshold': -1}}, r'detector\.z_threshold=-1 must be finite and > 0'),
    ({'detector': {'fast_recovery_steps': 3000}}, r'loss_spike_monitor\.detector.*fast_recovery_steps < max_follow'),
    ({'eval_detector': {'recover_window': 0}}, r'eval_detector\.recover_window=0 must be finite and > 0'),
    ({'actions': {'spiky': 'stop'}}, r"actions\.spiky='stop': unknown event kind\. Kinds: spike, fast_recovering"),
    ({'actions': {'divergence': 'raise'}}, r"actions\.divergence='raise' must be one of log, stop"),
    ({'actions': {'batch_outlier': 'stop'}}, r"actions\.batch_outlier='stop': batch outliers .* never a reason to stop"),
    ({'events_path': ''}, r"events_path='' must be a file path"),
])
def test_bad_config_names_the_key_and_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LossSpikeMonitor(**kwargs)


def test_foundry_yaml_run_detects_an_lr_jump_spike_and_a_garbage_batch(tmp_path):
    """Through train_from_yaml and the entry point: the demo MPT, with one batch of random tokens at step 40 (a batch
    outlier) and a 30x LR jump for 3 batches from step 60 (a spike)."""
    from foundry_ext.commands.analyze_loss import analyze_loss
    from foundry_ext.testing.garbage_batch import garbage_tokens, register_garbage_batch
    from foundry_ext.testing.lr_jump import register_lr_jump

    register_lr_jump()
    register_garbage_batch()
    detector = {'warmup_steps': 30, 'fast_recovery_steps': 20, 'max_follow_steps': 40}
    _, metrics = foundry_run(tmp_path, [
        'max_duration=110ba', 'scheduler.t_warmup=10ba', 'scheduler.t_decay=10ba', 'save_interval=50ba',
        *(f'callbacks.loss_spike_monitor.detector.{k}={v}' for k, v in detector.items()),
        'callbacks.lr_jump.start=60', 'callbacks.lr_jump.steps=3', 'callbacks.lr_jump.factor=30',
        'callbacks.garbage_batch.step=40', 'callbacks.garbage_batch.vocab_size=258',
    ], metrics=None)
    lines = (tmp_path / 'checkpoints' / 'loss_events.jsonl').read_text().splitlines()
    records = [json.loads(line) for line in lines]
    # The garbage batch: one outlier, reported at the next batch, naming the samples; counted, not a spike.
    [outlier] = [r for r in records if r['kind'] == BATCH_OUTLIER]
    assert outlier['above_steps'] == [40] and outlier['recovered_step'] == 41 and outlier['height'] > 1.0
    assert outlier['action'] == 'log' and outlier['stream'] == LOSS
    [batch] = outlier['batches']
    assert batch['epoch'] == 0 and batch['sample_range'] == [40 * 16, 41 * 16]
    assert batch['fingerprints'] == row_fingerprints(garbage_tokens((16, 128), 258, seed=0)).tolist()
    steps, counts = metrics[f'loss_spike/{LOSS}/batch_outlier']
    assert steps.tolist() == [42] and counts.tolist() == [1]  # logged at the batch count after the confirmation
    assert metrics[f'loss_spike/{LOSS}/outliers_per_1k'][1].tolist() == [pytest.approx(1000 / 42)]
    online = [r for r in records if r['kind'] != BATCH_OUTLIER]
    assert online[0]['kind'] == SPIKE and 60 <= online[0]['onset_step'] <= 62
    assert f'loss_spike/{LOSS}/height' in metrics
    # analyze-loss over the exported metrics finds what the callback found online.
    offline = analyze_loss(tmp_path / 'metrics.jsonl', LOSS, out=tmp_path / 'events.png', detector=detector)
    # Classified within max_follow_steps (the kind is what this tiny model does: at 30x it does not fully recover).
    assert len(_classified(online)) >= 1
    assert _classified(online) == [(e.kind, e.onset_step) for e in offline.events if e.status != 'truncated']
    assert [e.above_steps for e in offline.outliers] == [[40]]
    assert read_metrics(tmp_path / 'metrics.jsonl')[LOSS][0][-1] == 109


def _multirank_worker(out_dir: str) -> None:
    """One rank of test_stop_is_agreed_on_by_all_ranks (run in a subprocess with Composer's dist env vars)."""
    torch.set_num_threads(1)
    rank = dist.get_global_rank()
    # Rank 1 is configured to stop earlier than rank 0 would: rank 0 must follow it, not hang or train on.
    actions = {SLOW_RECOVERING: 'stop'} if rank == 0 else {FAST_RECOVERING: 'stop'}
    monitor = LossSpikeMonitor(detector=DETECTOR, actions=actions, events_path=f'{out_dir}/events-{{rank}}.jsonl')
    trainer = _trainer(_spiky_data(), monitor)
    trainer.fit()
    result = {'batch': int(trainer.state.timestamp.batch), 'events': monitor.events}
    Path(out_dir, f'rank{rank}.json').write_text(json.dumps(result))
    trainer.close()


def test_stop_is_agreed_on_by_all_ranks(tmp_path):
    """Two CPU ranks (gloo): same all-reduced losses and events on both, one stop for both, one events file."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = dict(os.environ, WORLD_SIZE='2', RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE='2',
                   NODE_RANK='0', MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), OMP_NUM_THREADS='1')
        code = ('from tests.callbacks.test_loss_spike_monitor import _multirank_worker; '
                f'_multirank_worker({str(tmp_path)!r})')
        procs.append(subprocess.Popen([sys.executable, '-c', code], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    rank0, rank1 = (json.loads((tmp_path / f'rank{r}.json').read_text()) for r in range(2))
    strip = lambda events: [{k: v for k, v in e.items() if k not in ('action', 'checkpoint_before_onset')}
                            for e in events]
    assert strip(rank0['events']) == strip(rank1['events'])
    fast = next(e for e in rank1['events'] if e['kind'] == FAST_RECOVERING)
    assert fast['recovered_step'] < rank0['batch'] == rank1['batch'] < 180  # before rank 0's own stop
    assert 'because rank(s) [1] decided to' in outputs[0] and 'STOPPING TRAINING after step' in outputs[1]
    assert 'fast_recovering event on loss/train/total' in outputs[1]
    assert (tmp_path / 'events-0.jsonl').exists() and not (tmp_path / 'events-1.jsonl').exists()
    lines = [json.loads(line) for line in (tmp_path / 'events-0.jsonl').read_text().splitlines()]
    [outlier] = [r for r in lines if r['kind'] == BATCH_OUTLIER]
    rows = _spiky_data().tensors[0][70 * BATCH:71 * BATCH]  # both ranks' samples of batch 70, gathered by rank
    by_rank = [row_fingerprints(rows[rank::2]).tolist() for rank in range(2)]
    assert outlier['above_steps'] == [70] and outlier['batches'][0]['fingerprints'] == by_rank[0] + by_rank[1]


class _NoSyncMonitor(LossSpikeMonitor):
    """Keeps each batch's identity with CUDA's sync debug mode on: any device-to-host synchronisation raises."""

    def _keep_batch(self, state, step):
        torch.cuda.set_sync_debug_mode('error')
        try:
            super()._keep_batch(state, step)
        finally:
            torch.cuda.set_sync_debug_mode('default')


@pytest.mark.gpu
def test_keeping_batch_identities_does_not_synchronise_the_gpu():
    data = _spiky_data()
    on_gpu = TensorDataset(*(tensor.cuda() for tensor in data.tensors))  # the batch stays on the device
    row_fingerprints(on_gpu.tensors[0][:BATCH])  # the hash weights are built once, outside the check
    monitor = _NoSyncMonitor(detector=DETECTOR)
    trainer = _trainer(on_gpu, monitor, device='gpu')
    trainer.fit()
    [outlier] = [e for e in monitor.outliers.items()]
    assert outlier == (LOSS, 1)
    assert all(fp.is_cuda for fp, _, _ in monitor._batches.values())
