"""Saving a checkpoint at the end of every decay of the run's schedule: one finished model per budget.

Registered in ``llmfoundry_callbacks`` as ``budget_checkpoint``::

    callbacks:
      budget_checkpoint:
        folder: null        # default: <save_folder>/budgets
        hf_export: false    # also write a Hugging Face folder per budget (Foundry's HuggingFaceCheckpointer)

It reads the budgets from the run's scheduler (``wsd``: the end of its decay; ``wsd_s`` and
``cyclic_cosine``: each budget) and saves, with Composer's own checkpoint writer, a full checkpoint named
``budget{i}-{budget}{unit}-ba{batch}-rank{rank}.pt`` after the first batch whose timestamp reaches the
budget (exactly at the budget for ``ba`` units). With sharded checkpoints (``fsdp_config.state_dict_type:
sharded``) Composer names the folder of shards itself, ``ep{epoch}-ba{batch}/``; the manifest has the real
path either way. A manifest, ``budgets.json`` in the same folder, lists
budget, step, samples, tokens, train loss, the metrics of the evaluators that ran at that step
and the files. The manifest is also in the callback's checkpointed state, so it survives resume: a resumed run
rewrites ``budgets.json`` from the checkpoint's manifest (the budgets after the checkpoint are saved again as
training replays them). ``budgets.json`` is replaced atomically, never seen half written.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.utils import checkpoint, dist, format_name_with_dist, parse_uri

from foundry_ext.core.checkpoint_state import pack_state, unpack_state
from foundry_ext.core.composer_private import hf_export, local_save_folder
from foundry_ext.core.errors import ConfigError, choice, flag
from foundry_ext.core.jsonl import write_json
from foundry_ext.core.lifecycle import FitPhase, RunLifecycle
from foundry_ext.core.metric_names import BUDGET_PREFIX, LOSS_KEY
from foundry_ext.schedulers.compiled import compiled_schedule_of
from foundry_ext.schedulers.time_spec import current_time, timestamp_count

log = logging.getLogger(__name__)

__all__ = ['BudgetCheckpoint']

MANIFEST = 'budgets.json'
_NEVER = '1000000000ba'  # the HF checkpointer only saves when this callback asks it to


class BudgetCheckpoint(Callback):
    """Saves a checkpoint (and optionally a Hugging Face export) at each budget of the run's schedule.

    Args:
        folder (str, optional): Where to write; ``{run_name}`` is filled in. Default: ``<save_folder>/budgets``.
        hf_export (bool): Also export each budget's model with LLM-Foundry's ``HuggingFaceCheckpointer``
            into ``<folder>/hf/budget{i}-ba{batch}``. Default False.
        hf_precision (str): dtype of the Hugging Face export (``float32``, ``bfloat16``, ``float16``).
    """

    def __init__(self, folder: Optional[str] = None, hf_export: bool = False, hf_precision: str = 'float32') -> None:
        flag(hf_export, 'callbacks.budget_checkpoint.hf_export')
        choice(hf_precision, 'callbacks.budget_checkpoint.hf_precision', ('float32', 'bfloat16', 'float16'))
        if folder is not None and parse_uri(folder)[0]:
            raise ConfigError(
                f'callbacks.budget_checkpoint.folder={folder!r} is remote; the budget checkpoints and their manifest '
                f'are written with local file I/O and would land in a local folder named after the URI. Set a local '
                f'folder (and copy it to object storage after the run).',
            )
        self.folder_template = folder
        self.hf_export = hf_export
        self.hf_precision = hf_precision
        self.folder: Optional[str] = None
        self.manifest: list[dict[str, Any]] = []
        self._eval_batch = -1
        self._eval: dict[str, float] = {}  # metrics of the evaluators that ran at batch _eval_batch
        self._hf = None
        self._lifecycle = RunLifecycle()

    def state_dict(self) -> dict[str, Any]:
        return pack_state({'manifest': self.manifest})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.manifest = list(unpack_state(state)['manifest'])
        self._lifecycle.restored()

    def after_load(self, state: State, logger: Logger) -> None:
        del logger
        self._lifecycle.after_load(state)

    def init(self, state: State, logger: Logger) -> None:
        if not self.hf_export:
            return
        # Imported only when asked for: Foundry's HF checkpointer pulls in transformers and mlflow.
        from llmfoundry.callbacks import HuggingFaceCheckpointer
        self._hf = HuggingFaceCheckpointer(save_folder='unset', save_interval=_NEVER, precision=self.hf_precision)
        self._hf.run_event(Event.INIT, state, logger)

    def fit_start(self, state: State, logger: Logger) -> None:
        start = self._lifecycle.fit_start(state)
        if start.from_zero and self.manifest:
            # fit(reset_time=True), or a load that reset the timestamp: a new run, whose budgets are its own.
            log.warning(f'budget_checkpoint: training restarts at batch 0, so the manifest starts over; the earlier '
                        f'run\'s {len(self.manifest)} budget checkpoint(s) stay on disk, each with its own manifest.')
            self.manifest = []
        compiled = compiled_schedule_of(state)
        scheduler = compiled.scheduler if compiled is not None else None
        if compiled is None or not hasattr(scheduler, 'decay_ends'):
            raise ConfigError(
                f'callbacks.budget_checkpoint needs a schedule with budgets (wsd, wsd_s or cyclic_cosine), but the '
                f'run uses {type(scheduler).__name__ if scheduler else "no ComposerScheduler"}. Switch the '
                f'scheduler or remove the callback.',
            )
        self.scheduler = scheduler
        # Where the LR really decays, also under Composer's scale_schedule_ratio.
        self.budgets = scheduler.decay_ends(state, compiled.ssr)
        if self.folder_template is not None:
            self.folder = format_name_with_dist(self.folder_template, state.run_name)
        else:
            save_folder = local_save_folder(state)
            if save_folder is None:
                raise ConfigError(
                    'callbacks.budget_checkpoint.folder is unset and the run has no save_folder to put the budget '
                    'checkpoints under, or only a remote one (Composer stages a remote save_folder in a temporary '
                    'local folder that is not kept). Set save_folder to a local path, or '
                    'callbacks.budget_checkpoint.folder.',
                )
            self.folder = os.path.join(save_folder, 'budgets')
        log.info(f'budget_checkpoint: will save at {self.budgets} ({scheduler.unit.value}) into {self.folder}')
        if start.phase is FitPhase.RESUMED:
            self._write_manifest()  # what the checkpoint knew: drops entries of budgets saved after it

    def eval_end(self, state: State, logger: Logger) -> None:
        batch, label = int(state.timestamp.batch), state.dataloader_label
        metrics = {f'{label}/{name}': float(metric.compute())
                   for name, metric in state.eval_metrics.get(label, {}).items()}
        if batch != self._eval_batch:
            self._eval_batch, self._eval = batch, {}
        self._eval.update(metrics)
        # Evaluators due at EPOCH_END or FIT_END run after this batch's checkpoint: add them to its entry.
        entries = [entry for entry in self.manifest if entry['step'] == batch]
        for entry in entries:
            entry['eval'] = {**(entry['eval'] or {}), **metrics}
        if entries:
            self._write_manifest()

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        unit = self.scheduler.unit
        before, now = timestamp_count(state.previous_timestamp, unit), current_time(state, unit)
        for index, budget in enumerate(self.budgets, start=1):
            if before < budget <= now:  # crossed during this batch
                self._save(state, logger, index, budget)

    def _save(self, state: State, logger: Logger, index: int, budget: int) -> None:
        assert self.folder is not None
        unit = self.scheduler.unit.value
        batch = int(state.timestamp.batch)
        name = os.path.join(self.folder, f'budget{index}-{budget}{unit}-ba{batch}-rank{{rank}}.pt')
        if state.fsdp_sharded_state_dict_enabled:  # Composer names the folder of shards itself: ep{epoch}-ba{batch}
            path = os.path.dirname(checkpoint.get_save_filename(state, name))
        else:
            path = name.format(rank=0)
        entry = {
            'budget': f'{budget}{unit}',
            'index': index,
            'step': batch,
            'samples': int(state.timestamp.sample),
            'tokens': int(state.timestamp.token),
            'train_loss': _train_loss(state),
            'eval': dict(self._eval) if self._eval_batch == batch else None,
            'checkpoint': path,
            'hf_checkpoint': None if self._hf is None else os.path.join(self.folder, 'hf', f'budget{index}-ba{batch}'),
        }
        # Before saving, so that the checkpoint's own manifest lists it. A budget replayed after a resume
        # replaces its earlier entry.
        self.manifest = [e for e in self.manifest if e['index'] != index] + [entry]
        checkpoint.save_checkpoint(state, name)
        if self._hf is not None:
            hf_export(self._hf, state, logger, os.path.join(self.folder, 'hf'), f'budget{index}-ba{{batch}}')
        logger.log_metrics({f'{BUDGET_PREFIX}/budget': index})
        self._write_manifest()
        if dist.get_global_rank() == 0:
            log.info(f'budget_checkpoint: budget {index} ({budget}{unit}) saved at batch {batch}: {path}')

    def _write_manifest(self) -> None:
        if dist.get_global_rank() == 0:
            assert self.folder is not None
            write_json(os.path.join(self.folder, MANIFEST), self.manifest)


def _train_loss(state: State) -> Optional[float]:
    losses = getattr(state, 'total_loss_dict', None) or {}
    value = losses.get(LOSS_KEY)
    return None if value is None else float(value)

