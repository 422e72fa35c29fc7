"""Command-line options that several ``foundry-ext`` commands share, defined once.

Use one as a parameter's type, e.g. ``tracking_uri: TrackingUri = None``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Optional

import typer

from foundry_ext.core.mlflow_source import RUNS_PREFIX, TRACKING_URI_ENV

log = logging.getLogger(__name__)

__all__ = ['RUN_HELP', 'TrackingUri']

RUN_HELP = (f'Run: a metrics JSONL/CSV file, a run folder with metrics.jsonl, or an MLflow run ({RUNS_PREFIX}<run_id> '
            'or its name; see --tracking-uri).')

TrackingUri = Annotated[Optional[str], typer.Option(
    '--tracking-uri', show_default=False,
    help=f'MLflow tracking store to read MLflow runs from (default: ${TRACKING_URI_ENV}): a database '
    '(sqlite:///runs/mlflow.db), a file store (file:./mlruns) or a server (http://host:5000).',
)]
