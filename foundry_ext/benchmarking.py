"""Measuring what foundry-ext costs per training step: paired A/B runs through ``train_from_yaml``.

Step time is the increase of Composer's ``time/train`` (logged by ``speed_monitor``) from one batch to
the next. Composer accumulates it over the whole loop iteration, evaluation excluded, so it includes the
dataloader, the forward/backward/optimizer step and every callback and algorithm of the step. Runs of the
two configurations alternate (A, B, A, B, ...) so that drifts of the machine (thermal, other load) hit
both alike; each run's first batches are dropped (allocator and cache warm-up). The result is the
ratio of median step times per pair, summarized over pairs.
"""

from __future__ import annotations

import logging
import os
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

__all__ = ['PairedResult', 'overhead_configs', 'paired_step_times']


@dataclass
class PairedResult:
    """Median step times per run and their ratios (B over A) per pair."""
    a_medians: list[float]
    b_medians: list[float]

    @property
    def ratios(self) -> list[float]:
        return [b / a for a, b in zip(self.a_medians, self.b_medians)]

    def summary(self, a_name: str, b_name: str) -> str:
        r = sorted(self.ratios)
        error = statistics.stdev(r) / len(r)**0.5 if len(r) > 1 else float('nan')
        return (f'{b_name} / {a_name} step time: median {statistics.median(r):.4f} over {len(r)} pairs '
                f'(min {r[0]:.4f}, max {r[-1]:.4f}; mean {statistics.fmean(r):.4f} +- {error:.4f} standard error); '
                f'median step {statistics.median(self.a_medians) * 1e3:.1f} ms '
                f'({a_name}) vs {statistics.median(self.b_medians) * 1e3:.1f} ms ({b_name})')


def _median_step(yaml_path: str, overrides: Sequence[str], skip: int) -> float:
    from composer.loggers import InMemoryLogger
    from llmfoundry.command_utils import train_from_yaml

    trainer = train_from_yaml(yaml_path,
                              [*overrides, 'loggers.inmemory={}', 'callbacks.speed_monitor={time_unit: seconds}'])
    trainer.close()
    memory = next(d for d in trainer.logger.destinations if isinstance(d, InMemoryLogger))
    wall = np.array([float(v) for _, v in memory.data['time/train']])
    steps = np.diff(wall)[skip:]
    if steps.size == 0:
        raise ValueError(f'Only {wall.size} steps were logged; raise max_duration above {skip + 1} batches.')
    return float(np.median(steps))


def paired_step_times(
    yaml_a: str,
    overrides_a: Sequence[str],
    yaml_b: str,
    overrides_b: Sequence[str],
    pairs: int = 3,
    skip: int = 5,
) -> PairedResult:
    """Trains A and B alternately ``pairs`` times each and returns their median step times.

    Every other pair runs B first (ABBA...), so a machine that drifts faster or slower over the benchmark
    does not favour one side.

    Args:
        yaml_a (str): The baseline's YAML.
        overrides_a (Sequence[str]): Its Foundry overrides.
        yaml_b (str): The candidate's YAML.
        overrides_b (Sequence[str]): Its Foundry overrides.
        pairs (int): Number of A/B pairs.
        skip (int): Steps dropped at the start of each run.
    """
    a, b = [], []
    for i in range(pairs):
        for side in ('ab' if i % 2 == 0 else 'ba'):
            if side == 'a':
                a.append(_median_step(yaml_a, overrides_a, skip))
            else:
                b.append(_median_step(yaml_b, overrides_b, skip))
        log.info(f'pair {i + 1}/{pairs}: A {a[-1] * 1e3:.2f} ms, B {b[-1] * 1e3:.2f} ms, ratio {b[-1] / a[-1]:.4f}')
    return PairedResult(a, b)


def overhead_configs(demo_yaml: str, out_dir: str, corpus: str) -> tuple[str, str]:
    """Writes the two sides of the overhead benchmark, both from the demo recipe, and returns their paths.

    * ``plain.yaml``: plain LLM-Foundry: ``cosine_with_warmup``, Foundry's ``text`` loader on the same
      corpus, no foundry-ext component at all.
    * ``foundry_ext.yaml``: the same model and data with every foundry-ext component that needs no extra
      input switched on at its defaults: the ``wsd`` schedule, the ``demo_text`` loader, the ``jsonl``
      logger, ``resume_guard``, ``loss_spike_monitor``, ``resume_data_guard`` and ``budget_checkpoint``.
      (``collapse_monitor`` needs a fitted reference curve and is measured on its own.)

    Args:
        demo_yaml (str): ``yamls/wsd.yaml``.
        out_dir (str): Where to write the two YAMLs and the runs' folders.
        corpus (str): The demo corpus folder (from :func:`foundry_ext.data.ensure_demo_corpus`).
    """
    from omegaconf import OmegaConf as om

    os.makedirs(out_dir, exist_ok=True)
    base = om.load(demo_yaml)
    base.eval_loader = None
    base.save_folder = f'{out_dir}/checkpoints'
    base.save_interval = '1000000ba'
    base.save_overwrite = True  # every run of the pair writes its final checkpoint into the same folder
    base.scheduler.t_warmup = '5ba'  # both schedules must fit short benchmark runs
    base.scheduler.t_decay = '10ba'
    plain = base.copy()
    plain.scheduler = {'name': 'cosine_with_warmup', 't_warmup': base.scheduler.t_warmup, 'alpha_f': 0.0}
    plain.train_loader.name = 'text'
    plain.train_loader.dataset.local = corpus
    plain.loggers = {}
    ours = base.copy()
    ours.algorithms = {**om.to_container(base.algorithms), 'resume_guard': {}}
    extra: dict[str, Any] = {'loss_spike_monitor': {}, 'resume_data_guard': {}, 'budget_checkpoint': {}}
    ours.callbacks = {**om.to_container(base.callbacks), **extra}
    paths = (f'{out_dir}/plain.yaml', f'{out_dir}/foundry_ext.yaml')
    om.save(plain, paths[0])
    om.save(ours, paths[1])
    return paths
