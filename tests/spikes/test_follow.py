"""Property tests of the spike classification (:func:`foundry_ext.spikes.follow.follow`) over many generated spikes.

Each generated spike is the excess of a loss over its projected pre-spike trend after a spike opened: a decay from a
random height to a random level (back to 0, or a new level), with random noise (Gaussian or Student-t), random
spacing of the points and random settings. Over 12,000 of them, the vectorised classification equals a plain loop
over the points, fed in one piece or in random pieces (what the online detector and the offline analysis do), and
its results keep the class invariants.
"""

import math
from collections import deque

import numpy as np
import pytest

from foundry_ext.spikes.follow import RECOVERED, follow

SPIKES = 12_000


def _reference(spike, steps, ys, trend, max_follow, confirm):
    """The classification rules as a loop over the points (the specification)."""
    for k, (step, y, t) in enumerate(zip(steps.tolist(), ys.tolist(), trend.tolist())):
        if y > spike['peak_y']:
            spike['peak_step'], spike['peak_y'] = step, y
        window = spike['window']
        window.append((step, y - t if math.isfinite(t) else math.inf))
        level = sorted(v for _, v in window)[(len(window) - 1) // 2]
        if level < spike['tolerance']:
            if spike['recover_start'] is None:
                spike['recover_start'] = min(max(window[len(window) // 2][0], spike['peak_step'] + 1), step)
            spike['recover_run'] += 1
        else:
            spike['recover_start'], spike['recover_run'] = None, 0
        in_time = spike['recover_start'] is not None and spike['recover_start'] - spike['onset_step'] <= max_follow
        if in_time and spike['recover_run'] >= confirm:
            return k + 1, (RECOVERED, spike['recover_start'], level)
        if not in_time and step - spike['onset_step'] >= max_follow:
            return k + 1, ('not_recovering', None, level)
    return len(steps), None


def _generated(rng):
    """One random spike after its opening: (spike record, steps, log-losses, trend, max_follow, confirm)."""
    spacing = int(rng.choice([1, 1, 1, 2, 5]))
    count = int(rng.integers(5, 160))
    steps = 1000 + spacing * np.arange(1, count + 1)
    height = rng.uniform(0.05, 1.5)
    level = 0.0 if rng.random() < 0.5 else rng.uniform(-0.02, 0.4)
    decay = rng.uniform(1, 80)
    noise = rng.uniform(0.0, 0.05) * (rng.standard_t(3, count) if rng.random() < 0.3 else rng.standard_normal(count))
    trend = np.log(3.0) - 1e-4 * np.arange(count)
    ys = trend + level + (height - level) * np.exp(-np.arange(count) / decay) + noise
    if rng.random() < 0.1:
        ys[rng.integers(0, count)] = np.inf  # a non-finite loss during the spike
    if rng.random() < 0.05:
        trend[:] = np.nan  # no trend (a spike during the warmup)
    size = int(rng.integers(1, 12))
    opening = [(1000 - spacing * i, float(rng.uniform(0.1, 1.0))) for i in range(int(rng.integers(0, 4)))][::-1]
    spike = {'onset_step': 1000 - spacing * len(opening), 'peak_step': 1000, 'peak_y': float(trend[0] + height),
             'window': deque(opening, maxlen=size), 'tolerance': float(rng.uniform(0.01, 0.1)), 'recover_start': None,
             'recover_run': 0}
    return spike, steps, ys, trend, int(rng.integers(5, 200)) * spacing, int(rng.integers(1, 12))


def _copy(spike):
    return {**spike, 'window': deque(spike['window'], maxlen=spike['window'].maxlen)}


def test_vectorised_classification_is_the_loop_in_one_piece_or_many():
    rng = np.random.default_rng(0)
    kinds = {}
    for _ in range(SPIKES // 3):
        spike, steps, ys, trend, max_follow, confirm = _generated(rng)
        expected = _reference(_copy(spike), steps, ys, trend, max_follow, confirm)
        whole = _copy(spike)
        assert follow(whole, steps, ys, trend, max_follow, confirm) == expected
        pieces, start, result = _copy(spike), 0, (0, None)
        for cut in sorted(rng.integers(0, len(steps), 3).tolist()) + [len(steps)]:
            if cut <= start:
                continue
            done, closure = follow(pieces, steps[start:cut], ys[start:cut], trend[start:cut], max_follow, confirm)
            result = (start + done, closure)
            start += done
            if closure is not None:
                break
        assert result == expected
        assert {k: v for k, v in pieces.items() if k != 'window'} == {k: v for k, v in whole.items() if k != 'window'}
        assert list(pieces['window']) == list(whole['window'])
        kinds[None if expected[1] is None else expected[1][0]] = kinds.get(None if expected[1] is None else
                                                                             expected[1][0], 0) + 1
    assert min(kinds.values()) > SPIKES // 30, kinds  # every outcome is well represented


def test_classification_invariants():
    rng = np.random.default_rng(1)
    for _ in range(SPIKES):
        spike, steps, ys, trend, max_follow, confirm = _generated(rng)
        onset, tolerance, size = spike['onset_step'], spike['tolerance'], spike['window'].maxlen
        known = [v for _, v in spike['window']]
        done, closure = follow(spike, steps, ys, trend, max_follow, confirm)
        excess = np.where(np.isfinite(trend), ys - trend, np.inf)[:done]
        window = (known + excess.tolist())[-size:]
        # The median of the window after each point, by sorting every window (NaN pads the first ones).
        padded = np.concatenate([np.full(size - 1, np.nan), known, excess])
        rows = np.sort(np.lib.stride_tricks.sliding_window_view(padded, size)[len(known):], axis=1)
        filled = np.minimum(size, len(known) + np.arange(1, done + 1))
        medians = rows[np.arange(done), (filled - 1) // 2].tolist()
        if closure is None:
            assert done == len(steps)
            continue
        kind, recovered_step, level = closure
        # The level is the median excess over the projected pre-spike trend in the last window.
        assert level == sorted(window)[(len(window) - 1) // 2]
        if kind == RECOVERED:
            # Back within the tolerance for `confirm` points in a row, dated after the onset and within the limit.
            assert all(m < tolerance for m in medians[-confirm:]) and len(medians) >= min(confirm, done)
            assert onset < recovered_step <= steps[done - 1] and recovered_step - onset <= max_follow
        else:
            # The limit has passed without a recovery dated within it; never a recovering kind otherwise.
            assert recovered_step is None and steps[done - 1] - onset >= max_follow
            assert level >= tolerance or any(m < tolerance for m in medians)


@pytest.mark.parametrize('fed', ['whole', 'points'])
def test_a_spike_that_never_comes_back_is_not_recovering(fed):
    steps = 1000 + np.arange(1, 400)
    trend = np.full(len(steps), np.log(3.0))
    ys = trend + 0.1 + 0.01 * np.random.default_rng(2).standard_normal(len(steps))  # 10% up, for good
    spike = {'onset_step': 1000, 'peak_step': 1000, 'peak_y': float(trend[0] + 0.5), 'window': deque(maxlen=10),
             'tolerance': math.log1p(0.03), 'recover_start': None, 'recover_run': 0}
    if fed == 'whole':
        done, closure = follow(spike, steps, ys, trend, 300, 10)
    else:
        for k in range(len(steps)):
            done, closure = follow(spike, steps[k:k + 1], ys[k:k + 1], trend[k:k + 1], 300, 10)
            if closure is not None:
                done = k + 1
                break
    assert closure[0] == 'not_recovering' and steps[done - 1] == 1300 and closure[2] == pytest.approx(0.1, abs=0.01)
