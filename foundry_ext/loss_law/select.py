"""Choosing where the fit starts by cross-validation within the fitted runs (``loss-law fit --fit-from auto``).

Early training often follows no power law in the LR area (a short run's first hundreds of steps, a tiny model's
transient), and fitting it bends the law where the forecasts are needed. Which start is best is measured on the
runs themselves: each run with a decay is left out in turn, the law is fitted on the others from each candidate
start, and it predicts the left-out run's losses from its decay on (the mean absolute relative error, averaged
over the left-out runs, scores the candidate). Candidates: the end of each run's warmup (the default start) and
1/4, 1/2 and 3/4 of the step where the earliest decay begins. Two runs with a decay are needed (one to leave out,
one to fit the decay term); with fewer the default start is kept.

**Runs without a warmup.** The default start is each run's warmup end. When no run logs one (its LR at the peak
from its first logged step on), that would fit the first steps, where the loss falls from its initial value
(about the log of the vocabulary size) in a transient that no law in the LR area describes: a fit from there
misses the rest of the run by 20-30% on real curves. :func:`default_fit_from` then starts the fit where
cross-validation puts it (as above) or, with fewer than two runs that decay, at ``NO_WARMUP_START`` of the
shortest run, about a warmup's length in LLM training.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from foundry_ext.core.errors import ConfigError
from foundry_ext.loss_law.fit import MIN_DECAY
from foundry_ext.loss_law.from_runs import fit_runs
from foundry_ext.loss_law.predict import predict
from foundry_ext.loss_law.runs import Run, starts_late

log = logging.getLogger(__name__)

__all__ = ['FRACTIONS', 'NO_WARMUP_START', 'choose_fit_from', 'decay_start', 'default_fit_from', 'logs_warmup']

FRACTIONS = (0.25, 0.5, 0.75)
NO_WARMUP_START = 0.03  # of the shortest run, for runs without a warmup and fewer than two decays


def decay_start(run: Run) -> Optional[int]:
    """The first step after the peak at which the run's LR is ``MIN_DECAY`` below it, or None."""
    schedule = run.schedule()
    below = np.flatnonzero(schedule.lr[schedule.peak_step:] < (1.0 - MIN_DECAY) * schedule.peak)
    return int(schedule.peak_step + below[0]) if below.size else None


def choose_fit_from(runs: Sequence[Run], law_name: str = 'multi-power',
                    max_points: int = 256) -> tuple[Optional[int], dict[Optional[int], float]]:
    """The start (None: each run's warmup end) with the lowest cross-validated error, and every candidate's score.

    Args:
        runs (Sequence[Run]): Loaded and joined runs.
        law_name (str): The law to fit.
        max_points (int): Loss windows per run.
    """
    starts = {i: decay_start(run) for i, run in enumerate(runs)}
    held_out = [i for i, s in starts.items() if s is not None and np.count_nonzero(runs[i].loss_steps > s) >= 3]
    if len(held_out) < 2:
        log.info('Fewer than two runs decay: --fit-from auto keeps the warmup end as the fit start.')
        return None, {}
    earliest = min(s for s in starts.values() if s is not None)
    warmup = max(run.schedule().peak_step for run in runs)
    candidates: list[Optional[int]] = [None, *sorted({int(f * earliest) for f in FRACTIONS
                                                      if int(f * earliest) > warmup})]
    scores: dict[Optional[int], float] = {}
    for candidate in candidates:
        errors = []
        for i in held_out:
            try:
                law = fit_runs([r for j, r in enumerate(runs) if j != i], law_name, fit_from=candidate,
                               max_points=max_points, n_boot=0, jackknife=False)
                run = runs[i]
                keep = run.loss_steps > starts[i]
                pred = predict(law, run.schedule(), steps=run.loss_steps[keep], source=run.name)
            except ConfigError:
                errors.append(np.inf)
                continue
            errors.append(float(np.mean(np.abs(pred.loss / run.losses[keep] - 1))))
        scores[candidate] = float(np.mean(errors))
    best = min(scores, key=scores.get)
    log.info('--fit-from auto: cross-validated error by start (%s): %s; fitting from %s.',
             'warmup end = None', ', '.join(f'{k}: {v:.3%}' for k, v in scores.items()),
             'the warmup end' if best is None else f'step {best}')
    return best, scores


def logs_warmup(run: Run) -> bool:
    """Whether the run's LR shows a warmup: its peak comes after its first logged LR, or its LR is first logged
    late (a warmup is then assumed before it)."""
    return run.schedule().peak_step > run.lr_steps[0] or starts_late(run.lr_steps)


def default_fit_from(runs: Sequence[Run], law_name: str = 'multi-power', max_points: int = 256) -> Optional[int]:
    """Where ``loss-law fit`` starts without ``--fit-from``: None (each run's warmup end) if any run logs a warmup,
    else past the initial transient (see the module docstring)."""
    if any(logs_warmup(run) for run in runs):
        return None
    start, scores = choose_fit_from(runs, law_name, max_points)
    how = 'chosen by cross-validation over the runs that decay'
    if start is None and not scores:
        start = max(int(NO_WARMUP_START * min(run.final_step for run in runs)), 1)
        how = f'{NO_WARMUP_START:.0%} of the shortest run, about a warmup\'s length'
    log.warning('No run logs a warmup (the LR is at its peak from the first logged step): the first steps are a '
                'transient that no loss law describes, so the fit starts at %s (%s). Give --fit-from to choose '
                'another step.', 'step 1' if start is None else f'step {start}', how)
    return start
