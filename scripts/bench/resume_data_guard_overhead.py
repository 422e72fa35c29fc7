"""Step-time overhead of ``resume_data_guard`` on the demo recipe, A/B in one training run.

Trains ``yamls/wsd.yaml`` once; after ``--warmup`` batches the guard is switched on and off in blocks of
``--block`` batches (``foundry_ext.testing.benchmarking.in_run_ab``). A step is the time between two ``batch_end``
events, data loading included, as wall time and as this process's CPU time. The CPU time and the time spent
inside the guard's own event handlers are what to read on a shared machine, where other processes' load makes
wall-time ratios noisy.

Example::

    python scripts/bench/resume_data_guard_overhead.py --pairs 150 --block 1
"""

from __future__ import annotations

import argparse
import logging
import sys

from foundry_ext.callbacks.resume_data_guard import ResumeDataGuard
from foundry_ext.testing.benchmarking import ab_report, in_run_ab


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--yaml', default='yamls/wsd.yaml', help='the recipe to train (a wsd schedule)')
    parser.add_argument('--pairs', type=int, default=150, help='on/off block pairs (default: 150)')
    parser.add_argument('--block', type=int, default=1, help='batches per block (default: 1)')
    parser.add_argument('--warmup', type=int, default=10, help='batches before the first block (default: 10)')
    parser.add_argument('overrides', nargs='*', help='Foundry-style YAML overrides, e.g. max_seq_len=256')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    steps = in_run_ab(args.yaml, ResumeDataGuard(), args.pairs, args.block, args.warmup, args.overrides)
    print(f'resume_data_guard at its defaults, after {args.warmup} warmup batches:')
    print(ab_report(steps, args.block))
    return 0


if __name__ == '__main__':
    sys.exit(main())
