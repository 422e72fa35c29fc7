"""Step-time overhead of ``collapse_monitor`` on the demo recipe, and its evaluation cost late in a long run.

1. Trains ``yamls/wsd.yaml`` once with a flat LR; after ``--warmup`` batches the monitor (``interval`` 10,
   against a reference fitted to synthetic curves with a flat schedule) is switched on and off in blocks of
   ``--block`` batches (``foundry_ext.testing.benchmarking.in_run_ab``). With ``--block`` and ``--warmup`` multiples of
   the interval, every "on" block holds one evaluation.
2. An evaluation late in a long run: the monitor's incremental update (``OnlineCollapse.add``, what it does at
   each evaluation) next to re-reading the whole history (``collapse_residual`` and ``predict_final_loss`` over
   every evaluated point, what the monitor did before), at history lengths of long runs, each as a fraction of
   the ``interval`` steps it is spread over, with the step time measured in part 1.

Example::

    python scripts/bench/collapse_monitor_overhead.py --pairs 15 --block 10
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

from foundry_ext.collapse.curves import LossCurve
from foundry_ext.collapse.online import OnlineCollapse
from foundry_ext.collapse.prediction import collapse_residual, predict_final_loss
from foundry_ext.collapse.reference import ReferenceCurve, fit_reference
from foundry_ext.collapse.schedule import LRSchedule
from foundry_ext.callbacks.collapse_monitor import CollapseMonitor
from foundry_ext.testing.benchmarking import ab_report, in_run_ab

INTERVAL = 10


def _curve(total: int, seed: int) -> LossCurve:
    steps = np.arange(1, total + 1, dtype=float)
    noise = np.random.default_rng(seed).normal(0, 0.02, total)
    return LossCurve(steps, 3.0 * (steps / total + 0.01)**-0.1 * np.exp(noise), total)


def _evaluation_seconds(ref: ReferenceCurve, points: int, repeats: int = 50) -> tuple[float, float]:
    """Seconds of one evaluation at the end of a history of ``points``: incremental, and re-reading everything."""
    steps = np.arange(1, points + 1, dtype=float) * INTERVAL
    losses = 3.0 * (steps / steps[-1] + 0.01)**-0.1
    online = OnlineCollapse(ref, int(steps[-1]))
    for step, loss in zip(steps[:-repeats], losses[:-repeats]):
        online.add(step, loss)
    start = time.perf_counter()
    for step, loss in zip(steps[-repeats:], losses[-repeats:]):
        online.add(step, loss)
    incremental = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for _ in range(repeats):
        collapse_residual(steps, losses, int(steps[-1]), ref)
        predict_final_loss(steps, losses, int(steps[-1]), ref)
    return incremental, (time.perf_counter() - start) / repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--yaml', default='yamls/wsd.yaml', help='the recipe to train (a wsd schedule)')
    parser.add_argument('--pairs', type=int, default=15, help='on/off block pairs (default: 15)')
    parser.add_argument('--block', type=int, default=INTERVAL, help=f'batches per block (default: {INTERVAL})')
    parser.add_argument('--warmup', type=int, default=30, help='batches before the first block (default: 30)')
    parser.add_argument('--history-only', type=float, metavar='STEP_MS',
                        help='skip the training A/B; time part 2 against this step time (ms)')
    parser.add_argument('overrides', nargs='*', help='Foundry-style YAML overrides')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    ref = fit_reference([_curve(2000, seed) for seed in (1, 2)], LRSchedule((0.0, 1.0), (1.0, 1.0)), smoothing=5,
                        final_loss='fit')
    if args.history_only is not None:
        step = args.history_only / 1e3
    else:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / 'ref.json'
            path.write_text(ref.to_json())
            steps = in_run_ab(args.yaml, CollapseMonitor(reference=str(path), interval=INTERVAL), args.pairs,
                              args.block, args.warmup, args.overrides)
        print(f'collapse_monitor (interval {INTERVAL}, smoothing {ref.smoothing}), after {args.warmup} warmup '
              'batches:')
        print(ab_report(steps, args.block))
        step = statistics.median(s.wall for s in steps if s.on)
    print(f'\nOne evaluation late in a long run (spread over its {INTERVAL} steps of {step * 1e3:.1f} ms):\n')
    print('| run length (steps) | history (points) | evaluation (incremental) | share of the steps | '
          're-reading the history |\n|---|---|---|---|---|')
    for points in (1_000, 10_000, 30_000):
        incremental, whole = _evaluation_seconds(ref, points)
        print(f'| {points * INTERVAL:,} | {points:,} | {incremental * 1e3:.3f} ms | '
              f'{incremental / (INTERVAL * step):.4%} | {whole * 1e3:.2f} ms |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
