"""``foundry-ext collapse``: AdamW timescale calculator, reference fit, early final-loss prediction, plots.

A RUN is a metrics file written by the ``jsonl`` logger (or a CSV with a ``step`` column), or a folder holding
``metrics.jsonl``. A ``config.yaml`` beside it (the run's training YAML with its overrides merged) gives the run
length ``T``, ``tau`` and TPP; without one ``T`` is the last logged step + 1 (a finished run) or ``total_steps``.
The LR schedule is read from the LR the run logged (``lr_monitor``). See docs/collapse.md.

Each command returns a :class:`Report`: the lines to print and the warnings met on the way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from foundry_ext.core.errors import fail
from foundry_ext.core.metric_names import LOSS_KEY

log = logging.getLogger(__name__)

__all__ = ['Report', 'fit', 'plot', 'predict', 'tau']

# Two runs' schedules more than this apart (in LR multiplier) cannot share a reference.
SCHEDULE_TOLERANCE = 0.02


@dataclass
class Report:
    """What a command prints: its lines, and the warnings it met (shown apart, e.g. on stderr)."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def tau(yaml_path: str, overrides: Optional[Sequence[str]] = None, target: Optional[float] = None) -> Report:
    """A run's parameters, tokens, TPP, AdamW timescale (steps and fraction of T) and the weight decay for a target
    ``tau``."""
    from foundry_ext.collapse.controls import from_foundry_config, weight_decay_for_tau_fraction
    from foundry_ext.core.config import load_train_config

    budget = from_foundry_config(load_train_config(yaml_path, overrides))
    peak = f' (schedule peak x{budget.peak_multiplier:g})' if budget.peak_multiplier != 1 else ''
    rows = [
        ('parameters N', f'{budget.total_params:,} ({budget.non_embedding_params:,} without token/position '
                         'embeddings)'),
        ('tokens D', f'{budget.total_tokens:,} = T {budget.total_steps:,} steps x B {budget.tokens_per_batch:,} '
                     'tokens/step'),
        ('TPP = D/N', f'{budget.tpp:.4g} (non-embedding: {budget.non_embedding_tpp:.4g})'),
        ('optimizer', f'{budget.optimizer}, lr {budget.peak_lr:g}{peak}, weight_decay {budget.weight_decay:g}: '
                      f'decay per step at peak LR (eta*lambda) {budget.eta_lambda:.4g}'),
        ('tau_iter', f'{budget.tau_iter:.5g} steps (1 / eta*lambda)'),
        ('tau = tau_iter/T', f'{budget.tau_fraction:.4g}'),
    ]
    if target is not None:
        rows.append((f'for tau = {target:g}',
                     f'optimizer.weight_decay={weight_decay_for_tau_fraction(target, budget):.6g}'))
    return Report([f'{label + ":":<18}{value}' for label, value in rows])


def fit(runs: Sequence[str], out: str, smooth: int = 25, fit_start: float = 0.1, final_loss: str = 'fit',
        loss_key: str = LOSS_KEY) -> Report:
    """Fits a reference curve ([SwC] Eq. 4) and its band on finished runs with matched controls; writes ``out``."""
    from foundry_ext.collapse.prediction import predict_final_loss
    from foundry_ext.collapse.reference import fit_reference
    from foundry_ext.collapse.curves import smooth_curve
    from foundry_ext.collapse.runs import load_run

    report = Report()
    loaded = [load_run(path, loss_key=loss_key) for path in runs]
    unfinished = [r.name for r in loaded if not r.finished]
    if unfinished:
        fail(f'runs {unfinished} did not log a loss at their last step T - 1; fit needs finished runs (or their '
             'config.yaml has a different max_duration).')
    schedule = loaded[0].schedule()
    grid = np.linspace(0.0, 1.0, 1001)
    for run in loaded[1:]:
        gap = float(np.max(np.abs(run.schedule()(grid) - schedule(grid))))
        if gap > SCHEDULE_TOLERANCE:
            report.warnings.append(f'{run.name}: LR schedule differs from {loaded[0].name} by up to {gap:.3f} (of the '
                                   'peak); curves only collapse with the same schedule over t/T.')
    budgets = [r.budget for r in loaded]
    tau_fraction = tpp = None
    if all(b is not None for b in budgets):
        tau_fraction, tpp = budgets[0].tau_fraction, budgets[0].tpp
    else:
        report.warnings.append('not every run has a config.yaml: tau and TPP are not recorded in the reference.')
    ref = fit_reference([r.curve for r in loaded], schedule, fit_start=fit_start, smoothing=smooth,
                        final_loss=final_loss, tau_fraction=tau_fraction, tpp=tpp)
    if tau_fraction is not None:  # the reference records the first run's controls
        for run, b in zip(loaded[1:], budgets[1:]):
            for problem in ref.controls_mismatch(b.tau_fraction, b.tpp):
                report.warnings.append(f'{run.name}: {problem} (of {loaded[0].name}); the runs do not share '
                                       'controls, so their curves need not collapse.')
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(ref.to_json())
    for run in loaded:
        # The L(T) each run was normalized by: aligned over its whole curve ('fit'), or its tail line.
        final = (predict_final_loss(*smooth_curve(run.curve.steps, run.curve.losses, smooth), run.total_steps,
                                    ref).final_loss if final_loss == 'fit' else run.final_loss())
        report.lines.append(f'{run.name}: T={run.total_steps}, L(T)={final:.4f}')
    controls = f'tau {tau_fraction:.4g}, TPP {tpp:.4g}' if tau_fraction is not None else 'controls not recorded'
    report.lines.append(f'reference: b={ref.b:.4g}, q={ref.q:.4g}, m={ref.m:g}; RMS misfit {ref.fit_rmse:.4f}; band '
                        f'{min(ref.band_sigma):.4f}..{max(ref.band_sigma):.4f}; smoothing {smooth}; {controls}')
    report.lines.append(f'wrote {out}')
    return report


def predict(run_path: str, ref_path: str, fraction: Optional[float] = None, total_steps: Optional[int] = None,
            threshold: float = 3.0, consecutive: int = 5, window: float = 0.05,
            loss_key: str = LOSS_KEY) -> Report:
    """Predicts a run's final loss from its beginning, and reports where it leaves the reference band."""
    from foundry_ext.collapse.curves import smooth_curve
    from foundry_ext.collapse.prediction import collapse_residual, final_window_losses, predict_final_loss
    from foundry_ext.collapse.reference import ReferenceCurve
    from foundry_ext.collapse.runs import load_run

    report = Report()
    ref = ReferenceCurve.from_json(Path(ref_path).read_text())
    run = load_run(run_path, total_steps, loss_key)
    if run.budget is not None:
        for problem in ref.controls_mismatch(run.budget.tau_fraction, run.budget.tpp):
            report.warnings.append(f'{problem}: collapse needs the same tau and TPP.')
    steps, losses = smooth_curve(run.curve.steps, run.curve.losses, ref.smoothing)
    if fraction is not None:
        keep = steps / run.total_steps <= fraction
        steps, losses = steps[keep], losses[keep]
    pred = predict_final_loss(steps, losses, run.total_steps, ref)
    residual = collapse_residual(steps, losses, run.total_steps, ref)
    report.lines.append(f'{run.name}: T={run.total_steps}; predicted L(T) = {pred.final_loss:.4f} '
                        f'[{pred.lower:.4f}, {pred.upper:.4f}] from t/T <= {pred.fraction_used:.3f} '
                        f'({pred.n_points} points)')
    if run.finished:
        measured, predicted = final_window_losses(*run.curve, ref, pred.final_loss, window)
        report.lines.append(f'finished: mean loss over the last {window:.0%} of steps {measured:.4f}, predicted '
                            f'{predicted:.4f}: error {predicted / measured - 1:+.2%}')
    onset = residual.onset(threshold, consecutive)
    report.lines.append(
        f'collapse residual at t/T = {residual.fractions[-1]:.3f}: z = {residual.z[-1]:+.2f}; ' +
        (f'out of band (|z| > {threshold:g}, {consecutive} in a row) from t/T = {onset:.3f}'
         if onset is not None else f'never out of band (|z| > {threshold:g}, {consecutive} in a row)'))
    return report


def plot(runs: Sequence[str], out: str, ref_path: Optional[str] = None, smooth: Optional[int] = None,
         residuals: bool = False, total_steps: Optional[int] = None, loss_key: str = LOSS_KEY) -> Report:
    """Plots raw loss curves next to the normalized ones (L/L(T) against t/T)."""
    from foundry_ext.collapse.curves import smooth_curve
    from foundry_ext.collapse.plots import CollapseCurve, plot_collapse
    from foundry_ext.collapse.prediction import collapse_residual, predict_final_loss
    from foundry_ext.collapse.reference import ReferenceCurve
    from foundry_ext.collapse.runs import load_run

    ref = ReferenceCurve.from_json(Path(ref_path).read_text()) if ref_path else None
    if residuals and ref is None:
        fail('--residuals needs --ref.')
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
            fail(f'{run.name} is unfinished: pass --ref to normalize it by the early-aligned L(T).')
        curves.append(CollapseCurve(label, steps, losses, run.total_steps, final, f'C{i % 10}'))
    return Report([f'wrote {plot_collapse(curves, out, ref=ref, residuals=residuals)}'])
