"""The real-family collapse benchmarks (scripts/bench), on their smallest splits."""

from __future__ import annotations

import numpy as np

from foundry_ext.collapse.online import OnlineCollapse
from scripts.bench import collapse_early_warning as warning
from scripts.bench import collapse_real_family as bench


def test_predictions_and_the_naive_baseline_on_a_real_family():
    refs, targets, naive = bench.protocols({'OpenWebText2 cosine TPP~20': bench.FAMILIES['OpenWebText2 cosine TPP~20']},
                                           bench.DATA)['OpenWebText2 cosine TPP~20, family']
    outcomes = bench.evaluate(refs, targets, naive)
    assert [o.fraction for o in outcomes] == list(bench.FRACTIONS)
    errors = {o.fraction: o.error for o in outcomes}
    assert abs(errors[0.3]) < abs(errors[0.1]) < 0.03, 'later fractions predict better'
    assert all(np.isfinite(o.naive_error) for o in outcomes)
    assert '| 166m-30000ba-lr0.001 |' in bench.report({'owt': outcomes})


def test_a_run_far_from_its_planned_tau_is_flagged():
    sweep = bench.DATA / warning.SWEEP
    family = [warning._load(p.parent) for p in sorted((bench.DATA / warning.FAMILY).glob('*/run.json'))]
    ref = warning.fit_runs([r for r in family if not r.name.startswith('124m-')])
    bad, twin = warning._load(sweep / '124m-25000ba-lr0.0001'), warning._load(sweep / '124m-25000ba-lr0.001')
    planned = ref.for_controls(twin.controls)
    assert warning.alert_step(bad, OnlineCollapse(planned, bad.total_steps), 3.0, 5) is not None
    assert warning.alert_step(twin, OnlineCollapse(planned, twin.total_steps), 3.0, 5) is None
    assert warning.worse_from(bad, twin, 0.01) == 200 and warning.worse_from(twin, twin, 0.01) is None
