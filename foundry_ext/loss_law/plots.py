"""Plots of loss-law forecasts: a predicted curve with its interval, and the final losses of a grid of branches."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import matplotlib.pyplot as plt  # noqa: E402,I001

from foundry_ext.core.metrics_io import Series
from foundry_ext.core.plots import save_figure  # selects the headless backend before pyplot loads
from foundry_ext.loss_law.branches import BranchForecast
from foundry_ext.loss_law.predict import Prediction

log = logging.getLogger(__name__)

__all__ = ['plot_branches', 'plot_prediction']


def plot_prediction(prediction: Prediction, lr: Series, out: Union[str, Path], title: str = '',
                    observed: Optional[Series] = None) -> Path:
    """The schedule's LR (top) and the predicted loss with its interval (bottom), optionally over measured losses."""
    fig, (ax_lr, ax_loss) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={'height_ratios': [1, 2]})
    ax_lr.plot(*lr, color='tab:blue')
    ax_lr.set_ylabel('learning rate')
    if observed is not None:
        ax_loss.plot(*observed, color='0.6', linewidth=0.7, label='measured')
    ax_loss.plot(prediction.steps, prediction.loss, color='tab:red', label='predicted')
    ax_loss.fill_between(prediction.steps, prediction.lower, prediction.upper, color='tab:red', alpha=0.25,
                         label=f'{prediction.level:.0%} interval')
    low = min(prediction.lower.min(), prediction.loss.min())
    ax_loss.set_ylim(low - 0.02 * abs(low), prediction.upper[len(prediction.upper) // 10:].max() * 1.01)
    ax_loss.set_ylabel('loss')
    ax_loss.set_xlabel('step (batch)')
    ax_loss.legend()
    for ax in (ax_lr, ax_loss):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out)


def plot_branches(forecasts: Sequence[BranchForecast], out: Union[str, Path], title: str = '') -> Path:
    """Predicted final loss against the budget (branch step + decay), one line per decay length and shape."""
    fig, ax = plt.subplots(figsize=(9, 5))
    groups = sorted({(f.decay, f.shape) for f in forecasts})
    for i, (decay, shape) in enumerate(groups):
        rows = sorted((f for f in forecasts if (f.decay, f.shape) == (decay, shape)), key=lambda f: f.budget)
        budgets = [f.budget for f in rows]
        finals = [f.final_loss for f in rows]
        errors = [[f.final_loss - f.interval[0] for f in rows], [f.interval[1] - f.final_loss for f in rows]]
        ax.errorbar(budgets, finals, yerr=errors, marker='o', capsize=3, color=f'C{i % 10}',
                    linestyle='-' if shape == groups[0][1] else '--', label=f'decay {decay} batches, {shape}')
    ax.set_xlabel('budget: branch step + decay (batches)')
    ax.set_ylabel('predicted final loss')
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return save_figure(fig, out)
