"""Training through LLM-Foundry's ``train_from_yaml``, then a report of where the outputs went.

Before Foundry builds anything, the paths a user wrote are checked (a ``load_path`` that does not exist, a local
``save_folder`` that cannot be written), so that they fail as one :class:`~foundry_ext.core.errors.ConfigError`
naming the key, instead of deep inside Composer; and a run with ``autoresume: true`` gets the ``checkpoint_guard``
callback if its YAML does not name it (crash recovery: ``docs/crash_recovery.md``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from composer import Trainer
from composer.loggers import MLFlowLogger
from composer.utils import dist, format_name_with_dist, parse_uri

from foundry_ext.callbacks.jsonl_logger import JSONLLogger
from foundry_ext.commands.branch import find_checkpoints
from foundry_ext.core.composer_private import checkpoint_saver, local_save_folder, remote_save_folder
from foundry_ext.core.config import load_train_config
from foundry_ext.core.errors import fail
from foundry_ext.core.metric_names import LOSS_KEY
from foundry_ext.core.metrics_io import lr_series, read_metrics
from foundry_ext.core.plots import plot_lr_and_loss
from foundry_ext.spikes.rollback import read_manifest

log = logging.getLogger(__name__)

__all__ = ['check_paths', 'train', 'report_outputs']


def train(yaml_path: str, overrides: Optional[Sequence[str]] = None) -> Trainer:
    """Checks the YAML's paths (:func:`check_paths`), adds ``checkpoint_guard`` to a run with ``autoresume``, runs
    ``llmfoundry.command_utils.train_from_yaml`` and, on rank 0, reports the run's outputs."""
    overrides = list(overrides or [])
    cfg = load_train_config(yaml_path, overrides, warn_new_keys=False)  # Foundry refuses unknown keys itself
    check_paths(cfg)
    if cfg.get('autoresume') and 'checkpoint_guard' not in (cfg.get('callbacks') or {}):
        log.info('autoresume is on: adding the checkpoint_guard callback (crash recovery).')
        overrides.append('callbacks.checkpoint_guard={}')
    # Imported here: importing Foundry's training stack takes seconds and the CLI's other commands skip it.
    from llmfoundry.command_utils import train_from_yaml
    trainer = train_from_yaml(yaml_path, overrides)
    if dist.get_global_rank() == 0:
        print(report_outputs(trainer))
    return trainer


def check_paths(cfg: dict[str, Any]) -> None:
    """Raises a :class:`~foundry_ext.core.errors.ConfigError` for a local ``save_folder`` that cannot be written
    (it is created if missing) or a local ``load_path`` that does not exist and that the run would load, i.e.
    unless ``autoresume`` finds a checkpoint of its own."""
    run_name = cfg.get('run_name') or os.environ.get('RUN_NAME')  # as LLM-Foundry 0.22 picks it
    save_folder = cfg.get('save_folder')
    local_folder = None
    # Only a folder known now: without a run name Composer makes one up, and MLflow's placeholders come later.
    if save_folder and not parse_uri(save_folder)[0] and (run_name or '{run_name}' not in save_folder) and \
            '{' not in format_name_with_dist(save_folder, run_name or ''):
        local_folder = format_name_with_dist(save_folder, run_name or '')
        try:
            os.makedirs(local_folder, exist_ok=True)
            with tempfile.TemporaryFile(dir=local_folder):
                pass
        except OSError as err:
            fail(f'save_folder={save_folder!r} cannot be written ({err.strerror}: {err.filename}). Set save_folder to '
                 f'a folder this user can write, or fix the permissions of that one.')
    load_path = cfg.get('load_path')
    if not load_path or parse_uri(load_path)[0] or os.path.exists(load_path):
        return
    if cfg.get('autoresume') and local_folder is not None and os.path.lexists(
            os.path.join(local_folder, format_name_with_dist(_latest_filename(cfg), run_name or ''))):
        return  # autoresume loads the run's own newest checkpoint and ignores load_path
    fail(f'load_path={load_path!r} does not exist. Set load_path to a Composer checkpoint (a .pt file, or the folder '
         f'of a sharded one), or remove it to train from scratch.')


def _rollback_spans(trainer: Trainer) -> list[tuple[float, float, str]]:
    """Per rollback of ``loss_spike_monitor`` (``<save_folder>/rollbacks.json``): the steps it trained again."""
    folder = local_save_folder(trainer.state)
    entries = read_manifest(folder) if folder is not None else []
    return [(e['checkpoint']['batch'], e['decided_at_step'],
             f'rollback {e["index"] + 1}: onset {e["onset_step"]}, samples {e["skip"]["samples"][0]}-'
             f'{e["skip"]["samples"][1]} skipped') for e in entries]


def _latest_filename(cfg: dict[str, Any]) -> str:
    # LLM-Foundry 0.22's default for save_latest_filename (llmfoundry/command_utils/train.py).
    sharded = (cfg.get('fsdp_config') or {}).get('state_dict_type') == 'sharded'
    return cfg.get('save_latest_filename') or ('latest-sharded-rank{rank}' if sharded else 'latest-rank{rank}.pt')


def report_outputs(trainer: Trainer) -> str:
    """Writes an LR/loss plot next to the JSONL metrics, and returns a summary of where everything is."""
    lines = [f'foundry-ext: run {trainer.state.run_name!r} finished at {trainer.state.timestamp.batch}.']
    saver = checkpoint_saver(trainer)
    remote = None if saver is None else remote_save_folder(saver, trainer.state.run_name)
    if remote is not None:
        # Composer saves into a temporary local folder and uploads: the remote folder is where they are.
        lines.append(f'  checkpoints: uploaded to {remote}')
    elif saver is not None:
        folder = local_save_folder(trainer.state)
        try:
            found = find_checkpoints(folder)
        except ValueError:  # no folder, or no checkpoint in it
            found = {}
        newest = os.path.basename(found[max(found)]) if found else '-'
        lines.append(f'  checkpoints: {folder} ({len(found)} checkpoints, newest: {newest})')
    else:
        lines.append('  checkpoints: none (save_folder is unset)')
    for mlflow in (d for d in trainer.logger.destinations if isinstance(d, MLFlowLogger)):
        # Composer keeps the MLflow run it created in _run_id; the store is the logger's tracking_uri.
        lines.append(f'  MLflow: runs:/{mlflow._run_id} ({mlflow.run_name}) in {mlflow.tracking_uri}; browse it with '
                     f'`mlflow ui --backend-store-uri {mlflow.tracking_uri}`')
    jsonl = [d for d in trainer.logger.destinations if isinstance(d, JSONLLogger)]
    if not jsonl or jsonl[0].path is None:
        lines.append('  metrics: add `loggers: {jsonl: {path: ...}}` to the YAML to keep them on disk')
        return '\n'.join(lines)
    jsonl[0].flush()
    metrics_path = Path(jsonl[0].path)
    lines.append(f'  metrics: {metrics_path}')
    metrics = read_metrics(metrics_path)
    lr = lr_series(metrics)
    if lr is not None and LOSS_KEY in metrics:
        png = plot_lr_and_loss(lr, metrics[LOSS_KEY], metrics_path.with_name('lr_loss.png'),
                               title=trainer.state.run_name, spans=_rollback_spans(trainer))
        lines.append(f'  LR/loss plot: {png}')
    else:
        lines.append('  LR/loss plot: skipped (needs the lr_monitor callback and a training loss)')
    return '\n'.join(lines)
