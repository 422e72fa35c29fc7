"""The statistics kernel gives the same bits whether a series comes in one piece, in chunks or point by point."""

import json
import math

import numpy as np
import pytest

from foundry_ext.spikes.detector import SpikeDetector
from foundry_ext.spikes.statistics import Stats, advance, project, trailing_lower_medians
from foundry_ext.spikes.synthetic import NOISE_FAMILIES, EventSpec, Schedule, make_curve


def test_trailing_lower_medians_match_sorting():
    rng = np.random.default_rng(0)
    for size in (1, 2, 5, 8, 13):
        for known in (0, 3, size, size + 4):
            prev, new = rng.standard_normal(known), rng.standard_normal(40)
            seq = np.concatenate([prev, new])
            got = trailing_lower_medians(prev, new, size)
            for i in range(len(new)):
                window = np.sort(seq[max(0, known + i - size):known + i])
                assert (math.isnan(got[i]) and not len(window)) or got[i] == window[(len(window) - 1) // 2]


@pytest.mark.parametrize('family', NOISE_FAMILIES)
def test_advance_is_the_same_in_any_chunks(family):
    cfg = SpikeDetector(trend_halflife=30, warmup_steps=20)._cfg  # a short block: several origin moves
    steps, losses, _ = make_curve(3000, noise=0.02, seed=3, family=family, autocorr=0.4 if family == 'ar1' else 0.1)
    ys = np.log(losses)
    whole, end = advance(cfg, Stats(), steps, ys, divergence=False)
    cuts = [0, 1, 2, 7, 100, 101, 477, 1500, 2999, 3000]
    state, parts = Stats(), []
    for a, b in zip(cuts, cuts[1:]):
        trace, state = advance(cfg, state, steps[a:b], ys[a:b], divergence=False)
        parts.append(trace)
    for name in ('pred', 'sigma', 'margin', 'residual', 'above', 'ema', 'eff_var'):
        np.testing.assert_array_equal(np.concatenate([getattr(p, name) for p in parts]), getattr(whole, name))
    assert json.dumps(state.to_json()) == json.dumps(end.to_json())
    # The prediction for the next point is the projection of the state.
    nxt, _ = advance(cfg, end, steps[-1:] + 1, ys[-1:], divergence=False)
    assert project(cfg, end, steps[-1:] + 1)[0] == nxt.pred[0]


def _varied(family, seed):
    specs = [EventSpec('batch_outlier', 6400, height=0.5), EventSpec('batch_outlier', 6600, height=0.4, rise_steps=2),
             EventSpec('fast_recovering', 7000, height=0.6, rise_steps=2, recovery_steps=40),
             EventSpec('slow_recovering', 8000, height=0.5, recovery_steps=700, recovery_curvature=0.7),
             EventSpec('not_recovering', 9500, height=0.6, recovery_steps=20, level_shift=0.2, drift=1e-4)]
    steps, losses, _ = make_curve(7500, specs, 0.015, seed, family=family, start_step=5000,
                                  schedule=Schedule(11000, 800, 0.05, rewarm_steps=200), autocorr=0.2)
    losses[[900, 2600]] = np.nan
    losses[3900:3904] = np.inf
    return steps, losses


@pytest.mark.parametrize('family', ['gaussian', 't3'])
def test_online_and_offline_report_identical_events(family):
    steps, losses = _varied(family, seed=NOISE_FAMILIES.index(family))
    online = SpikeDetector()
    per_point = [e for s, l in zip(steps.tolist(), losses.tolist()) for e in online.update(s, l)]
    whole = SpikeDetector()
    offline = [e for _, e in whole.feed(steps, losses)]
    chunked = SpikeDetector()
    rng = np.random.default_rng(0)
    cuts = np.unique(np.concatenate([[0, len(steps)], rng.integers(0, len(steps), 40)]))
    pieces = [e for a, b in zip(cuts, cuts[1:]) for _, e in chunked.feed(steps[a:b], losses[a:b])]
    assert per_point == offline == pieces
    assert {e.kind for e in offline} >= {'batch_outlier', 'spike', 'fast_recovering', 'slow_recovering',
                                         'not_recovering'}
    assert json.dumps(online.state_dict()) == json.dumps(whole.state_dict()) == json.dumps(chunked.state_dict())
