"""The loss-curve collapse experiment behind ``scripts/collapse_family.py``.

A family of MPT sizes is trained on the demo corpus with the same tokens per parameter, the same AdamW
timescale ``tau`` (weight decay from :func:`~foundry_ext.collapse.controls.weight_decay_for_tau_fraction`)
and the same schedule over ``t/T`` (linear warmup over ``warmup_fraction``, linear decay to zero, as in
[SwC]). Then:

1. a reference curve is fitted on every run of the smaller sizes;
2. the largest size is trained with the ``collapse_monitor`` callback, and its final loss is predicted from
   its first ``fraction_used`` of training and compared with the loss it reached;
3. one run of a smaller size is trained with its weight decay multiplied by ``bad_wd_factor`` (a wrong
   ``tau``), also with the monitor, and the step at which the monitor flags it is compared with the step at
   which its raw loss rises clearly above its healthy twin's (same size and seed).

Training goes through ``llmfoundry.command_utils.train_from_yaml`` (imported when a run trains); the analysis
is numpy. Each run's folder holds ``metrics.jsonl`` and ``config.yaml`` (the resolved training config), i.e. a
run as the ``foundry-ext collapse`` commands read it.

Run from the repository root::

    python scripts/experiments/collapse_family.py            # 3 sizes on CPU (about 8 minutes on 2 cores)
    python scripts/experiments/collapse_family.py --gpu      # 4-layer sizes d48..d128, 3 seeds, bf16 on one GPU
    python scripts/experiments/collapse_family.py --reuse    # re-analyse finished runs instead of retraining them
    python scripts/experiments/collapse_family.py --shapes-only --sizes 64,2,4 96,2,6 --tpp 5 --lr 3e-2 --seeds 17
                                                 # do these settings collapse? L(0.2T)/L(T) per run, no reference
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from omegaconf import OmegaConf as om

from foundry_ext.collapse.controls import count_parameters, from_foundry_config, weight_decay_for_tau_fraction
from foundry_ext.collapse.curves import smooth_curve
from foundry_ext.collapse.plots import CollapseCurve, Marker, plot_collapse
from foundry_ext.collapse.prediction import collapse_residual, final_window_losses, predict_final_loss
from foundry_ext.collapse.reference import ReferenceCurve, fit_reference
from foundry_ext.collapse.runs import CONFIG_NAME, METRICS_NAME, CollapseRun, fit_runs, load_run
from foundry_ext.core.config import load_train_config
from foundry_ext.core.metrics_io import read_metrics

log = logging.getLogger(__name__)

__all__ = [
    'CPU_SPEC', 'GPU_SPEC', 'FamilySpec', 'ModelSize', 'fit_family_reference', 'format_summary', 'run_experiment',
    'shape_check',
]

REPO = Path(__file__).resolve().parents[2]
BASE_YAML = REPO / 'yamls' / 'collapse_family.yaml'


@dataclass(frozen=True)
class ModelSize:
    """Width, depth and heads of one family member (the rest comes from the base YAML)."""

    d_model: int
    n_layers: int
    n_heads: int

    @property
    def label(self) -> str:
        return f'd{self.d_model}-L{self.n_layers}'

    def run_name(self, seed: int, suffix: str = '') -> str:
        """The folder name of this size's run with ``seed``."""
        return f'{self.label}-s{seed}{suffix}'

    def overrides(self) -> list[str]:
        return [f'model.d_model={self.d_model}', f'model.n_layers={self.n_layers}', f'model.n_heads={self.n_heads}']


@dataclass(frozen=True)
class FamilySpec:
    """The experiment's settings.

    Attributes:
        sizes (tuple[ModelSize, ...]): Ascending; all but the last make the reference, the last is predicted.
        tpp (float): Tokens per parameter (all parameters, embeddings included, as [SwC] counts).
        tau (float): AdamW timescale as a fraction of training, the same for every run.
        seeds (tuple[int, ...]): Seeds of the reference sizes; the largest size and the bad run use the first.
        bad_size (int): Index in ``sizes`` of the size trained with the wrong ``tau``.
        bad_wd_factor (float): Weight decay multiplier of the bad run (``tau`` divided by it).
        global_batch (int): Sequences per batch.
        lr (float): Peak LR (the same for every size).
        warmup_fraction (float): Linear warmup, as a fraction of each run.
        smoothing (int): Moving-average window (steps) for the reference, the prediction and the monitor.
        fraction_used (float): Training fraction the largest run's final loss is predicted from.
        final_window (float): The measured "final loss" is the mean raw training loss over this last
            fraction of the run (:func:`~foundry_ext.collapse.prediction.final_window_losses`).
        interval (int): ``collapse_monitor.interval``.
        consecutive (int): ``collapse_monitor.consecutive``.
        threshold (float): ``collapse_monitor.threshold``.
        raw_gap (float): The bad run's raw loss "looks wrong" once it stays more than this (relative) above
            its healthy twin's until the end.
        overrides (tuple[str, ...]): Extra Foundry overrides for every run (device, precision, data size).
    """

    sizes: tuple[ModelSize, ...]
    tpp: float
    tau: float
    seeds: tuple[int, ...]
    bad_size: int = 1
    bad_wd_factor: float = 10.0
    global_batch: int = 16
    lr: float = 3e-3
    warmup_fraction: float = 0.1
    smoothing: int = 25
    fraction_used: float = 0.2
    final_window: float = 0.05
    interval: int = 10
    consecutive: int = 5
    threshold: float = 3.0
    raw_gap: float = 0.01
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.sizes) < 2 or not self.seeds or not 0 <= self.bad_size < len(self.sizes) - 1:
            raise ValueError('need >= 2 sizes, >= 1 seed, and bad_size among the reference sizes.')


# 2 CPU cores: 4.3k training steps in all (d32/d48 x 2 seeds, d64, the bad d48), head size 16 throughout.
# tau = 1 and lr = 1e-2 won a sweep on d32 at TPP 20 (docs/collapse.md); [SwC]'s tau ~ 0.2 is for far longer runs.
CPU_SPEC = FamilySpec(
    sizes=(ModelSize(32, 2, 2), ModelSize(48, 2, 3), ModelSize(64, 2, 4)),
    tpp=20.0,
    tau=1.0,
    seeds=(17, 18),
    lr=1e-2,
)
# One GPU (untested here): 4-layer members up to d128 (0.85M parameters, 17M tokens: 1.6 passes over the
# whole ~10.4M-token corpus), 3 seeds, bf16.
GPU_SPEC = dataclasses.replace(
    CPU_SPEC,
    sizes=(ModelSize(48, 4, 3), ModelSize(64, 4, 4), ModelSize(96, 4, 4), ModelSize(128, 4, 4)),
    seeds=(17, 18, 19),
    global_batch=32,
    overrides=('precision=amp_bf16', 'train_loader.dataset.train_tokens=12000000'),
)


def _member_overrides(spec: FamilySpec, size: ModelSize, seed: int, run_dir: Path,
                      monitor: Optional[Path]) -> list[str]:
    """Overrides for one run, except ``optimizer.weight_decay`` (which needs the resolved run length)."""
    model = load_train_config(str(BASE_YAML), [*size.overrides(), *spec.overrides])['model']
    tokens_per_batch = spec.global_batch * int(model['max_seq_len'])
    steps = max(1, round(spec.tpp * count_parameters(model).total / tokens_per_batch))
    overrides = [
        f'variables.run_name={run_dir.name}', f'variables.run_dir={run_dir}', f'variables.global_seed={seed}',
        *size.overrides(), f'global_train_batch_size={spec.global_batch}',
        f'device_train_microbatch_size={spec.global_batch}', f'max_duration={steps}ba',
        f'scheduler.t_warmup={round(spec.warmup_fraction * steps)}ba', f'optimizer.lr={spec.lr}',
        *spec.overrides,
    ]
    if monitor is not None:
        key = 'callbacks.collapse_monitor'
        overrides += [f'{key}.reference={monitor}', f'{key}.interval={spec.interval}',
                      f'{key}.consecutive={spec.consecutive}', f'{key}.threshold={spec.threshold}']
    return overrides


def train_member(
    spec: FamilySpec,
    size: ModelSize,
    seed: int,
    run_dir: Path,
    wd_factor: float = 1.0,
    monitor: Optional[Path] = None,
    reuse: bool = False,
) -> tuple[CollapseRun, Optional[float]]:
    """Trains one family member (weight decay for ``spec.tau`` times ``wd_factor``); returns it and its wall time
    (None when reused).

    With ``reuse``, a finished run in ``run_dir`` with the same resolved config is read instead of retrained.
    """
    overrides = _member_overrides(spec, size, seed, run_dir, monitor)
    budget = from_foundry_config(load_train_config(str(BASE_YAML), overrides))
    weight_decay = weight_decay_for_tau_fraction(spec.tau, budget) * wd_factor
    overrides.append(f'optimizer.weight_decay={weight_decay!r}')
    config = om.to_yaml(load_train_config(str(BASE_YAML), overrides))
    config_path, metrics_path = run_dir / CONFIG_NAME, run_dir / METRICS_NAME
    if reuse and config_path.is_file() and config_path.read_text() == config and metrics_path.is_file():
        run = load_run(run_dir)
        if run.finished:
            log.info('Reusing the finished run in %s.', run_dir)
            return run, None
    from llmfoundry.command_utils import train_from_yaml  # heavy: only when something trains

    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path.unlink(missing_ok=True)  # the jsonl logger appends
    config_path.write_text(config)
    log.info('Training %s: T=%d steps, weight decay %.4g, TPP %.2f, tau %.4g.', run_dir.name, budget.total_steps,
             weight_decay, budget.tpp, spec.tau / wd_factor)
    start = time.perf_counter()
    train_from_yaml(str(BASE_YAML), overrides).close()
    return load_run(run_dir), time.perf_counter() - start


def _final_window_mean(spec: FamilySpec, run: CollapseRun) -> float:
    """Mean raw training loss over the last ``spec.final_window`` of a finished run."""
    t = np.asarray(run.curve.steps) / run.total_steps
    return float(np.mean(np.asarray(run.curve.losses)[t >= 1.0 - spec.final_window]))


def _first_sustained(t: np.ndarray, above: np.ndarray) -> Optional[float]:
    """``t`` from which ``above`` holds until the end, or None."""
    if not above.size or not above[-1]:
        return None
    below = np.flatnonzero(~above)
    return float(t[below[-1] + 1] if below.size else t[0])


def _first_alert(spec: FamilySpec, run_dir: Path) -> Optional[int]:
    """Step at which ``collapse_monitor`` first alerted (its out-of-band streak reached ``consecutive``)."""
    streak = read_metrics(run_dir / METRICS_NAME).get('collapse/out_of_band_streak')
    flagged = np.flatnonzero(streak[1] >= spec.consecutive) if streak is not None else np.array([], dtype=int)
    return int(streak[0][flagged[0]]) if flagged.size else None


def _metric_at_or_before(path: Path, key: str, step: float) -> Optional[tuple[int, float]]:
    steps, values = read_metrics(path).get(key, (np.array([]), np.array([])))
    before = np.flatnonzero(steps <= step)
    return (int(steps[before[-1]]), float(values[before[-1]])) if before.size else None


def _prediction_table(spec: FamilySpec, run: CollapseRun, ref: ReferenceCurve) -> list[dict[str, float]]:
    """Predictions from several early fractions: of the final-window mean loss (the headline) and of ``L(T)``."""
    ref = ref.for_controls(run.controls)  # a reference fitted on several sizes follows the run's
    s, y = smooth_curve(run.curve.steps, run.curve.losses, spec.smoothing)
    full_curve = predict_final_loss(s, y, run.total_steps, ref, window=None).final_loss  # aligned over the whole run
    rows = []
    for fraction in sorted({0.15, spec.fraction_used, 0.3}):
        keep = s / run.total_steps <= fraction
        pred = predict_final_loss(s[keep], y[keep], run.total_steps, ref)
        actual, predicted = final_window_losses(*run.curve, ref, pred.final_loss, spec.final_window)
        rows.append({'fraction_used': fraction, 'predicted': predicted, 'actual': actual,
                     'error': predicted / actual - 1.0, 'lower': predicted * pred.lower / pred.final_loss,
                     'upper': predicted * pred.upper / pred.final_loss, 'predicted_LT': pred.final_loss,
                     'LT_tail': run.final_loss(), 'LT_full_curve': full_curve})
    return rows


def _bad_tau_analysis(spec: FamilySpec, bad: CollapseRun, twin: CollapseRun, ref: ReferenceCurve,
                      bad_dir: Path) -> dict[str, Any]:
    total = bad.total_steps
    ref = ref.for_controls(twin.controls)  # the controls the bad run was planned with
    flag_step = _first_alert(spec, bad_dir)
    sb, yb = smooth_curve(bad.curve.steps, bad.curve.losses, spec.smoothing)
    st, yt = smooth_curve(twin.curve.steps, twin.curve.losses, spec.smoothing)
    common, ib, it = np.intersect1d(sb, st, return_indices=True)
    gap = yb[ib] / yt[it] - 1.0
    after = common / total >= ref.fit_start
    raw_fraction = _first_sustained(common[after] / total, gap[after] > spec.raw_gap)
    gap_at_flag = float(np.interp(flag_step, common, gap)) if flag_step is not None else None
    # Hindsight: the same rule on the finished run, aligned over 25-50% after the fact, at the monitor's points.
    every = np.arange(spec.interval - 1 - spec.smoothing + 1, sb.size, spec.interval)
    every = every[every >= 0]
    hindsight = collapse_residual(sb[every], yb[every], total, ref).onset(spec.threshold, spec.consecutive)
    return {
        'flag_step': flag_step,
        'flag_fraction': flag_step / total if flag_step is not None else None,
        'raw_wrong_fraction': raw_fraction,
        'raw_wrong_step': round(raw_fraction * total) if raw_fraction is not None else None,
        'raw_gap_at_flag': gap_at_flag,
        'hindsight_onset_fraction': hindsight,
        'final_loss_bad': _final_window_mean(spec, bad),
        'final_loss_twin': _final_window_mean(spec, twin),
        'total_steps': total,
    }


def shape_check(spec: FamilySpec, out_dir: Path, reuse: bool = False) -> str:
    """Trains every size with every seed (no reference, no bad run) and tabulates whether their shapes agree.

    A quick test of a family's settings before the whole experiment: curves that collapse have the same
    normalized loss at ``spec.fraction_used`` whatever the size, so that is what the table shows, next to each
    run's final loss (the mean over its last ``spec.final_window``, which also divides the smoothed curve).

    Returns:
        str: A markdown table, one row per run.
    """
    lines = [f'| run | T (steps) | L({spec.fraction_used:g} T) / L(T) | L(T) |', '|---|---|---|---|']
    for size in spec.sizes:
        for seed in spec.seeds:
            run, _ = train_member(spec, size, seed, out_dir / size.run_name(seed), reuse=reuse)
            final = _final_window_mean(spec, run)
            s, y = smooth_curve(run.curve.steps, run.curve.losses, spec.smoothing)
            early = float(np.interp(spec.fraction_used * run.total_steps, s, y)) / final
            lines.append(f'| {run.name} | {run.total_steps} | {early:.3f} | {final:.4f} |')
    return '\n'.join(lines)


def fit_family_reference(spec: FamilySpec, runs: Sequence[CollapseRun]) -> ReferenceCurve:
    """Fits the reference curve on finished family members as the experiment (and ``foundry-ext collapse fit``)
    does: from the end of the warmup, size-aware across the members' sizes."""
    return fit_runs(runs, smoothing=spec.smoothing)


def run_experiment(
    spec: FamilySpec,
    out_dir: Path,
    docs_dir: Path,
    reuse: bool = False,
) -> dict[str, Any]:
    """Trains the family, fits the reference, predicts the largest run and checks the bad-``tau`` run.

    Args:
        spec (FamilySpec): The settings (:data:`CPU_SPEC` or :data:`GPU_SPEC`).
        out_dir (Path): Run folders, ``ref.json`` and ``results.json`` go here.
        docs_dir (Path): ``collapse_family.png`` and ``collapse_bad_tau.png`` go here.
        reuse (bool): Read finished runs with identical configs instead of retraining them.

    Returns:
        dict: Everything :func:`format_summary` prints (also written to ``out_dir/results.json``).
    """
    started = time.perf_counter()
    walls: dict[str, Optional[float]] = {}

    def train(size: ModelSize, seed: int, suffix: str = '', **kwargs: Any) -> CollapseRun:
        run_dir = out_dir / size.run_name(seed, suffix)
        run, walls[run_dir.name] = train_member(spec, size, seed, run_dir, reuse=reuse, **kwargs)
        return run

    refs = [train(size, seed) for size in spec.sizes[:-1] for seed in spec.seeds]
    ref = fit_family_reference(spec, refs)
    ref_path = out_dir / 'ref.json'
    ref_path.write_text(ref.to_json())
    target = train(spec.sizes[-1], spec.seeds[0], monitor=ref_path)
    bad_size = spec.sizes[spec.bad_size]
    bad_suffix = f'-wd{spec.bad_wd_factor:g}x'
    bad = train(bad_size, spec.seeds[0], bad_suffix, wd_factor=spec.bad_wd_factor, monitor=ref_path)
    twin = refs[spec.bad_size * len(spec.seeds)]

    predictions = _prediction_table(spec, target, ref)
    main = next(p for p in predictions if p['fraction_used'] == spec.fraction_used)
    # Control without a change of size: one seed of the second-largest size predicted from the other.
    same_size = refs[-len(spec.seeds):]  # the runs of the largest reference size, one per seed
    control = None
    if len(same_size) >= 2:
        control_ref = fit_reference([same_size[0].curve], same_size[0].schedule(), smoothing=spec.smoothing,
                                    final_loss='fit')
        control = {'run': same_size[1].name, 'reference_run': same_size[0].name,
                   'table': _prediction_table(spec, same_size[1], control_ref)}
    target_dir = out_dir / spec.sizes[-1].run_name(spec.seeds[0])
    logged = _metric_at_or_before(target_dir / METRICS_NAME, 'collapse/predicted_final_loss',
                                  spec.fraction_used * target.total_steps)
    bad_dir = out_dir / bad_size.run_name(spec.seeds[0], bad_suffix)
    detection = _bad_tau_analysis(spec, bad, twin, ref, bad_dir)

    results = {
        'spec': dataclasses.asdict(spec),
        'runs': {r.name: {'total_steps': r.total_steps, 'params': r.budget.total_params if r.budget else None,
                          'tpp': r.budget.tpp if r.budget else None,
                          'tau': r.budget.tau_fraction if r.budget else None,
                          'weight_decay': r.budget.weight_decay if r.budget else None,
                          'final_loss': _final_window_mean(spec, r), 'wall_s': walls.get(r.name)}
                 for r in (*refs, target, bad)},
        'reference': {'b': ref.b, 'q': ref.q, 'fit_rmse': ref.fit_rmse, 'n_runs': ref.n_runs},
        'prediction': {'run': target.name, **main, 'table': predictions,
                       'callback_step': logged[0] if logged else None,
                       'callback_predicted': logged[1] if logged else None,
                       'monitor_alert_step': _first_alert(spec, target_dir)},
        'same_size_control': control,
        'bad_tau': {'run': bad.name, 'twin': twin.name, **detection},
        'wall_s': time.perf_counter() - started,
    }
    (out_dir / 'results.json').write_text(json.dumps(results, indent=2))
    _plot(spec, refs, target, bad, twin, ref, detection, main, docs_dir)
    return results


def _plot(spec: FamilySpec, refs: Sequence[CollapseRun], target: CollapseRun, bad: CollapseRun, twin: CollapseRun,
          ref: ReferenceCurve, detection: dict[str, Any], main: dict[str, float], docs_dir: Path) -> None:
    def curve(run: CollapseRun, label: str, color: str, linestyle: str = '-', final: Optional[float] = None
              ) -> CollapseCurve:
        s, y = smooth_curve(run.curve.steps, run.curve.losses, spec.smoothing)
        # By default each run is divided by its measured final-window mean: model-free, so the fan-out shows.
        return CollapseCurve(label, s, y, run.total_steps, final or _final_window_mean(spec, run), color, linestyle)

    colors = {size.label: f'C{i}' for i, size in enumerate(spec.sizes)}
    family = [curve(r, f'{r.name} (reference)', colors[r.name.rsplit('-s', 1)[0]], ('-', '--', ':')[i % 3])
              for i, r in enumerate(refs)]
    family.append(curve(target, f'{target.name} (predicted)', colors[spec.sizes[-1].label]))
    plot_collapse(family, docs_dir / 'collapse_family.png', ref=ref, band_k=spec.threshold,
                  markers=[Marker(f'prediction uses t/T <= {spec.fraction_used:g}', spec.fraction_used)],
                  title=f'Same TPP ({spec.tpp:g}) and tau ({spec.tau:g}); reference fitted on the smaller sizes.\n'
                  f'{target.name}, mean loss over its last {spec.final_window:.0%}, predicted from its first '
                  f'{spec.fraction_used:.0%}: {main["predicted"]:.4f} vs {main["actual"]:.4f} ({main["error"]:+.2%})')
    # Both runs normalized as the monitor sees them: by the early-aligned L(T), not their own final loss.
    aligned = [curve(r, label, color, final=collapse_residual(*smooth_curve(r.curve.steps, r.curve.losses,
                                                                           spec.smoothing), r.total_steps,
                                                              ref.for_controls(twin.controls)).final_loss)
               for r, label, color in ((twin, f'{twin.name} (healthy twin)', 'C0'),
                                       (bad, f'{bad.name} (weight decay x{spec.bad_wd_factor:g})', 'C3'))]
    markers = [Marker(f'{label} t/T={fraction:.2f}', fraction, color)
               for label, fraction, color in (('monitor alert', detection['flag_fraction'], 'C3'),
                                              (f'raw loss >{spec.raw_gap:.0%} above twin',
                                               detection['raw_wrong_fraction'], 'C1'))
               if fraction is not None]
    plot_collapse(aligned, docs_dir / 'collapse_bad_tau.png', ref=ref, band_k=spec.threshold, residuals=True,
                  markers=markers, title=f'Wrong tau ({spec.tau / spec.bad_wd_factor:g} instead of {spec.tau:g}) '
                  'against the reference of the healthy family')


def format_summary(results: dict[str, Any]) -> str:
    """Human-readable summary of :func:`run_experiment`'s results."""
    window = results['spec']['final_window']
    lines = [f'run                     T  params    TPP    tau      wd   loss(last {window:.0%})    wall']
    for name, r in results['runs'].items():
        lines.append(f'{name:<18} {r["total_steps"]:>6} {r["params"]:>8} {r["tpp"]:6.2f} {r["tau"]:7.4f} '
                     f'{r["weight_decay"]:9.3g} {r["final_loss"]:12.4f} '
                     + (f'{r["wall_s"]:7.0f}s' if r['wall_s'] is not None else '  reused'))
    ref = results['reference']
    lines.append(f'reference: {ref["n_runs"]} runs, b={ref["b"]:.4g}, q={ref["q"]:.4g}, '
                 f'RMS misfit {ref["fit_rmse"]:.4f}')
    p = results['prediction']
    lines.append(f'prediction of {p["run"]}\'s mean loss over its last {window:.0%} of steps:')
    for row in p['table']:
        lines.append(f'  from t/T <= {row["fraction_used"]:.2f}: {row["predicted"]:.4f} '
                     f'[{row["lower"]:.4f}, {row["upper"]:.4f}] vs measured {row["actual"]:.4f}: '
                     f'error {row["error"]:+.2%}   (L(T): predicted {row["predicted_LT"]:.4f}, whole-curve fit '
                     f'{row["LT_full_curve"]:.4f}, tail line {row["LT_tail"]:.4f})')
    if p['monitor_alert_step'] is not None:
        lines.append(f'  collapse_monitor alerted on this healthy run at step {p["monitor_alert_step"]} (t/T = '
                     f'{p["monitor_alert_step"] / results["runs"][p["run"]]["total_steps"]:.2f})')
    if p['callback_predicted'] is not None:
        lines.append(f'  collapse_monitor logged L(T) = {p["callback_predicted"]:.4f} at step {p["callback_step"]} '
                     f'({p["callback_predicted"] / p["predicted_LT"] - 1:+.2%} vs the offline L(T) prediction)')
    c = results['same_size_control']
    if c is not None:
        lines.append(f'control: {c["run"]} predicted from a reference fitted on {c["reference_run"]} alone:')
        lines += [f'  from t/T <= {row["fraction_used"]:.2f}: {row["predicted"]:.4f} vs measured {row["actual"]:.4f}: '
                  f'error {row["error"]:+.2%}' for row in c['table']]
    b = results['bad_tau']
    flag = (f'step {b["flag_step"]} (t/T = {b["flag_fraction"]:.2f}; raw gap then {b["raw_gap_at_flag"]:+.2%})'
            if b['flag_step'] is not None else 'never')
    raw = (f'step {b["raw_wrong_step"]} (t/T = {b["raw_wrong_fraction"]:.2f})'
           if b['raw_wrong_step'] is not None else 'never')
    lines.append(f'bad tau {b["run"]}: monitor alert at {flag}; raw loss stays >{results["spec"]["raw_gap"]:.0%} '
                 f'above {b["twin"]} from {raw}; final loss (last {window:.0%}) {b["final_loss_bad"]:.4f} vs '
                 f'{b["final_loss_twin"]:.4f}')
    if b['hindsight_onset_fraction'] is not None:
        lines.append(f'  in hindsight (finished run aligned over 25-50%) it is out of band from t/T = '
                     f'{b["hindsight_onset_fraction"]:.2f}')
    lines.append(f'total wall time {results["wall_s"]:.0f}s')
    return '\n'.join(lines)

def _size(text: str) -> ModelSize:
    try:
        d_model, n_layers, n_heads = (int(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'--sizes {text!r}: give each size as d_model,n_layers,n_heads, e.g. 64,2,4')
    return ModelSize(d_model, n_layers, n_heads)


def main() -> None:
    """The command line of the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--gpu', action='store_true', help='larger sizes and 3 seeds, for one GPU')
    parser.add_argument('--out-dir', type=Path, default=Path('runs/collapse_family'), help='run folders, ref.json')
    parser.add_argument('--docs-dir', type=Path, default=Path('docs'), help='where the two PNGs go')
    parser.add_argument('--reuse', action='store_true', help='read finished runs with identical configs')
    parser.add_argument('--shapes-only', action='store_true',
                        help='train every size and seed, and print each run\'s L(0.2T)/L(T) and L(T)')
    parser.add_argument('--sizes', type=_size, nargs='+', help='d_model,n_layers,n_heads per size, ascending')
    parser.add_argument('--tpp', type=float, help='tokens per parameter')
    parser.add_argument('--tau', type=float, help='AdamW timescale as a fraction of the run')
    parser.add_argument('--lr', type=float, help='peak LR of every size')
    parser.add_argument('--batch', type=int, help='global batch size in sequences')
    parser.add_argument('--seeds', type=int, nargs='+', help='seeds of the reference sizes')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    changes = {key: value for key, value in (('sizes', args.sizes and tuple(args.sizes)), ('tpp', args.tpp),
                                             ('tau', args.tau), ('lr', args.lr), ('global_batch', args.batch),
                                             ('seeds', args.seeds and tuple(args.seeds))) if value is not None}
    if args.shapes_only:
        changes['bad_size'] = 0  # no bad run: any two sizes will do
    spec = dataclasses.replace(GPU_SPEC if args.gpu else CPU_SPEC, **changes)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.shapes_only:
        print(shape_check(spec, args.out_dir.resolve(), args.reuse))
    else:
        print(format_summary(run_experiment(spec, args.out_dir.resolve(), args.docs_dir, args.reuse)))


if __name__ == '__main__':
    main()
