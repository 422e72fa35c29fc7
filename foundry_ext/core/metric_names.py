"""Names of the metrics foundry-ext reads and logs: the one place a metric key is spelled.

Composer and LLM-Foundry log the training loss as ``loss/train/total`` (all-reduced over ranks), eval metrics as
``metrics/<eval label>/<metric>`` and, through ``lr_monitor``, the LR of each param group as
``lr-<Optimizer class>/group<i>``. foundry-ext's components log under their own prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Optional

log = logging.getLogger(__name__)

__all__ = [
    'BUDGET_PREFIX',
    'COLLAPSE_PREFIX',
    'EVAL_CROSS_ENTROPY',
    'EVAL_CROSS_ENTROPY_PATTERN',
    'LOSS_KEY',
    'LOSS_LAW_PREFIX',
    'LOSS_SPIKE_PREFIX',
    'LOSS_ALIASES',
    'LR_ALIASES',
    'RESUME_DATA_GUARD_PREFIX',
    'RESUME_GUARD_PREFIX',
    'ROLLBACK_PREFIX',
    'STEP_KEYS',
    'find_loss_key',
    'find_lr_key',
    'is_eval_metric',
    'is_lr_monitor_key',
    'is_train_loss',
]

LOSS_KEY = 'loss/train/total'  # Composer's all-reduced training loss
EVAL_CROSS_ENTROPY = 'metrics/eval/LanguageCrossEntropy'  # Foundry's default eval loss, label 'eval'
EVAL_CROSS_ENTROPY_PATTERN = 'metrics/*/*CrossEntropy'  # every evaluator's cross-entropy

# The training loss of runs from other trainers and of public exports, in the order they are looked for.
LOSS_ALIASES = ('loss', 'train_loss', 'train/loss')
# The LR of runs from other trainers, in the order they are looked for when no lr_monitor key is there.
LR_ALIASES = ('lr', 'learning_rate', 'train/lr', 'train/learning_rate', 'train_lr', 'trainer/learning_rate')
# The step column of metric exports: ours and Composer's, W&B's, PyTorch Lightning's, and iteration counters.
STEP_KEYS = ('step', '_step', 'Step', 'global_step', 'trainer/global_step', 'iter', 'iteration')

BUDGET_PREFIX = 'budget_checkpoint'
COLLAPSE_PREFIX = 'collapse'
LOSS_LAW_PREFIX = 'loss_law'
LOSS_SPIKE_PREFIX = 'loss_spike'
ROLLBACK_PREFIX = f'{LOSS_SPIKE_PREFIX}/rollback'  # loss_spike_monitor's rollback action
RESUME_DATA_GUARD_PREFIX = 'resume_data_guard'
RESUME_GUARD_PREFIX = 'resume_guard'


def is_train_loss(key: str) -> bool:
    """Whether ``key`` is a training loss Composer logs every batch (``loss/train/<name>``)."""
    return key.startswith('loss/train/')


def is_eval_metric(key: str) -> bool:
    """Whether ``key`` is a sparse evaluation metric (``metrics/<label>/...`` other than ``metrics/train/``)."""
    return key.startswith('metrics/') and not key.startswith('metrics/train/')


def find_lr_key(keys: Iterable[str]) -> Optional[str]:
    """The key under which ``lr_monitor`` logged the first param group's LR (``lr-<Optimizer>/group0``), else the
    first of :data:`LR_ALIASES` (how other trainers and W&B/MLflow exports name it), or None."""
    keys = list(keys)
    found = sorted(k for k in keys if k.startswith('lr-') and k.endswith('/group0'))
    return found[0] if found else next((k for k in LR_ALIASES if k in keys), None)


def find_loss_key(keys: Iterable[str]) -> Optional[str]:
    """Composer's training loss key if present, else the first of :data:`LOSS_ALIASES`, or None."""
    keys = list(keys)
    return LOSS_KEY if LOSS_KEY in keys else next((k for k in LOSS_ALIASES if k in keys), None)


def is_lr_monitor_key(key: str) -> bool:
    """Whether ``key`` is how ``lr_monitor`` names an LR (``lr-<Optimizer>/group<i>``)."""
    return key.startswith('lr-') and '/group' in key
