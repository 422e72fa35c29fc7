import numpy as np
import pytest

from foundry_ext.loss_law.design import build_design, design_chunks
from foundry_ext.loss_law.laws import get_law
from foundry_ext.loss_law.schedule import LRSchedule, compress_knots


def test_from_logged_interpolates_and_assumes_a_warmup_from_zero():
    sched = LRSchedule.from_logged(np.array([10.0, 20.0]), np.array([1.0, 0.5]), end=25)
    assert sched.n == 25
    assert sched.lr[0] == 0.0 and sched.lr[5] == pytest.approx(0.5)  # linear from 0 at step 0 to 1 at step 10
    assert sched.lr[15] == pytest.approx(0.75) and sched.lr[24] == 0.5  # held after the last logged step
    assert sched.peak_step == 10
    assert sched.area(np.array([3.0]))[0] == pytest.approx(sched.lr[:3].sum())  # the area *before* step 3


def test_knots_reproduce_the_schedule():
    t = np.arange(5000)
    lr = np.where(t < 100, t / 100, 0.1 + 0.45 * (1 + np.cos(np.pi * (t - 100) / 4900)))
    sched = LRSchedule(lr)
    knots = np.array(compress_knots(sched, 1e-4))
    assert len(knots) < 300
    rebuilt = LRSchedule.from_logged(knots[:, 0], knots[:, 1], end=sched.n)
    assert np.max(np.abs(rebuilt.lr - lr)) <= 1e-4 * lr.max() + 1e-12
    assert len(compress_knots(LRSchedule(np.minimum(t / 100, 1.0)))) == 3  # warmup + constant: 3 knots


def test_decayed_share_is_the_area_given_up_after_the_peak():
    t = np.arange(10001, dtype=float)
    warmup = np.minimum(t / 100, 1.0)
    cooldown = LRSchedule(np.where(t >= 8000, 1 - (t - 8000) / 2000, warmup))  # linear to zero over the last 20%
    full = LRSchedule(np.where(t >= 100, 1 - (t - 100) / 9900, warmup))  # linear to zero from the warmup's end
    end = np.array([10000.0])
    assert LRSchedule(warmup).decayed_share(np.array([50.0, 5000.0, 10000.0])) == pytest.approx([0.0, 0.0, 0.0])
    assert cooldown.decayed_share(np.array([8000.0]))[0] == pytest.approx(0.0, abs=1e-3)
    assert cooldown.decayed_share(end)[0] == pytest.approx(0.1, abs=1e-3)
    assert full.decayed_share(end)[0] == pytest.approx(0.5, abs=1e-3)


def _exact(lr, steps, law, params):
    """The laws summed step by step: O(n^2), the reference for the binned design."""
    sched = LRSchedule(lr)
    S, p = sched.cumulative, sched.peak_step
    out = []
    for s in steps.astype(int):
        k = np.arange(p + 1, s)
        d = lr[k - 1] - lr[k]
        base = params['L0'] + params['A'] * S[s]**-params['alpha']
        if law == 'multi-power':
            x = np.maximum(lr[k], 1e-4)**-params['gamma'] * (S[s] - S[k])
            out.append(base - params['B'] * np.sum(d * (1 - (1 + params['C'] * x)**-params['beta'])))
        else:
            lam = params['lambda']
            out.append(base - params['C'] * np.sum(d * (1 - lam**(s - k)) / (1 - lam)))
    return np.array(out)


@pytest.mark.parametrize('law,params', [
    ('multi-power', {'L0': 2.5, 'A': 20, 'alpha': 0.4, 'B': 0.3, 'C': 0.05, 'beta': 0.6, 'gamma': 0.6}),
    ('multi-power', {'L0': 2.5, 'A': 20, 'alpha': 0.4, 'B': 30.0, 'C': 0.05, 'beta': 0.002, 'gamma': 0.6}),
    ('momentum', {'L0': 2.5, 'A': 20, 'alpha': 0.4, 'C': 3e-4, 'lambda': 0.999}),
])
@pytest.mark.parametrize('shape', ['cosine', 'wsd'])
def test_binned_design_matches_the_exact_sums(law, params, shape):
    n, warm = 8000, 200
    t = np.arange(n)
    if shape == 'cosine':
        lr = np.where(t < warm, t / warm, 0.1 + 0.45 * (1 + np.cos(np.pi * (t - warm) / (n - warm))))
    else:
        lr = np.where(t < warm, t / warm, np.where(t < 6000, 1.0, 1 - (t - 6000) / 2000 * 0.99))
    model = get_law(law)
    theta = model.from_natural(params)
    for steps in (np.arange(300, n + 1, 37).astype(float), np.array([float(n)]), np.array([2500.0, 7000.0])):
        exact = _exact(lr, steps, law, params)
        binned = model.evaluate(theta, build_design(LRSchedule(lr), steps))
        assert np.max(np.abs(binned / exact - 1)) < 2e-5
        chunked = np.concatenate([model.evaluate(theta, d) for d in design_chunks(LRSchedule(lr), steps, chunk=50)])
        assert np.max(np.abs(chunked / exact - 1)) < 2e-5


@pytest.mark.parametrize('law,params', [
    ('multi-power', {'L0': 2.5, 'A': 20, 'alpha': 0.4, 'B': 0.3, 'C': 0.05, 'beta': 0.6, 'gamma': 0.6}),
    ('multi-power', {'L0': 2.5, 'A': 20, 'alpha': 0.4, 'B': 30.0, 'C': 0.05, 'beta': 0.002, 'gamma': 0.6}),
    ('momentum', {'L0': 2.5, 'A': 20, 'alpha': 0.4, 'C': 3e-4, 'lambda': 0.998}),
])
def test_analytic_jacobian_matches_finite_differences(law, params):
    t = np.arange(3000)
    lr = np.where(t < 100, t / 100, np.where(t < 2000, 1.0, 1 - (t - 2000) / 1000 * 0.9))
    design = build_design(LRSchedule(lr), np.arange(150, 3001, 50).astype(float))
    model = get_law(law)
    theta = model.from_natural(params)
    _, jac = model.evaluate(theta, design, jacobian=True)
    for i in range(theta.size):
        h = 1e-6 * max(1.0, abs(theta[i]))
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        numeric = (model.evaluate(up, design) - model.evaluate(down, design)) / (2 * h)
        assert np.allclose(jac[:, i], numeric, rtol=1e-4, atol=1e-7), model.internal[i]
