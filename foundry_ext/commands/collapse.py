"""``foundry-ext collapse``: AdamW timescale calculator, reference fit, early final-loss prediction, plots.

A RUN is a metrics file written by the ``jsonl`` logger (or a CSV with a ``step`` column), a folder holding
``metrics.jsonl``, or an MLflow run (``runs:/<run_id>`` or its name, in ``tracking_uri`` or ``MLFLOW_TRACKING_URI``;
:func:`foundry_ext.core.metrics_io.resolve_run`). A ``config.yaml`` beside a metrics file (the run's training YAML
with its overrides merged) gives the run length ``T``, ``tau`` and TPP; without one (an MLflow run has none) ``T``
is the last logged step + 1 (a finished run) or ``total_steps``.
The LR schedule is read from the LR the run logged (``lr_monitor``). See docs/collapse.md.

Each command returns a :class:`Report`: the lines to print and the warnings met on the way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from foundry_ext.core.errors import fail
from foundry_ext.core.metric_names import LOSS_KEY

if TYPE_CHECKING:
    from foundry_ext.collapse.controls import Controls
    from foundry_ext.collapse.prediction import CollapseResidual
    from foundry_ext.collapse.reference import ReferenceCurve
    from foundry_ext.collapse.runs import CollapseRun

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


def _control_ranges(controls: Sequence[Controls]) -> str:
    """``tau 0.2..0.4, TPP 20, N 1.2e+08..3.6e+08``: each known control's value, or range over several runs."""
    parts = []
    for key, label in (('tau', 'tau'), ('tpp', 'TPP'), ('params', 'N')):
        values = [c.known()[key] for c in controls if key in c.known()]
        if values:
            lo, hi = min(values), max(values)
            parts.append(f'{label} {lo:.4g}' + (f'..{hi:.4g}' if hi > lo else ''))
    return ', '.join(parts)


def fit(runs: Sequence[str], out: str, smooth: Optional[int] = None, fit_start: Optional[float] = None,
        final_loss: str = 'fit', loss_key: str = LOSS_KEY, tracking_uri: Optional[str] = None) -> Report:
    """Fits a reference curve ([SwC] Eq. 4) and its band on finished runs; writes ``out``.

    Runs with the same controls give the collapsed curve; runs whose controls differ (``tau``, TPP or size, from
    ``config.yaml`` or ``run.json``) also give a size-aware reference (:mod:`foundry_ext.collapse.drift`).
    ``smooth`` and ``fit_start`` default to 25 points for per-step losses (1 for sparser logs) and to the end of
    the warmup (at least 0.05).
    """
    from foundry_ext.collapse.curves import smooth_curve
    from foundry_ext.collapse.prediction import predict_final_loss
    from foundry_ext.collapse.reference import default_fit_start
    from foundry_ext.collapse.runs import fit_runs, load_run

    report = Report()
    loaded = [load_run(path, loss_key=loss_key, tracking_uri=tracking_uri) for path in runs]
    unfinished = [r.name for r in loaded if not r.finished]
    if unfinished:
        fail(f'runs {unfinished} did not log a loss at their last step T - 1; fit needs finished runs (or their '
             'config.yaml or run.json gives a different length).')
    schedule = loaded[0].schedule()
    warmups = [default_fit_start(r.schedule()) for r in loaded]
    grid = np.linspace(max(warmups), 1.0, 1001)  # the warmups may differ: compare the schedules after them
    for run in loaded[1:]:
        gap = float(np.max(np.abs(run.schedule()(grid) - schedule(grid))))
        if gap > SCHEDULE_TOLERANCE:
            report.warnings.append(f'{run.name}: LR schedule differs from {loaded[0].name} by up to {gap:.3f} (of the '
                                   f'peak) over t/T >= {grid[0]:.3g}; curves only collapse with the same schedule over '
                                   't/T.')
    known = [r.controls for r in loaded if r.controls is not None]
    if len(known) < len(loaded):
        report.warnings.append('not every run has a config.yaml or run.json: tau and TPP are not recorded, and the '
                               'reference cannot follow controls that differ between the runs.')
    ref = fit_runs(loaded, smooth, fit_start, final_loss)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(ref.to_json())
    for run in loaded:
        # Its L(T): its whole curve aligned with the reference for its controls ('fit'), or its tail line.
        final = (predict_final_loss(*smooth_curve(run.curve.steps, run.curve.losses, ref.smoothing), run.total_steps,
                                    ref.for_controls(run.controls), window=None).final_loss
                 if final_loss == 'fit' else run.final_loss())
        report.lines.append(f'{run.name}: T={run.total_steps}, L(T)={final:.4f}'
                            + (f' ({_control_ranges([run.controls])})' if run.controls is not None else ''))
    if ref.drift is not None:
        described = (f"size-aware: the runs' controls differ ({_control_ranges(known)}); a run is predicted from the "
                     f"reference runs nearest in {', '.join(ref.drift.keys)}")
    elif len(known) == len(loaded):
        described = f'controls {_control_ranges(known[:1])}'
    else:
        described = 'controls not recorded'
    report.lines.append(f'reference: b={ref.b:.4g}, q={ref.q:.4g}, m={ref.m:g}; RMS misfit {ref.fit_rmse:.4f}; band '
                        f'{min(ref.band_sigma):.4f}..{max(ref.band_sigma):.4f}; from t/T {ref.fit_start:.3g}; '
                        f'smoothing {ref.smoothing}; {described}')
    report.lines.append(f'wrote {out}')
    return report


# How far (in units of the peak) a run's last logged LR may be from where the reference schedule ends.
_END_LR_TOLERANCE = 0.25


def _warn_if_the_lr_says_unfinished(run: CollapseRun, ref: ReferenceCurve, report: Report) -> None:
    """A run that looks finished (logged up to ``T``, maybe a ``T`` taken from its last step) whose LR there is
    far from the reference schedule's end is most likely unfinished: its prediction would only echo its loss."""
    if not run.finished or run.lr is None or not len(run.lr[1]) or max(run.lr[1]) <= 0:
        return
    lr_steps, lrs = run.lr
    end = float(lrs[-1] / max(lrs))
    ref_end = float(ref.schedule(np.array([1.0]))[0])
    if abs(end - ref_end) > _END_LR_TOLERANCE:
        report.warnings.append(
            f'{run.name}: its LR at step {int(lr_steps[-1])} is {end:.0%} of its peak, where the reference schedule '
            f'ends at {ref_end:.0%}, yet T={run.total_steps} makes it finished. If it is still training, give '
            f'--total-steps (or run.json) with its planned length.')


def predict(run_path: str, ref_path: str, fraction: Optional[float] = None, total_steps: Optional[int] = None,
            threshold: float = 3.0, consecutive: int = 5, window: float = 0.05, loss_key: str = LOSS_KEY,
            align_window: Optional[float] = None, tracking_uri: Optional[str] = None) -> Report:
    """Predicts a run's final loss from its beginning, and reports where it leaves the reference band.

    A size-aware reference is first specialized to the run's controls (from ``config.yaml`` or ``run.json``).
    """
    from foundry_ext.collapse.curves import smooth_curve
    from foundry_ext.collapse.prediction import ALIGN_WINDOW, collapse_residual, final_window_losses, predict_final_loss
    from foundry_ext.collapse.reference import ReferenceCurve
    from foundry_ext.collapse.runs import load_run

    if fraction is not None and not 0.0 < fraction <= 1.0:
        fail(f'--fraction={fraction:g} must be in (0, 1]: the share of training to predict from, e.g. 0.2.')
    report = Report()
    family = ReferenceCurve.from_file(ref_path)
    run = load_run(run_path, total_steps, loss_key, tracking_uri)
    if run.controls is not None:
        for problem in family.controls_mismatch(run.controls.tau, run.controls.tpp):
            report.warnings.append(f'{problem}: collapse needs the same tau and TPP.')
    elif family.drift is not None:
        report.warnings.append(f'{run.name} has no config.yaml or run.json: the size-aware reference weighs every '
                               'reference run alike.')
    ref = family.for_controls(run.controls)
    _warn_if_the_lr_says_unfinished(run, ref, report)
    steps, losses = smooth_curve(run.curve.steps, run.curve.losses, ref.smoothing)
    pred = predict_final_loss(steps, losses, run.total_steps, ref, fraction_used=fraction,
                              window=align_window if align_window is not None else ALIGN_WINDOW)
    if fraction is not None:
        keep = steps / run.total_steps <= fraction
        steps, losses = steps[keep], losses[keep]
    residual = collapse_residual(steps, losses, run.total_steps, ref)
    report.lines.append(f'{run.name}: T={run.total_steps}; predicted L(T) = {pred.final_loss:.4f} '
                        f'[{pred.lower:.4f}, {pred.upper:.4f}] from t/T <= {pred.fraction_used:.3f} '
                        f'({pred.n_points} points)')
    if family.drift is not None:
        nearest = sorted(zip(family.weights(run.controls), family.drift.controls), key=lambda p: -p[0])[:3]
        report.lines.append('reference runs weighed: ' + '; '.join(f'{w:.2f} ({_control_ranges([c])})'
                                                                   for w, c in nearest))
    if run.finished:
        measured, predicted = final_window_losses(*run.curve, ref, pred.final_loss, window)
        report.lines.append(f'finished: mean loss over the last {window:.0%} of steps {measured:.4f}, predicted '
                            f'{predicted:.4f}: error {predicted / measured - 1:+.2%}')
    report.lines.append(f'collapse residual at t/T = {residual.fractions[-1]:.3f}: z = {residual.z[-1]:+.2f}; '
                        f'{_band_verdict(residual, threshold, consecutive)}')
    return report


def _band_verdict(residual: CollapseResidual, threshold: float, consecutive: int) -> str:
    """Whether the run left the band by the alert rule, and how many single points lay beyond it if it did not."""
    rule = f'|z| > {threshold:g}, {consecutive} in a row'
    onset = residual.onset(threshold, consecutive)
    if onset is not None:
        return f'out of band ({rule}) from t/T = {onset:.3f}'
    beyond = int(np.count_nonzero(residual.out_of_band(threshold)))
    if beyond:
        judged = int(np.count_nonzero(np.isfinite(residual.z)))
        return (f'not out of band by the rule ({rule}): {beyond} of its {judged} points lie beyond |z| > '
                f'{threshold:g}, never {consecutive} in a row')
    return f'never out of band ({rule})'


def plot(runs: Sequence[str], out: str, ref_path: Optional[str] = None, smooth: Optional[int] = None,
         residuals: bool = False, total_steps: Optional[int] = None, loss_key: str = LOSS_KEY,
         tracking_uri: Optional[str] = None) -> Report:
    """Plots raw loss curves next to the normalized ones (L/L(T) against t/T)."""
    from foundry_ext.collapse.curves import smooth_curve
    from foundry_ext.collapse.plots import CollapseCurve, plot_collapse
    from foundry_ext.collapse.prediction import collapse_residual, predict_final_loss
    from foundry_ext.collapse.reference import ReferenceCurve
    from foundry_ext.collapse.runs import load_run

    ref = ReferenceCurve.from_file(ref_path) if ref_path else None
    if residuals and ref is None:
        fail('--residuals needs --ref.')
    window = smooth if smooth is not None else (ref.smoothing if ref else 1)
    curves = []
    for i, path in enumerate(runs):
        run = load_run(path, total_steps, loss_key, tracking_uri)
        steps, losses = smooth_curve(run.curve.steps, run.curve.losses, window)
        own = ref.for_controls(run.controls) if ref is not None else None
        if run.finished:
            # Normalized as a 'fit' reference normalizes its runs, or by the tail line without one.
            final = (predict_final_loss(steps, losses, run.total_steps, own, window=None).final_loss
                     if own is not None else run.final_loss())
            label = run.name
        elif own is not None:
            final = collapse_residual(steps, losses, run.total_steps, own).final_loss
            label = f'{run.name} (unfinished, early-aligned)'
        else:
            fail(f'{run.name} is unfinished: pass --ref to normalize it by the early-aligned L(T).')
        curves.append(CollapseCurve(label, steps, losses, run.total_steps, final, f'C{i % 10}', reference=own))
    return Report([f'wrote {plot_collapse(curves, out, ref=ref, residuals=residuals, loss_label=loss_key)}'])
