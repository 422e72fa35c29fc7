"""From loaded runs to a fitted :class:`~foundry_ext.loss_law.law_file.LossLaw`: the fit behind ``loss-law fit``.

Each run contributes its own losses from the end of its warmup (the first update at its peak LR: the laws
describe training after warmup; ``fit_from`` moves that start) to its last step, averaged over at most
``max_points`` windows (:func:`~foundry_ext.loss_law.fit.window_means`). LRs are divided by the largest peak LR
of the runs (``lr_ref``). The fit is :func:`~foundry_ext.loss_law.fit.fit_law`, the run-jackknife
:func:`~foundry_ext.loss_law.fit.jackknife`.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from foundry_ext.core.errors import fail
from foundry_ext.loss_law.fit import MIN_DECAY, FitRun, fit_law, identifies_decay
from foundry_ext.loss_law.fit import jackknife as run_jackknife
from foundry_ext.loss_law.fit import window_means
from foundry_ext.loss_law.law_file import FittedRun, LossLaw
from foundry_ext.loss_law.laws import get_law
from foundry_ext.loss_law.runs import Run
from foundry_ext.loss_law.schedule import compress_knots

log = logging.getLogger(__name__)

__all__ = ['MIN_POINTS', 'fit_runs', 'fit_inputs']

MIN_POINTS = 5  # loss points per run after its warmup


def fit_inputs(runs: Sequence[Run], lr_ref: float, fit_from: Optional[int] = None,
               max_points: int = 256) -> list[FitRun]:
    """Each run's loss windows from its warmup's end (or ``fit_from``) and its schedule divided by ``lr_ref``."""
    inputs = []
    for run in runs:
        schedule = run.schedule()
        first = max(schedule.peak_step, run.own_start, 1) if fit_from is None else max(fit_from, 1)
        keep = run.loss_steps >= first
        if np.count_nonzero(keep) < MIN_POINTS:
            fail(f'{run.source}: {np.count_nonzero(keep)} loss point(s) from step {first} on (after its warmup); the '
                 f'law needs at least {MIN_POINTS} per run. Train it longer or log the loss more often, or leave it '
                 f'out.')
        steps, losses, counts = window_means(run.loss_steps[keep], run.losses[keep], max_points, schedule)
        if (losses <= 0).any():
            fail(f'{run.source}: {run.loss_key} has losses <= 0; the laws model a positive loss (cross-entropy).')
        inputs.append(FitRun(run.name, schedule.scaled(1.0 / lr_ref), steps, losses, counts))
    return inputs


def fit_runs(
    runs: Sequence[Run],
    law_name: str = 'multi-power',
    fit_from: Optional[int] = None,
    max_points: int = 256,
    n_boot: int = 32,
    interval: float = 0.9,
    fixed: Optional[dict[str, float]] = None,
    seed: int = 0,
    prior: Optional[LossLaw] = None,
    start: Optional[np.ndarray] = None,
    jackknife: bool = True,
) -> LossLaw:
    """Fits a law to runs (already joined) and returns it with its replicates and a record of the runs.

    Args:
        runs (Sequence[Run]): From :func:`~foundry_ext.loss_law.runs.load_runs`.
        law_name (str): ``multi-power`` or ``momentum``.
        fit_from (int, optional): First step fitted in every run; default each run's warmup end.
        max_points (int): Loss windows per run.
        n_boot (int): Bootstrap replicates.
        interval (float): Level of the intervals the law's predictions report.
        fixed (dict[str, float], optional): Internal parameters to hold (see :func:`~foundry_ext.loss_law.fit.fit_law`).
        seed (int): Bootstrap seed.
        prior (LossLaw, optional): A law of the same kind fitted on runs that decayed: when no run here decays, its
            decay parameters are held (areas then count at its ``lr_ref``) instead of leaving the decay term off.
        start (np.ndarray, optional): Internal parameters to start from instead of the grid (a previous fit of
            nearly the same data: the live forecast refits as the run grows).
        jackknife (bool): Whether to refit leaving out each run (the intervals' run term).
    """
    law = get_law(law_name)
    keys = {(run.loss_key, run.lr_key) for run in runs}
    if len({k[0] for k in keys}) > 1:
        log.warning('The runs were read with different loss keys (%s): one law over different losses (e.g. train '
                    'and eval) fits neither well.', ', '.join(sorted({k[0] for k in keys})))
    tokens = {run.tokens_per_step for run in runs if run.tokens_per_step is not None}
    if len(tokens) > 1:
        fail(f'the runs have different tokens per step ({sorted(tokens)}, from their config.yaml): their steps are of '
             f'different sizes, so one law cannot describe them. Fit runs with one batch size and sequence length.')
    lr_ref = prior.lr_ref if prior is not None else max(float(run.lrs.max()) for run in runs)
    inputs = fit_inputs(runs, lr_ref, fit_from, max_points)
    fixed = dict(fixed or {})
    if prior is not None and not identifies_decay(inputs):
        if prior.law != law.name or not prior.decay_identified:
            fail(f'the prior law ({prior.law}, decay identified: {prior.decay_identified}) cannot stand in for the '
                 f'decay term of a {law.name} law: give a {law.name} law fitted on runs that decay.')
        theta = prior.theta
        fixed.update({name: float(theta[law.internal.index(name)]) for name in law.decay})
        log.info('No run decays its LR: the decay term is held at the prior law\'s (%s).',
                 ', '.join(f'{n}={prior.params[n]:.4g}' for n in law.names if n not in ('L0', 'A', 'alpha')))
    identified = identifies_decay(inputs) or all(name in fixed for name in law.decay)
    n_free = sum(name not in fixed and (identified or name not in law.decay) for name in law.internal)
    total = sum(r.steps.size for r in inputs)
    if total < 2 * n_free:
        fail(f'{total} loss points in all for {n_free} parameters of the {law.name} law; give at least {2 * n_free} '
             f'(longer runs, more frequent logging, or more runs).')
    result = fit_law(law, inputs, fixed=fixed or None, n_boot=n_boot, seed=seed, start=start)
    if not identified:
        log.warning('No run decays its LR by %.0f%% or more after warmup, so the decay term cannot be fitted and is '
                    'left out: this law predicts constant-LR training only. Add a run that decays (a branch) to '
                    'predict decays.', 100 * MIN_DECAY)
    jack = run_jackknife(result, inputs) if jackknife else np.zeros((0, result.theta.size))
    fitted_runs = [
        FittedRun(run.name, run.source, int(fit.steps[0]), run.final_step, int(fit.steps.size),
                  result.run_rmse[fit.name], run.joined_to, compress_knots(run.schedule()), result.run_trend[fit.name])
        for run, fit in zip(runs, inputs)
    ]
    names = law.names
    return LossLaw(
        law=law.name,
        params={k: float(v) for k, v in result.params.items()},
        param_std=result.param_std(),
        samples=[[float(law.to_natural(t)[n]) for n in names] for t in result.samples],
        jackknife=[[float(law.to_natural(t)[n]) for n in names] for t in jack],
        lr_ref=lr_ref,
        decay_identified=identified,
        loss_key=runs[0].loss_key,
        lr_key=runs[0].lr_key,
        interval=interval,
        tokens_per_step=tokens.pop() if tokens else None,
        runs=fitted_runs,
        fit={'huber_scale': result.huber_scale, 'points': result.n_points, 'max_points': max_points,
             'fit_from': fit_from, 'bootstrap': int(len(result.samples)), 'jackknife': int(len(jack)),
             'fixed': result.fixed},
    )
