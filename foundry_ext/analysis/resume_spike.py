"""Measuring a loss spike after a resume: its height, the overshoot, the recovery, and the loss 50 batches later.

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
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from foundry_ext.analysis.plots import Curve, save_figure

log = logging.getLogger(__name__)

__all__ = ['Panel', 'SpikeReport', 'format_reports', 'measure_spike', 'paired_difference', 'plot_resume_spike']


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
