"""WSD cooldowns on real curves: fit on the constant run and the two shortest cooldowns, predict every other one.

Data: ``data/lr-scheduling-124m/lr<peak>/`` (Hägele et al. 2024, ``fabian-sp/lr-scheduling``): a 124M Llama-style
model on SlimPajama, 50,000 steps at peak LR ``<peak>``, the constant run and cooldowns branched off it (linear to
zero over the last 10, 20, 40, 60, 80 and 90% of the run, and 1-sqrt over 20%). Each cooldown file holds only the
cooldown; it is joined to the constant run, as ``foundry-ext loss-law`` joins any branch. The law is fitted on the
validation loss (logged every 200 steps on 32 batches; the training loss is one batch every 50 steps, about 3%
noise) of the constant run and the 10% and 20% cooldowns, and predicts the final validation loss (step 49,800) of
the others.

Baseline: the training cooldowns' mean relative drop of the final loss below the constant run at the same step,
applied to the constant run's loss at the held-out cooldown's final step (the same prediction for every length).

Settings were chosen on peak LR 5e-4 (``--peak 0.0005``, the development set); the reported set is 1e-3.

Example::

    PYTHONPATH=. .venv/bin/python scripts/bench/loss_law_wsd_branches.py --peak 0.001
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from foundry_ext.loss_law.from_runs import fit_runs
from foundry_ext.loss_law.predict import predict
from foundry_ext.loss_law.runs import load_runs
from foundry_ext.loss_law.select import choose_fit_from

FIT = ('cooldown-linear-0.1', 'cooldown-linear-0.2')
HELD_OUT = ('cooldown-linear-0.4', 'cooldown-linear-0.6', 'cooldown-linear-0.8', 'cooldown-linear-0.9',
            'cooldown-1-sqrt-0.2')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', default='data/lr-scheduling-124m', help='folder with lr<peak>/ subfolders')
    parser.add_argument('--peak', default='0.001', help='peak LR folder (default 0.001; 0.0005 is the dev set)')
    parser.add_argument('--key', default='val_loss', help='loss column (default val_loss)')
    parser.add_argument('--fit-from-auto', action='store_true', help='start the multi-power fit where '
                        'cross-validation over the fitted runs puts it (--fit-from auto)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    folder = Path(args.data) / f'lr{args.peak}'
    constant = folder / 'constant.csv'
    runs = load_runs([constant, *(folder / f'{name}.csv' for name in FIT)], args.key, 'lr')
    const_run = runs[0]

    def constant_at(step: float) -> float:
        index = np.flatnonzero(const_run.loss_steps == step)
        if not index.size:
            raise SystemExit(f'the constant run logs no {args.key} at step {step:g}')
        return float(const_run.losses[index[0]])

    drops = [1 - run.losses[-1] / constant_at(run.loss_steps[-1]) for run in runs[1:]]
    mean_drop = float(np.mean(drops))
    laws = {name: fit_runs(runs, name) for name in ('multi-power', 'momentum')}
    if args.fit_from_auto:
        laws['multi-power'] = fit_runs(runs, 'multi-power', fit_from=choose_fit_from(runs)[0])
    start = laws['multi-power'].fit['fit_from']
    print(f'peak LR {args.peak}; fitted on constant + {", ".join(FIT)} ({args.key}), multi-power from '
          f'{"the warmup end" if start is None else f"step {start}"}; baseline mean drop {mean_drop:.3%}\n')
    print('| held-out cooldown | final step | measured | multi-power (90% interval) | error | momentum | error | '
          'baseline | error |')
    print('|---|---|---|---|---|---|---|---|---|')
    errors: dict[str, list[float]] = {'multi-power': [], 'momentum': [], 'baseline': []}
    covered = 0
    for name in HELD_OUT:
        run = load_runs([constant, folder / f'{name}.csv'], args.key, 'lr')[1]
        step, measured = float(run.loss_steps[-1]), float(run.losses[-1])
        cells = []
        for law_name, law in laws.items():
            pred = predict(law, run.schedule(), steps=np.array([step]), source=name)
            errors[law_name].append(pred.final_loss / measured - 1)
            lo, hi = pred.final_interval
            if law_name == 'multi-power':
                covered += lo <= measured <= hi
                cells.append(f'{pred.final_loss:.4f} ({lo:.4f}..{hi:.4f})')
            else:
                cells.append(f'{pred.final_loss:.4f}')
            cells.append(f'{errors[law_name][-1]:+.3%}')
        baseline = constant_at(step) * (1 - mean_drop)
        errors['baseline'].append(baseline / measured - 1)
        print(f'| {name} | {step:.0f} | {measured:.4f} | {" | ".join(cells)} | {baseline:.4f} | '
              f'{errors["baseline"][-1]:+.3%} |')
    print('\n| predictor | mean abs error | max abs error | within 0.3% |\n|---|---|---|---|')
    for name, errs in errors.items():
        e = np.abs(errs)
        print(f'| {name} | {e.mean():.3%} | {e.max():.3%} | {np.count_nonzero(e <= 0.003)}/{e.size} |')
    ratio = np.mean(np.abs(errors['baseline'])) / np.mean(np.abs(errors['multi-power']))
    print(f'\nmulti-power final losses inside their 90% interval: {covered}/{len(HELD_OUT)}; mean abs error '
          f'{ratio:.1f}x smaller than the baseline\'s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
