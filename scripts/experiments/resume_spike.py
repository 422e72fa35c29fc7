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

Measures (:func:`measure_spike`) of a loss spike after a resume: its height, the overshoot, the recovery, and
the loss 50 batches later.

The loss of one batch is noisy (on the demo, about 0.1 nats from batch to batch), so every measure uses
averages. ``before`` is the mean loss of the last ``baseline`` batches before the resume. ``later`` is the
mean loss over the ``baseline`` batches centred on ``after`` batches after the resume: the level the run has
reached by then. A higher LR settles higher than a decayed one, so the loss need not return to ``before``.
The post-resume curve is smoothed with a trailing mean over ``smooth`` batches. Measured from the resume:

* **spike height**: the maximum of the smoothed curve within the first ``horizon`` batches, minus ``before``.
  A jump's transient shows within a few batches;
* **overshoot**: the same maximum minus ``later``. This is the transient above the level the run goes on at,
  the part a rewarm should remove;
* **batches to recover**: 0 if the overshoot is within ``tolerance``. Otherwise, the first batch after the
  maximum at which the smoothed curve is back within ``tolerance`` of ``later``. ``tolerance`` defaults to two
  standard errors of a ``smooth``-batch mean, estimated from the ``later`` window;
* **loss later**: ``later`` itself.

Runs resumed from one checkpoint see the same batches in the same order, so their differences at a given
batch are free of the batch-to-batch noise.

Run from the repository root::

    python scripts/experiments/resume_spike.py --lr 3e-2 --resume-lr 3e-2 1e-1
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from foundry_ext.core.metric_names import LOSS_KEY
from foundry_ext.core.metrics_io import Series, lr_series, read_metrics
from foundry_ext.core.plots import Curve, save_figure

log = logging.getLogger(__name__)

__all__ = ['MODES', 'Panel', 'ResumeSpikeRuns', 'SpikeReport', 'format_reports', 'main', 'measure_spike',
           'paired_difference', 'plot_resume_spike', 'report_resume_spike_demo', 'run_resume_spike_demo']

# Measures.

@dataclasses.dataclass(frozen=True)
class SpikeReport:
    """The measures of the module docstring for one resumed run (batch counts are relative to the resume)."""
    label: str
    before: float
    later: float
    after: int
    spike_height: float
    overshoot: float
    peak_batch: int
    batches_to_recover: int


def _trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def measure_spike(label: str, before_losses: Sequence[float], after_losses: Sequence[float], *, baseline: int = 20,
                  smooth: int = 5, horizon: int = 25, after: int = 50,
                  tolerance: Optional[float] = None) -> SpikeReport:
    """Measures the spike of ``after_losses`` (one loss per batch from the resume on) against ``before_losses``.

    Raises:
        ValueError: If there are fewer than ``baseline`` losses before the resume, fewer than
            ``after + baseline / 2`` after it, or if ``horizon`` reaches into the ``later`` window.
    """
    before_losses, after_losses = np.asarray(before_losses, float), np.asarray(after_losses, float)
    first, last = after - baseline // 2, after + baseline - baseline // 2
    if len(before_losses) < baseline or len(after_losses) < last:
        raise ValueError(f'{label}: need {baseline} losses before and {last} after the resume, got '
                         f'{len(before_losses)} and {len(after_losses)}.')
    if horizon > first:
        raise ValueError(f'{label}: horizon={horizon} overlaps the window of the loss later ({first}..{last - 1}).')
    before = float(before_losses[-baseline:].mean())
    later_window = after_losses[first:last]
    later = float(later_window.mean())
    if tolerance is None:
        tolerance = 2 * float(later_window.std(ddof=1)) / np.sqrt(smooth)
    smoothed = _trailing_mean(after_losses, smooth)
    peak = int(np.argmax(smoothed[:horizon]))
    overshoot = float(smoothed[peak]) - later
    recovered = 0
    if overshoot > tolerance:
        # Within the later window the smoothed curve averages `later`, so this is found at the latest there.
        recovered = peak + int(np.flatnonzero(smoothed[peak:] <= later + tolerance)[0])
    return SpikeReport(label=label, before=before, later=later, after=after,
                       spike_height=float(smoothed[peak]) - before, overshoot=overshoot, peak_batch=peak,
                       batches_to_recover=recovered)


def paired_difference(losses_a: Sequence[float], losses_b: Sequence[float], start: int,
                      stop: int) -> tuple[float, float]:
    """Mean and standard error of ``a - b`` over batches ``start..stop-1`` of two runs that saw the same batches."""
    diff = np.asarray(losses_a, float)[start:stop] - np.asarray(losses_b, float)[start:stop]
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def format_reports(reports: Sequence[SpikeReport]) -> str:
    """A markdown table of the reports."""
    after = reports[0].after if reports else 0
    rows = [f'| run | loss before | spike height (at +batches) | overshoot | batches to recover | loss at +{after} |',
            '|---|---|---|---|---|---|']
    for r in reports:
        rows.append(f'| {r.label} | {r.before:.3f} | {r.spike_height:+.3f} (+{r.peak_batch}) | {r.overshoot:+.3f} | '
                    f'{r.batches_to_recover} | {r.later:.3f} |')
    return '\n'.join(rows)


@dataclasses.dataclass(frozen=True)
class Panel:
    """One column of :func:`plot_resume_spike`: its title and the LR and loss curves of its runs."""
    title: str
    lrs: Sequence[Curve]
    losses: Sequence[Curve]


def plot_resume_spike(panels: Sequence[Panel], resume_batch: int, out: Union[str, Path], smooth: int = 5,
                      title: str = '') -> Path:
    """Per panel, LR (top, log scale) and loss (bottom: raw, faint, and its trailing mean) around a resume."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(panels), figsize=(6 * len(panels), 6.5), sharex=True, squeeze=False,
                             height_ratios=[1, 2])
    for (ax_lr, ax_loss), panel in zip(axes.T, panels):
        for curve in panel.lrs:
            ax_lr.plot(*curve.series, label=curve.label, color=curve.color, linestyle=curve.linestyle)
        for curve in panel.losses:
            steps, values = curve.series
            ax_loss.plot(steps, values, color=curve.color, alpha=0.25, linewidth=0.7)
            ax_loss.plot(steps, _trailing_mean(np.asarray(values, float), smooth), color=curve.color,
                         linestyle=curve.linestyle, label=f'{curve.label} ({smooth}-batch mean)')
        for ax in (ax_lr, ax_loss):
            ax.axvline(resume_batch, color='gray', linestyle=':', linewidth=1)
            ax.grid(alpha=0.3)
        ax_loss.legend(fontsize=8)
        ax_lr.set_title(panel.title, fontsize=10)
        ax_lr.set_yscale('log')
        ax_lr.set_ylabel('learning rate')
        ax_loss.set_ylabel('training loss')
        ax_loss.set_xlabel('batch')
    if title:
        fig.suptitle(title)
    return save_figure(fig, out)


# The runs.

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


REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--lr', type=float, default=3e-2, help="the main run's peak LR (default: 3e-2)")
    parser.add_argument('--resume-lr', type=float, nargs='+', default=[3e-2, 1e-1],
                        help='flat LR(s) after the resume (default: 3e-2 1e-1)')
    parser.add_argument('--main-batches', type=int, default=300, help='main run length; decays over its 2nd half')
    parser.add_argument('--resume-batches', type=int, default=100, help='batches after the resume (default: 100)')
    parser.add_argument('--run-dir', type=Path, default=REPO / 'runs' / 'resume-spike')
    parser.add_argument('--out', type=Path, default=REPO / 'docs' / 'resume_spike.png')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    logging.getLogger('foundry_ext').setLevel(logging.INFO)

    runs = run_resume_spike_demo(str(REPO / 'yamls' / 'wsd.yaml'), args.run_dir, lr=args.lr,
                                 resume_lrs=args.resume_lr, main_batches=args.main_batches,
                                 resume_batches=args.resume_batches)
    report, png = report_resume_spike_demo(runs, args.lr, args.resume_lr, args.out)
    print(report)
    print(f'plot: {png}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
