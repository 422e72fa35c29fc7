"""``foundry-ext collapse``: AdamW timescale calculator, reference fit, early final-loss prediction, plots.

A RUN is a metrics file written by the ``jsonl`` logger (or a CSV with a ``step`` column), or a folder holding
``metrics.jsonl``. A ``config.yaml`` beside it (the run's training YAML with its overrides merged) gives the run
length ``T``, ``tau`` and TPP; without one ``T`` is the last logged step + 1 (a finished run) or
``--total-steps``. The LR schedule is read from the LR the run logged (``lr_monitor``). See docs/collapse.md.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Optional

import typer

from foundry_ext.cli.errors import App
from foundry_ext.core.metric_names import LOSS_KEY

log = logging.getLogger(__name__)

__all__ = ['app']

app = App(add_completion=False, no_args_is_help=True,
          help='Loss-curve collapse ([SwC] arXiv:2509.25087): tau calculator, reference fit, prediction.')

_RUN_HELP = 'Run: a metrics JSONL/CSV file or a folder with metrics.jsonl (and optionally config.yaml).'
# Two runs' schedules more than this apart (in LR multiplier) cannot share a reference.
_SCHEDULE_TOLERANCE = 0.02


@contextlib.contextmanager
def _errors_as_messages() -> Iterator[None]:
    """Shows bad input (a missing file, a wrong unit, an unfinished run) as one line instead of a traceback."""
    yield  # App's commands already do; kept until this module's logic moves to foundry_ext.commands


def _warn(message: str) -> None:
    typer.echo(f'warning: {message}', err=True)


@app.command()
def tau(
    yaml_path: str = typer.Argument(..., help='Foundry training YAML.'),
    overrides: Optional[list[str]] = typer.Argument(None, help='Foundry-style key=value overrides.'),
    target: Optional[float] = typer.Option(None, '--target', '-t', help='Target tau (fraction of training): '
                                           'print the optimizer.weight_decay that gives it.'),
) -> None:
    """Print a run's parameters, tokens, TPP, AdamW timescale tau (steps and fraction of T), and the weight decay
    for a target tau."""
    from foundry_ext.analysis.collapse import from_foundry_config, weight_decay_for_tau_fraction
    from foundry_ext.core.config import load_train_config

    with _errors_as_messages():
        budget = from_foundry_config(load_train_config(yaml_path, overrides))
        rows = [
            ('parameters N', f'{budget.total_params:,} ({budget.non_embedding_params:,} without token/position '
                             'embeddings)'),
            ('tokens D', f'{budget.total_tokens:,} = T {budget.total_steps:,} steps x B {budget.tokens_per_batch:,} '
                         'tokens/step'),
            ('TPP = D/N', f'{budget.tpp:.4g} (non-embedding: {budget.non_embedding_tpp:.4g})'),
            ('optimizer', f'{budget.optimizer}, lr {budget.peak_lr:g}'
                          f'{f" (schedule peak x{budget.peak_multiplier:g})" if budget.peak_multiplier != 1 else ""}, '
                          f'weight_decay {budget.weight_decay:g}: decay per step at peak LR (eta*lambda) '
                          f'{budget.eta_lambda:.4g}'),
            ('tau_iter', f'{budget.tau_iter:.5g} steps (1 / eta*lambda)'),
            ('tau = tau_iter/T', f'{budget.tau_fraction:.4g}'),
        ]
        if target is not None:
            wd = weight_decay_for_tau_fraction(target, budget)
            rows.append((f'for tau = {target:g}', f'optimizer.weight_decay={wd:.6g}'))
    typer.echo('\n'.join(f'{label + ":":<18}{value}' for label, value in rows))


@app.command()
def fit(
    runs: list[str] = typer.Argument(..., help=_RUN_HELP + ' Finished runs with the same schedule, TPP and tau.'),
    out: str = typer.Option('ref.json', '--out', '-o', help='Reference JSON to write.'),
    smooth: int = typer.Option(25, '--smooth', '-s', help='Moving-average window (logged points) applied before '
                               'fitting; recorded in the reference and reused by predict, plot and the monitor.'),
    fit_start: float = typer.Option(0.1, '--fit-start', help='Ignore t/T below this (warmup).'),
    final_loss: str = typer.Option('fit', '--final-loss', help="How each run's L(T) is found: 'fit' (a per-run "
                                   "scale fitted with the shape, robust to noisy losses) or 'tail' (a line through "
                                   'the last 2% of the raw losses).'),
    loss_key: str = typer.Option(LOSS_KEY, '--loss-key', help='Loss metric.'),
) -> None:
    """Fit a reference curve ([SwC] Eq. 4) and its band on finished runs with matched controls."""
    from pathlib import Path

    import numpy as np

    from foundry_ext.analysis.collapse import fit_reference, predict_final_loss, smooth_curve
    from foundry_ext.analysis.collapse_runs import load_run

    with _errors_as_messages():
        loaded = [load_run(path, loss_key=loss_key) for path in runs]
        unfinished = [r.name for r in loaded if not r.finished]
        if unfinished:
            raise ValueError(f'runs {unfinished} did not log a loss at their last step T - 1; fit needs finished runs '
                             '(or their config.yaml has a different max_duration).')
        schedule = loaded[0].schedule()
        grid = np.linspace(0.0, 1.0, 1001)
        for run in loaded[1:]:
            gap = float(np.max(np.abs(run.schedule()(grid) - schedule(grid))))
            if gap > _SCHEDULE_TOLERANCE:
                _warn(f'{run.name}: LR schedule differs from {loaded[0].name} by up to {gap:.3f} (of the peak); '
                      'curves only collapse with the same schedule over t/T.')
        budgets = [r.budget for r in loaded]
        tau_fraction = tpp = None
        if all(b is not None for b in budgets):
            tau_fraction, tpp = budgets[0].tau_fraction, budgets[0].tpp
        else:
            _warn('not every run has a config.yaml: tau and TPP are not recorded in the reference.')
        ref = fit_reference([r.curve for r in loaded], schedule, fit_start=fit_start, smoothing=smooth,
                            final_loss=final_loss, tau_fraction=tau_fraction, tpp=tpp)
        if tau_fraction is not None:  # the reference records the first run's controls
            for run, b in zip(loaded[1:], budgets[1:]):
                for problem in ref.controls_mismatch(b.tau_fraction, b.tpp):
                    _warn(f'{run.name}: {problem} (of {loaded[0].name}); the runs do not share controls, so their '
                          'curves need not collapse.')
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(ref.to_json())
    for run in loaded:
        # The L(T) each run was normalized by: aligned over its whole curve ('fit'), or its tail line.
        final = (predict_final_loss(*smooth_curve(run.curve.steps, run.curve.losses, smooth), run.total_steps,
                                    ref).final_loss if final_loss == 'fit' else run.final_loss())
        typer.echo(f'{run.name}: T={run.total_steps}, L(T)={final:.4f}')
    controls = f'tau {tau_fraction:.4g}, TPP {tpp:.4g}' if tau_fraction is not None else 'controls not recorded'
    typer.echo(f'reference: b={ref.b:.4g}, q={ref.q:.4g}, m={ref.m:g}; RMS misfit {ref.fit_rmse:.4f}; band '
               f'{min(ref.band_sigma):.4f}..{max(ref.band_sigma):.4f}; smoothing {smooth}; {controls}')
    typer.echo(f'wrote {out}')


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
) -> None:
    """Predict a run's final loss from its beginning, and report where it leaves the reference band."""
    from pathlib import Path

    from foundry_ext.analysis.collapse import (ReferenceCurve, collapse_residual, final_window_losses,
                                               predict_final_loss, smooth_curve)
    from foundry_ext.analysis.collapse_runs import load_run

    with _errors_as_messages():
        ref = ReferenceCurve.from_json(Path(ref_path).read_text())
        run = load_run(run_path, total_steps, loss_key)
        if run.budget is not None:
            for problem in ref.controls_mismatch(run.budget.tau_fraction, run.budget.tpp):
                _warn(f'{problem}: collapse needs the same tau and TPP.')
        steps, losses = smooth_curve(run.curve.steps, run.curve.losses, ref.smoothing)
        if fraction is not None:
            keep = steps / run.total_steps <= fraction
            steps, losses = steps[keep], losses[keep]
        pred = predict_final_loss(steps, losses, run.total_steps, ref)
        residual = collapse_residual(steps, losses, run.total_steps, ref)
    lines = [f'{run.name}: T={run.total_steps}; predicted L(T) = {pred.final_loss:.4f} '
             f'[{pred.lower:.4f}, {pred.upper:.4f}] from t/T <= {pred.fraction_used:.3f} ({pred.n_points} points)']
    if run.finished:
        measured, predicted = final_window_losses(*run.curve, ref, pred.final_loss, window)
        lines.append(f'finished: mean loss over the last {window:.0%} of steps {measured:.4f}, predicted '
                     f'{predicted:.4f}: error {predicted / measured - 1:+.2%}')
    onset = residual.onset(threshold, consecutive)
    lines.append(f'collapse residual at t/T = {residual.fractions[-1]:.3f}: z = {residual.z[-1]:+.2f}; '
                 + (f'out of band (|z| > {threshold:g}, {consecutive} in a row) from t/T = {onset:.3f}'
                    if onset is not None else f'never out of band (|z| > {threshold:g}, {consecutive} in a row)'))
    typer.echo('\n'.join(lines))


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
) -> None:
    """Plot raw loss curves next to the normalized ones (L/L(T) against t/T)."""
    from pathlib import Path

    from foundry_ext.analysis.collapse import ReferenceCurve, collapse_residual, predict_final_loss, smooth_curve
    from foundry_ext.analysis.collapse_plots import CollapseCurve, plot_collapse
    from foundry_ext.analysis.collapse_runs import load_run

    with _errors_as_messages():
        ref = ReferenceCurve.from_json(Path(ref_path).read_text()) if ref_path else None
        if residuals and ref is None:
            raise ValueError('--residuals needs --ref.')
        window = smooth if smooth is not None else (ref.smoothing if ref else 1)
        curves = []
        for i, path in enumerate(runs):
            run = load_run(path, total_steps, loss_key)
            steps, losses = smooth_curve(run.curve.steps, run.curve.losses, window)
            if run.finished:
                # Normalized as a 'fit' reference normalizes its runs, or by the tail line without one.
                final = (predict_final_loss(steps, losses, run.total_steps, ref).final_loss if ref is not None
                         else run.final_loss())
                label = run.name
            elif ref is not None:
                final = collapse_residual(steps, losses, run.total_steps, ref).final_loss
                label = f'{run.name} (unfinished, early-aligned)'
            else:
                raise ValueError(f'{run.name} is unfinished: pass --ref to normalize it by the early-aligned L(T).')
            curves.append(CollapseCurve(label, steps, losses, run.total_steps, final, f'C{i % 10}'))
        path = plot_collapse(curves, out, ref=ref, residuals=residuals)
    typer.echo(f'wrote {path}')
