"""Chaos: a run killed again and again, relaunched unattended each time, ends exactly as if it had never been killed.

``composer scripts/train.py`` (through ``tests/distributed/train_worker.py``, which adds the test-only ``crash`` and
``lr_jump`` callbacks) trains WSD-S with every foundry-ext component on. A supervisor loop relaunches the same
command until it exits 0. The crash plan, one point per launch:

1. batch 12, while Composer writes that checkpoint: the process dies half way through the file;
2. batch 16, while ``budget_checkpoint`` writes budget 1's checkpoint (the same way);
3. a random batch and event (fixed seed): SIGKILL to the launcher and the rank;
4. right after the final checkpoint (``FIT_END``), before the end-of-run evaluation: SIGKILL.

Then: exit 0, the final model and optimizer state bit for bit the uninterrupted run's, every metric of every step
of ``metrics.jsonl`` as in the uninterrupted run, the same ``budgets.json`` and ``loss_events.jsonl``; and one more
relaunch of the finished run exits 0 with one line. The two-process FSDP variant (a kill during a sharded save) is
``tests/distributed/test_fsdp_cpu.py::test_a_kill_during_a_sharded_save_is_recovered_exactly``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from foundry_ext.core.metrics_io import read_metrics
from tests.conftest import (SMALL_CORPUS, TINY_MODEL, assert_same_tensors, checkpoint_tensors, demo_yaml_with, launch,
                            relaunch)

WSD_S = {'name': 'wsd_s', 't_warmup': '4ba', 'budgets': ['16ba', '32ba', '48ba'], 'decay_fraction': 0.25}
SPIKE = {'warmup_steps': 8, 'fast_recovery_steps': 6, 'max_follow_steps': 12}
# The crash callback comes first, so that it acts before budget_checkpoint and Composer's saver at an event.
RUN = [*TINY_MODEL, SMALL_CORPUS, 'max_duration=48ba', 'save_interval=6ba', 'eval_interval=10ba',
       'eval_subset_num_batches=1', 'autoresume=true', 'run_name=chaos', 'python_log_level=warn',
       'console_log_interval=1000ba', 'callbacks.budget_checkpoint={}', 'callbacks.resume_data_guard={}',
       'algorithms.resume_guard={}', 'callbacks.lr_jump.start=26', 'callbacks.lr_jump.steps=2',
       'callbacks.lr_jump.factor=30', *(f'callbacks.loss_spike_monitor.detector.{k}={v}' for k, v in SPIKE.items())]
# Metrics that measure wall-clock time differ between any two runs.
TIMING = ('time/train', 'time/val', 'time/total', 'throughput/', 'wall_clock/')
RANDOM_EVENTS = ('after_dataloader', 'before_forward', 'after_loss', 'after_backward', 'batch_end',
                 'batch_checkpoint')


def _args(run_dir: Path, plan: Path) -> list[str]:
    return [str(run_dir.parent / 'wsd_s.yaml'), f'variables.run_dir={run_dir}', f'save_folder={run_dir}/ckpt',
            f'callbacks.crash.plan={plan}', *RUN]


def _metrics(run_dir: Path) -> dict:
    return {key: (steps.tolist(), values.tolist()) for key, (steps, values) in
            read_metrics(run_dir / 'metrics.jsonl').items() if not key.startswith(TIMING)}


def _budgets(run_dir: Path) -> list[dict]:
    entries = json.loads((run_dir / 'ckpt' / 'budgets' / 'budgets.json').read_text())
    return [{k: v for k, v in e.items() if k not in ('checkpoint', 'hf_checkpoint')} for e in entries]


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / 'ckpt' / 'loss_events.jsonl').read_text().splitlines()]


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp('chaos')
    demo_yaml_with(root / 'wsd_s.yaml', scheduler=WSD_S)
    straight, chaos = root / 'straight', root / 'chaos'
    (root / 'no_crash.json').write_text('[]')
    assert relaunch(straight, _args(straight, root / 'no_crash.json'), 1) == [0], (straight / 'launcher.log').read_text()[-3000:]

    size = (straight / 'ckpt' / 'ep0-ba12-rank0.pt').stat().st_size
    rng = random.Random(20240607)
    plan = [
        {'event': 'batch_checkpoint', 'batch': 12, 'how': 'cut_write', 'bytes': size // 2},
        {'event': 'batch_checkpoint', 'batch': 16, 'how': 'cut_write', 'bytes': size // 2},
        {'event': rng.choice(RANDOM_EVENTS), 'batch': rng.randint(17, 40), 'how': 'kill'},
        {'event': 'fit_end', 'how': 'kill'},
    ]
    (root / 'crash.json').write_text(json.dumps(plan))
    codes = relaunch(chaos, _args(chaos, root / 'crash.json'), 6)
    log = (chaos / 'launcher.log').read_text()
    assert len(codes) == 5 and codes[-1] == 0 and 0 not in codes[:-1], (codes, log[-3000:])
    assert json.loads((root / 'crash.json.used').read_text()) == len(plan)
    return {'straight': straight, 'chaos': chaos, 'log': log}


def test_the_kills_happened_where_planned_and_each_was_repaired(runs):
    chaos, log = runs['chaos'], runs['log']
    quarantine = chaos / 'ckpt' / 'quarantine'
    # 1: the partial checkpoint of batch 12, moved aside (Composer alone refused to start: FileExistsError)
    assert (quarantine / 'ep0-ba12-rank0.pt').exists()
    assert f"{chaos / 'ckpt' / 'ep0-ba12-rank0.pt'} is not a complete checkpoint" in log
    # 4: the final checkpoint of a run killed before its end, moved aside so that the end was redone
    assert (quarantine / 'ep0-ba48-rank0.pt').exists()
    assert 'stopped after its final checkpoint ep0-ba48-rank0.pt' in log
    assert 'FileExistsError' not in log and 'Traceback' not in log


def test_final_weights_and_optimizer_state_are_bitwise_the_uninterrupted_runs(runs):
    assert_same_tensors(checkpoint_tensors(runs['chaos'] / 'ckpt' / 'ep0-ba48-rank0.pt'),
                        checkpoint_tensors(runs['straight'] / 'ckpt' / 'ep0-ba48-rank0.pt'))
    budget = 'budgets/budget1-16ba-ba16-rank0.pt'  # rewritten in full after the kill in the middle of it
    assert_same_tensors(checkpoint_tensors(runs['chaos'] / 'ckpt' / budget),
                        checkpoint_tensors(runs['straight'] / 'ckpt' / budget))


def test_every_metric_of_every_step_is_the_uninterrupted_runs(runs):
    straight, chaos = _metrics(runs['straight']), _metrics(runs['chaos'])
    # The resumes add their own diagnostics (resume_guard/resume/..., resume_data_guard/...); nothing is missing.
    assert {key: chaos.get(key) for key in straight} == straight
    assert straight['loss/train/total'][0] == list(range(48))
    assert straight['metrics/eval/LanguageCrossEntropy'][0] == [10, 20, 30, 40, 48]


def test_budget_manifest_and_loss_events_are_the_uninterrupted_runs(runs):
    assert _budgets(runs['chaos']) == _budgets(runs['straight'])
    assert [e['step'] for e in _budgets(runs['straight'])] == [16, 32, 48]
    assert _budgets(runs['straight'])[-1]['eval']  # the end-of-run evaluation, after the final checkpoint
    assert _events(runs['chaos']) == _events(runs['straight'])
    assert _events(runs['straight']), 'lr_jump provoked no loss event to compare'


def test_relaunching_the_finished_run_exits_0_with_one_line(runs):
    chaos = runs['chaos']
    proc = launch(chaos, _args(chaos, chaos.parent / 'crash.json'))
    assert proc.wait(timeout=900) == 0
    new_output = (chaos / 'launcher.log').read_text()[len(runs['log']):]
    lines = [line for line in new_output.splitlines() if 'already complete' in line]
    assert lines == [f"foundry-ext: run 'chaos' is already complete (48ba of max_duration=48ba); final checkpoint: "
                     f"{chaos / 'ckpt' / 'ep0-ba48-rank0.pt'}. Nothing to do."], new_output[-3000:]
