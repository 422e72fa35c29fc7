"""Sheets of real loss events to label by eye: a random sample of what the detector reports on the vendored curves.

Draws, for a seeded random sample of the batch outliers (and every other event) that ``SpikeDetector`` finds in
``data/<set>/*.csv``, the loss around the event with the detector's baseline (dashed) and the points above the
threshold (circled), numbered. The labels given by looking at them are in ``docs/loss_spikes.md``.

Example::

    python scripts/bench/spike_label_sheet.py --set modded-nanogpt --sample 40 --out docs/spike_labels_outliers.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from foundry_ext.core.metrics_io import read_metric
from foundry_ext.spikes.detector import BATCH_OUTLIER
from foundry_ext.spikes.offline import detect_events
from foundry_ext.spikes.plots import plot_event_windows

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--set', default='modded-nanogpt', help='folder under data/ (default: modded-nanogpt)')
    parser.add_argument('--sample', type=int, default=40, help='outliers to sample (default: 40)')
    parser.add_argument('--seed', type=int, default=0, help='sampling seed (default: 0)')
    parser.add_argument('--out', type=Path, default=REPO / 'docs' / 'spike_labels_outliers.png', help='PNG to write')
    args = parser.parse_args(argv)
    found = []
    for path in sorted((REPO / 'data' / args.set).glob('*.csv')):
        series = read_metric(path, 'loss')
        found += [(path.stem, series, e) for e in detect_events(*series)]
    outliers = [f for f in found if f[2].kind == BATCH_OUTLIER]
    others = [f for f in found if f[2].kind != BATCH_OUTLIER]
    picked = np.random.default_rng(args.seed).choice(len(outliers), min(args.sample, len(outliers)), replace=False)
    windows = others + [outliers[i] for i in sorted(picked)]
    for number, (run, _, event) in enumerate(windows, 1):
        print(f'{number}. {run}: {event.kind} at {event.onset_step} ({event.above_steps}), height {event.height:+.1%}')
    print(f'{len(outliers)} outliers and {len(others)} other events in {args.set}; sheet: '
          f'{plot_event_windows([(r[:28], s, e) for r, s, e in windows], args.out)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
