"""The collapse_monitor callback, through LLM-Foundry's registry and real train_from_yaml runs."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from llmfoundry.utils.builders import build_callback

from foundry_ext.collapse.curves import smooth_curve
from foundry_ext.collapse.prediction import collapse_residual, predict_final_loss
from foundry_ext.collapse.reference import ReferenceCurve
from foundry_ext.callbacks.collapse_monitor import CollapseMonitor
from foundry_ext.core.checkpoint_state import unpack_state
from foundry_ext.core.metrics_io import read_metrics
from scripts.experiments.collapse_family import train_member
from tests.collapse_family_runs import SIZE, SPEC, reference_family
from tests.conftest import tiny_trainer

KEYS = ('collapse/residual', 'collapse/residual_z', 'collapse/predicted_final_loss',
        'collapse/predicted_final_loss_lower', 'collapse/predicted_final_loss_upper', 'collapse/out_of_band_streak')


@pytest.fixture(scope='module')
def family(tmp_path_factory: pytest.TempPathFactory):
    return reference_family(tmp_path_factory.getbasetemp() / 'collapse_family')


@pytest.mark.parametrize('kwargs, message', [
    ({'reference': 'missing.json'}, "callbacks.collapse_monitor.reference='missing.json' does not exist"),
    ({'consecutive': 0}, 'callbacks.collapse_monitor.consecutive=0 must be a whole number >= 1'),
    ({'interval': '10'}, "callbacks.collapse_monitor.interval='10' must be a whole number >= 1"),
    ({'threshold': -1.0}, 'callbacks.collapse_monitor.threshold=-1.0 must be a positive number'),
    ({'action': 'explode'}, "callbacks.collapse_monitor.action='explode' must be one of"),
])
def test_bad_config_is_refused_at_construction_naming_the_key(family, kwargs, message):
    ref_path = family[1]
    with pytest.raises(ValueError, match=message.replace('[', r'\[')):
        build_callback('collapse_monitor', {'reference': str(ref_path), **kwargs})


def test_a_file_that_is_not_a_reference_is_refused(tmp_path):
    path = tmp_path / 'ref.json'
    path.write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match=r"callbacks.collapse_monitor.reference='.*ref.json' is not a collapse"):
        CollapseMonitor(str(path))


def test_durations_it_cannot_turn_into_batches_are_refused_at_fit_start(family):
    trainer = tiny_trainer(None, '40sp', callbacks=[CollapseMonitor(str(family[1]))])
    with pytest.raises(ValueError, match=r"callbacks.collapse_monitor needs max_duration in batches \('ba'\).*40sp"):
        trainer.fit()


def _eval_batches(total: int) -> list[int]:
    """Batches at which the monitor evaluates: every interval and the last batch, once its window is full."""
    return [b for b in sorted({*range(SPEC.interval, total + 1, SPEC.interval), total}) if b >= SPEC.smoothing]


def _logged(ref: ReferenceCurve, total: int) -> list[int]:
    """The evaluations that log: from the second smoothed point past the reference's fit_start on."""
    batches = _eval_batches(total)
    centers = np.array([b - 1 - (SPEC.smoothing - 1) / 2 for b in batches])  # mean step of each window
    return [b for i, b in enumerate(batches) if np.count_nonzero(centers[:i + 1] / total >= ref.fit_start) >= 2]


def test_logs_residual_and_prediction_that_match_the_offline_analysis_and_survive_resume(family, tmp_path):
    _, ref_path = family
    ref = ReferenceCurve.from_json(ref_path.read_text())
    checkpointed = dataclasses.replace(SPEC, overrides=(*SPEC.overrides, 'save_folder=${variables.run_dir}/ckpt',
                                                        'save_interval=40ba'))
    run, _ = train_member(checkpointed, SIZE, 19, tmp_path / 'full', monitor=ref_path)
    total = run.total_steps
    metrics = read_metrics(tmp_path / 'full' / 'metrics.jsonl')
    assert all(metrics[key][0].tolist() == _logged(ref, total) for key in KEYS)
    # Offline: the loss of batch k is logged at step k; each evaluation averages the last `smoothing` losses.
    steps, losses = metrics['loss/train/total']
    points = [smooth_curve(steps[b - SPEC.smoothing:b], losses[b - SPEC.smoothing:b], SPEC.smoothing)
              for b in _eval_batches(total)]
    s, y = np.concatenate([p[0] for p in points]), np.concatenate([p[1] for p in points])
    res, pred = collapse_residual(s, y, total, ref), predict_final_loss(s, y, total, ref)
    assert metrics['collapse/predicted_final_loss'][1][-1] == pytest.approx(pred.final_loss, rel=1e-9)
    assert metrics['collapse/residual_z'][1][-1] == pytest.approx(res.z[-1], rel=1e-9)

    resumed = dataclasses.replace(SPEC, overrides=(*SPEC.overrides,
                                                   f'load_path={tmp_path}/full/ckpt/ep0-ba40-rank0.pt'))
    train_member(resumed, SIZE, 19, tmp_path / 'resumed', monitor=ref_path)
    after = read_metrics(tmp_path / 'resumed' / 'metrics.jsonl')
    for key in KEYS:
        s, v = after[key]
        assert s[0] == 45, 'the first evaluation after the checkpoint must not wait for a new window'
        full = dict(zip(*metrics[key]))
        np.testing.assert_allclose(v, [full[k] for k in s], rtol=1e-9, err_msg=key)


def test_a_wrong_tau_is_flagged_and_stops_the_run(family, tmp_path, caplog):
    _, ref_path = family
    stopping = dataclasses.replace(SPEC, overrides=(*SPEC.overrides, 'callbacks.collapse_monitor.action=stop'))
    with caplog.at_level('WARNING', logger='foundry_ext.callbacks.collapse_monitor'):
        run, _ = train_member(stopping, SIZE, 17, tmp_path / 'bad', wd_factor=10.0, monitor=ref_path)
    assert not run.finished, 'action: stop must end the run early'
    streak = read_metrics(tmp_path / 'bad' / 'metrics.jsonl')['collapse/out_of_band_streak']
    assert streak[1][-1] == SPEC.consecutive and (streak[1][:-1] < SPEC.consecutive).all()
    assert streak[0][-1] == run.curve.steps[-1] + 1, 'it stops at the batch that raised the alert'
    messages = '\n'.join(r.getMessage() for r in caplog.records)
    assert 'tau_fraction: run 0.2 vs reference 2' in messages
    assert f'{SPEC.consecutive} consecutive evaluations with |z| > 3' in messages and 'Stopping' in messages


def test_non_finite_losses_are_left_out_of_the_curve(family, caplog):
    # SGD at lr 1e38 on the linear model: the logits overflow, and the loss goes to inf / NaN.
    monitor = CollapseMonitor(str(family[1]), interval=5)
    trainer = tiny_trainer(None, '60ba', callbacks=[monitor], lr=1e38)
    with caplog.at_level(logging.WARNING, logger='foundry_ext.callbacks.collapse_monitor'):
        trainer.fit()
    assert any('is left out of the curve' in r.getMessage() for r in caplog.records)
    state = unpack_state(monitor.state_dict())
    assert all(np.isfinite([loss for _, loss in state['window']]))
    assert state['online'] is None or np.isfinite(state['online']['sums']).all()


def test_sparse_evaluations_are_aligned_on_every_point_past_warmup(family):
    # Every 30 batches of 100: one evaluation falls in the 10-50% window; the run must not fail on it.
    from composer.loggers import InMemoryLogger
    memory = InMemoryLogger()
    trainer = tiny_trainer(None, '100ba', callbacks=[CollapseMonitor(str(family[1]), interval=30)], loggers=[memory])
    trainer.fit()
    assert [int(ts.batch) for ts, _ in memory.data['collapse/residual_z']] == [60, 90, 100]
    assert all(np.isfinite(value) for _, value in memory.data['collapse/predicted_final_loss'])


def test_fit_with_reset_time_starts_a_new_curve(family):
    from composer.loggers import InMemoryLogger
    memory = InMemoryLogger()
    monitor = CollapseMonitor(str(family[1]), interval=30)
    trainer = tiny_trainer(None, '100ba', callbacks=[monitor], loggers=[memory])
    trainer.fit()
    trainer.fit(duration='100ba', reset_time=True)  # a new run on the same trainer: its steps start at 0 again
    assert [int(ts.batch) for ts, _ in memory.data['collapse/residual_z']] == [60, 90, 100] * 2
    assert unpack_state(monitor.state_dict())['evaluations'] == 4  # at 30, 60, 90, 100 of the new run


def test_a_schedule_that_peaks_below_one_is_compared_by_its_shape(family, caplog):
    # The same shape at half height must be judged like the full-height one: the reference peaks at 1.
    from composer.optim import LinearWithWarmupScheduler

    def schedule_warnings(alpha_i):
        caplog.clear()
        trainer = tiny_trainer(LinearWithWarmupScheduler(t_warmup='10ba', alpha_i=alpha_i), '100ba',
                               callbacks=[CollapseMonitor(str(family[1]), interval=10)])
        with caplog.at_level(logging.WARNING, logger='foundry_ext.callbacks.collapse_monitor'):
            trainer.fit()
        return [r.getMessage() for r in caplog.records if 'LR multiplier' in r.getMessage()]

    full = schedule_warnings(1.0)
    assert full and schedule_warnings(0.5) == full


@pytest.mark.parametrize('kwargs', [{'interval': 200}, {'smoothing': 200}])
def test_settings_that_would_never_log_are_refused_before_training(family, kwargs):
    trainer = tiny_trainer(None, '100ba', callbacks=[CollapseMonitor(str(family[1]), **kwargs)])
    with pytest.raises(ValueError, match=r'callbacks.collapse_monitor: with interval=.* fewer than 2 evaluations'):
        trainer.fit()
    assert int(trainer.state.timestamp.batch) == 0


def test_the_state_stays_bounded_however_long_the_run(family):
    # The history of every evaluation is gone: only the early-align sums and the prediction window stay.
    sizes = []
    for batches in (60, 240):
        monitor = CollapseMonitor(str(family[1]), interval=1)
        tiny_trainer(None, f'{batches}ba', callbacks=[monitor], batches=batches).fit()
        assert unpack_state(monitor.state_dict())['evaluations'] == batches - (monitor.smoothing - 1)
        sizes.append(len(str(monitor.state_dict())))
    assert sizes[1] < 1.2 * sizes[0], f'the checkpointed state grew from {sizes[0]} to {sizes[1]} characters'
