"""Step-time overhead of ``resume_guard`` (default settings) on the demo recipe, A/B in one training run.

Trains ``yamls/wsd.yaml`` once with a flat LR; after ``--warmup`` batches the guard is switched on and off in
blocks of ``--block`` batches (``foundry_ext.testing.benchmarking.in_run_ab``). With ``--block`` and ``--warmup``
multiples of the guard's ``monitor_interval`` (100), every "on" block contains exactly one optimizer-state
statistics pass, so the guard's time counts its periodic work at its real rate.

Example::

    python scripts/bench/resume_guard_overhead.py --pairs 4 --block 100
"""

from __future__ import annotations

import argparse
import logging
import sys

from foundry_ext.algorithms import ResumeGuard
from foundry_ext.testing.benchmarking import ab_report, in_run_ab


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--yaml', default='yamls/wsd.yaml', help='the recipe to train (a wsd schedule)')
    parser.add_argument('--pairs', type=int, default=4, help='on/off block pairs (default: 4)')
    parser.add_argument('--block', type=int, default=100, help='batches per block (default: 100)')
    parser.add_argument('--warmup', type=int, default=100, help='batches before the first block (default: 100)')
    parser.add_argument('overrides', nargs='*', help='Foundry-style YAML overrides')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    guard = ResumeGuard()
    steps = in_run_ab(args.yaml, guard, args.pairs, args.block, args.warmup, args.overrides)
    print(f'resume_guard at its defaults (monitor_interval={guard.monitor_interval}), after {args.warmup} warmup '
          f'batches:')
    print(ab_report(steps, args.block))
    return 0


if __name__ == '__main__':
    sys.exit(main())
