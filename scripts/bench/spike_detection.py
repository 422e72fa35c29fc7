"""Benchmark loss-spike detection: labelled synthetic suites, class invariants, real curves, and speed.

1. **Synthetic suites** (:func:`foundry_ext.spikes.synthetic.benchmark_suite`): every noise family (Gaussian,
   Student-t 5 and 3, AR(1)) in dense (per-step) and sparse (every 10-50 steps) sampling, with batch outliers and
   schedule-driven level changes. The detector's settings were tuned on ``TUNING_SEEDS``; the default ``--seeds``
   are the held-out ``REPORT_SEEDS``. Dense curves get the defaults, sparse ones the eval-stream defaults (as
   ``analyze-loss`` gives a ``metrics/eval/...`` key). Baselines in the same run: re-implementations of
   LLM-Foundry's ``kill_loss_spike`` rule and an OLMo-core-style 6-sigma rule.
2. **Invariants** over ``--invariant-curves`` stress curves (:func:`foundry_ext.spikes.invariants.stress_cases`).
3. **Real curves** under ``data/`` (modded-nanogpt per-step logs; the held-out lr-scheduling and MultiPowerLaw
   curves): events per 10k steps by kind, batch outliers, and runs whose outliers recur at the same steps.
4. **Speed**: a 1M-step series through the vectorised offline path, and the online path per point.

Example::

    python scripts/bench/spike_detection.py --curves-per-cell 120 --invariant-curves 10000
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from foundry_ext.core.metrics_io import read_metric
from foundry_ext.spikes.config import EVAL_DETECTOR_DEFAULTS
from foundry_ext.spikes.detector import SpikeDetector
from foundry_ext.spikes.evaluation import (REPORT_SEEDS, TUNING_SEEDS, evaluate, evaluate_real, format_markdown,
                                           format_real_markdown, kill_loss_spike_rule, olmo_sigma_rule, spike_detector)
from foundry_ext.spikes.events import EVENT_KINDS
from foundry_ext.spikes.invariants import invariant_violations, stress_cases
from foundry_ext.spikes.offline import run_detector
from foundry_ext.spikes.synthetic import NOISE_FAMILIES, SAMPLINGS, make_curve, random_labeled_suite

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
# Each real set: its folder under data/ and the pattern of its CSVs (step,loss[,...]).
REAL = {'modded-nanogpt': '*.csv', 'lr-scheduling': '*.csv', 'multipowerlaw': 'csv_*/*.csv'}


def synthetic(seeds: list[int], per_cell: int) -> None:
    detectors = {'dense': spike_detector(), 'sparse': spike_detector(**EVAL_DETECTOR_DEFAULTS)}
    cells, names, olmo, kill = [], [], [], []
    for family in NOISE_FAMILIES:
        for sampling in SAMPLINGS:
            curves = [c for seed in seeds for c in random_labeled_suite(per_cell, seed, family=family,
                                                                        sampling=sampling)]
            cells.append(evaluate('SpikeDetector', detectors[sampling], curves))
            names.append(f'{family}, {sampling}')
            olmo.append(evaluate('OLMo-core rule (6 sigma over 128)', olmo_sigma_rule, curves, classifies=False))
            kill.append(evaluate('kill_loss_spike rule (2x mean of 100, 5 steps)', kill_loss_spike_rule, curves,
                                 classifies=False))
    families = [sum(cells[2 * i + 1:2 * i + 2], cells[2 * i]) for i in range(len(NOISE_FAMILIES))]
    total = sum(cells[1:], cells[0])
    held_out = 'held out' if not set(seeds) & set(TUNING_SEEDS) else 'INCLUDES TUNING SEEDS'
    print(f'## Synthetic suites: seeds {seeds} ({held_out}; settings tuned on {list(TUNING_SEEDS)}), {per_cell} curves '
          f'per family and sampling per seed, {sum(sum(r.labels.values()) for r in cells)} labelled events, '
          f'{total.outliers} injected outliers\n')
    print('Cells per kind: classification accuracy (detection rate).\n')
    print(format_markdown(cells, names) + '\n')
    print('Per noise family (dense and sparse together), and every curve for the baselines:\n')
    print(format_markdown([*families, total, sum(olmo[1:], olmo[0]), sum(kill[1:], kill[0])],
                          [*NOISE_FAMILIES, 'SpikeDetector, all', olmo[0].name, kill[0].name]) + '\n')
    worst = min(r.accuracy(k) for r in families for k in EVENT_KINDS)
    print(f'Lowest accuracy of a kind in a noise family: {100 * worst:.1f}%; false alarms per 10k clean points '
          f'{total.false_alarms_per_10k:.2f} (schedule curves {total.schedule_alarms_per_10k:.2f}); injected outliers '
          f'reported as spikes: {total.outliers_as_spikes}.\n')


def invariants(count: int, seed: int) -> None:
    start, broken, events = time.perf_counter(), [], 0
    for steps, losses, kwargs in stress_cases(count, seed):
        detector = SpikeDetector(**kwargs)
        found = [e for _, e in run_detector(detector, steps, losses)]
        events += len(found)
        broken += invariant_violations(found, steps, detector.config)
    print(f'## Invariants\n\n{count} stress curves (seed {seed}), {events} events: {len(broken)} violations '
          f'({time.perf_counter() - start:.0f}s).' + ''.join(f'\n- {b}' for b in broken[:20]) + '\n')


def real(data: Path) -> None:
    reports = []
    for folder, pattern in REAL.items():
        series = {(f'{p.parent.name.removeprefix("csv_")}m-{p.stem}' if p.parent.name.startswith('csv_') else p.stem):
                  read_metric(p, 'loss') for p in sorted((data / folder).glob(pattern))}
        reports.append(evaluate_real(folder, series))
    print('## Real curves\n')
    print(format_real_markdown(reports) + '\n')
    for report in reports:
        for run, events in report.events.items():
            for e in events:
                print(f'- {report.name}/{run}: {e.kind} ({e.status}) onset {e.onset_step}, detected {e.detect_step}, '
                      f'height {e.height:+.1%}, recovered {e.recovered_step}')
        for a, b, shared, fewer in report.shared_outliers():
            print(f'- {report.name}: {a} and {b} share {shared} of {fewer} outlier steps')
    print()


def speed() -> None:
    steps, losses, _ = make_curve(1_000_000, noise=0.02, seed=0, family='t3')
    start = time.perf_counter()
    run_detector(SpikeDetector(), steps, losses)
    offline = time.perf_counter() - start
    detector = SpikeDetector()
    start = time.perf_counter()
    for step, loss in zip(steps[:20_000].tolist(), losses[:20_000].tolist()):
        detector.update(step, loss)
    online = (time.perf_counter() - start) / 20_000
    print(f'## Speed\n\n1M-step series (Student-t 3 noise), offline (vectorised): {offline:.2f}s; online: '
          f'{1e6 * online:.0f} us per point ({online * 1e6:.0f}s for 1M points).\n')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seeds', default=','.join(map(str, REPORT_SEEDS)),
                        help=f'suite seeds (default: {REPORT_SEEDS}; tuned on {TUNING_SEEDS})')
    parser.add_argument('--curves-per-cell', type=int, default=120, help='curves per family and sampling and seed')
    parser.add_argument('--invariant-curves', type=int, default=10_000, help='stress curves for the invariants')
    parser.add_argument('--data', type=Path, default=REPO / 'data', help='folder of the vendored real curves')
    parser.add_argument('--only', choices=['synthetic', 'invariants', 'real', 'speed'], action='append',
                        help='run only these parts (repeatable; default: all)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    parts = args.only or ['synthetic', 'invariants', 'real', 'speed']
    seeds = [int(s) for s in args.seeds.split(',')]
    if 'synthetic' in parts:
        synthetic(seeds, args.curves_per_cell)
    if 'invariants' in parts:
        invariants(args.invariant_curves, seeds[0])
    if 'real' in parts:
        real(args.data)
    if 'speed' in parts:
        speed()
    return 0


if __name__ == '__main__':
    sys.exit(main())
