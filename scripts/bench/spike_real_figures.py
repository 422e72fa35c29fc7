"""Figures of the vendored real loss curves for ``docs/loss_spikes.md``: outliers recurring across runs.

Runs that read the same data in the same order (the 124M Muon record and the two ScaleShortcuts records: different
models; the ScaleUp1B records ``ad8d7ae5`` and ``c0078066``: another data order) overlaid with their batch
outliers, and the raster of all their outlier steps.
The single-run pictures come from ``foundry-ext analyze-loss data/<set>/<run>.csv --key loss -o <png>``.

Example::

    python scripts/bench/spike_real_figures.py --out docs/spike_recurring_outliers.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from foundry_ext.core.metrics_io import read_metric
from foundry_ext.spikes.detector import BATCH_OUTLIER
from foundry_ext.spikes.offline import detect_events
from foundry_ext.spikes.plots import plot_recurring_outliers

REPO = Path(__file__).resolve().parents[2]
SHARED_ORDER = ('2024-10-10_Muon-eb5659d0', '2024-11-10_ScaleShortcuts-4897c987', '2024-11-10_ScaleShortcuts-70a0ada6',
                '2024-10-20_ScaleUp1B-ad8d7ae5', '2024-10-20_ScaleUp1B-c0078066')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', type=Path, default=REPO / 'docs' / 'spike_recurring_outliers.png')
    parser.add_argument('--window', default='3300:3700', help='steps shown overlaid (default: 3300:3700)')
    parser.add_argument('--overlaid', type=int, default=3, help='runs overlaid in the window (default: the first 3)')
    args = parser.parse_args(argv)
    runs = []
    for name in SHARED_ORDER:
        series = read_metric(REPO / 'data' / 'modded-nanogpt' / f'{name}.csv', 'loss')
        runs.append((name, series, [e for e in detect_events(*series) if e.kind == BATCH_OUTLIER]))
    start, end = (int(v) for v in args.window.split(':'))
    print(plot_recurring_outliers(runs, args.out, (start, end), overlaid=args.overlaid))
    return 0


if __name__ == '__main__':
    sys.exit(main())
