import numpy as np
import pytest

from foundry_ext.core.errors import ConfigError
from foundry_ext.loss_law.fit import trend_misfit
from foundry_ext.loss_law.from_runs import fit_runs
from foundry_ext.loss_law.predict import KAPPA, form_error, predict
from foundry_ext.loss_law.runs import join_branches
from foundry_ext.loss_law.schedule import LRSchedule
from tests.loss_law.helpers import TRUE, law_curve, synthetic_run, wsd_lr

N = 20000


@pytest.fixture(scope='module')
def wsd_runs():
    """A constant run and two short cooldowns (logged from their branch point only), with 0.5% noise."""
    constant = synthetic_run('constant', wsd_lr(N, None), noise=0.005, seed=1)
    branches = [synthetic_run(f'cool{f}', wsd_lr(N, int(N * (1 - f))), noise=0.005, seed=2 + i, start=int(N * (1 - f)))
                for i, f in enumerate((0.1, 0.2))]
    return join_branches([constant, *branches])


@pytest.fixture(scope='module')
def wsd_law(wsd_runs):
    return fit_runs(wsd_runs, 'multi-power')


def test_branches_are_joined_to_the_constant_run(wsd_runs):
    assert [r.joined_to for r in wsd_runs] == [None, 'constant', 'constant']
    assert wsd_runs[1].schedule().lr[:1000].sum() == pytest.approx(wsd_lr(N, None)[:1000].sum(), rel=1e-6)


def test_fit_recovers_the_law_and_predicts_held_out_cooldowns(wsd_law):
    assert wsd_law.decay_identified
    assert set(wsd_law.param_std) == set(TRUE) and all(v >= 0 for v in wsd_law.param_std.values())
    for fraction in (0.4, 0.8):
        lr = wsd_lr(N, int(N * (1 - fraction)))
        truth = law_curve(lr, np.array([float(N)]))[0]
        pred = predict(wsd_law, LRSchedule(lr), steps=np.array([float(N)]))
        assert abs(pred.final_loss / truth - 1) < 0.004
        lo, hi = pred.final_interval
        assert lo < pred.final_loss < hi and hi - lo < 0.05


def test_trend_misfit_sees_a_bend_and_not_the_noise():
    noise = 0.005 * np.random.default_rng(0).standard_normal(256)
    bend = 0.005 * np.sin(np.linspace(0, 2 * np.pi, 256))
    assert trend_misfit(noise) < 0.0015 < 0.003 < trend_misfit(noise + bend)


def test_the_interval_widens_for_decays_beyond_the_fitted_ones(wsd_law):
    # Fitted on cooldowns of 10% and 20% (decayed share 0.1): a 20% cooldown is no extrapolation, an 80% one
    # (share 0.4) is, and the law's form error there enters the interval.
    trend = max(run.trend_rmse for run in wsd_law.runs)
    assert 0 < trend < 0.001  # synthetic runs of the law itself: the misfit is noise
    end = np.array([float(N)])
    short, long = (LRSchedule(wsd_lr(N, int(N * (1 - f)))) for f in (0.2, 0.8))
    assert form_error(wsd_law, short, end)[0] == pytest.approx(trend, rel=0.05)
    assert form_error(wsd_law, long, end)[0] == pytest.approx(np.hypot(trend, KAPPA * 0.3), rel=0.02)
    pred = predict(wsd_law, long, steps=end)
    lo, hi = pred.final_interval
    assert (hi - lo) / 2 >= 1.64 * KAPPA * 0.3 * pred.final_loss


def test_robust_to_loss_spikes():
    lr = wsd_lr(N, int(N * 0.8))
    clean = synthetic_run('run', lr, noise=0.002, seed=5)
    spiky = synthetic_run('run', lr, noise=0.002, seed=5)
    spiky.losses = spiky.losses.copy()
    spiky.losses[::97] *= 1.5  # one logged point in 97 is a 50% spike
    fit_clean = fit_runs([clean], n_boot=0)
    fit_spiky = fit_runs([spiky], n_boot=0)
    steps = np.array([float(N)])
    a = predict(fit_clean, LRSchedule(lr), steps=steps).final_loss
    b = predict(fit_spiky, LRSchedule(lr), steps=steps).final_loss
    assert abs(b / a - 1) < 0.003


def test_constant_runs_alone_leave_the_decay_term_off_and_refuse_decays():
    law = fit_runs([synthetic_run('constant', wsd_lr(N, None), noise=0.003)], n_boot=4)
    assert not law.decay_identified and law.params['B'] < 1e-9
    stable = predict(law, LRSchedule(wsd_lr(2 * N, None)))  # a longer constant run is fine
    assert np.all(np.diff(stable.loss) <= 1e-9)
    with pytest.raises(ConfigError, match='never decayed'):
        predict(law, LRSchedule(wsd_lr(N, N // 2)))


def test_a_prior_law_stands_in_for_the_decay_term(wsd_law):
    law = fit_runs([synthetic_run('constant', wsd_lr(N, None), noise=0.003)], n_boot=4, prior=wsd_law)
    assert law.decay_identified and law.fit['fixed'].keys() == {'log_K', 'log_C', 'beta', 'gamma'}
    assert law.params['B'] == pytest.approx(wsd_law.params['B'])
    lr = wsd_lr(N, int(N * 0.8))
    assert predict(law, LRSchedule(lr), steps=np.array([float(N)])).final_loss == pytest.approx(
        law_curve(lr, np.array([float(N)]))[0], rel=0.01)


def test_momentum_law_fits_its_own_curves():
    params = {'L0': 2.9, 'A': 23.0, 'alpha': 0.45, 'C': 5e-4, 'lambda': 0.999}
    lr = wsd_lr(N, int(N * 0.7))
    run = synthetic_run('run', lr)
    run.losses = law_curve(lr, run.loss_steps, params, 'momentum')
    law = fit_runs([run], 'momentum', n_boot=0)
    assert law.params['lambda'] == pytest.approx(0.999, abs=5e-4)
    assert law.params['alpha'] == pytest.approx(0.45, abs=0.01)


def test_too_few_points_is_refused():
    run = synthetic_run('short', wsd_lr(200, None, warmup=100), every=40)
    with pytest.raises(ConfigError, match='at least 5 per run'):
        fit_runs([run])
