"""``foundry-ext collapse``: the typer wiring of :mod:`foundry_ext.commands.collapse` (docs/collapse.md)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

import typer

from foundry_ext.cli.errors import App
from foundry_ext.cli.options import RUN_HELP, TrackingUri
from foundry_ext.core.metric_names import LOSS_KEY

if TYPE_CHECKING:
    from foundry_ext.commands.collapse import Report

log = logging.getLogger(__name__)

__all__ = ['app']

app = App(add_completion=False, no_args_is_help=True,
          help='Loss-curve collapse ([SwC] arXiv:2509.25087): tau calculator, reference fit, prediction.')

_RUN_HELP = RUN_HELP + ' A metrics file may have config.yaml or run.json beside it.'


def _show(report: Report) -> None:
    for message in report.warnings:
        typer.echo(f'warning: {message}', err=True)
    typer.echo('\n'.join(report.lines))


@app.command()
def tau(
    yaml_path: str = typer.Argument(..., help='Foundry training YAML.'),
    overrides: Optional[list[str]] = typer.Argument(None, help='Foundry-style key=value overrides.'),
    target: Optional[float] = typer.Option(None, '--target', '-t', help='Target tau (fraction of training): '
                                           'print the optimizer.weight_decay that gives it.'),
) -> None:
    """Print a run's parameters, tokens, TPP, AdamW timescale tau (steps and fraction of T), and the weight decay
    for a target tau."""
    from foundry_ext.commands.collapse import tau as run

    report = run(yaml_path, overrides, target)
    _show(report)


@app.command()
def fit(
    runs: list[str] = typer.Argument(..., help=_RUN_HELP + ' Finished runs with the same schedule, TPP and tau.'),
    out: str = typer.Option('ref.json', '--out', '-o', help='Reference JSON to write.'),
    smooth: Optional[int] = typer.Option(None, '--smooth', '-s', help='Moving-average window (logged points) applied '
                                         'before fitting; recorded in the reference and reused by predict, plot and '
                                         'the monitor. Default: 25 for losses logged every step, else 1.'),
    fit_start: Optional[float] = typer.Option(None, '--fit-start', help='Ignore t/T below this. Default: the end of '
                                              'the warmup, at least 0.05.'),
    final_loss: str = typer.Option('fit', '--final-loss', help="How each run's L(T) is found: 'fit' (a per-run "
                                   "scale fitted with the shape, robust to noisy losses) or 'tail' (a line through "
                                   'the last 2% of the raw losses).'),
    loss_key: str = typer.Option(LOSS_KEY, '--loss-key', help='Loss metric.'),
    tracking_uri: TrackingUri = None,
) -> None:
    """Fit a reference curve ([SwC] Eq. 4) and its band on finished runs; size-aware when their controls (from
    config.yaml or run.json) differ."""
    from foundry_ext.commands.collapse import fit as run

    report = run(runs, out, smooth, fit_start, final_loss, loss_key, tracking_uri)
    _show(report)


@app.command()
def predict(
    run_path: str = typer.Argument(..., help=_RUN_HELP + ' May be unfinished.'),
    ref_path: str = typer.Option(..., '--ref', '-r', help='Reference JSON from `collapse fit`.'),
    fraction: Optional[float] = typer.Option(None, '--fraction', '-f', help='Use only t/T up to this (e.g. 0.2); '
                                             'default: every logged point.'),
    total_steps: Optional[int] = typer.Option(None, '--total-steps', '-T', help='T of the run, if it has no '
                                              'config.yaml and is unfinished.'),
    threshold: float = typer.Option(3.0, '--threshold', help='Out of band: |z| above this.'),
    consecutive: int = typer.Option(5, '--consecutive', help='Report where this many out-of-band points in a '
                                    'row start.'),
    window: float = typer.Option(0.05, '--window', help='For a finished run: compare the predicted and measured '
                                 'mean loss over this last fraction of training.'),
    loss_key: str = typer.Option(LOSS_KEY, '--loss-key', help='Loss metric.'),
    align_window: float = typer.Option(0.03, '--align-window', help='Align on the logged points within this fraction '
                                       'of training before --fraction (at least two).'),
    tracking_uri: TrackingUri = None,
) -> None:
    """Predict a run's final loss from its beginning, and report where it leaves the reference band."""
    from foundry_ext.commands.collapse import predict as run

    report = run(run_path, ref_path, fraction, total_steps, threshold, consecutive, window, loss_key, align_window,
                 tracking_uri)
    _show(report)


@app.command()
def plot(
    runs: list[str] = typer.Argument(..., help=_RUN_HELP),
    out: str = typer.Option('collapse.png', '--out', '-o', help='PNG to write.'),
    ref_path: Optional[str] = typer.Option(None, '--ref', '-r', help='Reference JSON to overlay; needed for '
                                           'unfinished runs (normalized by the early-aligned L(T)).'),
    smooth: Optional[int] = typer.Option(None, '--smooth', '-s', help="Moving-average window; default the "
                                         "reference's, else 1."),
    residuals: bool = typer.Option(False, '--residuals', help='Add a panel with the residual z (needs --ref).'),
    total_steps: Optional[int] = typer.Option(None, '--total-steps', '-T', help='T of every run (default: its '
                                              'config.yaml, else its last logged step + 1).'),
    loss_key: str = typer.Option(LOSS_KEY, '--loss-key', help='Loss metric.'),
    tracking_uri: TrackingUri = None,
) -> None:
    """Plot raw loss curves next to the normalized ones (L/L(T) against t/T)."""
    from foundry_ext.commands.collapse import plot as run

    report = run(runs, out, ref_path, smooth, residuals, total_steps, loss_key, tracking_uri)
    _show(report)
