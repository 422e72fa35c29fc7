"""``foundry-ext loss-law``: fit a loss law on runs, predict any schedule's loss, and forecast a grid of branches.

* ``fit RUN... -o law.json``: :func:`fit` (runs read and joined by :mod:`foundry_ext.loss_law.runs`, fitted by
  :func:`~foundry_ext.loss_law.from_runs.fit_runs`).
* ``predict LAW --schedule SCHED``: :func:`predict_schedule`. SCHED is a metrics/CSV file with ``step`` and an LR
  column (linear between rows, the last row the final step; one that starts late is joined to the fitted run it
  branched from), or a Foundry YAML plus overrides, whose ``scheduler``, ``optimizer.lr`` and ``max_duration`` are
  evaluated through Foundry's registry exactly as ``plot-schedule`` does (:func:`yaml_schedule`).
* ``branches LAW YAML --at ... --decay ... --shape ...``: :func:`branch_grid`: every branch of the main run's YAML
  built as ``foundry-ext branch`` would run it, predicted, tabled and plotted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from composer.core import Time, TimeUnit

from foundry_ext.core.config import load_train_config
from foundry_ext.core.errors import choice, fail
from foundry_ext.loss_law.branches import BranchForecast, BranchSpec, forecast_branches, format_branches
from foundry_ext.loss_law.from_runs import fit_runs
from foundry_ext.loss_law.law_file import LossLaw, read_law, write_law
from foundry_ext.loss_law.laws import LAWS, get_law
from foundry_ext.loss_law.plots import plot_branches, plot_prediction
from foundry_ext.loss_law.predict import Prediction, predict
from foundry_ext.loss_law.runs import join_lr, load_runs, read_schedule, starts_late
from foundry_ext.loss_law.schedule import LRSchedule
from foundry_ext.loss_law.select import choose_fit_from, default_fit_from
from foundry_ext.schedulers.preview import batch_size, config_multipliers, update_multipliers
from foundry_ext.schedulers.shapes import DECAY_SHAPES
from foundry_ext.schedulers.time_spec import batches_in, parse_steps, parse_time

log = logging.getLogger(__name__)

__all__ = ['branch_grid', 'fit', 'format_fit', 'format_prediction', 'predict_schedule', 'yaml_schedule']

_YAML_SUFFIXES = ('.yaml', '.yml')


class _Knots:
    """A fitted run's LR, from its knots in the law file, as a history a schedule may branch from."""

    def __init__(self, name: str, knots: list[list[float]], joined_to: Optional[str]) -> None:
        array = np.asarray(knots, dtype=float).reshape(-1, 2)
        self.name, self.lr_steps, self.lrs, self.joined_to = name, array[:, 0], array[:, 1], joined_to


def fit(runs: Sequence[str], out: str, loss_key: Optional[str] = None, lr_key: Optional[str] = None,
        law: str = 'multi-power', fit_from: Optional[str] = None, bootstrap: int = 32, interval: float = 0.9,
        max_points: int = 256, tracking_uri: Optional[str] = None) -> LossLaw:
    """Fits a law on runs and writes it to ``out``; see :func:`~foundry_ext.loss_law.from_runs.fit_runs`.

    ``fit_from`` is a step, ``auto`` (chosen by cross-validation, :mod:`foundry_ext.loss_law.select`) or None (each
    run's warmup end; past the initial transient when no run logs a warmup). ``tracking_uri`` is the MLflow
    tracking store of runs given as MLflow runs.
    """
    choice(law, '--law', list(LAWS))
    if fit_from is not None and fit_from != 'auto' and not str(fit_from).isdigit():
        fail(f'--fit-from={fit_from!r} must be a step (e.g. 500) or auto.')
    if not 0.0 < interval < 1.0:
        fail(f'--interval={interval!r} must be a level in (0, 1), e.g. 0.9.')
    if bootstrap < 0 or max_points < 10:
        fail(f'--bootstrap={bootstrap} must be >= 0 and --max-points={max_points} >= 10.')
    loaded = load_runs(runs, loss_key, lr_key, tracking_uri=tracking_uri)
    if fit_from is None:
        start = default_fit_from(loaded, law, max_points)
    else:
        start = int(fit_from) if fit_from != 'auto' else choose_fit_from(loaded, law, max_points)[0]
    fitted = fit_runs(loaded, law, fit_from=start, max_points=max_points, n_boot=bootstrap, interval=interval)
    write_law(fitted, out)
    return fitted


_POOR_MISFIT = 0.02  # RMS relative misfit; fits of real LLM curves leave 0.1-0.5%


def _at_bounds(law: LossLaw) -> list[str]:
    """The fitted parameters that ended on a bound of the fit (the decay term's when it is off do not count)."""
    model = get_law(law.law)
    theta = model.from_natural(law.params)
    found = []
    for name, natural, value, lower, upper in zip(model.internal, model.names, theta, model.lower, model.upper):
        if name in model.decay and not law.decay_identified:
            continue
        for bound in (lower, upper):
            if np.isfinite(bound) and abs(value - bound) <= 1e-6 * max(1.0, abs(bound)):
                found.append(f'{natural}={law.params[natural]:.4g}')
    return found


def format_fit(law: LossLaw, out: str) -> str:
    """Parameters with their bootstrap standard deviations, each run's misfit, and where the law was written."""
    params = ', '.join(f'{name} {value:.4g} +- {law.param_std[name]:.2g}' for name, value in law.params.items())
    lines = [f'{law.law} law on {law.loss_key} (LR {law.lr_key}, areas in steps at LR {law.lr_ref:.4g}): {params}']
    for run in law.runs:
        joined = f', LR before step {run.first_step} from {run.joined_to}' if run.joined_to else ''
        lines.append(f'  {run.name}: {run.points} points from step {run.first_step} to {run.final_step}{joined}; '
                     f'RMS relative misfit {run.rel_rmse:.3%} ({run.trend_rmse:.3%} after smoothing out the noise)')
    poor = [run.name for run in law.runs if run.rel_rmse > _POOR_MISFIT]
    if poor:
        lines.append(f'  misfit above {_POOR_MISFIT:.0%} ({", ".join(poor)}): the law does not describe these runs '
                     f'from where the fit starts, so its forecasts are unreliable. Start the fit past early training '
                     f'(--fit-from auto, or a later --fit-from step), or leave out runs the law cannot describe.')
    at_bounds = _at_bounds(law)
    if at_bounds:
        lines.append(f'  at a bound of the fit: {", ".join(at_bounds)}. The runs do not pin it down; predictions that '
                     f'depend on it (decays unlike the fitted ones) are less certain than their intervals say.')
    if not law.decay_identified:
        lines.append('  no run decays its LR: the decay term is off, so this law predicts constant-LR training only; '
                     'add a run that decays (a branch) to predict decays.')
    start = "the end of each run's warmup" if law.fit['fit_from'] is None else f'step {law.fit["fit_from"]}'
    lines.append(f'fitted from {start}; intervals: {law.interval:.0%}, from {law.fit["bootstrap"]} bootstrap and '
                 f'{law.fit["jackknife"]} leave-one-run-out refits, the smoothed misfit, and the form error of decays '
                 f'beyond the fitted ones')
    lines.append(f'wrote {out}')
    return '\n'.join(lines)


def yaml_schedule(cfg: dict, start: int = 0, prefix: Optional[np.ndarray] = None) -> tuple[LRSchedule, np.ndarray]:
    """The per-step LR of a Foundry config's schedule over its ``max_duration``, as the Trainer applies it.

    Returns the schedule and the multipliers at timestamps ``0..n``. With ``start`` and ``prefix`` (multipliers at
    timestamps before ``start`` from another evaluation of the same schedule), only ``start..n`` is evaluated.
    """
    duration = cfg.get('max_duration')
    if duration is None:
        fail('the YAML sets no max_duration; the schedule\'s final step is max_duration (e.g. max_duration=1000ba).')
    lr = cfg.get('optimizer', {}).get('lr')
    if lr is None:
        fail('the YAML sets no optimizer.lr; the schedule is optimizer.lr times the scheduler\'s multiplier.')
    samples, tokens = batch_size(cfg)
    batches_in(str(duration), samples, tokens, key='max_duration')  # refuses epochs and dur before evaluating
    _, alphas = config_multipliers(cfg, str(duration), start=start)
    if start:
        alphas = np.concatenate([prefix[:start], alphas])
    return LRSchedule(float(lr) * update_multipliers(alphas)), alphas


def _file_schedule(path: str, lr_key: Optional[str], law: LossLaw,
                   tracking_uri: Optional[str] = None) -> tuple[LRSchedule, Optional[int]]:
    steps, lrs, tokens = read_schedule(path, lr_key, tracking_uri)
    start = float(steps[0])
    steps, lrs, main = join_lr(steps, lrs, [_Knots(r.name, r.knots, r.joined_to) for r in law.runs])
    if main is not None:
        log.info('%s starts at step %d; its LR before comes from the fitted run %s.', path, start, main.name)
    elif starts_late(steps):
        log.warning('%s starts at step %d and no fitted run has its LR there; assuming a linear warmup from 0 at '
                    'step 0 before it. If it branches off a run, fit the law on that run too.', path, start)
    return LRSchedule.from_logged(steps, lrs, end=int(round(steps[-1])), source=path), tokens


def predict_schedule(law_path: str, schedule: str, overrides: Sequence[str] = (), lr_key: Optional[str] = None,
                     out: Optional[str] = None, tracking_uri: Optional[str] = None) -> Prediction:
    """Predicts the loss curve of ``schedule`` (a Foundry YAML, or the logged LR of a RUN: a metrics/CSV file, a run
    folder or an MLflow run in ``tracking_uri``) and optionally plots it."""
    law = read_law(law_path)
    if Path(schedule).suffix in _YAML_SUFFIXES:
        cfg = load_train_config(schedule, overrides)
        sched, _ = yaml_schedule(cfg)
        tokens: Optional[int] = batch_size(cfg)[1]
    else:
        if overrides:
            fail(f'overrides {list(overrides)} apply to a YAML schedule only; {schedule} is a metrics/CSV file.')
        sched, tokens = _file_schedule(schedule, lr_key, law, tracking_uri)
    prediction = predict(law, sched, source=schedule, tokens_per_step=tokens)
    if out:
        lr = (np.arange(sched.n, dtype=float), sched.lr)
        title = f'{Path(schedule).name}: {law.law} law ({Path(law_path).name})'
        path = plot_prediction(prediction, lr, out, title=title)
        log.info('Wrote %s', path)
    return prediction


def format_prediction(prediction: Prediction, source: str) -> str:
    """The final loss with its interval, and the curve at a few steps."""
    lo, hi = prediction.final_interval
    lines = [f'{source}: predicted loss at the final step {prediction.final_step}: {prediction.final_loss:.4f} '
             f'[{lo:.4f}, {hi:.4f}] ({prediction.level:.0%} interval)']
    for i in np.unique(np.linspace(0, prediction.steps.size - 1, 6).round().astype(int)):
        lines.append(f'  step {int(prediction.steps[i])}: {prediction.loss[i]:.4f} '
                     f'[{prediction.lower[i]:.4f}, {prediction.upper[i]:.4f}]')
    return '\n'.join(lines)


def _in_unit(batches: int, unit: TimeUnit, samples: int, tokens: int) -> Time:
    return Time(batches * {TimeUnit.BATCH: 1, TimeUnit.SAMPLE: samples, TimeUnit.TOKEN: tokens}[unit], unit)


def branch_grid(law_path: str, yaml_path: str, overrides: Sequence[str], at: str, decay: str,
                shapes: Optional[str] = None, out: Optional[str] = None) -> tuple[list[BranchForecast], str]:
    """Predicts every branch (step x decay x shape) of the main run's YAML; returns them and their table.

    Args:
        law_path (str): A law fitted on the main run (and its branches).
        yaml_path (str): The main run's YAML (``scheduler: wsd``).
        overrides (Sequence[str]): Foundry overrides of the main YAML.
        at (str): Branch steps, comma-separated (``400`` or ``400ba``).
        decay (str): Decay lengths with units, comma-separated (``100ba``, ``2e8tok``).
        shapes (str, optional): Decay shapes, comma-separated; default the YAML's ``decay_shape``.
        out (str, optional): PNG of the final losses.
    """
    from foundry_ext.commands.branch import check_branch_start, wsd_main_schedule

    law = read_law(law_path)
    cfg = load_train_config(yaml_path, overrides)
    main = wsd_main_schedule(cfg)
    samples, tokens = batch_size(cfg)
    steps = parse_steps(at, '--at')
    decays = [batches_in(parse_time(d.strip(), '--decay', allow_zero=False), samples, tokens, key='--decay')
              for d in decay.split(',') if d.strip()]
    if not decays:
        fail(f'--decay={decay!r} names no decay length; give e.g. --decay 100ba,200ba.')
    shape_names = [s.strip() for s in (shapes or cfg['scheduler'].get('decay_shape', 'linear')).split(',')
                   if s.strip()]
    for shape in shape_names:
        choice(shape, '--shape', sorted(DECAY_SHAPES))
    for step in steps:
        check_branch_start(cfg, main, _in_unit(step, main.unit, samples, tokens), step)
    main_cfg = dict(cfg)
    if batches_in(str(cfg['max_duration']), samples, tokens) < max(steps):
        main_cfg['max_duration'] = f'{max(steps)}ba'  # branching past the planned end: the stable phase goes on
    _, prefix = yaml_schedule(main_cfg)
    specs = []
    for step in steps:
        for length in decays:
            for shape in shape_names:
                branch_cfg = load_train_config(yaml_path, [
                    *overrides, f'scheduler.t_decay_start={_in_unit(step, main.unit, samples, tokens)}',
                    f'scheduler.t_decay={_in_unit(length, main.unit, samples, tokens)}',
                    f'scheduler.decay_shape={shape}',
                    f'max_duration={_in_unit(step + length, main.unit, samples, tokens)}'])
                schedule, _ = yaml_schedule(branch_cfg, start=step, prefix=prefix)
                specs.append(BranchSpec(step, length, shape, schedule))
    forecasts = forecast_branches(law, specs, source=yaml_path)
    table = format_branches(forecasts, law.interval)
    if out:
        path = plot_branches(forecasts, out, title=f'{Path(yaml_path).name}: predicted final loss of each branch')
        table += f'\nwrote {path}'
    return forecasts, table
