"""Early warning on a real family: is a run with a perturbed control flagged by its collapse residual before its raw
loss looks worse?

The SlimPajama cosine family of ``data/lr_scheduling_families`` holds, besides its sizes, a 124M LR sweep with the
same recipe: at 25k and 50k steps, peak LRs 1e-4, 5e-4 and 2e-3 next to the family's 1e-3. With torch AdamW's
weight decay 0.1 fixed, ``tau = 1/(lr * 0.1 * T)`` moves with the LR (x10, x2, x0.5). Each run is monitored as
``collapse_monitor`` monitors it (:class:`~foundry_ext.collapse.online.OnlineCollapse` at every eval point, an
alert after ``--consecutive`` evaluations with ``|z| > --threshold``), against a reference fitted on every other
size of the family (all TPPs) and specialized to the controls the run was planned with (those of its healthy
twin: same size, length and the family's LR). The raw loss "looks worse" from the first eval point after which
it stays more than ``--raw-gap`` above the healthy twin's until the end (an oracle: a real run has no twin). The
healthy twins are monitored the same way (false alarms).

Example::

    python scripts/bench/collapse_early_warning.py
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from foundry_ext.collapse.online import OnlineCollapse
from foundry_ext.collapse.runs import CollapseRun, fit_runs, load_run
from foundry_ext.core.metric_names import EVAL_CROSS_ENTROPY

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parents[2] / 'data' / 'lr_scheduling_families'
FAMILY, SWEEP, SIZE = 'slimpajama-cosine', 'slimpajama-cosine-lr-sweep', '124m'
HEALTHY_LR = 0.001


def _load(folder: Path) -> CollapseRun:
    return load_run(folder, loss_key=EVAL_CROSS_ENTROPY)


def alert_step(run: CollapseRun, monitor: OnlineCollapse, threshold: float, consecutive: int) -> Optional[int]:
    """The step where the first streak of ``consecutive`` out-of-band evaluations began, as the monitor reports."""
    streak = []
    for step, loss in zip(run.curve.steps, run.curve.losses):
        ev = monitor.add(float(step), float(loss))
        if ev is None:
            continue
        streak = streak + [int(step)] if abs(ev.z) > threshold else []
        if len(streak) == consecutive:
            return streak[0]
    return None


def worse_from(run: CollapseRun, twin: CollapseRun, gap: float) -> Optional[int]:
    """The first eval step after which ``run``'s loss stays more than ``gap`` above ``twin``'s until the end."""
    steps = np.asarray(run.curve.steps)
    ratio = np.asarray(run.curve.losses) / np.interp(steps, twin.curve.steps, twin.curve.losses) - 1.0
    above = ratio > gap
    if not above[-1]:
        return None
    below = np.flatnonzero(~above)
    return int(steps[below[-1] + 1] if below.size else steps[0])


def main(argv: Optional[list[str]] = None) -> int:
    """The command line of the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, default=DATA, help=f'vendored runs (default: {DATA})')
    parser.add_argument('--threshold', type=float, default=3.0, help='out of band: |z| above this (default 3)')
    parser.add_argument('--consecutive', type=int, default=5, help='evaluations in a row that alert (default 5)')
    parser.add_argument('--raw-gap', type=float, default=0.01, help='raw loss above the twin by this (default 1%%)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    family = [_load(p.parent) for p in sorted((args.data / FAMILY).glob('*/run.json'))]
    ref = fit_runs([r for r in family if not r.name.startswith(f'{SIZE}-')])
    sweep = [_load(p.parent) for p in sorted((args.data / SWEEP).glob('*/run.json'))]
    print(f'reference: {ref.n_runs} runs of the other sizes; band {min(ref.band_sigma):.4f}..'
          f'{max(ref.band_sigma):.4f}\n')
    print('| run | tau (planned) | residual alert: step (t/T) | raw loss > twin + {:.0%} from: step (t/T) | '
          'final loss run / twin |\n|---|---|---|---|---|'.format(args.raw_gap))
    for run in sorted(sweep, key=lambda r: (r.total_steps, r.controls.tau)):
        twin = next((t for t in sweep if t.total_steps == run.total_steps and t.name.endswith(f'lr{HEALTHY_LR:g}')),
                    None)
        if twin is None:
            continue
        planned = ref.for_controls(twin.controls)
        alert = alert_step(run, OnlineCollapse(planned, run.total_steps), args.threshold, args.consecutive)
        worse = worse_from(run, twin, args.raw_gap) if run is not twin else None

        def at(step: Optional[int]) -> str:
            return f'{step} ({step / run.total_steps:.2f})' if step is not None else 'never'

        print(f'| {run.name} | {run.controls.tau:.3g} ({twin.controls.tau:.3g}) | {at(alert)} | '
              f'{"(healthy twin)" if run is twin else at(worse)} | '
              f'{run.curve.losses[-1]:.4f} / {twin.curve.losses[-1]:.4f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
