"""``foundry-ext loss-law``: fit a loss law on runs, predict a schedule's loss curve, forecast WSD branches.

Typer wiring only; the commands are in :mod:`foundry_ext.commands.loss_law` (see docs/loss_law.md).
"""

from __future__ import annotations

import json
import logging
from typing import Optional

import typer

from foundry_ext.cli.errors import App
from foundry_ext.cli.options import RUN_HELP, TrackingUri

log = logging.getLogger(__name__)

__all__ = ['app']

app = App(add_completion=False, no_args_is_help=True,
          help='Loss laws (multi-power, momentum): fit on runs, then forecast any schedule or branch.')

_RUN_HELP = RUN_HELP + (' A run whose LR starts late (a branch) is joined to the run it branched from when both are '
                        'given.')
_EXTRA = {'allow_extra_args': True, 'ignore_unknown_options': True}


@app.command()
def fit(
    runs: list[str] = typer.Argument(..., help=_RUN_HELP),
    out: str = typer.Option('law.json', '--out', '-o', help='Law file (JSON) to write.'),
    loss_key: Optional[str] = typer.Option(None, '--loss-key', help="Loss metric; default loss/train/total, else a "
                                           "'loss' column."),
    lr_key: Optional[str] = typer.Option(None, '--lr-key', help="LR column; default lr_monitor's "
                                         "lr-<Optimizer>/group0, else an 'lr' column."),
    law: str = typer.Option('multi-power', '--law', help='multi-power (Luo et al. 2025) or momentum (Tissue et al. '
                            '2024).'),
    fit_from: Optional[str] = typer.Option(None, '--fit-from', help="First step fitted in every run, or 'auto' "
                                           '(chosen by cross-validation over the runs that decay); default the end '
                                           "of each run's warmup."),
    bootstrap: int = typer.Option(32, '--bootstrap', help='Block-bootstrap refits behind the intervals.'),
    interval: float = typer.Option(0.9, '--interval', help='Level of the intervals of predictions.'),
    max_points: int = typer.Option(256, '--max-points', help='Loss windows per run (averages of logged points).'),
    tracking_uri: TrackingUri = None,
) -> None:
    """Fit a loss law on one or more runs' loss and LR."""
    from foundry_ext.commands.loss_law import fit as run
    from foundry_ext.commands.loss_law import format_fit

    typer.echo(format_fit(run(runs, out, loss_key, lr_key, law, fit_from, bootstrap, interval, max_points,
                              tracking_uri), out))


@app.command(context_settings=_EXTRA)
def predict(
    law_path: str = typer.Argument(..., metavar='LAW', help='Law file from `loss-law fit`.'),
    overrides: Optional[list[str]] = typer.Argument(None, help='Foundry-style key=value overrides of a YAML '
                                                   'schedule.'),
    schedule: str = typer.Option(..., '--schedule', '-s', help='A Foundry YAML, or a RUN whose logged LR is the '
                                 'schedule: a metrics/CSV file with step and an LR column (LR linear between rows; '
                                 'the last row is the final step), a run folder or an MLflow run.'),
    lr_key: Optional[str] = typer.Option(None, '--lr-key', help='LR column of a schedule file.'),
    as_json: bool = typer.Option(False, '--json', help='Print one JSON object: final_loss, final_step, '
                                 'final_loss_interval, interval and the curve.'),
    out: Optional[str] = typer.Option(None, '--out', '-o', help='PNG of the predicted curve.'),
    tracking_uri: TrackingUri = None,
) -> None:
    """Predict the loss curve of an LR schedule, with intervals."""
    from foundry_ext.commands.loss_law import format_prediction, predict_schedule

    prediction = predict_schedule(law_path, schedule, overrides or [], lr_key, out, tracking_uri)
    typer.echo(json.dumps(prediction.to_dict()) if as_json else format_prediction(prediction, schedule))


@app.command(context_settings=_EXTRA)
def branches(
    law_path: str = typer.Argument(..., metavar='LAW', help='Law file fitted on the main run (and its branches).'),
    yaml_path: str = typer.Argument(..., metavar='YAML', help="The main run's Foundry YAML (scheduler: wsd)."),
    overrides: Optional[list[str]] = typer.Argument(None, help='Foundry-style key=value overrides.'),
    at: str = typer.Option(..., '--at', help='Branch steps (batches), comma-separated, e.g. 400,600.'),
    decay: str = typer.Option(..., '--decay', help='Decay lengths with units, comma-separated, e.g. 100ba,200ba.'),
    shape: Optional[str] = typer.Option(None, '--shape', help="Decay shapes, comma-separated (linear, cosine, "
                                        "1-sqrt, 1-square); default the YAML's decay_shape."),
    out: str = typer.Option('branches.png', '--out', '-o', help='PNG of the predicted final losses.'),
) -> None:
    """Predict the final loss of every branch (step x decay x shape) and the best decay for each budget."""
    from foundry_ext.commands.loss_law import branch_grid

    _, table = branch_grid(law_path, yaml_path, overrides or [], at, decay, shape, out)
    typer.echo(table)
