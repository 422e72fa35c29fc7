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

from foundry_ext.experiments.resume_spike import report_resume_spike_demo, run_resume_spike_demo

REPO = Path(__file__).resolve().parents[1]


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
    report, png = report_resume_spike_demo(runs, args.lr, args.resume_lr, args.out)
    print(report)
    print(f'plot: {png}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
