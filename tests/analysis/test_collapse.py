"""Tests for foundry_ext.analysis.collapse."""

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from foundry_ext.analysis.collapse import (
    LossCurve,
    LRSchedule,
    ReferenceCurve,
    TrainingBudget,
    collapse_residual,
    duration_to_steps,
    estimate_final_loss,
    final_window_losses,
    fit_reference,
    from_foundry_config,
    normalize_curve,
    predict_final_loss,
    smooth_curve,
    weight_decay_for_tau_fraction,
)
from foundry_ext.analysis.model_size import mpt_param_count


def _budget(
    optimizer: str = 'decoupled_adamw',
    weight_decay: float = 1e-5,
    lr: float = 6e-4,
) -> TrainingBudget:
    return TrainingBudget(
        total_params=100_000_000,
        non_embedding_params=80_000_000,
        global_train_batch_size=256,
        max_seq_len=2048,
        total_steps=10_000,
        peak_lr=lr,
        weight_decay=weight_decay,
        optimizer=optimizer,
    )


def _foundry_cfg(**overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        'max_seq_len': 128,
        'global_train_batch_size': 32,
        'max_duration': '1000ba',
        'model': {'name': 'mpt_causal_lm', 'd_model': 64, 'n_heads': 4, 'n_layers': 2, 'vocab_size': 101},
        'optimizer': {'name': 'decoupled_adamw', 'lr': 6e-4, 'weight_decay': 1e-4},
        'scheduler': {'name': 'cosine_with_warmup', 't_warmup': '100ba', 'alpha_f': 0.1},
    }
    cfg.update(overrides)
    return cfg


# ---------------------------------------------------------------- timescale, TPP, weight decay


def test_tau_decoupled_adamw_uses_weight_decay_as_per_step_decay():
    budget = _budget('decoupled_adamw', weight_decay=1e-5)
    assert budget.eta_lambda == pytest.approx(1e-5)
    assert budget.tau_iter == pytest.approx(1e5)
    assert budget.tau_fraction == pytest.approx(10.0)
    # Eq. (2): tau = B / (eta lambda D).
    eq2 = budget.tokens_per_batch / (budget.eta_lambda * budget.total_tokens)
    assert budget.tau_fraction == pytest.approx(eq2)


def test_tau_torch_adamw_scales_weight_decay_by_lr():
    budget = _budget('adamw', weight_decay=0.1, lr=6e-4)
    assert budget.eta_lambda == pytest.approx(6e-5)
    assert budget.tau_fraction == pytest.approx(1.0 / (6e-5 * 10_000))
    # The same YAML number means a 1/lr times longer timescale under torch AdamW.
    same_number = _budget('decoupled_adamw', weight_decay=0.1)
    assert budget.tau_fraction / same_number.tau_fraction == pytest.approx(1.0 / 6e-4)


def test_zero_weight_decay_is_an_infinite_timescale():
    assert math.isinf(_budget(weight_decay=0.0).tau_fraction)


@pytest.mark.parametrize('optimizer', ['decoupled_adamw', 'adamw', 'decoupled_lionw'])
@pytest.mark.parametrize('target', [0.05, 0.2, 1.0])
def test_weight_decay_for_tau_fraction_round_trips(optimizer: str, target: float):
    budget = _budget(optimizer)
    wd = weight_decay_for_tau_fraction(target, budget)
    assert dataclasses.replace(budget, weight_decay=wd).tau_fraction == pytest.approx(target)


def test_weight_decay_for_tau_fraction_values():
    assert weight_decay_for_tau_fraction(0.2, _budget('decoupled_adamw')) == pytest.approx(1 / (0.2 * 10_000))
    torch_adamw = _budget('adamw', lr=1e-3)
    assert weight_decay_for_tau_fraction(0.2, torch_adamw) == pytest.approx(1 / (0.2 * 10_000 * 1e-3))
    with pytest.raises(ValueError, match='positive'):
        weight_decay_for_tau_fraction(0.0, _budget())


def test_tpp_counts_all_parameters():
    budget = _budget()
    assert budget.tokens_per_batch == 256 * 2048
    assert budget.total_tokens == 10_000 * 256 * 2048
    assert budget.tpp == pytest.approx(10_000 * 256 * 2048 / 100_000_000)
    assert budget.non_embedding_tpp == pytest.approx(10_000 * 256 * 2048 / 80_000_000)


def test_unknown_optimizer_is_rejected():
    with pytest.raises(ValueError, match='optimizer.name'):
        _budget('sgd')


# ---------------------------------------------------------------- max_duration and YAML parsing


@pytest.mark.parametrize(
    'duration, steps',
    [
        ('1000ba', 1000),
        ('5e2ba', 500),
        (' 1000BA ', 1000),
        ('2e9tok', math.ceil(2e9 / (256 * 2048))),
        ('524288tok', 1),
        ('524289tok', 2),
        ('20000sp', math.ceil(20000 / 256)),
    ],
)
def test_duration_to_steps(duration: str, steps: int):
    assert duration_to_steps(duration, 256, 2048) == steps


@pytest.mark.parametrize('duration', ['1ep', '0.5dur', 3, '1.5ba', 'abc', '10sec', '100xyz', '0ba'])
def test_duration_errors_name_the_key(duration: Any):
    with pytest.raises(ValueError, match='max_duration'):
        duration_to_steps(duration, 256, 2048)


def test_from_foundry_config():
    cfg = _foundry_cfg()
    budget = from_foundry_config(cfg)
    params = mpt_param_count(cfg['model'])
    assert budget.total_steps == 1000
    assert budget.tokens_per_batch == 32 * 128
    assert budget.total_params == params.total
    assert budget.non_embedding_params == params.non_embedding
    assert budget.tau_fraction == pytest.approx(1 / (1e-4 * 1000))
    torch_cfg = _foundry_cfg(optimizer={'name': 'adamw', 'lr': 1e-3, 'weight_decay': 0.1})
    torch_adamw = from_foundry_config(torch_cfg)
    assert torch_adamw.tau_fraction == pytest.approx(1 / (1e-3 * 0.1 * 1000))


def test_from_foundry_config_reads_variables_max_seq_len():
    cfg = _foundry_cfg(max_duration='4096000tok')
    del cfg['max_seq_len']
    cfg['variables'] = {'max_seq_len': 256}
    assert from_foundry_config(cfg).total_steps == 4096000 // (32 * 256)


@pytest.mark.parametrize(
    'mutate, key',
    [
        (lambda c: c['optimizer'].pop('weight_decay'), 'optimizer.weight_decay'),
        (lambda c: c['optimizer'].pop('lr'), 'optimizer.lr'),
        (lambda c: c.pop('global_train_batch_size'), 'global_train_batch_size'),
        (lambda c: c.pop('max_seq_len'), 'max_seq_len'),
        (lambda c: c.update(max_duration='2ep'), 'max_duration'),
        (lambda c: c['model'].update(name='hf_causal_lm'), 'param_count'),
        (lambda c: c['optimizer'].update(name='no_op'), 'optimizer.name'),
        (lambda c: c['optimizer'].update(lr='abc'), "optimizer.lr='abc' is not a number"),
        (lambda c: c['optimizer'].update(weight_decay='x'), "optimizer.weight_decay='x' is not a number"),
        (lambda c: c.update(global_train_batch_size='16x'), "global_train_batch_size='16x' is not a number"),
    ],
)
def test_from_foundry_config_errors(mutate: Any, key: str):
    cfg = _foundry_cfg()
    mutate(cfg)
    with pytest.raises(ValueError, match=key):
        from_foundry_config(cfg)


# ---------------------------------------------------------------- normalization and schedules


def test_normalize_curve_divides_by_final_loss():
    t, ell = normalize_curve([100, 200, 400], [4.0, 3.0, 2.0], 400, final_loss=2.0)
    np.testing.assert_allclose(t, [0.25, 0.5, 1.0])
    np.testing.assert_allclose(ell, [2.0, 1.5, 1.0])


def test_final_loss_estimate_follows_the_decaying_tail_and_ignores_a_spike():
    steps = np.arange(1, 1001)
    losses = 3.0 - 0.5 * steps / 1000  # still falling at the end, as with decay-to-zero
    assert estimate_final_loss(steps, losses, 1000) == pytest.approx(2.5)
    spiked = losses.copy()
    spiked[-5] += 1.0
    assert estimate_final_loss(steps, spiked, 1000) == pytest.approx(2.5, abs=1e-3)
    _, ell = normalize_curve(steps, losses, 1000)
    assert ell[-1] == pytest.approx(1.0)


def test_normalize_curve_input_errors():
    with pytest.raises(ValueError, match='finished run'):
        normalize_curve([1, 2, 3], [3.0, 2.9, 2.8], 100)
    with pytest.raises(ValueError, match='increasing'):
        normalize_curve([1, 1, 2], [3.0, 2.9, 2.8], 2, final_loss=2.8)
    with pytest.raises(ValueError, match='positive'):
        normalize_curve([1, 2], [3.0, -1.0], 2, final_loss=2.8)


def test_schedule_from_foundry_cosine_linear_constant():
    budget = from_foundry_config(_foundry_cfg())  # 1000 steps of 32 x 128 tokens

    def schedule(name: str, t_warmup: str, **kwargs: Any) -> LRSchedule:
        return LRSchedule.from_foundry_scheduler({'name': name, 't_warmup': t_warmup, **kwargs}, budget)

    cosine = schedule('cosine_with_warmup', '100ba', alpha_f=0.1)
    t = np.array([0.0, 0.05, 0.1, 0.55, 1.0])
    np.testing.assert_allclose(cosine(t), [0.0, 0.5, 1.0, 0.55, 0.1], atol=1e-4)
    linear = schedule('linear_decay_with_warmup', '0.1dur')
    np.testing.assert_allclose(linear(np.array([0.05, 0.55, 1.0])), [0.5, 0.5, 0.0], atol=1e-9)
    constant = schedule('constant_with_warmup', f'{100 * 32 * 128}tok')
    np.testing.assert_allclose(constant(np.array([0.05, 0.5])), [0.5, 1.0])
    assert schedule('constant_with_warmup', '3200sp') == constant  # 3200 samples = 100 batches


@pytest.mark.parametrize(
    'scheduler, key',
    [
        ({'name': 'cosine_with_warmup', 't_warmup': '100ba', 't_max': '2dur'}, 't_max'),
        ({'name': 'cosine_with_warmup', 't_warmup': '1ep'}, 't_warmup'),
        ({'name': 'cosine_with_warmup', 't_warmup': '1000ba'}, 't_warmup'),
        ({'name': 'inv_sqrt_with_warmup', 't_warmup': '100ba'}, 'scheduler.name'),
    ],
)
def test_schedule_from_foundry_errors(scheduler: dict[str, Any], key: str):
    with pytest.raises(ValueError, match=key):
        LRSchedule.from_foundry_scheduler(scheduler, from_foundry_config(_foundry_cfg()))


# ---------------------------------------------------------------- reference, prediction, residuals

WARMUP = 0.05
D2Z = LRSchedule((0.0, WARMUP, 1.0), (0.0, 1.0, 0.0))


def _true_shape(t: np.ndarray) -> np.ndarray:
    """The known collapsed shape f(t/T): [SwC] Eq. (4) with m=0.05, b=0.4, q=1.3, decay-to-zero."""

    def g(x: np.ndarray) -> np.ndarray:
        eta = np.interp(x, [0.0, WARMUP, 1.0], [0.0, 1.0, 0.0])
        return (1.001 / (x + 0.001))**0.05 + 0.4 * (eta + 0.1)**1.3

    return g(t) / g(np.array([1.0]))[0]


def _synthetic_run(
    rng: np.random.Generator,
    total_steps: int,
    final_loss: float,
    drift: float = 0.0,
) -> LossCurve:
    """L(t) = L(T) f(t/T) (1 + noise), optionally drifting up by ``drift`` between 60% and 100%."""
    steps = np.arange(10, total_steps + 1, 10)
    t = steps / total_steps
    losses = final_loss * _true_shape(t) * (1 + drift * np.clip((t - 0.6) / 0.4, 0.0, None))
    return LossCurve(steps, losses * (1 + 0.002 * rng.standard_normal(t.size)), total_steps)


@pytest.fixture(scope='module')
def family() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    small, medium = _synthetic_run(rng, 1000, 3.3), _synthetic_run(rng, 2000, 2.9)
    return {
        'ref': fit_reference([small, medium], D2Z, tau_fraction=0.2, tpp=80.0),
        'large': _synthetic_run(rng, 4000, 2.5),
        'drifting': _synthetic_run(rng, 4000, 2.5, drift=0.03),
    }


def test_reference_recovers_the_collapsed_shape(family: dict[str, Any]):
    ref = family['ref']
    t = np.linspace(0.1, 1.0, 91)
    np.testing.assert_allclose(ref(t), _true_shape(t), rtol=2e-3)
    assert ref.b == pytest.approx(0.4, rel=0.1)
    assert ref.q == pytest.approx(1.3, rel=0.1)
    assert ref(np.array([1.0]))[0] == pytest.approx(1.0)
    assert all(0.001 <= s < 0.01 for s in ref.band_sigma)


def test_fit_m_recovers_a_different_power_law_exponent():
    steps = np.arange(10, 2001, 10)
    t = steps / 2000

    def g(x: np.ndarray) -> np.ndarray:
        eta = np.interp(x, [0.0, WARMUP, 1.0], [0.0, 1.0, 0.0])
        return (1.001 / (x + 0.001))**0.1 + 0.4 * (eta + 0.1)**1.3

    ref = fit_reference([LossCurve(steps, 3.0 * g(t) / g(np.array([1.0]))[0], 2000)], D2Z, fit_m=True)
    assert ref.m == pytest.approx(0.1, rel=0.05)


def test_predict_largest_final_loss_from_first_20_percent(family: dict[str, Any]):
    prediction = predict_final_loss(*family['large'], family['ref'], fraction_used=0.2)
    assert prediction.final_loss == pytest.approx(2.5, rel=0.01)
    assert prediction.lower < 2.5 < prediction.upper
    assert prediction.fraction_used <= 0.2
    # The loss at 20% itself is far from the answer: the reference does the extrapolating.
    steps, losses, total = family['large']
    assert losses[np.searchsorted(steps, 0.2 * total)] > 2.5 * 1.05


def test_prediction_needs_points_after_warmup(family: dict[str, Any]):
    with pytest.raises(ValueError, match='at least 2'):
        predict_final_loss(*family['large'], family['ref'], fraction_used=0.1)


def test_residual_flags_a_curve_whose_shape_deviates(family: dict[str, Any]):
    drifting = collapse_residual(*family['drifting'], family['ref'])
    onset = drifting.onset(threshold=3.0, consecutive=5)
    assert onset is not None and 0.6 < onset < 0.85
    clean = collapse_residual(*family['large'], family['ref'])
    assert clean.onset(threshold=3.0, consecutive=5) is None
    assert np.isnan(clean.z[clean.fractions < family['ref'].fit_start]).all()
    assert not clean.out_of_band()[clean.fractions < family['ref'].fit_start].any()


def test_residual_of_an_in_progress_run_uses_early_points(family: dict[str, Any]):
    steps, losses, total = family['large']
    partial = collapse_residual(steps[:80], losses[:80], total, family['ref'])  # up to 20%
    assert partial.final_loss == pytest.approx(2.5, rel=0.01)
    given = collapse_residual(steps, losses, total, family['ref'], final_loss_estimate=2.6)
    np.testing.assert_allclose(given.normalized, np.asarray(losses) / 2.6)


def test_residual_of_sparse_evaluations_aligns_on_every_point_past_warmup(family: dict[str, Any]):
    # One point in [fit_start, 0.5] (a monitor evaluating every 30% of the run): align on all points past warmup.
    steps, losses, total = (np.asarray(v, dtype=float) if i < 2 else v for i, v in enumerate(family['large']))
    pick = [int(np.searchsorted(steps, f * total)) for f in (0.05, 0.3, 0.6, 0.9)]
    sparse = collapse_residual(steps[pick], losses[pick], total, family['ref'])
    assert sparse.final_loss == pytest.approx(2.5, rel=0.02)
    assert np.isnan(sparse.z[0]) and np.isfinite(sparse.z[1:]).all()


def test_reference_json_round_trip(family: dict[str, Any]):
    ref = family['ref']
    restored = ReferenceCurve.from_json(ref.to_json())
    assert restored == ref
    with pytest.raises(ValueError, match='foundry_ext.collapse.reference'):
        ReferenceCurve.from_json('{"format": "other"}')
    with pytest.raises(ValueError, match='foundry_ext.collapse.reference'):
        ReferenceCurve.from_json('[1, 2]')


def test_controls_mismatch(family: dict[str, Any]):
    ref = family['ref']
    assert ref.controls_mismatch(tau_fraction=0.21, tpp=80.0) == []
    problems = ref.controls_mismatch(tau_fraction=0.4, tpp=20.0)
    assert len(problems) == 2 and problems[0].startswith('tau_fraction')


# ---------------------------------------------------------------- smoothing, logged schedules, noisy references


def test_smooth_curve_is_a_trailing_mean_placed_at_its_mean_step():
    steps, losses = np.arange(10.0), 3.0 - 0.1 * np.arange(10.0)
    s, y = smooth_curve(steps, losses, 4)
    np.testing.assert_allclose(s, np.arange(1.5, 8.0))
    np.testing.assert_allclose(y, 3.0 - 0.1 * s)  # no lag on a linear curve
    assert smooth_curve(steps, losses, 1)[1].tolist() == losses.tolist()
    with pytest.raises(ValueError, match='positive integer'):
        smooth_curve(steps, losses, 0)


def test_schedule_from_a_logged_lr_series_keeps_corners_and_drops_collinear_points():
    steps = np.arange(1, 1001)
    lr = 3e-3 * np.interp(steps - 1, [0, 100, 1000], [0.0, 1.0, 0.0])  # lr_monitor: alpha(k - 1) at step k
    schedule = LRSchedule.from_series(steps, lr, 1000)
    assert len(schedule.fractions) <= 5 and max(schedule.multipliers) == 1.0
    t = np.linspace(0, 1, 501)
    np.testing.assert_allclose(schedule(t), np.interp(t * 1000 - 1, [0, 100, 1000], [0.0, 1.0, 0.0]), atol=2e-3)
    curved = LRSchedule.from_series(steps, 1 - np.sqrt(steps / 1000), 1000, max_knots=64)
    assert len(curved.fractions) <= 64 and max(curved.multipliers) == 1.0
    with pytest.raises(ValueError, match='outside 0..total_steps=500'):
        LRSchedule.from_series(steps, lr, 500)


def test_fitted_final_losses_make_a_tight_reference_from_noisy_curves():
    rng = np.random.default_rng(1)

    def noisy(total: int, final: float) -> LossCurve:
        steps = np.arange(total)
        noise = 1 + 0.04 * rng.standard_normal(total)  # small batches: ~4% per step, like the demo corpus
        return LossCurve(steps, final * _true_shape(np.maximum(steps, 1) / total) * noise, total)

    runs = [noisy(400, 3.0), noisy(800, 2.6)]
    fitted = fit_reference(runs, D2Z, smoothing=25, final_loss='fit')
    t = np.linspace(0.1, 1.0, 91)
    assert np.max(np.abs(fitted(t) / _true_shape(t) - 1)) < 0.015 and fitted.smoothing == 25
    # The L(T) each run is normalized by: aligned over the whole curve vs a line through the last 2%.
    aligned = [predict_final_loss(*smooth_curve(r.steps, r.losses, 25), r.total_steps, fitted).final_loss for r in runs]
    tails = [estimate_final_loss(*r) for r in runs]
    aligned_error = max(abs(a / f - 1) for a, f in zip(aligned, (3.0, 2.6)))
    assert aligned_error < 0.01 and aligned_error < 0.5 * max(abs(a / f - 1) for a, f in zip(tails, (3.0, 2.6)))
    assert ReferenceCurve.from_json(fitted.to_json()) == fitted
    big = noisy(1600, 2.2)
    s, y = smooth_curve(big.steps, big.losses, 25)
    pred = predict_final_loss(s[s < 320], y[s < 320], 1600, fitted)
    measured, predicted = final_window_losses(*big, fitted, pred.final_loss)
    assert abs(predicted / measured - 1) < 0.01
    with pytest.raises(ValueError, match="'tail' or 'fit'"):
        fit_reference(runs, D2Z, final_loss='end')


def test_a_finished_short_run_ends_at_step_t_minus_one():
    assert estimate_final_loss(np.arange(40), np.full(40, 2.0), 40) == pytest.approx(2.0)
