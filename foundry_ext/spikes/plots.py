"""Plots of loss series with their loss events (matplotlib, headless)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from foundry_ext.core.metrics_io import Series
from foundry_ext.core.plots import save_figure  # selects the headless backend before pyplot loads
from foundry_ext.spikes.detector import EVENT_KINDS, LossEvent

import matplotlib.pyplot as plt  # noqa: E402  isort: skip
from matplotlib.patches import Patch  # noqa: E402  isort: skip

log = logging.getLogger(__name__)

__all__ = ['EVENT_COLORS', 'plot_loss_events']

EVENT_COLORS = dict(zip(EVENT_KINDS, ('tab:green', 'tab:orange', 'tab:red', 'tab:purple')))


def plot_loss_events(loss: Series, events: Sequence[LossEvent], ends: Sequence[int], out: Union[str, Path],
                     trend: Optional[Series] = None, threshold: Optional[Series] = None, title: str = '',
                     ylabel: str = 'loss') -> Path:
    """Draws a loss series on a log axis with its loss events shaded by kind, and saves a PNG.

    Args:
        loss (Series): Steps and losses; non-finite losses are marked with an ``x`` at the top of the axes.
        events (Sequence[LossEvent]): Classified events, each shaded from its onset to its end and its peak marked.
        ends (Sequence[int]): Last step of each event: where it recovered, or where it was classified.
        out (str | Path): PNG to write.
        trend (Series, optional): The detector's trend (the projected pre-spike level during a spike).
        threshold (Series, optional): Loss above which a spike opens.
        title (str): Figure title.
        ylabel (str): Label of the loss axis.
    """
    fig, ax = plt.subplots(figsize=(10, 4.5))
    steps, values = loss
    finite = np.isfinite(values) & (values > 0)
    ax.plot(steps[finite], values[finite], color='0.35', linewidth=0.7, label=ylabel)
    if trend is not None:
        ax.plot(*trend, color='tab:blue', linestyle='--', linewidth=1.0, label='trend')
    if threshold is not None:
        ax.plot(*threshold, color='tab:blue', linestyle=':', linewidth=0.8, label='spike threshold')
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
        ax.set_xlim(steps[0], steps[-1])
    ax.set_yscale('log')
    ax.set_xlabel('step (batch)')
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which='both')
    ax.legend(handles=handles, fontsize=8, loc='upper right')
    if title:
        ax.set_title(title)
    return save_figure(fig, out)
