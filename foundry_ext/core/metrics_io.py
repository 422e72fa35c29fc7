"""Reading metric series that runs export: JSON Lines from the ``jsonl`` logger, or CSV.

A *run* on disk is a metrics file or a folder holding ``metrics.jsonl`` (:func:`metrics_file`), optionally with the
run's training YAML (overrides merged) beside it as ``config.yaml``.

JSONL: one object per line with an integer ``step`` and any metric keys, e.g.
``{"step": 12, "loss/train/total": 5.51}``. CSV: a header row with a ``step`` column and one column
per metric. Exports of other trainers may name the step ``_step``, ``Step``, ``global_step``, ``iter`` or
``iteration`` (:data:`~foundry_ext.core.metric_names.STEP_KEYS`, the first found in a row). In both, a later row for the same step replaces an earlier one (a resumed run logs the
steps after its last checkpoint again), and non-numeric values such as ``"nan"`` are read as floats.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path
from typing import Optional, Union

import numpy as np

from foundry_ext.core.errors import ConfigError
from foundry_ext.core.metric_names import STEP_KEYS, find_lr_key

log = logging.getLogger(__name__)

__all__ = ['CONFIG_NAME', 'METRICS_NAME', 'Series', 'lr_series', 'metrics_file', 'read_metrics',
           'read_metric']

Series = tuple[np.ndarray, np.ndarray]
METRICS_NAME = 'metrics.jsonl'
METRICS_CSV = 'metrics.csv'  # a run folder exported from another trainer
CONFIG_NAME = 'config.yaml'


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


def read_metric(path: Union[str, Path], key: str) -> Series:
    """Reads one metric, raising a ``KeyError`` that lists the available keys if it is absent.

    Same result as ``read_metrics(path)[key]``, but quick on files of millions of rows: a CSV is parsed by numpy
    and JSON Lines in one piece; files that need the row-by-row rules (empty cells, text values) fall back to them.
    """
    path = Path(path)
    try:
        found = _one_metric(path, key)
    except ValueError:  # an empty cell, a text value, a bad line: the general reader's rules apply
        found = None
    if found is not None:
        return found
    metrics = read_metrics(path)
    if key not in metrics:
        raise ConfigError(f'{path} has no metric {key!r}; it has {sorted(metrics)}.')
    return metrics[key]


def _one_metric(path: Path, key: str) -> Optional[Series]:
    """``key`` of a well-formed file, in bulk; None if the file has no such column or rows."""
    if path.suffix == '.csv':
        with path.open(newline='') as f:
            header = next(csv.reader(f), [])
        if 'step' not in header or key not in header:
            return None
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


def lr_series(metrics: dict[str, Series]) -> Optional[Series]:
    """The LR of the first param group as ``lr_monitor`` logs it (``lr-<Optimizer>/group0``), or as another trainer
    names it (:func:`~foundry_ext.core.metric_names.find_lr_key`), or None."""
    key = find_lr_key(metrics)
    return metrics[key] if key is not None else None
