"""Measuring what foundry-ext costs per training step, through ``train_from_yaml``.

Two harnesses:

* :func:`paired_step_times`: whole runs of two configurations, alternating (a component set vs. plain Foundry).
* :func:`in_run_ab`: one run in which a single component (callback or algorithm) is switched on and off in
  alternating blocks of batches (:class:`ABSwitch`), which also times what the component itself spends.

In :func:`paired_step_times`, step time is the increase of Composer's ``time/train`` (logged by
``speed_monitor``) from one batch to the next. Composer accumulates it over the whole loop iteration,
evaluation excluded, so it includes the dataloader, the forward/backward/optimizer step and every callback
and algorithm of the step. Runs of the two configurations alternate (AB, BA, AB, ...) so that drifts of
the machine (thermal, other load) hit both alike; each run's first batches are dropped (allocator and cache
warm-up). The result is the ratio of median step times per pair, summarized over pairs.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
from composer.core import Algorithm, Callback, Event, State
from composer.loggers import Logger

log = logging.getLogger(__name__)

__all__ = ['ABStep', 'ABSwitch', 'PairedResult', 'ab_report', 'in_run_ab', 'overhead_configs', 'paired_step_times']



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


@dataclass(frozen=True)
class ABStep:
    """One timed training step of an in-run A/B benchmark."""
    on: bool  # the component saw this step's events
    wall: float  # seconds between this step's BATCH_END and the previous one's, data loading included
    cpu: float  # this process's CPU seconds (all threads) over the same interval
    inside: float  # seconds spent inside the component's own event handlers during the step


class ABSwitch(Callback):
    """Forwards events to a callback or algorithm only in alternating blocks of batches, and times every step.

    After ``warmup`` batches, blocks of ``block`` batches go on, off, off, on, on, off, ... so that neither arm
    always comes first. The switch flips between steps, so the component sees whole steps. Events in ``always``
    (its setup) reach it whatever the block. An algorithm is called as Composer's engine calls it
    (``match``, then ``apply``), but from this callback's place in the event order.

    Args:
        component (Callback | Algorithm): What to measure.
        warmup (int): Batches before the first block (not recorded).
        block (int): Batches per block; for a component with periodic work, a multiple of its period.
        always (Sequence[Event]): Events forwarded in every block.
    """

    def __init__(self, component: Union[Callback, Algorithm], warmup: int, block: int,
                 always: Sequence[Event] = (Event.INIT, Event.FIT_START)) -> None:
        self.component, self.warmup, self.block, self.always = component, warmup, block, tuple(always)
        self.on = False
        self.steps: list[ABStep] = []
        self._last = (0.0, 0.0)
        self._inside = 0.0

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        if self.on or event in self.always:
            start = time.perf_counter()
            if isinstance(self.component, Algorithm):
                if self.component.match(event, state):
                    self.component.apply(event, state, logger)
            else:
                self.component.run_event(event, state, logger)
            self._inside += time.perf_counter() - start
        if event == Event.BATCH_END:
            now = (time.perf_counter(), time.process_time())
            done = int(state.timestamp.batch)
            if done > self.warmup:
                self.steps.append(ABStep(self.on, now[0] - self._last[0], now[1] - self._last[1], self._inside))
            self._last, self._inside = now, 0.0
            self.on = done >= self.warmup and (done - self.warmup) // self.block % 4 in (0, 3)


def in_run_ab(yaml_path: Union[str, Path], component: Union[Callback, Algorithm], pairs: int, block: int,
              warmup: int, overrides: Sequence[str] = ()) -> list[ABStep]:
    """Trains ``yaml_path`` (a ``wsd`` recipe, e.g. ``yamls/wsd.yaml``) once with ``component`` behind an
    :class:`ABSwitch`.

    The LR is flat (no warmup, decay after the run) so that nothing but the switch changes between blocks.

    Args:
        yaml_path (str | Path): The recipe.
        component (Callback | Algorithm): What to measure; not also listed in the YAML.
        pairs (int): On/off block pairs.
        block (int): Batches per block.
        warmup (int): Batches before the first block.
        overrides (Sequence[str]): Further Foundry overrides.

    Returns:
        list[ABStep]: Every step after ``warmup``.
    """
    from llmfoundry.command_utils import train_from_yaml
    from llmfoundry.registry import callbacks as callback_registry

    class _Bound(ABSwitch):  # Foundry's registry wants a Callback class, built from YAML kwargs

        def __init__(self) -> None:
            super().__init__(component, warmup, block)

    callback_registry.register('foundry_ext_ab_switch', func=_Bound)
    total = warmup + 2 * pairs * block
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = train_from_yaml(str(yaml_path), [
            f'variables.run_dir={run_dir}', f'max_duration={total}ba', 'scheduler.t_warmup=0ba',
            f'scheduler.t_decay_start={2 * total}ba', 'scheduler.t_decay=1ba', 'save_folder=null',
            'eval_loader=null', 'eval_interval=1', 'log_to_console=false', 'python_log_level=null',
            'callbacks.foundry_ext_ab_switch={}', *overrides])
        trainer.close()
    return next(cb for cb in trainer.state.callbacks if isinstance(cb, _Bound)).steps


def _pair_ratios(steps: Sequence[ABStep], block: int, measure: str) -> list[float]:
    """On/off ratio of median ``measure`` (``wall`` or ``cpu``) for each pair of adjacent blocks."""
    ratios = []
    for start in range(0, len(steps) - 2 * block + 1, 2 * block):
        pair = steps[start:start + 2 * block]
        on = [getattr(step, measure) for step in pair if step.on]
        off = [getattr(step, measure) for step in pair if not step.on]
        ratios.append(statistics.median(on) / statistics.median(off))
    return ratios


def ab_report(steps: Sequence[ABStep], block: int) -> str:
    """A markdown table of an in-run A/B benchmark: step time, on/off ratios, time inside the component.

    The time inside is given as the median over the "on" steps (the typical step) and as their mean, which
    counts periodic work at its average rate.
    """
    on = [step for step in steps if step.on]
    on_wall = statistics.median(step.wall for step in on)
    inside = statistics.fmean(step.inside for step in on)
    typical = statistics.median(step.inside for step in on)
    lines = [f'{len(steps) // (2 * block)} on/off pairs of {block} batches', '', '| measure | value |', '|---|---|',
             f'| step wall time, component on (median) | {on_wall * 1e3:.1f} ms |']
    for name in ('wall', 'cpu'):
        ratios = _pair_ratios(steps, block, name)
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        lines += [f'| {name} time ratio on/off: median of pairs (quartiles) | {statistics.median(ratios):.4f} '
                  f'({quartiles[0]:.4f} to {quartiles[2]:.4f}) |',
                  f'| {name} time ratio on/off: mean of pairs (min, max) | {statistics.fmean(ratios):.4f} '
                  f'({min(ratios):.4f}, {max(ratios):.4f}) |']
    lines += [f'| time inside the component per step, {name} | {value * 1e3:.3f} ms ({value / on_wall:.3%} of the '
              f'median step) |' for name, value in (('median', typical), ('mean', inside))]
    return '\n'.join(lines)
