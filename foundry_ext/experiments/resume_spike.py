"""The resume-spike experiment on the demo recipe: decay, then resume flat with and without rewarm.

Real ``train_from_yaml`` runs of ``yamls/wsd.yaml`` (tiny MPT, demo corpus):

1. **main**: ``main_batches`` batches with ``resume_guard`` recording: warmup, flat at ``lr`` until half way,
   then a 1-sqrt decay to 0 at the end; checkpointed at the end.
2. For each LR in ``resume_lrs``, two resumes from that checkpoint with the decay dropped, flat at that LR for
   ``resume_batches`` batches. A resume LR other than ``lr`` is a new ``optimizer.lr``, which Composer would
   ignore, so it is applied with ``apply_yaml_lr: true``.

   * **warn**: ``on_mismatch: warn``. The guard reports the jump and changes nothing, so this is the resume as
     it happens without the guard.
   * **rewarm**: ``on_mismatch: rewarm``, with the default ``rewarm_steps``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence, Union

from foundry_ext.analysis.metrics_io import LOSS_KEY, Series, lr_series, read_metrics
from foundry_ext.analysis.plots import Curve
from foundry_ext.analysis.resume_spike import (Panel, format_reports, measure_spike, paired_difference,
                                               plot_resume_spike)

log = logging.getLogger(__name__)

__all__ = ['MODES', 'ResumeSpikeRuns', 'report_resume_spike_demo', 'run_resume_spike_demo']

MODES = ('warn', 'rewarm')
COLORS = {'main': 'tab:gray', 'warn': 'tab:red', 'rewarm': 'tab:blue'}


@dataclasses.dataclass(frozen=True)
class ResumeSpikeRuns:
    """Loss and LR series of the runs, keyed ``'main'`` and ``(resume_lr, mode)``, and the resume batch."""
    resume_batch: int
    losses: dict[Union[str, tuple[float, str]], Series]
    lrs: dict[Union[str, tuple[float, str]], Series]


def run_resume_spike_demo(yaml_path: str, run_dir: Path, lr: float, resume_lrs: Sequence[float],
                          main_batches: int = 300, resume_batches: int = 100,
                          warmup_batches: int = 30) -> ResumeSpikeRuns:
    """Runs the trainings into ``run_dir/main`` and ``run_dir/{mode}-{resume_lr}`` and returns their series.

    Args:
        yaml_path (str): The demo recipe, ``yamls/wsd.yaml``.
        run_dir (Path): Output folder. Finished runs found there are reused.
        lr (float): The main run's peak LR (``optimizer.lr``).
        resume_lrs (Sequence[float]): The flat LR of each pair of resumed runs.
        main_batches (int): Length of the main run, which decays over its second half.
        resume_batches (int): Batches trained after the resume.
        warmup_batches (int): Warmup of the main run.
    """
    from llmfoundry.command_utils import train_from_yaml

    half = main_batches // 2
    common = ['eval_loader=null', 'eval_interval=1', 'console_log_interval=100000ba', 'python_log_level=null',
              f'scheduler.t_warmup={warmup_batches}ba', f'scheduler.t_decay={half}ba', 'scheduler.alpha_f=0.0']
    checkpoint = run_dir / 'main' / 'checkpoints' / f'ep0-ba{main_batches}-rank0.pt'
    if not checkpoint.exists():
        train_from_yaml(yaml_path, [f'variables.run_dir={run_dir / "main"}', f'max_duration={main_batches}ba',
                                    f'save_interval={main_batches}ba', f'scheduler.t_decay_start={half}ba',
                                    f'optimizer.lr={lr}', 'algorithms.resume_guard.on_mismatch=warn', *common]).close()
    losses, lrs = {}, {}
    for resume_lr in resume_lrs:
        for mode in MODES:
            log.info(f'resume_spike_demo: resuming at batch {main_batches} flat at lr={resume_lr:g}, '
                     f'on_mismatch={mode}')
            out = run_dir / f'{mode}-{resume_lr:g}'
            if _finished(out, main_batches + resume_batches):
                log.info(f'resume_spike_demo: reusing the finished run in {out}')
            else:
                train_from_yaml(yaml_path, [
                    f'variables.run_dir={out}', f'load_path={checkpoint}',
                    f'max_duration={main_batches + resume_batches}ba', 'save_folder=null',
                    'scheduler.t_decay_start=1000000000ba', f'optimizer.lr={resume_lr}',
                    f'algorithms.resume_guard.on_mismatch={mode}',
                    f'algorithms.resume_guard.apply_yaml_lr={str(resume_lr != lr).lower()}', *common]).close()
            metrics = read_metrics(out / 'metrics.jsonl')
            losses[resume_lr, mode], lrs[resume_lr, mode] = metrics[LOSS_KEY], lr_series(metrics)
    main = read_metrics(run_dir / 'main' / 'metrics.jsonl')
    losses['main'], lrs['main'] = main[LOSS_KEY], lr_series(main)
    return ResumeSpikeRuns(resume_batch=main_batches, losses=losses, lrs=lrs)


def report_resume_spike_demo(runs: ResumeSpikeRuns, lr: float, resume_lrs: Sequence[float], out: Path,
                             shown_before: int = 60) -> tuple[str, Path]:
    """Measures each resumed run's spike and plots the runs around the resume.

    Args:
        runs (ResumeSpikeRuns): From :func:`run_resume_spike_demo`.
        lr (float): The main run's peak LR, for the legend.
        resume_lrs (Sequence[float]): The resume LRs to report, one panel each.
        out (Path): The PNG to write.
        shown_before (int): Batches of the main run drawn before the resume.

    Returns:
        tuple[str, Path]: The markdown table of spike measures followed by the paired warn - rewarm
        differences, and the PNG.
    """
    before = runs.losses['main'][1]
    start = runs.resume_batch - shown_before

    def tail(series: Series) -> Series:
        steps, values = series
        return steps[steps >= start], values[steps >= start]

    reports, panels, paired = [], [], []
    for resume_lr in resume_lrs:
        keys = [(resume_lr, mode) for mode in MODES]
        reports += [measure_spike(f'flat at {resume_lr:g}, {mode}', before, runs.losses[resume_lr, mode][1])
                    for mode in MODES]
        warn, rewarm = (runs.losses[resume_lr, mode][1] for mode in MODES)
        for lo, hi in ((0, 40), (40, 60)):
            mean, error = paired_difference(warn, rewarm, lo, hi)
            paired.append(f'flat at {resume_lr:g}: warn - rewarm over batches +{lo}..+{hi - 1}: '
                          f'{mean:+.3f} +- {error:.3f} (mean +- standard error, same batches)')
        labels = {'main': f'main run (peak {lr:g}, decay to 0)'} | {k: k[1] for k in keys}
        panels.append(
            Panel(f'resumed flat at lr={resume_lr:g}',
                  [Curve(labels[k], tail(runs.lrs[k]), color=COLORS[k if k == 'main' else k[1]]) for k in labels],
                  [Curve(labels[k], tail(runs.losses[k]), color=COLORS[k if k == 'main' else k[1]]) for k in labels]))
    png = plot_resume_spike(panels, runs.resume_batch, out,
                            title='Resume after a decay to 0, without (warn) and with rewarm: tiny MPT, demo corpus')
    return format_reports(reports) + '\n' + '\n'.join(paired), png


def _finished(run_dir: Path, batches: int) -> bool:
    """Whether ``run_dir`` holds the metrics of a run that trained its last batch (index ``batches - 1``)."""
    path = run_dir / 'metrics.jsonl'
    return path.exists() and LOSS_KEY in (m := read_metrics(path)) and int(m[LOSS_KEY][0][-1]) == batches - 1
