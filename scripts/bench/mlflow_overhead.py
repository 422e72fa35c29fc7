"""What logging the demo to a local MLflow SQLite store costs: start-up per run and work per step.

Both sides train ``yamls/wsd.yaml`` with its ``jsonl`` logger and no evaluation; B also has the ``mlflow`` logger of
``make demo MLFLOW=1`` (Composer's ``MLFlowLogger``, asynchronous) writing to a SQLite database, A has none. Runs
of A and B alternate (AB, BA, ...) in one process, so imports are paid once, before the first pair.

1. Start-up: whole ``train_from_yaml`` runs (build, fit, close, which waits for MLflow's queue to drain) of
   ``--short`` batches, into a new database each time (``new``: MLflow creates its schema) and into one database
   that exists (``existing``: every later run). Prints the median extra wall seconds of B.
2. Per step, measured inside B's runs of ``--long`` batches, so that other jobs on a shared machine do not blur it
   the way they blur A/B step-time ratios: the wall time the training thread spends inside
   ``MLFlowLogger.log_metrics`` (it queues the values), and the CPU time of MLflow's logging threads (which
   write them to SQLite, competing with training for the CPU and the GIL; sampled from /proc every 0.2 s), per
   step, as fractions of B's step time over the same run. Wall-clock A/B step ratios are printed too.

Example::

    python scripts/bench/mlflow_overhead.py --pairs 3 --long 40
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from omegaconf import OmegaConf as om

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
# Streaming picks a free shared-memory name, then creates it: on a machine shared with other jobs another process
# can take the name in between (FileExistsError); such a run is started again.
_ATTEMPTS = 3
# As `make demo MLFLOW=1` adds it (the Makefile's MLFLOW_LOGGER); tracking_uri is set per run below.
MLFLOW_LOGGER = {'experiment_name': 'foundry-ext', 'log_system_metrics': False,
                 'log_duplicated_metric_every_n_steps': 1}


def _configs(demo_yaml: str, out: Path) -> tuple[str, str]:
    """A: the demo (its jsonl logger only); B: the demo with ``make demo MLFLOW=1``'s mlflow logger."""
    without = om.load(demo_yaml)
    without.eval_interval = 0  # no evaluation; the eval loader stays (Foundry's mlflow logger needs one)
    without.save_folder = None
    without.log_config = False  # Foundry prints the whole config at every run otherwise
    without.scheduler.t_warmup = '0ba'  # a schedule that fits runs of any length; the LR does not change the cost
    without.scheduler.t_decay = '1ba'
    with_mlflow = without.copy()
    with_mlflow.loggers.mlflow = MLFLOW_LOGGER
    paths = (str(out / 'without_mlflow.yaml'), str(out / 'with_mlflow.yaml'))
    om.save(without, paths[0])
    om.save(with_mlflow, paths[1])
    return paths


class _MlflowThreadsCpu:
    """CPU seconds of this process's MLflow logging threads (named MLflow...) over a block, read from /proc every
    ``period`` seconds by a sampler thread (they end when the run closes, taking their counters with them)."""

    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_until_stopped, name='cpu-sampler', daemon=True)

    def _sample(self) -> None:
        tick = os.sysconf('SC_CLK_TCK')
        for thread in threading.enumerate():
            if thread.name.startswith('MLflow') and thread.native_id is not None:
                try:
                    stat = Path(f'/proc/self/task/{thread.native_id}/stat').read_text().rsplit(')', 1)[1].split()
                except OSError:  # the thread ended
                    continue
                self.seen[thread.native_id] = (int(stat[11]) + int(stat[12])) / tick  # utime, stime

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def __enter__(self) -> _MlflowThreadsCpu:
        self._sample()
        self.before = dict(self.seen)  # threads of an earlier run count from here
        self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._sampler.join()

    @property
    def seconds(self) -> float:
        return sum(cpu - self.before.get(tid, 0.0) for tid, cpu in self.seen.items())


class _Inside:
    """Wall seconds the training thread spends inside MLFlowLogger.log_metrics while active."""

    def __init__(self) -> None:
        from composer.loggers import MLFlowLogger
        self.seconds = 0.0
        original = MLFlowLogger.log_metrics

        def timed(logger, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original(logger, *args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        MLFlowLogger.log_metrics = timed


def _run(yaml_path: str, out: Path, batches: int, db: Optional[Path],
         per_step: Optional[list] = None, inside: Optional[_Inside] = None) -> float:
    """Wall seconds of one whole run; ``db`` is B's database (None for A). With ``per_step``, appends
    (step seconds, seconds in log_metrics per step, MLflow threads' CPU seconds per step)."""
    from composer.loggers import InMemoryLogger
    from llmfoundry.command_utils import train_from_yaml

    overrides = [f'max_duration={batches}ba', 'python_log_level=warn', 'console_log_interval=100000ba',
                 f'variables.run_dir={out}/run', 'loggers.inmemory={}', 'callbacks.speed_monitor={time_unit: seconds}']
    if db is not None:
        overrides.append(f'loggers.mlflow.tracking_uri=sqlite:///{db}')
    for attempt in range(_ATTEMPTS):
        logged = inside.seconds if inside else 0.0
        with _MlflowThreadsCpu() as threads:
            start = time.perf_counter()
            try:
                trainer = train_from_yaml(yaml_path, overrides)
            except FileExistsError as err:  # Streaming's shared-memory name, taken meanwhile by another process
                if attempt == _ATTEMPTS - 1:
                    raise
                log.warning('retrying the run: %s', err)
                continue
            trainer.close()  # waits until MLflow's queue is written
            seconds = time.perf_counter() - start
        break
    log.info('%s, %d batches: %.1f s', 'B' if db is not None else 'A', batches, seconds)
    if per_step is not None:
        memory = next(d for d in trainer.logger.destinations if isinstance(d, InMemoryLogger))
        wall = [float(v) for _, v in memory.data['time/train']]
        step = statistics.median(b - a for a, b in zip(wall[5:], wall[6:]))  # after 5 warm-up batches
        per_step.append((step, ((inside.seconds - logged) / batches) if inside else 0.0, threads.seconds / batches))
    return seconds


def _pairs(a: str, b: str, out: Path, batches: int, pairs: int, db_for: Callable[[int], Path],
           steps: Optional[dict] = None, inside: Optional[_Inside] = None) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = {'a': [], 'b': []}
    for i in range(pairs):
        for side in ('ab' if i % 2 == 0 else 'ba'):
            per_step = None if steps is None else steps[side]
            runs[side].append(_run(a, out, batches, None, per_step) if side == 'a' else
                              _run(b, out, batches, db_for(i), per_step, inside))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--yaml', default=str(REPO / 'yamls' / 'wsd.yaml'))
    parser.add_argument('--pairs', type=int, default=4, help='A/B pairs for each measurement (default: 4)')
    parser.add_argument('--short', type=int, default=2, help='batches of a start-up run (default: 2)')
    parser.add_argument('--long', type=int, default=60, help='batches of a per-step run (default: 60)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(message)s')
    logging.getLogger().setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        os.chdir(out)  # MLflow's SQLite store makes ./mlruns (its default artifact root) in the working folder
        a, b = _configs(args.yaml, out)
        existing = out / 'existing.db'
        _run(b, out, 1, existing)  # imports, corpus, and the database the `existing` runs share
        inside = _Inside()
        new = _pairs(a, b, out, args.short, args.pairs, lambda i: out / f'new{i}.db')
        short = _pairs(a, b, out, args.short, args.pairs, lambda i: existing)
        steps: dict[str, list] = {'a': [], 'b': []}
        _pairs(a, b, out, args.long, args.pairs, lambda i: existing, steps, inside)
    lines = []
    for label, runs in (('start-up, new database', new), ('start-up, existing database', short)):
        extra = [b_ - a_ for a_, b_ in zip(runs['a'], runs['b'])]
        lines.append(f'{label}: B - A median {statistics.median(extra):+.2f} s '
                     f'(pairs: {", ".join(f"{x:+.2f}" for x in extra)}; A median {statistics.median(runs["a"]):.1f} s)')
    step_b = [s_ for s_, _, _ in steps['b']]
    queue = [q / s_ for s_, q, _ in steps['b']]
    threads = [c / s_ for s_, _, c in steps['b']]
    lines.append(f'per step, inside B: log_metrics {statistics.median(queue):.2%} of the step time '
                 f'(runs: {", ".join(f"{x:.2%}" for x in queue)}; '
                 f'{statistics.median(q for _, q, _ in steps["b"]) * 1e3:.2f} ms wall), MLflow threads\' CPU '
                 f'{statistics.median(threads):.2%} (runs: {", ".join(f"{x:.2%}" for x in threads)}; '
                 f'{statistics.median(c for _, _, c in steps["b"]) * 1e3:.2f} ms); '
                 f'median step {statistics.median(step_b) * 1e3:.1f} ms')
    ratios = [sb[0] / sa[0] for sa, sb in zip(steps['a'], steps['b'])]
    lines.append(f'per step, wall-clock B / A (median step time of each run): median {statistics.median(ratios):.3f} '
                 f'(pairs: {", ".join(f"{r:.3f}" for r in ratios)})')
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
