"""ResumeGuard on real Composer Trainers with real checkpoints on disk and real resumes (nothing mocked)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from foundry_ext.algorithms import GroupSummary, ResumeGuard, ResumeGuardError, summarize_optimizer
from foundry_ext.core.checkpoint_state import unpack_state
from foundry_ext.schedulers import WSDScheduler
from foundry_ext.schedulers.wsd import wsd_multiplier
from tests.algorithms.conftest import LR, LR_KEY, adam_trainer, last, series

GUARD_LOG = 'foundry_ext.algorithms.resume_guard'


def decaying() -> WSDScheduler:
    """Warmup to batch 4, flat, then a linear decay from batch 10 to 40."""
    return WSDScheduler(t_warmup='4ba', t_decay_start='10ba', t_decay='30ba', alpha_f=0.02)


def flat() -> WSDScheduler:
    """The same warmup, then flat at the peak: 'dropping the decay'."""
    return WSDScheduler(t_warmup='4ba', t_decay_start='1000ba', t_decay='30ba')


def decay_lr(batch: int) -> float:
    """The LR ``decaying()`` applies to ``batch``: the multiplier at timestamp ``batch - 1``."""
    return LR * wsd_multiplier(max(batch - 1, 0), 4, 10, 30, 0.0, 0.02, 'linear', 'linear')


@pytest.fixture(scope='module')
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trains 30 batches of the decaying schedule with the guard, checkpointing every 10."""
    folder = tmp_path_factory.mktemp('base')
    trainer, _ = adam_trainer(decaying(), '30ba', [ResumeGuard(monitor_interval=5)], save_folder=str(folder),
                              save_interval='10ba')
    trainer.fit()
    trainer.close()
    return folder / 'ep0-ba30-rank0.pt'


def _guard_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == GUARD_LOG and r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    'kwargs,message',
    [
        ({'on_mismatch': 'panic'}, 'algorithms.resume_guard.on_mismatch'),
        ({'max_lr_ratio': 1.0}, 'algorithms.resume_guard.max_lr_ratio'),
        ({'max_lr_ratio': '2'}, 'algorithms.resume_guard.max_lr_ratio'),
        ({'rewarm_steps': 0}, 'algorithms.resume_guard.rewarm_steps'),
        ({'rewarm_steps': 2.5}, 'algorithms.resume_guard.rewarm_steps'),
        ({'monitor_interval': -1}, 'algorithms.resume_guard.monitor_interval'),
        ({'monitor_interval': True}, 'algorithms.resume_guard.monitor_interval'),
        ({'apply_yaml_lr': 'yes'}, 'algorithms.resume_guard.apply_yaml_lr'),
        ({'check_in_run': 1}, 'algorithms.resume_guard.check_in_run'),
    ],
)
def test_bad_config_fails_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResumeGuard(**kwargs)


def test_refuses_optimizers_without_adam_state():
    from tests.conftest import tiny_trainer
    with pytest.raises(ValueError, match='Adam-family'):
        tiny_trainer(None, '2ba', algorithms=[ResumeGuard()])


def test_record_round_trips_through_a_real_checkpoint(base_run: Path):
    record = unpack_state(dict(torch.load(base_run, weights_only=False)['state']['algorithms'])['ResumeGuard'])
    optimizer_state = torch.load(base_run, weights_only=False)['state']['optimizers']['DecoupledAdamW']
    assert record['batch'] == 30
    assert record['lr_applied'] == [pytest.approx(decay_lr(29), rel=1e-12)]
    assert record['lr_next'] == [optimizer_state['param_groups'][0]['lr']]
    assert record['lr_next'] == [pytest.approx(decay_lr(30), rel=1e-12)]
    assert record['betas'] == [[0.9, 0.95]] and record['eps'] == [1e-8]
    assert len(record['plan'][0]) == 40  # 2 / (1 - beta2) batches ahead
    assert record['plan'][0] == pytest.approx([decay_lr(30 + j) for j in range(40)], rel=1e-12)

    # The statistics in the record are those of the optimizer state in the same checkpoint.
    trainer, _ = adam_trainer(decaying(), '40ba', load_path=str(base_run))
    assert [GroupSummary.from_dict(d) for d in record['stats']] == summarize_optimizer(trainer.state.optimizers[0])
    assert record['stats'][0]['numel'] == sum(p.numel() for p in trainer.state.model.parameters())
    assert record['stats'][0]['mean_step'] == 30


def test_same_schedule_resume_is_silent_and_unchanged(base_run: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger=GUARD_LOG)
    resumed, memory = adam_trainer(decaying(), '40ba', [ResumeGuard()], load_path=str(base_run))
    resumed.fit()
    assert _guard_warnings(caplog) == []
    assert any('consistent with the checkpoint' in r.getMessage() for r in caplog.records)
    assert last(memory, 'resume_guard/resume/lr_ratio') == 1.0
    assert last(memory, 'resume_guard/resume/schedule_changed') == 0.0
    assert series(memory, LR_KEY) == {b: pytest.approx(decay_lr(b), rel=1e-12) for b in range(31, 41)}


def test_detects_an_lr_increase_on_resume_and_warns(base_run: Path, caplog: pytest.LogCaptureFixture):
    resumed, memory = adam_trainer(flat(), '40ba', [ResumeGuard()], load_path=str(base_run))
    resumed.fit()
    warnings = _guard_warnings(caplog)
    assert len(warnings) == 1, warnings  # the in-run check does not report the same jump again
    assert 'ratio 2.64 at batch 31' in warnings[0] and 'schedule: changed' in warnings[0]
    assert last(memory, 'resume_guard/resume/lr_ratio') == pytest.approx(LR / decay_lr(30))
    assert last(memory, 'resume_guard/resume/schedule_changed') == 1.0
    assert last(memory, 'resume_guard/resume/rewarm_steps') == 0.0
    # warn changes nothing: the flat schedule's peak from the second resumed batch on.
    assert series(memory, LR_KEY) == {b: LR for b in range(31, 41)}


def test_rewarm_ramps_linearly_and_a_resume_mid_ramp_continues_it(base_run: Path, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture):
    ref = decay_lr(30)
    ramp = {30 + j: ref + (LR - ref) * j / 40 for j in range(1, 40)} | {b: LR for b in range(70, 81)}
    resumed, memory = adam_trainer(flat(), '80ba', [ResumeGuard(on_mismatch='rewarm')], load_path=str(base_run),
                                   save_folder=str(tmp_path), save_interval='25ba')
    resumed.fit()
    resumed.close()
    assert series(memory, LR_KEY) == pytest.approx(ramp, rel=1e-12)
    assert last(memory, 'resume_guard/resume/rewarm_steps') == 40.0
    assert 'on_mismatch=rewarm' in _guard_warnings(caplog)[0]

    caplog.clear()  # resume from batch 50, in the middle of the ramp: same LRs, nothing to report
    again, memory = adam_trainer(flat(), '80ba', [ResumeGuard(on_mismatch='rewarm')],
                                 load_path=str(tmp_path / 'ep0-ba50-rank0.pt'))
    again.fit()
    assert series(memory, LR_KEY) == pytest.approx({b: lr for b, lr in ramp.items() if b > 50}, rel=1e-12)
    assert _guard_warnings(caplog) == []
    assert last(memory, 'resume_guard/resume/lr_ratio') == 1.0


def test_error_stops_before_the_first_resumed_batch(base_run: Path):
    resumed, memory = adam_trainer(flat(), '40ba', [ResumeGuard(on_mismatch='error')], load_path=str(base_run))
    before = [p.detach().clone() for p in resumed.state.model.parameters()]
    with pytest.raises(ResumeGuardError, match='on_mismatch: rewarm'):
        resumed.fit()
    assert int(resumed.state.timestamp.batch) == 30
    assert all(torch.equal(a, b) for a, b in zip(before, resumed.state.model.parameters()))
    assert 'loss/train/total' not in memory.data


def _up_down_up(state, ssr: float = 1.0) -> float:
    """Warmup over 4 batches, 1 until 8, 0.1 until 16, then back to 1 (a WSD-S-like return to the peak)."""
    t = int(state.timestamp.batch)
    return t / 4 if t < 4 else 1.0 if t < 8 else 0.1 if t < 16 else 1.0


@pytest.mark.parametrize('on_mismatch', ['warn', 'rewarm', 'error'])
def test_in_run_jump(on_mismatch: str, caplog: pytest.LogCaptureFixture):
    trainer, memory = adam_trainer(_up_down_up, '30ba', [ResumeGuard(on_mismatch=on_mismatch, rewarm_steps=5)])
    if on_mismatch == 'error':
        with pytest.raises(ResumeGuardError, match='jumps x10 at batch 17'):
            trainer.fit()
        assert int(trainer.state.timestamp.batch) == 17  # batch 17, the first at the peak, never trained
        return
    trainer.fit()
    warnings = _guard_warnings(caplog)
    assert len(warnings) == 1 and 'jumps x10 at batch 17' in warnings[0]  # the warmup from 0 is not flagged
    assert last(memory, 'resume_guard/lr_jump_ratio') == pytest.approx(10.0)
    lrs = series(memory, LR_KEY)
    if on_mismatch == 'warn':
        assert lrs[17] == LR
    else:
        low = 0.1 * LR
        assert [lrs[b] for b in range(16, 24)] == pytest.approx(
            [low, low] + [low + (LR - low) * j / 5 for j in range(1, 5)] + [LR, LR], rel=1e-12)


def test_a_record_for_other_param_groups_is_set_aside(base_run: Path, caplog: pytest.LogCaptureFixture):
    # The checkpoint's optimizer had one group; the resumed one has two (e.g. a new no-decay group).
    from composer import Trainer
    from composer.optim import DecoupledAdamW
    from torch.utils.data import DataLoader

    from tests.algorithms.conftest import dataset, mlp
    model = mlp()
    params = list(model.parameters())
    trainer = Trainer(model=model, train_dataloader=DataLoader(dataset(), batch_size=4), max_duration='34ba',
                      optimizers=DecoupledAdamW([{'params': params[:2]}, {'params': params[2:]}], lr=LR),
                      schedulers=decaying(), algorithms=[ResumeGuard()], load_path=str(base_run),
                      load_ignore_keys=['state/optimizers'], progress_bar=False, device='cpu')
    trainer.fit()
    assert int(trainer.state.timestamp.batch) == 34
    assert any("record has 1 parameter group(s), the resumed optimizer 2" in w for w in _guard_warnings(caplog))


def test_a_resume_mid_warmup_from_a_checkpoint_without_a_record_is_not_a_mismatch(tmp_path: Path):
    warmup = lambda: WSDScheduler(t_warmup='20ba', t_decay_start='50ba', t_decay='10ba')  # noqa: E731
    trainer, _ = adam_trainer(warmup(), '60ba', save_folder=str(tmp_path), save_interval='5ba')
    trainer.fit(duration='5ba')
    trainer.close()
    resumed, memory = adam_trainer(warmup(), '60ba', [ResumeGuard(on_mismatch='error')],
                                   load_path=str(tmp_path / 'ep0-ba5-rank0.pt'))
    resumed.fit(duration='20ba')  # the rest of the warmup, unchanged: no error
    assert last(memory, 'resume_guard/resume/lr_ratio') == pytest.approx(1.0)


def test_a_later_fit_is_checked_like_two_batches_and_reset_time_starts_over(caplog: pytest.LogCaptureFixture):
    from composer.optim import ConstantScheduler, LinearScheduler
    trainer, memory = adam_trainer(LinearScheduler(alpha_i=1.0, alpha_f=0.1, t_max='10ba'), '10ba',
                                   [ResumeGuard(on_mismatch='error', monitor_interval=0)])
    trainer.fit()
    with pytest.raises(ResumeGuardError, match=r'jumps x3\.\d+ at batch 10'):  # 0.1 x LR -> LR under a new schedule
        trainer.fit(duration='10ba', schedulers=ConstantScheduler())
    assert int(trainer.state.timestamp.batch) == 10
    restarted, _ = adam_trainer(WSDScheduler(t_warmup='4ba', t_decay='4ba'), '12ba', [ResumeGuard(on_mismatch='error')])
    restarted.fit()
    restarted.fit(reset_time=True)  # its own warmup again, from 0: not a jump
    assert int(restarted.state.timestamp.batch) == 12 and not _guard_warnings(caplog)


def test_a_longer_look_ahead_than_the_saved_plan_is_not_a_jump(tmp_path: Path):
    # The record's plan covers the saved look-ahead (40 batches); the resumed one 60 batches of the same warmup.
    warmup = lambda: WSDScheduler(t_warmup='100ba', t_decay_start='400ba', t_decay='100ba')  # noqa: E731
    trainer, _ = adam_trainer(warmup(), '10ba', [ResumeGuard()], save_folder=str(tmp_path), save_interval='10ba')
    trainer.fit()
    trainer.close()
    resumed, memory = adam_trainer(warmup(), '20ba', [ResumeGuard(on_mismatch='error', rewarm_steps=60)],
                                   load_path=str(tmp_path / 'ep0-ba10-rank0.pt'))
    resumed.fit()
    assert last(memory, 'resume_guard/resume/lr_ratio') == pytest.approx(1.0)


def test_without_a_record_a_different_schedule_is_compared_with_the_restored_lr(tmp_path: Path):
    trainer, _ = adam_trainer(decaying(), '40ba', save_folder=str(tmp_path), save_interval='40ba')  # no guard
    trainer.fit()
    trainer.close()
    resumed, memory = adam_trainer(flat(), '50ba', [ResumeGuard(on_mismatch='error')],
                                   load_path=str(tmp_path / 'ep0-ba40-rank0.pt'))
    with pytest.raises(ResumeGuardError, match='without a resume_guard record'):
        resumed.fit()
    assert int(resumed.state.timestamp.batch) == 40  # stopped before the first resumed batch
    # 0.02 x peak restored; the flat schedule applies the peak from the second resumed batch on.
    assert last(memory, 'resume_guard/resume/lr_ratio') == pytest.approx(LR / decay_lr(40), rel=1e-6)


def test_a_rise_after_the_schedule_fell_below_a_rewarm_is_ramped_too(tmp_path: Path):
    def shortened(state, ssr=1.0):  # the decay cut short after the resume at 30, then back to the peak at 40
        t = int(state.timestamp.batch)
        if t < 30:
            return wsd_multiplier(t, 4, 10, 30, 0.0, 0.02, 'linear', 'linear')
        return max(0.35 - 0.11 * (t - 30), 0.02) if t < 40 else 1.0

    trainer, _ = adam_trainer(decaying(), '30ba', [ResumeGuard()], save_folder=str(tmp_path), save_interval='30ba')
    trainer.fit()
    trainer.close()
    resumed, memory = adam_trainer(shortened, '60ba', [ResumeGuard(on_mismatch='rewarm')],
                                   load_path=str(tmp_path / 'ep0-ba30-rank0.pt'))
    resumed.fit()
    lrs = series(memory, LR_KEY)
    assert lrs[41] == pytest.approx(0.02 * LR)  # the low point the schedule reached, not the rewarm's start
    assert max(lrs[b] / lrs[b - 1] for b in range(32, 61)) < 2.5  # ramped from there, not a x27 jump
    assert series(memory, 'resume_guard/lr_jump_ratio')  # and reported as the jump it is
