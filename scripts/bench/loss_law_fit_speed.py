"""How long fitting a loss law takes on runs of 100,000 logged points (one per step), on one core.

Each run is synthetic: a per-step loss from the multi-power law (with parameters like the 124M runs' fit) times
heavy-tailed noise (Student-t, 3 degrees of freedom, 2% scale, as single-batch training losses), under a WSD
schedule (warmup 1%, 20% 1-sqrt cooldown) or a cosine schedule (an LR change at every step: the worst case for
the LR-change sum, which is O(n^2) summed naively). The fit is what ``foundry-ext loss-law fit`` does by default:
windows, grid, four refined starts, 32 bootstrap refits, and the run jackknife when there are three runs.
Reading files is not timed. Run it with one thread, e.g. ``OMP_NUM_THREADS=1 taskset -c 0``. Both the CPU time
of the process (what one core spends, whatever else shares it) and the wall time are shown; on a machine shared
with other jobs the wall time is the larger.

Example::

    OMP_NUM_THREADS=1 taskset -c 0 env PYTHONPATH=. .venv/bin/python scripts/bench/loss_law_fit_speed.py
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np

from foundry_ext.loss_law.design import build_design, design_chunks
from foundry_ext.loss_law.from_runs import fit_runs
from foundry_ext.loss_law.laws import get_law
from foundry_ext.loss_law.runs import Run
from foundry_ext.loss_law.schedule import LRSchedule

TRUE = {'L0': 2.9, 'A': 23.0, 'alpha': 0.45, 'B': 0.5, 'C': 0.2, 'beta': 0.3, 'gamma': 0.8}


def synthetic_run(name: str, n: int, shape: str, decay_fraction: float, seed: int) -> Run:
    """A run of ``n`` steps logging LR and loss at every step; ``shape`` is ``wsd`` or ``cosine``."""
    peak = 1e-3
    step = np.arange(n, dtype=float)
    warmup = n // 100
    if shape == 'cosine':
        lr = np.where(step < warmup, step / warmup, 0.1 + 0.45 * (1 + np.cos(np.pi * (step - warmup) / (n - warmup))))
    else:
        start = n * (1 - decay_fraction)
        progress = np.clip((step - start) / (n - start), 0, 1)
        lr = np.where(step < warmup, step / warmup, 1 - np.sqrt(progress))
    lr = np.maximum(lr, 0.0) * peak
    loss_steps = np.arange(warmup, n + 1, dtype=float)
    law = get_law('multi-power')
    clean = np.concatenate([law.evaluate(law.from_natural(TRUE), d)
                            for d in design_chunks(LRSchedule(lr / peak), loss_steps)])
    noise = 0.02 * np.random.default_rng(seed).standard_t(3, loss_steps.size)
    return Run(name, name, loss_steps, clean * np.exp(noise), step[1:], lr[1:], 'loss', 'lr')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--steps', type=int, default=100_000, help='logged points per run (default 100000)')
    parser.add_argument('--repeats', type=int, default=3, help='timed fits per case (default 3; the median is shown)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cases = {
        'one WSD run (20% 1-sqrt cooldown)': [synthetic_run('wsd', args.steps, 'wsd', 0.2, 0)],
        'one cosine run (LR change every step)': [synthetic_run('cos', args.steps, 'cosine', 1.0, 1)],
        'three runs: constant + 10% and 20% cooldowns': [synthetic_run(f'c{f}', args.steps, 'wsd', f, i)
                                                         for i, f in enumerate((1e-9, 0.1, 0.2))],
    }
    print(f'| runs ({args.steps:,} points each) | law | CPU time (median of {args.repeats}) | wall time | final-loss '
          f'error of the fit |\n|---|---|---|---|---|')
    for label, runs in cases.items():
        for law in ('multi-power', 'momentum'):
            cpu, wall = [], []
            for _ in range(args.repeats):
                start, start_cpu = time.perf_counter(), time.process_time()
                fitted = fit_runs(runs, law)
                cpu.append(time.process_time() - start_cpu)
                wall.append(time.perf_counter() - start)
            model = fitted.model
            schedule = runs[-1].schedule()
            final = model.evaluate(fitted.theta, build_design(schedule.scaled(1 / fitted.lr_ref),
                                                              np.array([float(schedule.n)])))[0]
            truth = get_law('multi-power').evaluate(get_law('multi-power').from_natural(TRUE),
                                                    build_design(schedule.scaled(1 / 1e-3),
                                                                 np.array([float(schedule.n)])))[0]
            print(f'| {label} | {law} | {np.median(cpu):.2f} s | {np.median(wall):.2f} s | {final / truth - 1:+.3%} |',
                  flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
