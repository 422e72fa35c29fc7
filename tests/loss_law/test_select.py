import numpy as np

from foundry_ext.commands.loss_law import format_fit
from foundry_ext.loss_law.from_runs import fit_runs
from foundry_ext.loss_law.runs import Run, join_branches
from foundry_ext.loss_law.select import NO_WARMUP_START, choose_fit_from, decay_start, default_fit_from, logs_warmup
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


def _no_warmup(runs):
    """The same runs with the LR at its peak from step 1 and the loss starting from ~ln(vocab): a transient."""
    out = []
    for run in runs:
        lr_steps = np.arange(1, run.final_step + 1, dtype=float)
        lrs = np.interp(lr_steps, run.lr_steps, run.lrs)
        lrs[lr_steps <= 100] = lrs.max()
        run = Run(run.name, run.source, run.loss_steps, run.losses + 7.0 * np.exp(-run.loss_steps / 150), lr_steps,
                  lrs, 'loss', 'lr')
        out.append(run)
    return out


def test_runs_without_a_warmup_are_fitted_past_their_transient(caplog):
    runs = _runs(0.0)
    assert all(logs_warmup(r) for r in runs) and default_fit_from(runs) is None  # the warmup end, as ever
    bare = _no_warmup(runs)
    assert not any(logs_warmup(r) for r in bare)
    start = default_fit_from(bare)  # two runs decay: cross-validation
    assert start is not None and start > 300 and 'No run logs a warmup' in caplog.text
    assert default_fit_from(bare[:1]) == int(NO_WARMUP_START * N)  # no decay: a warmup's length
    from_start = fit_runs(bare, n_boot=0, jackknife=False)
    past = fit_runs(bare, fit_from=start, n_boot=0, jackknife=False)
    assert max(r.rel_rmse for r in past.runs) < 0.2 * max(r.rel_rmse for r in from_start.runs)
    assert 'misfit above 2% (main)' in format_fit(from_start, 'law.json')
    assert 'misfit above' not in format_fit(past, 'law.json')
