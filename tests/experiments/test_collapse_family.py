"""The collapse experiment's shape check, on real tiny train_from_yaml runs."""

from __future__ import annotations

import dataclasses

from foundry_ext.collapse.runs import load_run
from scripts.experiments.collapse_family import shape_check
from tests.collapse_family_runs import SPEC


def test_shape_check_trains_every_size_and_tabulates_the_normalized_loss_at_20_percent(tmp_path):
    spec = dataclasses.replace(SPEC, seeds=(17,))
    table = shape_check(spec, tmp_path)
    rows = [line.split('|')[1:-1] for line in table.splitlines()[2:]]
    assert [row[0].strip() for row in rows] == [f'{size.label}-s17' for size in spec.sizes]
    for name, steps, early, final in rows:
        run = load_run(tmp_path / name.strip())
        assert run.finished and int(steps) == run.total_steps
        assert float(early) > 1.0, 'the loss at 20% of a healthy run is above its final loss'
        assert abs(float(final) - float(run.curve.losses[-1])) < 0.5
    assert shape_check(spec, tmp_path, reuse=True) == table  # finished runs are read, not retrained
