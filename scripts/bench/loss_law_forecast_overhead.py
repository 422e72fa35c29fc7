"""Step-time overhead of ``loss_law_forecast`` on the demo recipe, and the cost of one forecast late in long runs.

1. Trains ``yamls/wsd.yaml`` once with a flat LR; after ``--warmup`` batches the callback (forecasting every
   ``--block`` batches, with a prior law file so that the decay forecasts run too) is switched on and off in blocks
   of ``--block`` batches (``foundry_ext.testing.benchmarking.in_run_ab``): every "on" block holds one forecast, a
   fit and its predictions, so the on/off ratio is the overhead of forecasting every ``--block`` batches.
2. One forecast (fit on the history and two branches, then the decay and final predictions) on synthetic runs
   of 10k to 1M steps, in CPU seconds of this process (the first forecast from the grid, the next warm-started
   from it, as the callback does), shown as a share of the time that ``--every`` steps of ``--step-ms`` take (the
   callback forecasts after each evaluation; evaluations every 1000 steps of 300 ms are typical of a GPU run).

Example::

    python scripts/bench/loss_law_forecast_overhead.py --pairs 10 --block 10
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from foundry_ext.callbacks.loss_law_forecast import LossLawForecast
from foundry_ext.loss_law.design import design_chunks
from foundry_ext.loss_law.from_runs import fit_runs
from foundry_ext.loss_law.law_file import write_law
from foundry_ext.loss_law.laws import get_law
from foundry_ext.loss_law.runs import Run, join_branches
from foundry_ext.loss_law.schedule import LRSchedule
from foundry_ext.schedulers import WSDScheduler
from foundry_ext.testing.benchmarking import ab_report, in_run_ab

TRUE = {'L0': 2.0, 'A': 8.0, 'alpha': 0.4, 'B': 0.3, 'C': 0.2, 'beta': 0.4, 'gamma': 0.8}


def _run(name: str, n: int, decay_start: int, peak: float, start: int = 0, every: int = 1) -> Run:
    """A run logging every ``every`` steps from ``start``: a WSD schedule decaying linearly from ``decay_start``."""
    step = np.arange(n, dtype=float)
    lr = np.minimum(step / (n // 100 + 1), 1.0)
    lr = np.where(step >= decay_start, np.clip(1 - (step - decay_start) / max(n - decay_start, 1), 0, 1), lr) * peak
    steps = np.arange(max(start, n // 100 + 1), n + 1, every, dtype=float)
    law = get_law('multi-power')
    designs = design_chunks(LRSchedule(lr / peak), steps)
    clean = np.concatenate([law.evaluate(law.from_natural(TRUE), d) for d in designs])
    loss = clean * np.exp(0.02 * np.random.default_rng(n).standard_normal(steps.size))
    lr_steps = np.arange(max(start, 1), n, every, dtype=float)
    return Run(name, name, steps, loss, lr_steps, lr[lr_steps.astype(int)], 'loss', 'lr')


def _prior(peak: float, folder: str) -> str:
    """A law fitted on synthetic runs that decay, at the demo's LR: the decay term the callback holds."""
    n = 1000
    runs = join_branches([_run('main', n, 10 * n, peak), _run('b1', n, 800, peak, start=800),
                          _run('b2', n, 600, peak, start=600)])
    return str(write_law(fit_runs(runs, n_boot=8), Path(folder) / 'prior.json'))


def _forecast_seconds(n: int) -> tuple[float, float]:
    """CPU seconds of the first and of a warm-started forecast at step ``n`` of a main run with 10% and 20%
    branches, its history held in 1024 bins."""
    callback = LossLawForecast(['1000ba'], interval=1000)
    callback._scheduler = WSDScheduler(t_decay='1000ba', t_decay_start=f'{10 * n}ba')
    every = max(n // 1024, 1)  # what the history's bins hold: one mean per bin
    main = _run('main', n, 10 * n, 1e-3, every=every)
    branches = [_run(f'b{f}', n, int(n * (1 - f)), 1e-3, start=int(n * (1 - f)), every=every) for f in (0.1, 0.2)]
    own = np.ones(n + 1000)
    seconds = []
    for _ in range(2):
        start = time.process_time()
        metrics = callback.forecast(main, branches, n, 1e-3, 1e-3, 16, 2048, own)
        seconds.append(time.process_time() - start)
    assert 'loss_law/decay_1000ba' in metrics, metrics
    return seconds[0], seconds[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--yaml', default='yamls/wsd.yaml', help='the recipe to train (a wsd schedule)')
    parser.add_argument('--pairs', type=int, default=10, help='on/off block pairs (default: 10)')
    parser.add_argument('--block', type=int, default=10, help='batches per block, and between forecasts (default 10)')
    parser.add_argument('--warmup', type=int, default=30, help='batches before the first block (default: 30)')
    parser.add_argument('--every', type=int, default=1000, help='steps between forecasts in part 2 (default 1000)')
    parser.add_argument('--step-ms', type=float, default=300.0, help='step time in part 2, ms (default 300)')
    parser.add_argument('overrides', nargs='*', help='Foundry-style YAML overrides')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        callback = LossLawForecast(['100ba'], law=_prior(3e-3, folder), interval=args.block)
        steps = in_run_ab(args.yaml, callback, args.pairs, args.block, args.warmup, args.overrides)
    print(f'loss_law_forecast (a forecast every {args.block} batches, bootstrap {callback.bootstrap}), after '
          f'{args.warmup} warmup batches:')
    print(ab_report(steps, args.block))
    step = statistics.median(s.wall for s in steps if not s.on)
    print(f'\nOne forecast late in a long run (main run + two branches), CPU time, against {args.every} steps of '
          f'{args.step_ms:g} ms:\n')
    print('| run length (steps) | first forecast (grid) | next forecast (warm start) | share of the steps between '
          'forecasts (warm) |\n|---|---|---|---|')
    for n in (10_000, 100_000, 1_000_000):
        first, warm = _forecast_seconds(n)
        print(f'| {n:,} | {first:.2f} s | {warm:.2f} s | {warm / (args.every * args.step_ms / 1e3):.2%} |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
