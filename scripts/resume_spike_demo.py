"""Reproduce resume spikes on the demo recipe, without and with ``resume_guard``'s rewarm, and plot them.

Trains the demo (tiny MPT, CPU) with a decay to 0. Resumes the final checkpoint flat at each ``--resume-lr``,
once with ``on_mismatch: warn`` (the guard only reports) and once with ``on_mismatch: rewarm``. Prints the
spike measures as a markdown table and writes the plot. The runs are in
``foundry_ext.experiments.resume_spike``, the measures in ``foundry_ext.analysis.resume_spike``.

Example::

    python scripts/resume_spike_demo.py --lr 3e-2 --resume-lr 3e-2 1e-1
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from foundry_ext.analysis.plots import Curve
from foundry_ext.analysis.resume_spike import (Panel, format_reports, measure_spike, paired_difference,
                                               plot_resume_spike)
from foundry_ext.experiments.resume_spike import MODES, run_resume_spike_demo

REPO = Path(__file__).resolve().parents[1]
COLORS = {'main': 'tab:gray', 'warn': 'tab:red', 'rewarm': 'tab:blue'}
SHOWN_BEFORE = 60  # batches of the main run drawn before the resume


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--lr', type=float, default=3e-2, help="the main run's peak LR (default: 3e-2)")
    parser.add_argument('--resume-lr', type=float, nargs='+', default=[3e-2, 1e-1],
                        help='flat LR(s) after the resume (default: 3e-2 1e-1)')
    parser.add_argument('--main-batches', type=int, default=300, help='main run length; decays over its 2nd half')
    parser.add_argument('--resume-batches', type=int, default=100, help='batches after the resume (default: 100)')
    parser.add_argument('--run-dir', type=Path, default=REPO / 'runs' / 'resume-spike')
    parser.add_argument('--out', type=Path, default=REPO / 'docs' / 'resume_spike.png')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    logging.getLogger('foundry_ext').setLevel(logging.INFO)

    runs = run_resume_spike_demo(str(REPO / 'yamls' / 'wsd.yaml'), args.run_dir, lr=args.lr,
                                 resume_lrs=args.resume_lr, main_batches=args.main_batches,
                                 resume_batches=args.resume_batches)
    before = runs.losses['main'][1]
    start = runs.resume_batch - SHOWN_BEFORE

    def tail(series):
        steps, values = series
        return steps[steps >= start], values[steps >= start]

    reports, panels, paired = [], [], []
    for resume_lr in args.resume_lr:
        keys = [(resume_lr, mode) for mode in MODES]
        reports += [measure_spike(f'flat at {resume_lr:g}, {mode}', before, runs.losses[resume_lr, mode][1])
                    for mode in MODES]
        warn, rewarm = (runs.losses[resume_lr, mode][1] for mode in MODES)
        for lo, hi in ((0, 40), (40, 60)):
            mean, error = paired_difference(warn, rewarm, lo, hi)
            paired.append(f'flat at {resume_lr:g}: warn - rewarm over batches +{lo}..+{hi - 1}: '
                          f'{mean:+.3f} +- {error:.3f} (mean +- standard error, same batches)')
        labels = {'main': f'main run (peak {args.lr:g}, decay to 0)'} | {k: k[1] for k in keys}
        panels.append(
            Panel(f'resumed flat at lr={resume_lr:g}',
                  [Curve(labels[k], tail(runs.lrs[k]), color=COLORS[k if k == 'main' else k[1]]) for k in labels],
                  [Curve(labels[k], tail(runs.losses[k]), color=COLORS[k if k == 'main' else k[1]]) for k in labels]))
    png = plot_resume_spike(panels, runs.resume_batch, args.out,
                            title='Resume after a decay to 0, without (warn) and with rewarm: tiny MPT, demo corpus')
    print(format_reports(reports))
    print('\n'.join(paired))
    print(f'plot: {png}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
