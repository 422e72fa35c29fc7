"""Plots of loss series with their loss events (matplotlib, headless)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from foundry_ext.core.metrics_io import Series
from foundry_ext.core.plots import save_figure  # selects the headless backend before pyplot loads
from foundry_ext.spikes.detector import EVENT_KINDS, LossEvent

import matplotlib.pyplot as plt  # noqa: E402  isort: skip
from matplotlib.patches import Patch  # noqa: E402  isort: skip

log = logging.getLogger(__name__)

__all__ = ['EVENT_COLORS', 'plot_event_windows', 'plot_loss_events', 'plot_recurring_outliers']

EVENT_COLORS = dict(zip(EVENT_KINDS, ('tab:green', 'tab:orange', 'tab:red', 'tab:purple')))
# Bins of the envelope drawn for long series.
_PLOT_BINS = 4000


def plot_loss_events(loss: Series, events: Sequence[LossEvent], ends: Sequence[int], out: Union[str, Path],
                     trend: Optional[Series] = None, threshold: Optional[Series] = None, title: str = '',
                     ylabel: str = 'loss', outliers: Sequence[LossEvent] = (), xlim: Optional[tuple] = None,
                     ax: Optional[Any] = None) -> Path:
    """Draws a loss series on a log axis with its loss events shaded by kind and its outliers marked, and saves a
    PNG. Long series are drawn as the envelope (minimum and maximum) of about 4000 bins.

    Args:
        loss (Series): Steps and losses; non-finite losses are marked with an ``x`` at the top of the axes.
        events (Sequence[LossEvent]): Classified events, each shaded from its onset to its end and its peak marked.
        ends (Sequence[int]): Last step of each event: where it recovered, or where it was classified.
        out (str | Path): PNG to write.
        trend (Series, optional): The detector's trend (the projected pre-spike level during a spike).
        threshold (Series, optional): Loss above which a spike opens.
        title (str): Figure title.
        ylabel (str): Label of the loss axis.
        outliers (Sequence[LossEvent]): Batch outliers, marked at their peak.
        xlim (tuple, optional): Steps to show (default: the whole series); the loss axis fits what is shown.
        ax (matplotlib Axes, optional): Draw into these axes (of a figure the caller saves) instead of a new
            figure; ``out`` is then not written.
    """
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(10, 4.5))
    steps, values = loss
    if xlim is not None:
        shown = (steps >= xlim[0]) & (steps <= xlim[1])
        steps, values = steps[shown], values[shown]
        trend = None if trend is None else _window(trend, xlim)
        threshold = None if threshold is None else _window(threshold, xlim)
        outliers = [e for e in outliers if xlim[0] <= e.peak_step <= xlim[1]]
    finite = np.isfinite(values) & (values > 0)
    ax.plot(*_decimated(steps[finite], values[finite]), color='0.35', linewidth=0.7, label=ylabel)
    if trend is not None:
        ax.plot(*_decimated(*trend), color='tab:blue', linestyle='--', linewidth=1.0, label='trend')
    if threshold is not None:
        ax.plot(*_decimated(*threshold), color='tab:blue', linestyle=':', linewidth=0.8, label='spike threshold')
    if len(outliers):
        ax.plot([e.peak_step for e in outliers], [e.peak_loss for e in outliers], 'o', markersize=3.5,
                markerfacecolor='none', color='tab:brown', label=f'batch outlier ({len(outliers)})')
    if not finite.all():
        ax.plot(steps[~finite], np.ones((~finite).sum()), 'x', color='k', transform=ax.get_xaxis_transform(),
                clip_on=False, label='non-finite loss')
    counts = {kind: sum(e.kind == kind for e in events) for kind in EVENT_KINDS}
    for event, end in zip(events, ends):
        color = EVENT_COLORS[event.kind]
        ax.axvspan(event.onset_step, max(end, event.onset_step + 1), color=color, alpha=0.18, linewidth=0)
        if np.isfinite(event.peak_loss):
            ax.plot(event.peak_step, event.peak_loss, 'v', color=color, markersize=7)
    handles = ax.get_legend_handles_labels()[0] + [
        Patch(color=EVENT_COLORS[kind], alpha=0.35, label=f'{kind} ({counts[kind]})')
        for kind in EVENT_KINDS if counts[kind]
    ]
    if len(steps):
        ax.set_xlim(*(xlim or (steps[0], steps[-1])))
    ax.set_yscale('log')
    ax.set_xlabel('step (batch)')
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which='both')
    ax.legend(handles=handles, fontsize=8, loc='upper right')
    if title:
        ax.set_title(title, fontsize=10 if own else 8)
    return save_figure(fig, out) if own else Path(out)


def _window(series: Series, xlim: tuple) -> Series:
    steps, values = series
    shown = (steps >= xlim[0]) & (steps <= xlim[1])
    return steps[shown], values[shown]


def _decimated(steps: np.ndarray, values: np.ndarray, bins: int = _PLOT_BINS) -> Series:
    """At most about ``2 * bins`` points: the minimum and maximum of each bin, in step order, so that spikes and
    outliers stay visible however long the series."""
    if len(steps) <= 2 * bins:
        return steps, values
    edges = np.linspace(0, len(steps), bins + 1).astype(np.int64)
    low = np.minimum.reduceat(values, edges[:-1])
    high = np.maximum.reduceat(values, edges[:-1])
    middle = steps[(edges[:-1] + edges[1:]) // 2]
    return np.repeat(middle, 2), np.stack([low, high], axis=1).ravel()


def plot_event_windows(windows: Sequence[tuple[str, Series, LossEvent]], out: Union[str, Path], half_width: int = 40,
                       columns: int = 5) -> Path:
    """Small multiples: for each ``(label, series, event)``, the series around the event (``half_width`` points each
    side) with the event marked, numbered for labelling by eye. Saves a PNG.
    """
    rows = -(-len(windows) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.3 * rows), squeeze=False)
    for number, (ax, (label, (steps, values), event)) in enumerate(zip(axes.ravel(), windows), 1):
        at = int(np.searchsorted(steps, event.onset_step))
        lo, hi = max(0, at - half_width), min(len(steps) - 1, at + half_width)
        shown = slice(lo, hi + 1)
        ax.plot(steps[shown], values[shown], color='0.35', linewidth=0.7)
        ax.axhline(event.baseline_loss, color='tab:blue', linestyle='--', linewidth=0.8)
        marked = event.above_steps or [event.onset_step]
        ax.plot(marked, values[np.searchsorted(steps, marked)], 'o', markerfacecolor='none', color='tab:brown')
        ax.set_title(f'{number}. {label} @{event.onset_step} {event.height:+.0%}', fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[len(windows):]:
        ax.axis('off')
    fig.tight_layout()
    return save_figure(fig, out)


def plot_recurring_outliers(runs: Sequence[tuple[str, Series, Sequence[LossEvent]]], out: Union[str, Path],
                            window: tuple[int, int], overlaid: Optional[int] = None) -> Path:
    """The first ``overlaid`` runs (runs reading the same data in the same order) overlaid over ``window`` (steps),
    each with its batch outliers marked, above a raster of every outlier step of every run: outliers that come from
    the data recur at the same steps. Saves a PNG."""
    fig, (top, raster) = plt.subplots(2, 1, figsize=(10, 6), gridspec_kw={'height_ratios': [2.2, 1]})
    for index, (name, (steps, values), outliers) in enumerate(runs):
        color = f'C{index}'
        if overlaid is None or index < overlaid:
            shown = (steps >= window[0]) & (steps <= window[1])
            top.plot(steps[shown], values[shown], color=color, linewidth=0.7, alpha=0.8, label=name)
            marked = [e for e in outliers if window[0] <= e.peak_step <= window[1]]
            top.plot([e.peak_step for e in marked], [e.peak_loss for e in marked], 'o', markerfacecolor='none',
                     color=color, markersize=6)
        raster.plot([e.onset_step for e in outliers], np.full(len(outliers), index), '|', color=color, markersize=14)
    top.set_xlim(*window)
    top.set_ylabel('loss')
    top.set_title(f'batch outliers (circled) at the same steps in runs sharing a data order, steps {window[0]}-'
                  f'{window[1]}', fontsize=10)
    top.legend(fontsize=8, loc='upper right')
    raster.set_yticks(range(len(runs)), [name for name, _, _ in runs], fontsize=7)
    raster.set_ylim(-0.7, len(runs) - 0.3)
    raster.set_xlabel('step (batch): every batch outlier of each run')
    fig.tight_layout()
    return save_figure(fig, out)
