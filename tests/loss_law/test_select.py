import numpy as np

from foundry_ext.loss_law.runs import join_branches
from foundry_ext.loss_law.select import choose_fit_from, decay_start
from tests.loss_law.helpers import synthetic_run, wsd_lr

N = 5000


def _runs(transient: float):
    """A constant run and two 10%/20% branches; the loss has an early bump that no power law in the area fits."""
    runs = [synthetic_run('main', wsd_lr(N, None)),
            *(synthetic_run(f'b{f}', wsd_lr(N, int(N * (1 - f))), start=int(N * (1 - f))) for f in (0.1, 0.2))]
    for run in runs:
        run.losses = run.losses + transient * np.exp(-run.loss_steps / 300)
    return join_branches(runs)


def test_cross_validation_moves_the_start_past_an_early_transient():
    runs = _runs(0.8)
    assert [decay_start(r) for r in runs] == [None, 4551, 4101]  # 10% below the peak
    best, scores = choose_fit_from(runs)
    assert best is not None and best > 500
    assert scores[best] < 0.5 * scores[None]


def test_without_a_transient_or_with_one_decay_the_default_is_kept_or_no_worse():
    best, scores = choose_fit_from(_runs(0.0))
    assert scores[best] <= scores[None]
    assert choose_fit_from(_runs(0.8)[:2]) == (None, {})
