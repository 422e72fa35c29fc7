"""Reading the metric series of a run: JSON Lines from the ``jsonl`` logger, CSV, or an MLflow run.

A RUN, as every command takes it (:func:`resolve_run`, :func:`read_run`):

- a metrics file: JSONL, one object per line with an integer ``step`` and any metric keys, e.g.
  ``{"step": 12, "loss/train/total": 5.51}``; or CSV, a header row with a step column and one column per metric;
- a run folder holding ``metrics.jsonl`` (what the ``jsonl`` logger writes: ``runs/<run_name>/metrics.jsonl``);
- an MLflow run, ``runs:/<run_id>`` or the run's name, in the tracking store given by ``tracking_uri`` or
  ``MLFLOW_TRACKING_URI`` (:mod:`foundry_ext.core.mlflow_source`).

In every source a later value for the same step replaces an earlier one (a resumed run logs the steps after its
last checkpoint again), and non-numeric values such as ``"nan"`` are read as floats.

CSV exports of W&B runs are read as they come. The step column may be ``step``, ``_step`` (a run's history, e.g.
``run.history().to_csv()``) or ``Step`` (a chart panel's "Export CSV"). A chart export names its columns
``<run name> - <metric>`` (plus ``__MIN`` / ``__MAX`` columns); when every column has the same ``<run name> - ``
prefix, the prefix is dropped, so Composer's keys (``loss/train/total``, ``lr-DecoupledAdamW/group0``) come back.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from foundry_ext.core.metric_names import find_lr_key
from foundry_ext.core.mlflow_source import RUNS_PREFIX, TRACKING_URI_ENV, MlflowRun, find_run, read_history
from foundry_ext.core.mlflow_source import tracking_uri as resolve_tracking_uri

log = logging.getLogger(__name__)

__all__ = ['LOSS_KEY', 'METRICS_NAME', 'STEP_COLUMNS', 'RunSource', 'Series', 'lr_series', 'read_metric',
           'read_metrics', 'read_run', 'resolve_run']

Series = tuple[np.ndarray, np.ndarray]
LOSS_KEY = 'loss/train/total'  # Composer's all-reduced training loss
METRICS_NAME = 'metrics.jsonl'  # the jsonl logger's file in a run folder
STEP_COLUMNS = ('step', '_step', 'Step')  # ours (and JSONL's key); W&B run history; W&B chart export
_WANDB_RUN_SEPARATOR = ' - '


def _csv_rows(path: Path) -> list[dict]:
    with path.open(newline='') as f:
        reader = csv.DictReader(f)
        columns = [c for c in reader.fieldnames or () if c and c not in STEP_COLUMNS]
        prefixes = {c.partition(_WANDB_RUN_SEPARATOR)[0] for c in columns if _WANDB_RUN_SEPARATOR in c}
        strip = len(prefixes) == 1 and all(_WANDB_RUN_SEPARATOR in c for c in columns)
        rows = []
        for row in reader:
            step = next((row[c] for c in STEP_COLUMNS if row.get(c) not in ('', None)), None)
            values = {(k.partition(_WANDB_RUN_SEPARATOR)[2] if strip else k): v for k, v in row.items()
                      if k and k not in STEP_COLUMNS and v not in ('', None)}  # pandas' index column has no name
            rows.append({'step': step, **values})
        return rows


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
        if row.get('step') is None:
            continue
        step = int(float(row['step']))
        for key, value in row.items():
            if key == 'step':
                continue
            try:
                latest.setdefault(key, {})[step] = float(value)
            except (TypeError, ValueError):
                continue  # e.g. text hyper-parameters logged alongside
    return {
        key: (np.array(sorted(by_step), dtype=np.int64), np.array([by_step[s] for s in sorted(by_step)]))
        for key, by_step in latest.items()
    }


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
        self._check_keys(keys, metrics)
        return metrics if keys is None else {key: metrics[key] for key in keys}

    def _check_keys(self, keys: Optional[Sequence[str]], available: Sequence[str]) -> None:
        from foundry_ext.core.errors import fail  # imports Foundry: only here, so the CLI starts fast
        for key in keys or ():
            if key not in available:
                fail(f'{self.label} has no metric {key!r}; it has {sorted(available)}. Pick one of those.')


def resolve_run(run: Union[str, Path], tracking_uri: Optional[str] = None) -> RunSource:
    """Finds a RUN: a metrics file, a run folder with ``metrics.jsonl``, or an MLflow run (``runs:/<id>``, name).

    Args:
        run (str | Path): The RUN argument. A path that exists is read as a file or folder; anything else is
            looked up as an MLflow run.
        tracking_uri (str, optional): MLflow tracking store; default ``MLFLOW_TRACKING_URI``.

    Raises:
        ConfigError: If nothing matches, or the tracking store cannot be opened or reached.
    """
    from foundry_ext.core.errors import fail  # imports Foundry: only here, so the CLI starts fast
    text = str(run)
    uri = resolve_tracking_uri(tracking_uri)
    if not text.startswith(RUNS_PREFIX):
        path = Path(text)
        if path.is_dir():
            if not (path / METRICS_NAME).is_file():
                fail(f'{path} is a folder without {METRICS_NAME}; give the metrics file (JSONL or CSV) itself, or '
                     f'the folder the jsonl logger wrote to.')
            path = path / METRICS_NAME
        if path.is_file():
            return RunSource(path.parent.name if path.name == METRICS_NAME else path.stem, str(path), path=path)
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
    """Reads one metric of a RUN, raising a :class:`~foundry_ext.core.errors.ConfigError` that lists the run's
    metrics if it is absent."""
    return read_run(run, tracking_uri, [key])[key]


def lr_series(metrics: dict[str, Series]) -> Optional[Series]:
    """The LR of the first param group as ``lr_monitor`` logs it (``lr-<Optimizer>/group0``), or None."""
    key = find_lr_key(metrics)
    return metrics[key] if key is not None else None
