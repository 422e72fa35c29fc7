"""The multi-power-law paper's own split (Luo et al., ICLR 2025, Table 1), for both laws, through foundry-ext.

For each model size (25M, 100M, 400M; ``data/multipowerlaw/csv_<size>/``) the law is fitted on the paper's
training curves (cosine 24k, constant 24k, two-stage ``wsdcon_9``) with the LR as logged (every 128 steps, from
the end of warmup; before it a linear warmup from zero is assumed, as for every run) and predicts the six test
curves (constant 72k, cosine 72k, WSD with exponential and linear decay, two-stage to 3e-5 and 1.8e-4) at their
logged steps. As in the authors' evaluation (``src/data_loader.py``, ``src/evaluation.py``), curves that log step
24000 are cut before it, and every metric is computed per test curve and averaged over the six: R², MAE, RMSE,
PredE (mean relative error) and WorstE (the curve's largest relative error). The table also gives the largest
relative error over all test points, and how often the test points and the final losses fall in the 90% interval.

Example::

    PYTHONPATH=. .venv/bin/python scripts/bench/loss_law_paper_split.py
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from foundry_ext.loss_law.from_runs import fit_runs
from foundry_ext.loss_law.predict import predict
from foundry_ext.loss_law.runs import Run, load_runs
from foundry_ext.loss_law.select import choose_fit_from

TRAIN = ('cosine_24000', 'constant_24000', 'wsdcon_9')
TEST = ('constant_72000', 'cosine_72000', 'wsd_20000_24000', 'wsdld_20000_24000', 'wsdcon_3', 'wsdcon_18')
SIZES = ('25', '100', '400')
# Luo et al., Table 1 (multi-power law): PredE and WorstE per size.
PAPER = {'25': (0.0012, 0.0040), '100': (0.0013, 0.0058), '400': (0.0019, 0.0070)}


def _truncated(run: Run) -> Run:
    """The authors' loader drops step 24000 from curves that end there."""
    if run.loss_steps[-1] == 24000:
        keep = run.loss_steps < 24000
        run.loss_steps, run.losses = run.loss_steps[keep], run.losses[keep]
    return run


def evaluate(folder: Path, law: str, auto: bool = False) -> dict[str, float]:
    """Fits ``law`` on the training curves in ``folder`` and scores it on the test curves; with ``auto`` the fit
    starts where cross-validation over the training curves puts it (``--fit-from auto``)."""
    train = [_truncated(r) for r in load_runs([folder / f'{n}.csv' for n in TRAIN], 'loss', 'lr')]
    start = time.perf_counter()
    fitted = fit_runs(train, law, fit_from=choose_fit_from(train, law)[0] if auto else None)
    seconds = time.perf_counter() - start
    rows = []
    for name in TEST:
        run = _truncated(load_runs([folder / f'{name}.csv'], 'loss', 'lr')[0])
        schedule = run.schedule()
        pred = predict(fitted, schedule, steps=run.loss_steps, source=name)
        y = run.losses
        rel = np.abs(pred.loss - y) / y
        inside = (pred.lower <= y) & (y <= pred.upper)
        rows.append({
            'r2': 1 - np.sum((y - pred.loss)**2) / np.sum((y - y.mean())**2),
            'mae': np.mean(np.abs(y - pred.loss)),
            'rmse': np.sqrt(np.mean((y - pred.loss)**2)),
            'prede': rel.mean(),
            'worste': rel.max(),
            'covered': inside.mean(),
            'final_covered': float(inside[-1]),
        })
    result = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    result['worst_all'] = float(max(r['worste'] for r in rows))
    result['seconds'] = seconds
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', default='data/multipowerlaw', help='folder with csv_25, csv_100, csv_400')
    parser.add_argument('--fit-from-auto', action='store_true', help='also score the fits started by --fit-from auto')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print('| law | size | R² | MAE | RMSE | PredE | WorstE (mean of curves) | paper PredE / WorstE | largest error, '
          'any point | points in 90% interval | final losses in it | fit time |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|')
    variants = [(law, False) for law in ('multi-power', 'momentum')]
    if args.fit_from_auto:
        variants.append(('multi-power', True))
    for law, auto in variants:
        for size in SIZES:
            r = evaluate(Path(args.data) / f'csv_{size}', law, auto)
            paper = f'{PAPER[size][0]:.4f} / {PAPER[size][1]:.4f}' if law == 'multi-power' else 'n/a'
            print(f'| {law}{" (fit from auto)" if auto else ""} | {size}M | {r["r2"]:.4f} | {r["mae"]:.5f} | {r["rmse"]:.5f} | {r["prede"]:.5f} | '
                  f'{r["worste"]:.5f} | {paper} | {r["worst_all"]:.4f} | {r["covered"]:.0%} | '
                  f'{r["final_covered"] * 6:.0f}/6 | {r["seconds"]:.1f} s |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
