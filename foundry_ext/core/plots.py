"""Plots of runs and schedules (matplotlib, headless)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from foundry_ext.core.metrics_io import Series  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ['Curve', 'plot_lr_and_loss', 'plot_lr_curves', 'save_figure']


@dataclass
class Curve:
    """One labelled line of a plot."""
    label: str
    series: Series
    linestyle: str = '-'
    color: Optional[str] = None


def plot_lr_and_loss(lr: Series, loss: Series, out: Union[str, Path], title: str = '',
                     spans: Sequence[tuple[float, float, str]] = ()) -> Path:
    """Draws the LR (top) and training loss (bottom) against the step, and saves a PNG.

    Args:
        lr (Series): Steps and learning rates.
        loss (Series): Steps and training losses.
        out (str | Path): The PNG.
        title (str): The figure's title.
        spans (Sequence[tuple[float, float, str]]): Stretches of steps to shade on the loss, with a label, e.g. the
            steps a rollback trained again (``loss_spike_monitor``).
    """
    fig, (ax_lr, ax_loss) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax_lr.plot(*lr, color='tab:blue')
    ax_lr.set_ylabel('learning rate')
    ax_loss.plot(*loss, color='tab:red', linewidth=0.8)
    for start, end, label in spans:
        ax_loss.axvspan(start, end, color='tab:orange', alpha=0.2, label=label)
    if spans:
        ax_loss.legend(fontsize='small')
    ax_loss.set_ylabel('training loss')
    ax_loss.set_xlabel('step (batch)')
    for ax in (ax_lr, ax_loss):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out)


def plot_lr_curves(curves: Sequence[Curve], out: Union[str, Path], title: str = '',
                   xlabel: str = 'step (batch)', ylabel: str = 'learning rate') -> Path:
    """Draws several labelled curves on one axis and saves a PNG."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for curve in curves:
        ax.plot(*curve.series, label=curve.label, linestyle=curve.linestyle, color=curve.color)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return save_figure(fig, out)


def save_figure(fig: plt.Figure, out: Union[str, Path]) -> Path:
    """Saves ``fig`` as a PNG at ``out`` (creating its folder), closes it, and returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
