"""Reading metric series that runs export: JSON Lines from the ``jsonl`` logger, or CSV.

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
from pathlib import Path
from typing import Optional, Union

import numpy as np

from foundry_ext.core.metric_names import LOSS_KEY, STEP_KEYS, find_lr_key

log = logging.getLogger(__name__)

__all__ = ['LOSS_KEY', 'Series', 'lr_series', 'read_metrics', 'read_metric']

Series = tuple[np.ndarray, np.ndarray]


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
    """Reads one metric, raising a ``KeyError`` that lists the available keys if it is absent."""
    metrics = read_metrics(path)
    if key not in metrics:
        raise KeyError(f'{path} has no metric {key!r}; it has {sorted(metrics)}.')
    return metrics[key]


def lr_series(metrics: dict[str, Series]) -> Optional[Series]:
    """The LR of the first param group as ``lr_monitor`` logs it (``lr-<Optimizer>/group0``), or as another trainer
    names it (:func:`~foundry_ext.core.metric_names.find_lr_key`), or None."""
    key = find_lr_key(metrics)
    return metrics[key] if key is not None else None
