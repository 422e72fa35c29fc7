"""ResumeGuard through LLM-Foundry's ``train_from_yaml`` on the demo recipe: autoresume and YAML LR overrides."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from foundry_ext.core.metrics_io import read_metrics
from foundry_ext.schedulers.wsd import wsd_multiplier
from tests.conftest import foundry_run

GUARD_LOG = 'foundry_ext.algorithms.resume_guard'
YAML_LR = 3e-3
LR_KEY = 'lr-DecoupledAdamW/group0'
# Warmup to 2, decay from 4 to 12, fixed in absolute time so that every max_duration below shares it.
RECIPE = ['scheduler.t_warmup=2ba', 'scheduler.t_decay_start=4ba', 'scheduler.t_decay=8ba', 'scheduler.alpha_f=0.1',
          'save_interval=6ba', 'algorithms.resume_guard.monitor_interval=4', 'autoresume=true']


def schedule_lr(batch: int, lr: float = YAML_LR) -> float:
    """The LR of ``batch`` under RECIPE: the multiplier at timestamp ``batch - 1``."""
    return lr * wsd_multiplier(max(batch - 1, 0), 2, 4, 8, 0.0, 0.1, 'linear', '1-sqrt')


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == GUARD_LOG and r.levelno >= logging.WARNING]


def _lrs(run_dir: Path) -> dict[int, float]:
    steps, values = read_metrics(run_dir / 'metrics.jsonl')[LR_KEY]
    return dict(zip(steps.tolist(), values.tolist()))


def _metric(run_dir: Path, key: str) -> float:
    return float(read_metrics(run_dir / 'metrics.jsonl')[key][1][-1])


@pytest.fixture(scope='module')
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first half of a run: 6 batches, checkpointed at 6, as if it had crashed there."""
    run_dir = tmp_path_factory.mktemp('interrupted')
    foundry_run(run_dir, [*RECIPE, 'max_duration=6ba'])
    return run_dir


def test_plain_autoresume_is_silent_and_bit_identical(interrupted: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture):
    _, whole = foundry_run(tmp_path / 'whole', [*RECIPE, 'max_duration=12ba'])
    caplog.set_level(logging.INFO, logger=GUARD_LOG)
    _, resumed = foundry_run(interrupted, [*RECIPE, 'max_duration=12ba'])  # autoresume from batch 6
    assert _warnings(caplog) == []
    assert any('resumed at batch 6' in r.getMessage() and 'consistent' in r.getMessage() for r in caplog.records)
    assert _metric(interrupted, 'resume_guard/resume/lr_ratio') == 1.0
    assert sorted(resumed) == sorted(whole) == list(range(12))
    assert resumed == whole  # every loss, bit for bit
    # and the guard changed no LR: lr_monitor saw the schedule itself
    assert _lrs(tmp_path / 'whole') == {b: pytest.approx(schedule_lr(b), rel=1e-12) for b in range(1, 13)}


def test_yaml_lr_change_is_reported_as_ignored(interrupted: Path, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture):
    ckpt = interrupted / 'checkpoints' / 'ep0-ba6-rank0.pt'
    run_dir = tmp_path / 'doubled'
    foundry_run(run_dir, [*RECIPE, 'max_duration=8ba', f'load_path={ckpt}', f'optimizer.lr={2 * YAML_LR}',
                          'autoresume=false'])
    [warning] = _warnings(caplog)
    assert f'optimizer.lr={2 * YAML_LR} in the YAML is ignored' in warning and 'apply_yaml_lr: true' in warning
    assert _metric(run_dir, 'resume_guard/resume/lr_overridden') == 1.0
    assert _lrs(run_dir)[8] == pytest.approx(schedule_lr(8), rel=1e-12)  # Composer kept the checkpoint's LR


def test_apply_yaml_lr_uses_the_new_lr_and_does_not_compound(interrupted: Path, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture):
    ckpt = interrupted / 'checkpoints' / 'ep0-ba6-rank0.pt'
    run_dir = tmp_path / 'applied'
    new_lr = 2 * YAML_LR
    overrides = [*RECIPE, f'load_path={ckpt}', f'optimizer.lr={new_lr}', 'algorithms.resume_guard.apply_yaml_lr=true',
                 'autoresume=false', 'save_interval=8ba']
    foundry_run(run_dir, [*overrides, 'max_duration=8ba'])
    [warning] = _warnings(caplog)
    assert 'APPLY_YAML_LR' in warning and 'ratio 2 at batch 6' in warning
    assert _metric(run_dir, 'resume_guard/resume/lr_overridden') == 0.0
    assert _lrs(run_dir)[8] == pytest.approx(schedule_lr(8, new_lr), rel=1e-12)
    state = torch.load(run_dir / 'checkpoints' / 'ep0-ba8-rank0.pt', weights_only=False)['state']
    assert [g['initial_lr'] for g in state['optimizers']['DecoupledAdamW']['param_groups']] == [new_lr]

    # Resuming that checkpoint with the same YAML finds nothing to apply: the LR is not scaled again.
    caplog.clear()
    caplog.set_level(logging.INFO, logger=GUARD_LOG)
    later = tmp_path / 'later'
    foundry_run(later, [*overrides[:-1], f'load_path={run_dir / "checkpoints" / "ep0-ba8-rank0.pt"}',
                        'max_duration=9ba'])
    assert _warnings(caplog) == []
    assert _lrs(later)[9] == pytest.approx(schedule_lr(9, new_lr), rel=1e-12)
