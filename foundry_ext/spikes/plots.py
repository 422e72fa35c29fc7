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

__all__ = ['EVENT_COLORS', 'plot_loss_events']

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
