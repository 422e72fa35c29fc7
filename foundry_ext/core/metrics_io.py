"""Reading the metric series of a run: JSON Lines from the ``jsonl`` logger, CSV, or an MLflow run.

A RUN, as every command takes it (:func:`resolve_run`, :func:`read_run`, :func:`read_metric`):

- a metrics file: JSONL, one object per line with an integer ``step`` and any metric keys, e.g.
  ``{"step": 12, "loss/train/total": 5.51}``; or CSV, a header row with a step column and one column per metric;
- a run folder holding ``metrics.jsonl`` (what the ``jsonl`` logger writes: ``runs/<run_name>/metrics.jsonl``) or
  ``metrics.csv`` (:func:`metrics_file`), optionally with the run's training YAML (overrides merged) beside it as
  ``config.yaml``;
- an MLflow run, ``runs:/<run_id>`` or the run's name, in the tracking store given by ``tracking_uri`` or
  ``MLFLOW_TRACKING_URI`` (:mod:`foundry_ext.core.mlflow_source`).

Every source comes back as ``{key: (steps, values)}`` sorted by step; a later value for the same step replaces an
earlier one (a resumed run logs the steps after its last checkpoint again), and non-numeric values such as
``"nan"`` are read as floats. An empty CSV cell is a metric not logged at that step, not a NaN.

Exports of other trainers may name the step ``_step``, ``Step``, ``global_step``, ``iter`` or ``iteration``
(:data:`~foundry_ext.core.metric_names.STEP_KEYS`, the first found in a row). CSV exports of W&B runs are read as
they come: ``_step`` in a run's history (``run.history().to_csv()``, whose unnamed pandas index column is dropped),
``Step`` in a chart panel's "Export CSV". A chart export names its columns ``<run name> - <metric>`` (plus
``__MIN`` / ``__MAX`` columns); when every column has the same ``<run name> - `` prefix, the prefix is dropped, so
Composer's keys (``loss/train/total``, ``lr-DecoupledAdamW/group0``) come back.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from foundry_ext.core.errors import fail
from foundry_ext.core.metric_names import STEP_KEYS, find_lr_key
from foundry_ext.core.mlflow_source import RUNS_PREFIX, TRACKING_URI_ENV, MlflowRun, find_run, read_history
from foundry_ext.core.mlflow_source import tracking_uri as resolve_tracking_uri

log = logging.getLogger(__name__)

__all__ = ['CONFIG_NAME', 'METRICS_CSV', 'METRICS_NAME', 'RunSource', 'Series', 'lr_series', 'metrics_file',
           'read_metric', 'read_metrics', 'read_run', 'resolve_run']

Series = tuple[np.ndarray, np.ndarray]
METRICS_NAME = 'metrics.jsonl'  # the jsonl logger's file in a run folder
METRICS_CSV = 'metrics.csv'  # a run folder exported from another trainer
CONFIG_NAME = 'config.yaml'
_WANDB_RUN_SEPARATOR = ' - '


def metrics_file(path: Union[str, Path]) -> Path:
    """The metrics file of a run: ``path`` itself, or for a folder its ``metrics.jsonl`` (or ``metrics.csv``).

    Raises:
        FileNotFoundError: If there is no such file.
    """
    path = Path(path)
    if path.is_dir():
        path = next((path / name for name in (METRICS_NAME, METRICS_CSV) if (path / name).is_file()),
                    path / METRICS_NAME)
    if not path.is_file():
        raise FileNotFoundError(f'{path} does not exist; a run is a metrics file or a folder with {METRICS_NAME} '
                                f'(or {METRICS_CSV}).')
    return path


def _csv_rows(path: Path) -> list[dict]:
    with path.open(newline='') as f:
        reader = csv.DictReader(f)
        columns = [c for c in reader.fieldnames or () if c and c not in STEP_KEYS]
        prefixes = {c.partition(_WANDB_RUN_SEPARATOR)[0] for c in columns if _WANDB_RUN_SEPARATOR in c}
        strip = len(prefixes) == 1 and all(_WANDB_RUN_SEPARATOR in c for c in columns)
        return [{(k.partition(_WANDB_RUN_SEPARATOR)[2] if strip and k not in STEP_KEYS else k): v
                 for k, v in row.items() if k and v not in ('', None)}  # pandas' index column has no name
                for row in reader]


def _rows(path: Path) -> list[dict]:
    if path.suffix == '.csv':
        return _csv_rows(path)
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def read_metrics(path: Union[str, Path]) -> dict[str, Series]:
    """Reads every numeric metric of a JSONL or CSV file into ``{key: (steps, values)}``, sorted by step."""
    path = Path(path)
    latest: dict[str, dict[int, float]] = {}
    for row in _rows(path):
        step_key = next((k for k in STEP_KEYS if row.get(k) is not None), None)
        if step_key is None:
            continue
        step = int(float(row[step_key]))
        for key, value in row.items():
            if key == step_key:
                continue
            try:
                latest.setdefault(key, {})[step] = float(value)
            except (TypeError, ValueError):
                continue  # e.g. text hyper-parameters logged alongside
    return {
        key: (np.array(sorted(by_step), dtype=np.int64), np.array([by_step[s] for s in sorted(by_step)]))
        for key, by_step in latest.items()
    }


def _one_metric(path: Path, key: str) -> Optional[Series]:
    """``key`` of a well-formed file, in bulk; None if the file has no such column or rows."""
    if path.suffix == '.csv':
        with path.open(newline='') as f:
            header = next(csv.reader(f), [])
        if 'step' not in header or key not in header:
            return None
        with warnings.catch_warnings():  # a header without rows: no table, and the reader below says so
            warnings.simplefilter('ignore', UserWarning)
            table = np.loadtxt(path, delimiter=',', skiprows=1, usecols=(header.index('step'), header.index(key)),
                               dtype=np.float64, ndmin=2)
        steps, values = table[:, 0], table[:, 1]
    else:
        text = path.read_text()
        quoted = json.dumps(key)
        # Lines as the jsonl logger writes them ({"step": N, ..., "<key>": value, ...}) are read by one regular
        # expression; if it does not account for every occurrence of the key, the whole file is parsed as JSON.
        found = re.findall(r'^\{\s*"step"\s*:\s*(-?\d+)\s*,[^\n]*?' + re.escape(quoted) +
                           r'\s*:\s*("?)(-?[\w.+-]+)\2\s*[,}]', text, flags=re.M)
        if found and len(found) == text.count(quoted):
            steps = np.array([f[0] for f in found], dtype=np.float64)
            values = np.array([float(f[2]) for f in found])
        else:
            lines = re.sub(r'\n\s*(?=\n)', '', text.strip())  # no blank lines: one object per line
            rows = json.loads('[' + lines.replace('\n', ',') + ']') if lines else []
            pairs = [(row['step'], row[key]) for row in rows if row.get('step') is not None and row.get(key) is not None]
            if not pairs:
                return None
            steps, values = (np.array(column, dtype=np.float64) for column in zip(*pairs))
    if not len(steps):
        return None
    # Sorted by step; a later row for a step replaces an earlier one.
    order = np.argsort(steps, kind='stable')
    steps, values = steps[order].astype(np.int64), values[order]
    last = np.concatenate([steps[1:] != steps[:-1], [True]])
    return steps[last], values[last]


@dataclass(frozen=True)
class RunSource:
    """Where a RUN's metrics are: a metrics file, or an MLflow run.

    Args:
        name (str): Short name: the run folder's name, the file's stem, or the MLflow run name.
        label (str): How reports name it: the file's path, or ``runs:/<id> (<name>)``.
        path (Path, optional): The metrics file.
        mlflow (MlflowRun, optional): The MLflow run.
    """

    name: str
    label: str
    path: Optional[Path] = None
    mlflow: Optional[MlflowRun] = None

    def read(self, keys: Optional[Sequence[str]] = None) -> dict[str, Series]:
        """Every metric as ``{key: (steps, values)}`` sorted by step, or only those in ``keys``.

        Raises:
            ConfigError: If the run has no metric named in ``keys`` (the message lists those it has).
        """
        if self.mlflow is not None:
            self._check_keys(keys, self.mlflow.metric_keys)
            return read_history(self.mlflow, keys)
        metrics = read_metrics(self.path)
        if not metrics and not _rows(self.path):
            fail(f'{self.label} has no rows (an empty file, or a header only). Give a run that has logged metrics.')
        self._check_keys(keys, list(metrics))
        return metrics if keys is None else {key: metrics[key] for key in keys}

    def read_one(self, key: str) -> Series:
        """One metric; for a file, in bulk (quick on files of millions of rows: a CSV is parsed by numpy and JSON
        Lines in one piece; files that need the row-by-row rules, with empty cells or text values, fall back to
        them).

        Raises:
            ConfigError: If the run has no metric ``key`` (the message lists those it has).
        """
        if self.path is not None:
            try:
                found = _one_metric(self.path, key)
            except ValueError:  # an empty cell, a text value, a bad line: the general reader's rules apply
                found = None
            if found is not None:
                return found
        return self.read([key])[key]

    def beside(self, name: str) -> Optional[Path]:
        """The file ``name`` (e.g. ``config.yaml``) beside a run folder's metrics file, if it exists; None for a
        metrics file of another name and for an MLflow run."""
        if self.path is None or self.path.name not in (METRICS_NAME, METRICS_CSV):
            return None
        found = self.path.with_name(name)
        return found if found.is_file() else None

    def _check_keys(self, keys: Optional[Sequence[str]], available: Sequence[str]) -> None:
        for key in keys or ():
            if key not in available:
                fail(f'{self.label} has no metric {key!r}; it has {sorted(available)}. Pick one of those.')


def resolve_run(run: Union[str, Path], tracking_uri: Optional[str] = None) -> RunSource:
    """Finds a RUN: a metrics file, a run folder (:func:`metrics_file`), or an MLflow run (``runs:/<id>``, name).

    Args:
        run (str | Path): The RUN argument. A path that exists is read as a file or folder; anything else is
            looked up as an MLflow run.
        tracking_uri (str, optional): MLflow tracking store; default ``MLFLOW_TRACKING_URI``.

    Raises:
        ConfigError: If nothing matches, or the tracking store cannot be opened or reached.
    """
    text = str(run)
    uri = resolve_tracking_uri(tracking_uri)
    if not text.startswith(RUNS_PREFIX):
        path = Path(text)
        if path.is_dir() and not any((path / name).is_file() for name in (METRICS_NAME, METRICS_CSV)):
            fail(f'{path} is a folder without {METRICS_NAME} (or {METRICS_CSV}); give the metrics file (JSONL or CSV) '
                 f'itself, or the folder the jsonl logger wrote to.')
        if path.exists():
            path = metrics_file(path)
            return RunSource(path.parent.name if path.name in (METRICS_NAME, METRICS_CSV) else path.stem, str(path),
                             path=path)
        if uri is None:
            fail(f'{text}: no such file or folder. A RUN is a metrics file (JSONL or CSV), a folder with '
                 f'{METRICS_NAME}, or an MLflow run ({RUNS_PREFIX}<run_id> or its name) with --tracking-uri or '
                 f'{TRACKING_URI_ENV} set.')
    elif uri is None:
        fail(f'{text} is an MLflow run: give its tracking store with --tracking-uri or {TRACKING_URI_ENV} '
             f'(e.g. sqlite:///runs/mlflow.db).')
    found = find_run(text, uri)
    return RunSource(found.name, found.label, mlflow=found)


def read_run(run: Union[str, Path], tracking_uri: Optional[str] = None,
             keys: Optional[Sequence[str]] = None) -> dict[str, Series]:
    """Every metric of a RUN (file, run folder or MLflow run; see :func:`resolve_run`), or only ``keys``.

    Returns:
        dict[str, Series]: ``{key: (steps, values)}``, sorted by step, the same for every kind of source.
    """
    return resolve_run(run, tracking_uri).read(keys)


def read_metric(run: Union[str, Path], key: str, tracking_uri: Optional[str] = None) -> Series:
    """One metric of a RUN (:meth:`RunSource.read_one`): the same as ``read_run(run, tracking_uri)[key]``, quick on
    large files, and a :class:`~foundry_ext.core.errors.ConfigError` that lists the run's metrics if it is absent."""
    return resolve_run(run, tracking_uri).read_one(key)


def lr_series(metrics: dict[str, Series]) -> Optional[Series]:
    """The LR of the first param group as ``lr_monitor`` logs it (``lr-<Optimizer>/group0``), or as another trainer
    names it (:func:`~foundry_ext.core.metric_names.find_lr_key`), or None."""
    key = find_lr_key(metrics)
    return metrics[key] if key is not None else None
