"""Any folder of runs: fit the loss law on some of them, predict the final loss of every other one.

For curves that cannot be vendored (no licence) or that a user brings: every ``*.csv`` / ``*.jsonl`` in ``--data``
is a run (step, loss and LR columns, as ``foundry-ext loss-law fit`` reads them; a branch holding only its own
steps is joined to the fitted run it left). The law is fitted on the runs
named by ``--fit`` exactly as ``loss-law fit`` fits without options (so runs without a warmup are fitted past their
transient), and predicts every other run's final loss: the mean loss over the last 0.5% of its steps (per-step
training losses are noisy). The naive baseline needs no law: the fitted runs' mean final loss, times the ratio of
the target's length to theirs to the power of the constant run's own log-log slope over its second half (or 1
without a constant run among the fitted ones).

Example::

    PYTHONPATH=. .venv/bin/python scripts/bench/loss_law_schedules.py --data /tmp/c5msched \\
        --fit const1_T1e10 linear0.2_T1e10
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from foundry_ext.loss_law.from_runs import fit_runs
from foundry_ext.loss_law.predict import predict
from foundry_ext.loss_law.runs import Run, load_runs
from foundry_ext.loss_law.select import decay_start, default_fit_from


def _final(run: Run) -> float:
    return float(run.losses[run.loss_steps >= 0.995 * run.loss_steps[-1]].mean())


def _slope(run: Run) -> float:
    """d log L / d log step over the second half of a constant run."""
    half = run.loss_steps >= 0.5 * run.loss_steps[-1]
    return float(np.polyfit(np.log(run.loss_steps[half]), np.log(run.losses[half]), 1)[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', required=True, help='folder of run files (*.csv, *.jsonl)')
    parser.add_argument('--fit', nargs='+', required=True, help='names (file stems) of the runs to fit on')
    parser.add_argument('--law', default='multi-power', choices=('multi-power', 'momentum'))
    parser.add_argument('--loss-key', default=None, help="loss column (default: loss-law fit's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    files = sorted(p for p in Path(args.data).iterdir() if p.suffix in ('.csv', '.jsonl'))
    missing = set(args.fit) - {p.stem for p in files}
    if missing:
        raise SystemExit(f'--fit names runs not in {args.data}: {sorted(missing)}')
    fit_paths = [p for p in files if p.stem in args.fit]
    fitted = load_runs(fit_paths, args.loss_key)
    law = fit_runs(fitted, args.law, fit_from=default_fit_from(fitted, args.law))
    constant = [r for r in fitted if decay_start(r) is None]
    slope = _slope(constant[0]) if constant else 0.0
    length = float(np.mean([r.loss_steps[-1] for r in fitted]))
    mean_final = float(np.mean([_final(r) for r in fitted]))
    print(f'{args.law} law fitted on {", ".join(args.fit)} from '
          f'{"each warmup end" if law.fit["fit_from"] is None else "step " + str(law.fit["fit_from"])}\n')
    print('| run | final step | measured | law (90% interval) | error | naive | error |\n|---|---|---|---|---|---|---|')
    errors, naive, covered = [], [], 0
    for path in files:
        if path.stem in args.fit:
            continue
        run = load_runs([*fit_paths, path], args.loss_key)[-1]  # a branch is joined to the fitted run it left
        step, measured = float(run.loss_steps[-1]), _final(run)
        pred = predict(law, run.schedule(), steps=np.array([step]), source=path.name)
        lo, hi = pred.final_interval
        base = mean_final * (step / length)**slope
        errors.append(pred.final_loss / measured - 1)
        naive.append(base / measured - 1)
        covered += lo <= measured <= hi
        print(f'| {path.stem} | {step:.0f} | {measured:.4f} | {pred.final_loss:.4f} ({lo:.4f}..{hi:.4f}) | '
              f'{errors[-1]:+.3%} | {base:.4f} | {naive[-1]:+.3%} |')
    e, b = np.abs(errors), np.abs(naive)
    print(f'\nlaw: mean abs error {e.mean():.3%}, max {e.max():.3%}, {covered}/{e.size} inside the interval; '
          f'naive: mean {b.mean():.3%}, max {b.max():.3%}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
