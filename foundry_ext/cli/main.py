"""The ``foundry-ext`` command."""

from __future__ import annotations

import logging
from typing import Optional

import typer

from foundry_ext.cli.errors import App
from foundry_ext.core.metric_names import LOSS_KEY

log = logging.getLogger(__name__)

__all__ = ['app', 'main']

app = App(add_completion=False, no_args_is_help=True,
          help='foundry-ext: WSD schedules, resume guards and loss-curve analysis for LLM-Foundry.')
# Sub-apps import only typer and metric names here; their commands import what they need.
from foundry_ext.cli.collapse import app as collapse_app  # noqa: E402
from foundry_ext.cli.loss_law import app as loss_law_app  # noqa: E402
from foundry_ext.cli.options import RUN_HELP, TrackingUri  # noqa: E402

app.add_typer(collapse_app, name='collapse')
app.add_typer(loss_law_app, name='loss-law')


@app.command(context_settings={'allow_extra_args': True, 'ignore_unknown_options': True})
def train(
    yaml_path: str = typer.Argument(..., help='Foundry training YAML.'),
    overrides: Optional[list[str]] = typer.Argument(None, help='Foundry-style key=value overrides.'),
) -> None:
    """Train with LLM-Foundry's train_from_yaml (single process; use `composer scripts/train.py` for many)."""
    from foundry_ext.commands.train import train as run
    run(yaml_path, overrides)


@app.command('plot-schedule')
def plot_schedule(
    yaml_path: str = typer.Argument(..., help='Foundry training YAML.'),
    overrides: Optional[list[str]] = typer.Argument(None, help='Foundry-style key=value overrides.'),
    max_duration: str = typer.Option('1000ba,2000ba,4000ba', '--max-duration', '-m',
                                     help='Comma-separated run lengths to draw the schedule for.'),
    out: str = typer.Option('lr.png', '--out', '-o', help='PNG to write.'),
    compare_cosine: bool = typer.Option(False, '--compare-cosine',
                                        help="Also draw Composer's cosine_with_warmup (dashed) for each length."),
) -> None:
    """Draw the YAML's LR schedule against the step for several max_durations."""
    from foundry_ext.commands.plot_schedule import plot_schedule as run
    durations = [d.strip() for d in max_duration.split(',') if d.strip()]
    if not durations:
        raise typer.BadParameter(f'{max_duration!r} names no run length; give e.g. 1000ba,2000ba.',
                                 param_hint='--max-duration')
    path = run(yaml_path, durations, out, overrides, compare_cosine)
    typer.echo(f'wrote {path}')


@app.command(context_settings={'allow_extra_args': True, 'ignore_unknown_options': True})
def branch(
    yaml_path: str = typer.Argument(..., help="The main run's Foundry YAML (scheduler: wsd)."),
    overrides: Optional[list[str]] = typer.Argument(None, help='Foundry-style key=value overrides.'),
    source: str = typer.Option(..., '--from', help="The main run's save folder, or one checkpoint file."),
    at: Optional[str] = typer.Option(None, '--at', help='Step(s) to branch from, comma-separated, e.g. 400 or 400ba; default newest.'),
    decay: str = typer.Option(..., '--decay', help="Decay length in the schedule's unit, e.g. 100ba."),
    save_folder: Optional[str] = typer.Option(None, '--save-folder', help='Branch folder (one branch only).'),
    dry_run: bool = typer.Option(False, '--dry-run', help='Only print the equivalent commands.'),
) -> None:
    """Branch a finished (decayed) model off a WSD main run, at one or several checkpoints."""
    from foundry_ext.commands.branch import plan_branch, run_branches
    from foundry_ext.schedulers.time_spec import parse_steps
    steps = [None] if at is None else parse_steps(at, '--at')
    if save_folder is not None and len(steps) > 1:
        raise typer.BadParameter('--save-folder names one folder; drop it to give each branch its own.')
    plans = [plan_branch(yaml_path, source, step, decay, save_folder, overrides or []) for step in steps]
    run_branches(plans, yaml_path, dry_run)


@app.command('analyze-loss')
def analyze_loss(
    path: str = typer.Argument(..., help=RUN_HELP + ' JSONL: {"step": 12, "loss/train/total": 2.41, ...} per '
                               'line; CSV: a step column and one column per metric (W&B exports too).'),
    key: str = typer.Option(LOSS_KEY, '--key', '-k', help='Metric to analyse.'),
    out: Optional[str] = typer.Option(None, '--out', '-o', help='PNG to write (default: next to the file; for an '
                                      'MLflow run, <run name>.<key>.events.png in the working folder).'),
    report: Optional[str] = typer.Option(None, '--report', help='JSON report (default: the PNG path, .json).'),
    detector: Optional[list[str]] = typer.Option(None, '--detector', '-d', help='Detector setting KEY=VALUE, '
                                                 'repeatable, e.g. -d z_threshold=5 (see docs/loss_spikes.md).'),
    tracking_uri: TrackingUri = None,
) -> None:
    """Detect and classify loss spikes and divergences in an exported loss series (as loss_spike_monitor does)."""
    from foundry_ext.commands.analyze_loss import analyze_loss as run
    from foundry_ext.commands.analyze_loss import format_report, parse_settings
    try:
        settings = parse_settings(detector)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint='--detector') from err
    typer.echo(format_report(run(path, key, out, report, settings, tracking_uri)))


@app.command('prepare-data')
def prepare_data(
    max_seq_len: int = typer.Option(128, help='Tokens per sample.'),
    local: Optional[str] = typer.Option(None, help='Folder to build into (default: the foundry-ext cache).'),
) -> None:
    """Build the demo corpus (the demo_text loader also does this on first use)."""
    from foundry_ext.data import build_byte_tokenizer, ensure_demo_corpus
    typer.echo(str(ensure_demo_corpus(build_byte_tokenizer(), max_seq_len, local)))


def main() -> None:
    """The console script. Bad input (a YAML value, a file, a metric) prints one line and exits with code 2; a bug
    keeps its traceback (see :mod:`foundry_ext.cli.errors`)."""
    app()


if __name__ == '__main__':
    main()
