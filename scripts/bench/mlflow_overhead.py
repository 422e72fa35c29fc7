"""What logging the demo to a local MLflow SQLite store costs: start-up per run and time per step.

Both sides train ``yamls/wsd.yaml`` with its ``jsonl`` logger and no evaluation; B also has the ``mlflow`` logger of
``make demo MLFLOW=1`` (Composer's ``MLFlowLogger``) writing to a SQLite database, A has none.

1. Start-up: whole ``train_from_yaml`` runs of ``--startup-batches`` batches (build, fit, close), A and B
   alternating, into a new database each time (``fresh``: MLflow creates its schema) and into one database that
   already exists (``existing``: what every run after the first one pays). Prints the median extra seconds of B.
2. Per step: :func:`foundry_ext.testing.benchmarking.paired_step_times` over ``--batches`` batches, ``--pairs``
   alternating pairs. Prints the ratio B / A of median step times.

Example::

    python scripts/bench/mlflow_overhead.py --pairs 5 --batches 60
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf as om

from foundry_ext.testing.benchmarking import paired_step_times

REPO = Path(__file__).resolve().parents[2]
# As `make demo MLFLOW=1` adds it (the Makefile's MLFLOW_LOGGER); tracking_uri is set per run below.
MLFLOW_LOGGER = {'experiment_name': 'foundry-ext', 'log_system_metrics': False,
                 'log_duplicated_metric_every_n_steps': 1}


def _configs(demo_yaml: str, out: Path) -> tuple[str, str]:
    """A: the demo (its jsonl logger only); B: the demo with ``make demo MLFLOW=1``'s mlflow logger."""
    without = om.load(demo_yaml)
    without.eval_interval = 0  # no evaluation; the eval loader stays (Foundry's mlflow logger needs one)
    without.save_folder = None
    with_mlflow = without.copy()
    with_mlflow.loggers.mlflow = MLFLOW_LOGGER
    paths = (str(out / 'without_mlflow.yaml'), str(out / 'with_mlflow.yaml'))
    om.save(without, paths[0])
    om.save(with_mlflow, paths[1])
    return paths


def _run_seconds(yaml_path: str, overrides: list[str]) -> float:
    from llmfoundry.command_utils import train_from_yaml

    start = time.perf_counter()
    train_from_yaml(yaml_path, overrides).close()
    return time.perf_counter() - start


def _startup(a: str, b: str, out: Path, batches: int, pairs: int, fresh: bool) -> list[float]:
    extra = []
    for i in range(pairs):
        seconds = {}
        for side in ('ab' if i % 2 == 0 else 'ba'):
            db = out / (f'fresh{i}{side}.db' if fresh else 'existing.db')
            overrides = [f'max_duration={batches}ba', 'python_log_level=warn', 'console_log_interval=100000ba',
                         f'variables.run_dir={out}/run', f'loggers.mlflow.tracking_uri=sqlite:///{db}']
            seconds[side] = _run_seconds(a if side == 'a' else b, overrides if side == 'b' else overrides[:-1])
        extra.append(seconds['b'] - seconds['a'])
        logging.info('start-up pair %d (%s database): A %.2f s, B %.2f s', i + 1, 'new' if fresh else 'existing',
                     seconds['a'], seconds['b'])
    return extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--yaml', default=str(REPO / 'yamls' / 'wsd.yaml'))
    parser.add_argument('--pairs', type=int, default=5, help='A/B pairs for each measurement (default: 5)')
    parser.add_argument('--batches', type=int, default=60, help='batches per step-time run (default: 60)')
    parser.add_argument('--startup-batches', type=int, default=2, help='batches per start-up run (default: 2)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(message)s')
    logging.getLogger().setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        os.chdir(out)  # MLflow's SQLite store makes ./mlruns (its default artifact root) in the working folder
        a, b = _configs(args.yaml, out)
        (out / 'run').mkdir()
        (out / 'existing.db').unlink(missing_ok=True)
        _run_seconds(b, ['max_duration=1ba', f'variables.run_dir={out}/run',  # warm caches, create the database
                         f'loggers.mlflow.tracking_uri=sqlite:///{out}/existing.db'])
        fresh = _startup(a, b, out, args.startup_batches, args.pairs, fresh=True)
        existing = _startup(a, b, out, args.startup_batches, args.pairs, fresh=False)
        run = [f'max_duration={args.batches}ba', 'python_log_level=warn', 'console_log_interval=100000ba',
               f'variables.run_dir={out}/run']
        steps = paired_step_times(a, run, b, [*run, f'loggers.mlflow.tracking_uri=sqlite:///{out}/existing.db'],
                                  pairs=args.pairs)
    print(f'start-up, new database: B - A median {statistics.median(fresh):+.2f} s '
          f'(pairs: {", ".join(f"{s:+.2f}" for s in fresh)})')
    print(f'start-up, existing database: B - A median {statistics.median(existing):+.2f} s '
          f'(pairs: {", ".join(f"{s:+.2f}" for s in existing)})')
    print(steps.summary('jsonl only', 'jsonl + mlflow (SQLite)'))
    print('ratios per pair:', ', '.join(f'{r:.4f}' for r in steps.ratios))
    return 0


if __name__ == '__main__':
    sys.exit(main())
