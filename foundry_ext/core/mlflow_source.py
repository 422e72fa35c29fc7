"""Metric histories of an MLflow run, read through MLflow's own client (``MlflowClient``), never from its files.

A run is named as MLflow users write it: ``runs:/<run_id>`` or the run's name (``run_name``; Composer's
``MLFlowLogger`` uses the Trainer's ``run_name``). The tracking store is the ``tracking_uri`` given, else
``MLFLOW_TRACKING_URI``: a local database (``sqlite:///mlflow.db``, relative to the working folder), a
``file:`` store, or a server (``http://host:5000``, ``databricks``). Every metric comes back as
``{key: (steps, values)}``, sorted by step, as :func:`foundry_ext.core.metrics_io.read_metrics` reads JSONL, so
the LR series is found the same way (:func:`foundry_ext.core.metric_names.find_lr_key`).

Two differences from the ``jsonl`` logger's file, both from how runs are logged:

- A step logged twice (a resumed run) keeps its latest value, as in JSONL; MLflow keeps every entry, so the
  latest is the one with the latest timestamp.
- Composer's ``MLFlowLogger`` skips a value equal to the metric's previous one for up to
  ``log_duplicated_metric_every_n_steps`` steps (default 100), so a constant stretch (the stable phase of an LR
  schedule) has one point per 100 steps. Set it to 1 (as ``make demo MLFLOW=1`` does) to keep every step.

A name shared by several runs reads the newest, with a warning that lists the others' ids. Bad input raises
:class:`~foundry_ext.core.errors.ConfigError`: an unknown run id or name, a store that does not exist, a server
that does not answer within :data:`CONNECT_TIMEOUT_S` (MLflow's client would retry for minutes:
``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` defaults to 7 with exponential backoff).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence
from urllib.parse import urlparse

import numpy as np

from foundry_ext.core.errors import fail

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from foundry_ext.core.metrics_io import Series

log = logging.getLogger(__name__)

__all__ = ['CONNECT_TIMEOUT_S', 'RUNS_PREFIX', 'TRACKING_URI_ENV', 'MlflowRun', 'find_run', 'read_history',
           'tracking_uri']

RUNS_PREFIX = 'runs:/'
TRACKING_URI_ENV = 'MLFLOW_TRACKING_URI'
CONNECT_TIMEOUT_S = 5.0
_FIX_URI = f'check --tracking-uri (or {TRACKING_URI_ENV})'
# MLflow's SQL store writes +-inf as +-the largest double; read them back as infinities.
_INF_STORED = np.finfo(np.float64).max


@dataclass(frozen=True)
class MlflowRun:
    """An MLflow run found in a tracking store.

    Args:
        run_id (str): The run's id.
        name (str): Its ``run_name``.
        tracking_uri (str): The store it is in.
        metric_keys (tuple[str, ...]): The metrics it logged, sorted.
    """

    run_id: str
    name: str
    tracking_uri: str
    metric_keys: tuple[str, ...]

    @property
    def label(self) -> str:
        """``runs:/<id> (<name>)``: how reports name the run."""
        return f'{RUNS_PREFIX}{self.run_id} ({self.name})'


def tracking_uri(uri: Optional[str] = None) -> Optional[str]:
    """The tracking store to read: ``uri`` if given, else ``MLFLOW_TRACKING_URI``, else None."""
    return uri or os.environ.get(TRACKING_URI_ENV) or None


def _check_store(uri: str) -> None:
    """Fails early on a local store that does not exist (MLflow would create an empty one) or a dead server."""
    parsed = urlparse(uri)
    if uri.startswith('databricks'):
        return  # MLflow's client resolves the workspace from the profile
    if parsed.scheme == 'sqlite':
        path = uri[len('sqlite:///'):] if uri.startswith('sqlite:///') else ''
        if path and path != ':memory:' and not Path(path).is_file():
            fail(f'tracking URI {uri}: no database at {Path(path).resolve()} (a relative path is read from the '
                 f'working folder, {Path.cwd()}); {_FIX_URI}.')
    elif parsed.scheme in ('', 'file'):
        path = parsed.path if parsed.scheme == 'file' else uri
        if not Path(path).is_dir():
            fail(f'tracking URI {uri}: no MLflow file store at {Path(path).resolve()}; {_FIX_URI}.')
    elif parsed.scheme in ('http', 'https'):
        import requests
        try:  # any HTTP answer, even an error status, shows that the server is there
            requests.get(uri.rstrip('/') + '/health', timeout=CONNECT_TIMEOUT_S)
        except requests.ConnectionError as err:
            fail(f'tracking URI {uri}: cannot connect to an MLflow server within {CONNECT_TIMEOUT_S:g} s '
                 f'({type(err).__name__}). Start it (e.g. `mlflow server --backend-store-uri sqlite:///mlflow.db '
                 f'--port {parsed.port or 5000}`) or {_FIX_URI}.')
        except requests.RequestException:
            pass  # connected but slow or odd: MLflow's client reports what goes wrong


def _client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH as artifact_root

    _check_store(uri)
    made = not os.path.exists(artifact_root)
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # opens the store: a bad scheme or an old schema fails here
    except MlflowException as err:
        fail(f'tracking URI {uri}: MLflow cannot open it ({err.message}); {_FIX_URI}.')
    finally:
        if made:  # opening a SQL store makes ./mlruns (its default artifact root); reading leaves no trace
            with contextlib.suppress(OSError):
                os.rmdir(artifact_root)
    return client


def _quoted(name: str) -> str:
    for quote in ("'", '"'):
        if quote not in name:
            return f'{quote}{name}{quote}'
    fail(f'MLflow run name {name!r} holds both quote characters, so it cannot be searched for; give '
         f'{RUNS_PREFIX}<run_id> instead.')


def _by_name(client: MlflowClient, name: str, uri: str) -> Run:
    experiments = [e.experiment_id for e in client.search_experiments(max_results=1000)]
    runs = list(client.search_runs(experiments, filter_string=f'attributes.run_name = {_quoted(name)}',
                                   max_results=100, order_by=['attributes.start_time DESC'])) if experiments else []
    if len(runs) > 1:  # the newest, as Composer's MLFlowLogger(resume=True) picks a run by name
        log.warning('%d MLflow runs in %s are named %r; reading the newest, %s%s. Give %s<run_id> for another: %s.',
                    len(runs), uri, name, RUNS_PREFIX, runs[0].info.run_id, RUNS_PREFIX,
                    ', '.join(r.info.run_id for r in runs[1:]))
    if not runs:
        others = sorted({r.info.run_name for r in client.search_runs(experiments, max_results=20)}) if experiments \
            else []
        fail(f'{name!r} is not a metrics file or folder, and no MLflow run in {uri} is named so (runs there: '
             f'{", ".join(others) or "none"}). Fix the path or the run name, give {RUNS_PREFIX}<run_id>, '
             f'or {_FIX_URI}.')
    return runs[0]


def find_run(run: str, uri: str) -> MlflowRun:
    """Finds a run given as ``runs:/<run_id>`` or by its name in the store at ``uri``.

    Raises:
        ConfigError: If the store cannot be opened or reached, or no run matches.
    """
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    if run.startswith(RUNS_PREFIX):
        run_id = run[len(RUNS_PREFIX):].strip('/')
        if not run_id or '/' in run_id:
            fail(f'{run}: give a run as {RUNS_PREFIX}<run_id>, with no artifact path after the id.')
        try:
            found = client.get_run(run_id)
        except MlflowException as err:
            if err.error_code not in ('RESOURCE_DOES_NOT_EXIST', 'INVALID_PARAMETER_VALUE'):
                raise
            fail(f'{run}: no run with id {run_id!r} in {uri}. Copy the id from the run page of `mlflow ui` '
                 f'(or give the run name), or {_FIX_URI}.')
    else:
        found = client.get_run(_by_name(client, run, uri).info.run_id)
    return MlflowRun(found.info.run_id, found.info.run_name, uri, tuple(sorted(found.data.metrics)))


def read_history(run: MlflowRun, keys: Optional[Sequence[str]] = None) -> dict[str, Series]:
    """The metric histories of ``run`` (every metric, or those in ``keys``) as ``{key: (steps, values)}``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=run.tracking_uri)  # find_run checked the store
    series = {}
    for key in keys if keys is not None else run.metric_keys:
        latest: dict[int, float] = {}
        for metric in sorted(client.get_metric_history(run.run_id, key), key=lambda m: m.timestamp):
            latest[int(metric.step)] = metric.value
        steps = np.array(sorted(latest), dtype=np.int64)
        values = np.array([latest[s] for s in steps.tolist()], dtype=np.float64)
        stored_inf = np.abs(values) == _INF_STORED
        values[stored_inf] = np.copysign(np.inf, values[stored_inf])
        series[key] = (steps, values)
    return series
