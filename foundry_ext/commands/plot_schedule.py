"""``foundry-ext plot-schedule``: a YAML's LR schedule, drawn for several run lengths."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

from llmfoundry.utils.builders import build_scheduler

from foundry_ext.core.config import load_train_config
from foundry_ext.core.plots import Curve, plot_lr_curves
from foundry_ext.schedulers.preview import batch_size, config_multipliers, schedule_multipliers

log = logging.getLogger(__name__)

__all__ = ['plot_schedule']


def plot_schedule(
    yaml_path: str,
    max_durations: Sequence[str],
    out: str,
    overrides: Optional[Sequence[str]] = None,
    compare_cosine: bool = False,
) -> Path:
    """Builds the YAML's scheduler through Foundry's registry and plots LR vs. step for each run length.

    Args:
        yaml_path (str): A Foundry training YAML.
        max_durations (Sequence[str]): Run lengths, e.g. ``['1000ba', '2000ba']``.
        out (str): PNG path.
        overrides (Sequence[str], optional): Foundry-style ``key=value`` overrides.
        compare_cosine (bool): Also draw Composer's ``cosine_with_warmup`` with the YAML's ``t_warmup``
            and ``alpha_f``, dashed, for each run length.
    """
    cfg = load_train_config(yaml_path, overrides)
    sched_cfg = dict(cfg['scheduler'])
    name = sched_cfg.get('name')
    lr = float(cfg['optimizer']['lr'])
    samples, tokens = batch_size(cfg)
    curves = []
    for i, duration in enumerate(max_durations):
        color = f'C{i}'
        steps, alpha = config_multipliers(cfg, duration)
        curves.append(Curve(f'{name}, max_duration={duration}', (steps, lr * alpha), color=color))
        if compare_cosine:
            cosine = build_scheduler('cosine_with_warmup', {
                't_warmup': sched_cfg.get('t_warmup', '0ba'),
                'alpha_f': sched_cfg.get('alpha_f', 0.0),
            })
            steps, alpha = schedule_multipliers(cosine, duration, samples, tokens)
            curves.append(Curve(f'cosine_with_warmup, max_duration={duration}', (steps, lr * alpha), '--', color))
    path = plot_lr_curves(curves, out, title=f'{Path(yaml_path).name}: LR schedule vs. run length')
    log.info(f'Wrote {path}')
    return path
