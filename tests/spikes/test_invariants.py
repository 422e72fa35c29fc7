"""The class invariants over stress curves through the whole detector (the benchmark runs 10,000 and more)."""

import numpy as np

from foundry_ext.spikes.detector import SpikeDetector
from foundry_ext.spikes.events import FAST_RECOVERING, LossEvent
from foundry_ext.spikes.invariants import invariant_violations, stress_cases
from foundry_ext.spikes.offline import run_detector


def test_invariants_hold_over_stress_curves():
    kinds = set()
    for steps, losses, kwargs in stress_cases(400, seed=0):
        detector = SpikeDetector(**kwargs)
        events = [e for _, e in run_detector(detector, steps, losses)]
        assert invariant_violations(events, steps, detector.config) == [], (kwargs, events)
        kinds.update(e.kind for e in events)
    assert len(kinds) == 5  # every kind and outliers came up


def test_the_checker_catches_broken_events():
    steps = np.arange(100)
    config = SpikeDetector(fast_recovery_steps=10, max_follow_steps=50).config
    fast = LossEvent(FAST_RECOVERING, 'resolved', 20, 21, 3.0, 2.0, 0.5, 21, 23, recovered_step=40,
                     steps_to_recover=20)
    [problem] = invariant_violations([fast], steps, config)
    assert 'recovered after 20 steps, not within 10' in problem
    unrecovered = LossEvent(FAST_RECOVERING, 'truncated', 20, 21, 3.0, 2.0, 0.5, 21, 23)
    assert 'without a recovery' in invariant_violations([unrecovered], steps, config)[0]
