"""Reading metric series that runs export: JSON Lines from the ``jsonl`` logger, or CSV.

A *run* on disk is a metrics file or a folder holding ``metrics.jsonl`` (:func:`metrics_file`), optionally with the
run's training YAML (overrides merged) beside it as ``config.yaml``.

JSONL: one object per line with an integer ``step`` and any metric keys, e.g.
``{"step": 12, "loss/train/total": 5.51}``. CSV: a header row with a ``step`` column and one column
per metric. In both, a later row for the same step replaces an earlier one (a resumed run logs the
steps after its last checkpoint again), and non-numeric values such as ``"nan"`` are read as floats.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Optional, Union

import numpy as np

log = logging.getLogger(__name__)

__all__ = ['CONFIG_NAME', 'LOSS_KEY', 'METRICS_NAME', 'Series', 'lr_series', 'metrics_file', 'read_metrics',
           'read_metric']

Series = tuple[np.ndarray, np.ndarray]
LOSS_KEY = 'loss/train/total'  # Composer's all-reduced training loss
METRICS_NAME = 'metrics.jsonl'
CONFIG_NAME = 'config.yaml'


def metrics_file(path: Union[str, Path]) -> Path:
    """The metrics file of a run: ``path`` itself, or ``path/metrics.jsonl`` for a folder.

    Raises:
        FileNotFoundError: If there is no such file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_NAME
    if not path.is_file():
        raise FileNotFoundError(f'{path} does not exist; a run is a metrics file or a folder with {METRICS_NAME}.')
    return path


def _rows(path: Path) -> list[dict]:
    if path.suffix == '.csv':
        with path.open(newline='') as f:
            return [{k: v for k, v in row.items() if v not in ('', None)} for row in csv.DictReader(f)]
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


def read_metric(path: Union[str, Path], key: str) -> Series:
    """Reads one metric, raising a ``KeyError`` that lists the available keys if it is absent."""
    metrics = read_metrics(path)
    if key not in metrics:
        raise KeyError(f'{path} has no metric {key!r}; it has {sorted(metrics)}.')
    return metrics[key]


def lr_series(metrics: dict[str, Series]) -> Optional[Series]:
    """The LR of the first param group as ``lr_monitor`` logs it (``lr-<Optimizer>/group0``), or None."""
    keys = sorted(k for k in metrics if k.startswith('lr-') and k.endswith('/group0'))
    return metrics[keys[0]] if keys else None
