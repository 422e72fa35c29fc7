"""The class invariants of loss events, and random stress curves to check them on.

:func:`invariant_violations` checks the events of one series against the rules every event must keep whatever the
curve (the classification itself is checked point by point in ``tests/spikes/test_follow.py``):

* a recovering kind has a recovery, ``steps_to_recover = recovered_step - onset_step``, at most
  ``fast_recovery_steps`` for ``fast_recovering`` and more, but at most ``max_follow_steps``, for
  ``slow_recovering``; a ``not_recovering`` spike has none;
* a spike's onset is at most 3 points before its threshold crossing, which is before its detection;
* a ``batch_outlier`` is one or two consecutive points above the threshold, reported at the point back under it.

:func:`stress_cases` draws short curves with every event kind, heights and durations across the class boundaries,
all noise families, non-finite losses and outliers, and random detector settings.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterator, Sequence

import numpy as np

from foundry_ext.spikes.events import (BATCH_OUTLIER, DIVERGENCE, EVENT_KINDS, FAST_RECOVERING, NOT_RECOVERING,
                                       SLOW_RECOVERING, STATUS_RESOLVED, STATUS_TRUNCATED, LossEvent)
from foundry_ext.spikes.synthetic import NOISE_FAMILIES, CurveBase, EventSpec, make_curve

log = logging.getLogger(__name__)

__all__ = ['invariant_violations', 'stress_cases']

# Points before the threshold crossing that may belong to a spike's rise (the detector walks back at most 3).
_MAX_RISE = 3


def invariant_violations(events: Sequence[LossEvent], steps: np.ndarray, config: dict[str, Any]) -> list[str]:
    """The invariants that ``events`` (closed events of the series ``steps``) break; empty if none.

    Args:
        events (Sequence[LossEvent]): Resolved and truncated events and outliers (as :func:`detect_events` gives).
        steps (np.ndarray): The series' steps.
        config (dict[str, Any]): The detector's settings.
    """
    fast, follow = config['fast_recovery_steps'], config['max_follow_steps']
    position = {int(s): i for i, s in enumerate(np.asarray(steps).tolist())}
    problems = []
    for e in events:
        where = f'{e.kind} ({e.status}) with onset {e.onset_step}'
        if e.status not in (STATUS_RESOLVED, STATUS_TRUNCATED):
            problems.append(f'{where}: status of a closed event')
        if e.kind == BATCH_OUTLIER:
            above = e.above_steps or []
            consecutive = all(position[b] == position[a] + 1 for a, b in zip(above, above[1:]))
            if not 1 <= len(above) <= 2 or not consecutive or not above[0] == e.onset_step == e.threshold_step:
                problems.append(f'{where}: not one or two consecutive points above the threshold: {above}')
            if e.status == STATUS_RESOLVED and (e.recovered_step is None or position[e.recovered_step] !=
                                                position[above[-1]] + 1 or e.detect_step != e.recovered_step):
                problems.append(f'{where}: not reported at the point right after it ({e.recovered_step})')
            continue
        if e.kind not in EVENT_KINDS:
            problems.append(f'{where}: unknown kind')
            continue
        if e.recovered_step is not None and e.steps_to_recover != e.recovered_step - e.onset_step:
            problems.append(f'{where}: steps_to_recover {e.steps_to_recover} is not recovered - onset')
        if e.kind in (FAST_RECOVERING, SLOW_RECOVERING):
            recovered = e.steps_to_recover
            if recovered is None:
                problems.append(f'{where}: a recovering kind without a recovery')
            elif e.kind == FAST_RECOVERING and not 0 < recovered <= fast:
                problems.append(f'{where}: recovered after {recovered} steps, not within {fast}')
            elif e.kind == SLOW_RECOVERING and not fast < recovered <= follow:
                problems.append(f'{where}: recovered after {recovered} steps, not in ({fast}, {follow}]')
        elif e.kind == NOT_RECOVERING and (e.recovered_step is not None or e.steps_to_recover is not None):
            problems.append(f'{where}: not recovering, but with a recovery at {e.recovered_step}')
        if e.kind != DIVERGENCE:
            if not e.onset_step <= e.threshold_step <= e.detect_step:
                problems.append(f'{where}: onset, threshold and detection out of order ({e.threshold_step}, '
                                f'{e.detect_step})')
            elif position.get(e.threshold_step, 0) - position.get(e.onset_step, 0) > _MAX_RISE:
                problems.append(f'{where}: onset more than {_MAX_RISE} points before the threshold crossing')
            if e.peak_step < e.onset_step or not e.height > 0.0:
                problems.append(f'{where}: peak {e.peak_step} (height {e.height}) is not a rise after the onset')
    return problems


def stress_cases(count: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    """Random short curves and detector settings that reach every corner of the classification.

    Each case is 300-1200 points of any noise family (0.3%-4%), one to three events of any kind with heights,
    recoveries and level shifts drawn across the class boundaries (so some are borderline), outliers of one to three
    points, sometimes non-finite losses (single or in runs) and steps every 1-5 steps; the detector gets short
    windows and random thresholds around them.

    Yields:
        tuple[np.ndarray, np.ndarray, dict[str, Any]]: Steps, losses and detector settings.
    """
    rng = np.random.default_rng(seed)
    for _ in range(count):
        interval = int(rng.choice([1, 1, 1, 2, 5]))
        points = int(rng.integers(300, 1201))
        warmup = int(rng.integers(10, 60))
        fast = int(rng.integers(5, 60)) * interval
        kwargs = {
            'warmup_steps': warmup, 'fast_recovery_steps': fast,
            'max_follow_steps': fast + int(rng.integers(10, 200)) * interval,
            'recover_window': int(rng.integers(2, 12)), 'recover_confirm': int(rng.integers(1, 12)),
            'trend_halflife': int(rng.integers(10, 100)), 'slope_halflife': int(rng.integers(50, 400)),
            'noise_halflife': int(rng.integers(5, 60)), 'divergence_span': int(rng.integers(10, 100)),
            'z_threshold': float(rng.uniform(3.0, 6.0)), 'min_height': float(rng.choice([0.0, 0.05, 0.1])),
        }
        events = []
        for _ in range(int(rng.integers(1, 4))):
            onset = interval * int(rng.integers(warmup + 5, points - 20))
            kind = str(rng.choice(EVENT_KINDS + (BATCH_OUTLIER,)))
            events.append(EventSpec(kind, onset, height=float(math.exp(rng.uniform(math.log(0.05), math.log(3.0)))),
                                    rise_steps=int(rng.integers(1, 4)), recovery_steps=int(rng.integers(1, 400)),
                                    recovery_curvature=float(rng.uniform(0.2, 5.0)),
                                    level_shift=float(rng.uniform(-0.02, 0.4)), drift=float(rng.uniform(0, 5e-4)),
                                    ramp_steps=int(rng.integers(1, 300)), spacing=interval))
        steps, losses, _ = make_curve(points, events, float(rng.uniform(0.003, 0.04)), int(rng.integers(2**31)),
                                      autocorr=float(rng.uniform(0.0, 0.6)), family=str(rng.choice(NOISE_FAMILIES)),
                                      base=CurveBase(l_inf=float(rng.uniform(1.5, 3.0)),
                                                     amplitude=float(rng.uniform(5, 100)),
                                                     t0=float(rng.uniform(100, 3000))),
                                      start_step=int(rng.choice([0, 5000])), interval=interval)
        if rng.random() < 0.2:
            at = int(rng.integers(0, points))
            losses[at:at + int(rng.choice([1, 1, 3, 50]))] = rng.choice([np.nan, np.inf])
        yield steps, losses, kwargs
