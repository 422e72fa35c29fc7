"""Plots for loss-curve collapse: raw curves next to normalized ones, and collapse residuals (matplotlib)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from foundry_ext.collapse.reference import ReferenceCurve
from foundry_ext.core.errors import fail
from foundry_ext.core.plots import plt, save_figure

log = logging.getLogger(__name__)

__all__ = ['CollapseCurve', 'Marker', 'plot_collapse']


@dataclass(frozen=True)
class CollapseCurve:
    """One run to draw.

    Attributes:
        label (str): Legend label.
        steps (np.ndarray): Steps (smoothed points may sit between steps).
        losses (np.ndarray): Training losses at those steps.
        total_steps (int): ``T``.
        final_loss (float): ``L(T)`` used to normalize.
        color (str, optional): Matplotlib color.
        linestyle (str): Matplotlib line style.
        reference (ReferenceCurve, optional): The run's own reference for the residual panel (a size-aware
            reference specialized to its controls); default the figure's.
    """

    label: str
    steps: np.ndarray
    losses: np.ndarray
    total_steps: int
    final_loss: float
    color: Optional[str] = None
    linestyle: str = '-'
    reference: Optional[ReferenceCurve] = None


@dataclass(frozen=True)
class Marker:
    """A vertical line at a training fraction, drawn on the ``t/T`` panels."""

    label: str
    fraction: float
    color: str = 'k'


def plot_collapse(
    curves: Sequence[CollapseCurve],
    out: Union[str, Path],
    ref: Optional[ReferenceCurve] = None,
    band_k: float = 3.0,
    residuals: bool = False,
    markers: Sequence[Marker] = (),
    title: str = '',
    loss_label: str = 'training loss',
) -> Path:
    """Draws raw loss vs step next to ``L/L(T)`` vs ``t/T`` (and optionally the residual ``z``); saves a PNG.

    Args:
        curves (Sequence[CollapseCurve]): Runs to draw.
        out (str | Path): PNG to write.
        ref (ReferenceCurve, optional): Drawn on the normalized panel with a ``+-band_k`` band.
        band_k (float): Band half-width in reference band units (the monitor's threshold).
        residuals (bool): Add a third panel with ``z = (ell - ref) / band`` (needs ``ref``).
        markers (Sequence[Marker]): Vertical lines on the ``t/T`` panels.
        title (str): Figure title.
        loss_label (str): What the raw panel's loss is (e.g. the metric key read).
    """
    if residuals and ref is None:
        fail('residual panel needs a reference curve.')
    n = 3 if residuals else 2
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.3))
    ax_raw, ax_norm = axes[0], axes[1]
    for c in curves:
        t = c.steps / c.total_steps
        ax_raw.plot(c.steps, c.losses, color=c.color, linestyle=c.linestyle, linewidth=1.0, label=c.label)
        ax_norm.plot(t, c.losses / c.final_loss, color=c.color, linestyle=c.linestyle, linewidth=1.0, label=c.label)
        if residuals:
            own = c.reference or ref
            assert own is not None
            with np.errstate(invalid='ignore'):
                z = (c.losses / c.final_loss - own(t)) / own.band(t)
            axes[2].plot(t, z, color=c.color, linestyle=c.linestyle, linewidth=1.0, label=c.label)
    ax_raw.set(xlabel='step', ylabel=loss_label, title='raw')
    ax_norm.set(xlabel='t / T', ylabel='L / L(T)', title='normalized')
    if ref is not None:
        grid = np.linspace(ref.fit_start, 1.0, 400)
        mean, width = ref(grid), band_k * ref.band(grid)
        ax_norm.plot(grid, mean, color='k', linewidth=1.2, linestyle='--', label='reference')
        ax_norm.fill_between(grid, mean - width, mean + width, color='k', alpha=0.12, linewidth=0,
                             label=f'reference +-{band_k:g} band')
    tops = [float(np.percentile(c.losses / c.final_loss, 97)) for c in curves]
    ax_norm.set_ylim(0.97, max(tops) if tops else 2.0)
    if residuals:
        ax_res = axes[2]
        for sign in (-1, 1):
            ax_res.axhline(sign * band_k, color='k', linestyle=':', linewidth=0.8)
        ax_res.set(xlabel='t / T', ylabel='z = (L/L(T) - ref) / band', title='collapse residual')
    for ax in axes[1:]:
        for m in markers:
            ax.axvline(m.fraction, color=m.color, linestyle='-.', linewidth=1.0, label=m.label)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out)
