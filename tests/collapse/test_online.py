"""Tests for foundry_ext.collapse.online: point-by-point residuals and predictions equal the whole-curve ones."""

from typing import Any

import numpy as np
import pytest

from foundry_ext.collapse.online import OnlineCollapse
from foundry_ext.collapse.prediction import collapse_residual, predict_final_loss


def test_every_point_matches_the_whole_history_and_the_state_stays_bounded(family: dict[str, Any]):
    steps, losses, total = family['drifting']
    online = OnlineCollapse(family['ref'], total)
    logged = 0
    for i, (step, loss) in enumerate(zip(steps, losses)):
        ev = online.add(step, loss)
        if ev is None:
            continue
        logged += 1
        if i % 37 == 0 or i == len(steps) - 1:
            res = collapse_residual(steps[:i + 1], losses[:i + 1], total, family['ref'])
            pred = predict_final_loss(steps[:i + 1], losses[:i + 1], total, family['ref'])
            assert ev.z == pytest.approx(res.z[-1], rel=1e-9)
            assert ev.residual == pytest.approx(res.residual[-1], rel=1e-9)
            assert (ev.final_loss, ev.lower, ev.upper) == pytest.approx((pred.final_loss, pred.lower, pred.upper),
                                                                       rel=1e-9)
        assert len(online.state_dict()['recent']) <= 0.03 * len(steps) + 2
    assert logged == int(np.count_nonzero(np.asarray(steps) / total >= family['ref'].fit_start)) - 1


def test_a_restored_state_continues_exactly(family: dict[str, Any]):
    steps, losses, total = family['large']
    whole, first = OnlineCollapse(family['ref'], total), OnlineCollapse(family['ref'], total)
    for step, loss in zip(steps[:200], losses[:200]):
        whole.add(step, loss)
        first.add(step, loss)
    resumed = OnlineCollapse(family['ref'], total)
    resumed.load_state_dict(first.state_dict())
    for step, loss in zip(steps[200:], losses[200:]):
        assert resumed.add(step, loss) == whole.add(step, loss)
    with pytest.raises(ValueError, match='increasing steps'):
        resumed.add(steps[-1], losses[-1])
