"""Training through LLM-Foundry's ``train_from_yaml``, then a report of where the outputs went."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence

from composer import Trainer
from composer.utils import dist

from foundry_ext.callbacks.jsonl_logger import JSONLLogger
from foundry_ext.commands.branch import find_checkpoints
from foundry_ext.core.composer_private import checkpoint_saver, local_save_folder, remote_save_folder
from foundry_ext.core.metric_names import LOSS_KEY
from foundry_ext.core.metrics_io import lr_series, read_metrics
from foundry_ext.core.plots import plot_lr_and_loss

log = logging.getLogger(__name__)

__all__ = ['train', 'report_outputs']


def train(yaml_path: str, overrides: Optional[Sequence[str]] = None) -> Trainer:
    """Runs ``llmfoundry.command_utils.train_from_yaml`` and, on rank 0, reports the run's outputs."""
    # Imported here: importing Foundry's training stack takes seconds and the CLI's other commands skip it.
    from llmfoundry.command_utils import train_from_yaml
    trainer = train_from_yaml(yaml_path, list(overrides or []))
    if dist.get_global_rank() == 0:
        print(report_outputs(trainer))
    return trainer


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
                               title=trainer.state.run_name)
        lines.append(f'  LR/loss plot: {png}')
    else:
        lines.append('  LR/loss plot: skipped (needs the lr_monitor callback and a training loss)')
    return '\n'.join(lines)
