r"""Many budgets from one run, on real training: WSD-S vs WSD main + decay branches vs cyclic cosine.

The experiment behind ``scripts/budget_experiment.py`` (``docs/budgets.md``). For budgets
:math:`b_1 < \dots < b_n` in batches, on the demo corpus, with the same model, seed, data order, peak LR and
warmup for every method:

* ``wsd_s``: one run of ``yamls/wsd_s.yaml`` to :math:`b_n`. It decays into each budget for
  ``decay_fraction`` of the segment ending there, :math:`d_i = \lfloor f\,(b_i - b_{i-1}) \rfloor` from
  :math:`s_i = b_i - d_i`, then jumps back to the peak.
* ``wsd``: one main run of ``yamls/wsd.yaml`` held at the peak up to the last branch point :math:`s_n`, with
  a checkpoint at every :math:`s_i`, and one decay branch per budget (``foundry_ext.commands.branch``): from the
  main checkpoint at :math:`s_i`, decaying for :math:`d_i` into :math:`b_i`. The decays are WSD-S's (same
  start, length and shape), so the one difference is what the stable phase continues from: WSD-S from the
  decayed model, WSD from the main branch, which never decays. At :math:`b_1` the two are the same run.
* ``cyclic_cosine``: one run of ``yamls/cyclic_cosine.yaml`` to :math:`b_n`, a cosine cycle ending at each
  budget.

A budget's model is scored by its eval loss (``metrics/eval/LanguageCrossEntropy`` on the first
``eval_batches`` batches of the val split, the same for all), measured at the budget's step (``eval_interval``
is the budgets' gcd) and read from the ``budget_checkpoint`` manifest (``budgets.json``).

Compute: in every method the model for :math:`b_i` has trained for exactly :math:`b_i` batches. Getting all
budgets costs WSD-S and cyclic cosine :math:`b_n` batches, and WSD :math:`s_n + \sum_i d_i` (main run plus
branches); :meth:`BudgetLayout.compute_batches` reports it next to the losses.

Run from the repository root (same data, seeds and budgets for every method; ``docs/budgets.md``)::

    python scripts/experiments/budgets.py                  # CPU: budgets 200,400,800 ba, seeds 17,18
    python scripts/experiments/budgets.py --gpu            # d384 x 6 layers, budgets 1000,2000,4000, 3 seeds, bf16
    python scripts/experiments/budgets.py --budgets 100,200,400 --seeds 17
    python scripts/experiments/budgets.py --reuse          # re-analyse finished runs instead of retraining them
    python scripts/experiments/budgets.py --dry-run        # print the runs and their compute, train nothing

It writes <out>/budget_experiment.{md,json,png} and <out>/budget_schedules.png; run folders go to
<runs-dir>/seed<seed>/<method> (cleared before each run trains).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import matplotlib.pyplot as plt  # noqa: E402  (after plots, which selects the headless backend)
import numpy as np
import torch
from composer.core import State, Time, TimeUnit
from composer.devices import DeviceCPU

from foundry_ext.collapse.curves import smooth_curve
from foundry_ext.commands.branch import BranchPlan, find_checkpoints, plan_branch, run_branches
from foundry_ext.core.config import load_train_config
from foundry_ext.core.metric_names import LOSS_KEY
from foundry_ext.core.metrics_io import Series, read_metric
from foundry_ext.core.plots import Curve, plot_lr_curves, save_figure
from foundry_ext.schedulers import CyclicCosineScheduler, WSDScheduler, WSDSScheduler
from foundry_ext.schedulers.preview import schedule_multipliers

log = logging.getLogger(__name__)

__all__ = [
    'BudgetLayout',
    'CPU_CONFIG',
    'ExperimentConfig',
    'GPU_CONFIG',
    'LABELS',
    'METHODS',
    'RunSpec',
    'budget_layout',
    'format_results',
    'paper_ordering',
    'plan_runs',
    'plot_budget_schedules',
    'plot_results',
    'read_budget_losses',
    'run_experiment',
]

REPO = Path(__file__).resolve().parents[2]
YAMLS = {'wsd_s': 'wsd_s.yaml', 'wsd': 'wsd.yaml', 'cyclic_cosine': 'cyclic_cosine.yaml'}
METHODS = ('wsd_s', 'wsd', 'cyclic_cosine')
LABELS = {'wsd_s': 'WSD-S', 'wsd': 'WSD main + branches', 'cyclic_cosine': 'cyclic cosine'}
COLORS = {'wsd_s': 'tab:blue', 'wsd': 'tab:orange', 'cyclic_cosine': 'tab:green'}
# budget_checkpoint names metrics by evaluator label; the loggers call the same metric metrics/eval/...
EVAL_KEY = 'eval/LanguageCrossEntropy'
_STAMP = 'experiment_run.json'


@dataclass(frozen=True)
class ExperimentConfig:
    """The experiment's settings.

    Attributes:
        budgets (tuple[int, ...]): Budgets in batches, strictly increasing.
        seeds (tuple[int, ...]): ``variables.global_seed`` of each repetition (model init and data order).
        t_warmup (int): Warmup in batches, the same for every method.
        decay_fraction (float): WSD-S's decay, as a share of each segment; the WSD branches decay the same.
        decay_shape (str): Decay shape of WSD-S and the WSD branches (cyclic cosine decays as a cosine).
        eval_batches (int): Val batches per eval (``eval_subset_num_batches``), the same for every budget.
        smoothing (int): Moving-average window (steps) of the training curves in the plot.
        overrides (tuple[str, ...]): Extra Foundry overrides for every run (model size, precision, data size).
    """

    budgets: tuple[int, ...] = (200, 400, 800)
    seeds: tuple[int, ...] = (17, 18)
    t_warmup: int = 50
    decay_fraction: float = 0.1
    decay_shape: str = 'linear'
    eval_batches: int = 32
    smoothing: int = 10
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.budgets) < 2 or any(b <= a for a, b in zip((0, *self.budgets), self.budgets)):
            raise ValueError(f'budgets={self.budgets}: give at least two, positive and strictly increasing.')
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f'seeds={self.seeds}: give at least one, without repeats.')


# About 2.5k training batches per seed: an estimated 12 minutes for both seeds on 2 idle CPU cores (8 batches/s);
# 28 minutes measured on 2 shared cores with OMP_NUM_THREADS=1 (docs/benchmarks.md).
CPU_CONFIG = ExperimentConfig()
# One GPU: a 6-layer d384 model, 4x longer, 3 seeds, bf16, the whole val split; 4000 batches of 16 x 128
# tokens (8.2M) stay within one epoch of the demo corpus (about 10M train tokens once uncapped).
GPU_CONFIG = dataclasses.replace(
    CPU_CONFIG,
    budgets=(1000, 2000, 4000),
    seeds=(17, 18, 19),
    t_warmup=100,
    eval_batches=128,
    smoothing=25,
    overrides=('model.d_model=384', 'model.n_heads=6', 'model.n_layers=6', 'precision=amp_bf16',
               'train_loader.dataset.train_tokens=12000000'),
)


@dataclass(frozen=True)
class BudgetLayout:
    """Where the decay into each budget runs (batches), shared by WSD-S and the WSD branches."""

    budgets: tuple[int, ...]
    starts: tuple[int, ...]

    @property
    def decays(self) -> tuple[int, ...]:
        return tuple(b - s for b, s in zip(self.budgets, self.starts))

    def compute_batches(self) -> dict[str, int]:
        """Training batches each method spends to deliver every budget's model."""
        return {'wsd_s': self.budgets[-1], 'wsd': self.starts[-1] + sum(self.decays),
                'cyclic_cosine': self.budgets[-1]}


def budget_layout(budgets: Sequence[int], t_warmup: int, decay_fraction: float) -> BudgetLayout:
    """Resolves WSD-S's decay starts with the scheduler itself, so the WSD branches decay exactly as it does.

    Raises:
        ValueError: The scheduler's own error when a decay would not fit (e.g. into the warmup).
    """
    scheduler = WSDSScheduler(budgets=[f'{b}ba' for b in budgets], t_warmup=f'{t_warmup}ba',
                              decay_fraction=decay_fraction)
    state = State(model=torch.nn.Linear(1, 1), rank_zero_seed=0, run_name='budget-layout', device=DeviceCPU(),
                  max_duration=Time(budgets[-1], TimeUnit.BATCH))
    _, resolved, starts, _ = scheduler.resolve(state)
    return BudgetLayout(tuple(resolved), tuple(starts))


@dataclass(frozen=True)
class RunSpec:
    """One Foundry training run of the experiment: a recipe, its overrides and its folder."""

    method: str
    seed: int
    yaml: Path
    run_dir: Path
    overrides: tuple[str, ...]

    @property
    def save_folder(self) -> Path:
        return Path(load_train_config(str(self.yaml), self.overrides)['save_folder'])

    def command(self) -> str:
        return shlex.join(['composer', 'scripts/train.py', str(self.yaml.relative_to(REPO)), *self.overrides])


def _shared_overrides(config: ExperimentConfig, method: str, seed: int, run_dir: Path) -> list[str]:
    """What every run of ``method`` (the WSD branches included) shares: folder, seed, warmup, decay, evals."""
    shape = [] if method == 'cyclic_cosine' else [f'scheduler.decay_shape={config.decay_shape}']
    return [
        f'variables.run_name=budgets-{method}-seed{seed}', f'variables.run_dir={run_dir}',
        f'variables.global_seed={seed}', f'scheduler.t_warmup={config.t_warmup}ba', *shape,
        # Evals land on every budget; a fixed subset of the val split scores every model alike.
        f'eval_interval={math.gcd(*config.budgets)}ba', f'eval_subset_num_batches={config.eval_batches}',
        'console_log_interval=100ba', *config.overrides,
    ]


def plan_runs(config: ExperimentConfig, layout: BudgetLayout, runs_dir: Path, seed: int) -> dict[str, RunSpec]:
    """The three trained-from-scratch runs of one seed: WSD-S, the WSD main run and cyclic cosine.

    The WSD branches are planned from the main run's checkpoints once it has trained (:func:`_branch_plans`).
    """
    end = layout.budgets[-1]
    one_run = [f"scheduler.budgets=[{','.join(f'{b}ba' for b in layout.budgets)}]", f'max_duration={end}ba',
               f'save_interval={end}ba']
    extra = {
        'wsd_s': [*one_run, f'scheduler.decay_fraction={config.decay_fraction}'],
        # Held at the peak (its own decay lies past max_duration), with a checkpoint at every branch point.
        'wsd': [f'scheduler.t_decay_start={2 * end}ba', f'max_duration={layout.starts[-1]}ba',
                f'save_interval={math.gcd(*layout.starts)}ba'],
        'cyclic_cosine': one_run,
    }
    specs = {}
    for method in METHODS:
        run_dir = runs_dir / f'seed{seed}' / method
        specs[method] = RunSpec(method, seed, REPO / 'yamls' / YAMLS[method], run_dir,
                                (*_shared_overrides(config, method, seed, run_dir), *extra[method]))
    return specs


def _branch_plans(config: ExperimentConfig, layout: BudgetLayout, main: RunSpec) -> list[BranchPlan]:
    overrides = [*_shared_overrides(config, 'wsd', main.seed, main.run_dir), 'callbacks.budget_checkpoint={}']
    return [
        plan_branch(str(main.yaml), str(main.save_folder), start, f'{decay}ba',
                    overrides=[*overrides, f'save_interval={decay}ba'])
        for start, decay in zip(layout.starts, layout.decays)
    ]


def _train(folder: Path, record: Sequence[str], done: Callable[[], bool], fit: Callable[[], object],
           reuse: bool) -> dict[str, Any]:
    """Runs ``fit`` into a fresh ``folder``, or with ``reuse`` skips a run that finished with the same ``record``
    and whose outputs are still there (``done``).

    Returns:
        dict: The run's stamp: ``record``, its wall seconds and the 1-minute load average before and after it
        (those of the original run when reused, so that a re-analysis reports the real cost).
    """
    path = folder / _STAMP
    stamp = json.loads(path.read_text()) if path.is_file() else None
    if reuse and stamp is not None and stamp['record'] == list(record) and done():
        log.info('Reusing the finished run in %s.', folder)
        return stamp
    # Composer refuses to overwrite checkpoints and the jsonl logger appends: start from an empty folder.
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start, load = time.perf_counter(), os.getloadavg()[0]
    fit()
    stamp = {'record': list(record), 'wall_s': time.perf_counter() - start, 'load': [load, os.getloadavg()[0]]}
    path.write_text(json.dumps(stamp))  # last: marks the run finished
    return stamp


def _train_spec(spec: RunSpec, done: Callable[[], bool], reuse: bool) -> dict[str, Any]:
    def fit() -> None:
        from llmfoundry.command_utils import train_from_yaml  # heavy: only when something trains
        log.info('Training %s: %s', spec.run_dir, spec.command())
        train_from_yaml(str(spec.yaml), list(spec.overrides)).close()

    return _train(spec.run_dir, [str(spec.yaml), *spec.overrides], done, fit, reuse)


def read_budget_losses(manifest: Path, key: str = EVAL_KEY) -> dict[int, float]:
    """Eval loss per budget (in batches) from a ``budget_checkpoint`` manifest.

    Raises:
        ValueError: If a budget is not in batches or had no eval at its step.
    """
    losses = {}
    for entry in json.loads(Path(manifest).read_text()):
        budget = Time.from_timestring(entry['budget'])
        if budget.unit != TimeUnit.BATCH:
            raise ValueError(f"{manifest}: budget {entry['budget']} is not in batches.")
        if not entry.get('eval') or key not in entry['eval']:
            raise ValueError(f"{manifest}: budget {entry['budget']} has no {key}: no eval ran at step "
                             f"{entry['step']}. Set eval_interval to a divisor of every budget.")
        losses[int(budget.value)] = float(entry['eval'][key])
    return losses


def _manifest(save_folder: Path) -> Path:
    return save_folder / 'budgets' / 'budgets.json'


def _has_checkpoints(folder: Path, steps: Sequence[int]) -> bool:
    try:
        return set(steps) <= set(find_checkpoints(str(folder)))
    except ValueError:  # no such folder, or no checkpoints in it
        return False


def _run_seed(
    config: ExperimentConfig,
    layout: BudgetLayout,
    runs_dir: Path,
    seed: int,
    reuse: bool,
) -> tuple[dict[str, dict[int, float]], dict[str, list[Series]], dict[str, list[dict[str, Any]]]]:
    """Trains one seed's runs; returns eval losses per method and budget, training curves, and run stamps."""
    specs = plan_runs(config, layout, runs_dir, seed)
    losses: dict[str, dict[int, float]] = {}
    curves: dict[str, list[Series]] = {}
    stamps: dict[str, list[dict[str, Any]]] = {}
    for method in ('wsd_s', 'cyclic_cosine'):
        spec = specs[method]
        manifest = _manifest(spec.save_folder)
        stamps[method] = [_train_spec(spec, manifest.is_file, reuse)]
        losses[method] = read_budget_losses(manifest)
        curves[method] = [read_metric(spec.run_dir / 'metrics.jsonl', LOSS_KEY)]

    main = specs['wsd']
    stamps['wsd'] = [_train_spec(main, lambda: _has_checkpoints(main.save_folder, layout.starts), reuse)]
    main_curve = read_metric(main.run_dir / 'metrics.jsonl', LOSS_KEY)
    curves['wsd'], losses['wsd'] = [main_curve], {}
    for plan in _branch_plans(config, layout, main):
        folder = Path(plan.save_folder)
        stamps['wsd'].append(_train(folder, [str(main.yaml), *plan.overrides], _manifest(folder).is_file,
                                    lambda plan=plan: run_branches([plan], str(main.yaml)), reuse))
        losses['wsd'].update(read_budget_losses(_manifest(folder)))
        steps, values = read_metric(folder / 'metrics.jsonl', LOSS_KEY)
        # The branch logs from its first batch, at timestamp plan.step, on; joined to the main curve before
        # it, it smooths without a gap at the branch point.
        before = main_curve[0] < plan.step
        curves['wsd'].append((np.concatenate([main_curve[0][before], steps]),
                              np.concatenate([main_curve[1][before], values])))
    # Only the branch points' checkpoints are needed (for reuse); the rest were there to branch from.
    for step, path in find_checkpoints(str(main.save_folder)).items():
        if step not in layout.starts:
            os.remove(path)
    return losses, curves, stamps


def run_experiment(config: ExperimentConfig, runs_dir: Path, out_dir: Path, reuse: bool = False) -> dict[str, Any]:
    """Trains every method for every seed, then writes the results, table and plot into ``out_dir``.

    Args:
        config (ExperimentConfig): :data:`CPU_CONFIG`, :data:`GPU_CONFIG` or a variant.
        runs_dir (Path): Run folders go to ``<runs_dir>/seed<seed>/<method>`` (cleared before training).
        out_dir (Path): ``budget_experiment.json``, ``.md`` and ``.png`` go here.
        reuse (bool): Read runs that finished with identical overrides instead of retraining them.

    Returns:
        dict: The results, as written to ``budget_experiment.json``.
    """
    layout = budget_layout(config.budgets, config.t_warmup, config.decay_fraction)
    losses: dict[str, dict[str, list[float]]] = {m: {str(b): [] for b in layout.budgets} for m in METHODS}
    stamps: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    first_curves: dict[str, list[Series]] = {}
    for seed in config.seeds:
        seed_losses, curves, seed_stamps = _run_seed(config, layout, runs_dir, seed, reuse)
        first_curves = first_curves or curves
        for method in METHODS:
            stamps[method] += seed_stamps[method]
            for budget in layout.budgets:
                losses[method][str(budget)].append(seed_losses[method][budget])
    recipe = load_train_config(str(REPO / 'yamls' / YAMLS['wsd_s']), config.overrides)
    results = {
        'config': dataclasses.asdict(config),
        'layout': {'budgets': layout.budgets, 'decay_starts': layout.starts, 'decays': layout.decays},
        'compute_batches': layout.compute_batches(),
        'tokens_per_batch': int(recipe['global_train_batch_size']) * int(recipe['max_seq_len']),
        'losses': losses,
        # Seconds in each method's train_from_yaml calls (startup included), summed over its runs and seeds.
        'wall_s': {m: sum(s['wall_s'] for s in stamps[m]) for m in METHODS},
        'machine': _machine(),
        'load_average': [min(x for m in METHODS for s in stamps[m] for x in s['load']),
                         max(x for m in METHODS for s in stamps[m] for x in s['load'])],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / 'budget_experiment.json').write_text(json.dumps(results, indent=2))
    (out_dir / 'budget_experiment.md').write_text(format_results(results))
    plot_results(results, first_curves, out_dir / 'budget_experiment.png')
    return results


def _machine() -> str:
    if torch.cuda.is_available():
        return f'{torch.cuda.get_device_name()}, {os.cpu_count()} CPU cores'
    return f'{os.cpu_count()} CPU cores (torch threads: {torch.get_num_threads()}), no GPU'


def _by_budget(results: Mapping[str, Any]) -> tuple[list[int], dict[str, dict[int, np.ndarray]]]:
    budgets = [int(b) for b in results['layout']['budgets']]
    return budgets, {m: {b: np.asarray(results['losses'][m][str(b)], dtype=float) for b in budgets} for m in METHODS}


def paper_ordering(results: Mapping[str, Any]) -> dict[int, tuple[bool, int]]:
    """Per budget: whether the paper's WSD-S <= WSD < cyclic cosine held for the mean over seeds, and in how
    many single seeds it held."""
    budgets, losses = _by_budget(results)
    out = {}
    for b in budgets:
        s, w, c = (losses[m][b] for m in METHODS)
        out[b] = (bool(s.mean() <= w.mean() < c.mean()), int(np.sum((s <= w) & (w < c))))
    return out


def _mean_spread(values: np.ndarray) -> str:
    # Sample standard deviation over seeds; none with one seed.
    return f'{values.mean():.4f}' + (f' ± {values.std(ddof=1):.4f}' if values.size > 1 else '')


def format_results(results: Mapping[str, Any]) -> str:
    """The results as Markdown: settings, eval loss per method and budget, paired differences, ordering."""
    config, layout = results['config'], results['layout']
    budgets, losses = _by_budget(results)
    seeds = config['seeds']
    compute = results['compute_batches']
    tokens = results['tokens_per_batch']
    head = ' | '.join(f'{b} ba' for b in budgets)
    lines = [
        f"Budgets {', '.join(f'{b}' for b in budgets)} batches ({tokens} tokens each), seeds "
        f"{', '.join(map(str, seeds))}; warmup {config['t_warmup']} ba; decays into the budgets "
        f"{', '.join(f'{s}→{b}' for s, b in zip(layout['decay_starts'], budgets))} "
        f"({config['decay_fraction']:.0%} of each segment, {config['decay_shape']}) for WSD-S and the WSD branches "
        f"alike; eval loss = `metrics/eval/LanguageCrossEntropy` on {config['eval_batches']} val batches at the "
        'budget\'s step.',
        '',
        f'Eval loss (mean ± sample std over {len(seeds)} seed{"s" if len(seeds) > 1 else ""}; lower is better):',
        '',
        f'| method | training batches for all budgets | {head} |',
        '|---|---|' + '---|' * len(budgets),
    ]
    for m in METHODS:
        cells = ' | '.join(_mean_spread(losses[m][b]) for b in budgets)
        ratio = compute[m] / compute['wsd_s']
        lines.append(f'| {LABELS[m]} | {compute[m]} ({ratio:.2f}×) | {cells} |')
    lines += ['', 'Difference to WSD-S with the same seed (mean; each seed in brackets; > 0: WSD-S is better):', '',
              f'| method | {head} |', '|---|' + '---|' * len(budgets)]
    for m in ('wsd', 'cyclic_cosine'):
        cells = []
        for b in budgets:
            diff = losses[m][b] - losses['wsd_s'][b]
            cells.append(f"{diff.mean():+.4f} [{', '.join(f'{d:+.4f}' for d in diff)}]")
        lines.append(f"| {LABELS[m]} − WSD-S | {' | '.join(cells)} |")
    lines += ['', "The paper's ordering WSD-S ≤ WSD < cyclic cosine:", '']
    for b, (held, n) in paper_ordering(results).items():
        lines.append(f"- {b} ba: {'held' if held else 'did not hold'} for the mean; held in {n} of {len(seeds)} "
                     'seeds.')
    wall = results['wall_s']
    low, high = results['load_average']
    lines += ['', 'At the first budget WSD-S and WSD are the same run (same warmup, stable phase and decay).', '',
              f"Wall time {sum(wall.values()) / 60:.1f} min of training runs ("
              + ', '.join(f'{LABELS[m]} {wall[m] / 60:.1f}' for m in METHODS)
              + f") on {results['machine']}; 1-minute load average {low:.1f} to {high:.1f} during the runs.", '']
    return '\n'.join(lines)


def plot_results(results: Mapping[str, Any], curves: Mapping[str, Sequence[Series]], out: Path) -> Path:
    """Training loss against WSD-S's for the first seed (left), and eval loss against budget per method (right).

    Args:
        results (Mapping): As :func:`run_experiment` returns.
        curves (Mapping[str, Sequence[Series]]): Per method, raw training losses: one run, or for ``wsd`` the
            main run then each branch joined to the main run before its branch point.
        out (Path): PNG to write.
    """
    budgets, losses = _by_budget(results)
    window = int(results['config']['smoothing'])
    fig, (ax_train, ax_eval) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={'width_ratios': [3, 2]})
    ref_steps, ref_values = curves['wsd_s'][0]
    ax_train.axhline(0.0, color=COLORS['wsd_s'], linewidth=1.2, label=LABELS['wsd_s'])
    for method in ('wsd', 'cyclic_cosine'):
        for i, (steps, values) in enumerate(curves[method]):
            # Same seed, so the same batches at the same steps: the difference cancels most batch noise.
            shared, ref_index, index = np.intersect1d(ref_steps, steps, return_indices=True)
            s, y = smooth_curve(shared, values[index] - ref_values[ref_index], window)
            if i > 0:  # a WSD branch, drawn from its branch point on
                keep = s >= results['layout']['decay_starts'][i - 1]
                s, y = s[keep], y[keep]
            label = {0: LABELS[method] if method != 'wsd' else 'WSD main run', 1: 'WSD branches'}.get(i)
            ax_train.plot(s, y, color=COLORS[method], linewidth=1.0, linestyle='--' if i > 0 else '-', label=label)
    for b in budgets:
        ax_train.axvline(b, color='0.7', linewidth=0.8, zorder=0)
    ax_train.set_xlabel('step (batch)')
    ax_train.set_ylabel("training loss − WSD-S's")
    ax_train.set_title(f"seed {results['config']['seeds'][0]}: training loss minus WSD-S's on the same batches "
                       f'({window}-step mean)', fontsize=10)
    for method in METHODS:
        mean = np.array([losses[method][b].mean() for b in budgets])
        std = np.array([losses[method][b].std(ddof=1) if losses[method][b].size > 1 else 0.0 for b in budgets])
        ax_eval.errorbar(budgets, mean, yerr=std, marker='o', capsize=3, color=COLORS[method], label=LABELS[method])
    ax_eval.set_xscale('log', base=2)
    ax_eval.set_xticks(budgets, [str(b) for b in budgets])
    ax_eval.minorticks_off()
    ax_eval.set_xlabel('budget (batches)')
    ax_eval.set_ylabel('eval loss at the budget')
    n = len(results['config']['seeds'])
    ax_eval.set_title(f'mean ± std over {n} seed{"s" if n > 1 else ""}')
    for ax in (ax_train, ax_eval):
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, out)


def plot_budget_schedules(out: Path, budgets: Sequence[int] = (250, 500, 1000), t_warmup: int = 50,
                          decay_fraction: float = 0.1, decay_shape: str = 'linear') -> Path:
    """The three ways to get a model per budget on one axis: ``wsd_s``, ``cyclic_cosine``, WSD main + branches.

    Each schedule is evaluated as the Trainer would (:func:`~foundry_ext.schedulers.preview.schedule_multipliers`);
    the WSD branches decay as WSD-S does (:func:`budget_layout`), as in the experiment.
    """
    layout = budget_layout(budgets, t_warmup, decay_fraction)
    times = {'budgets': [f'{b}ba' for b in budgets], 't_warmup': f'{t_warmup}ba'}

    def alphas(scheduler: Any, max_duration: int) -> Series:
        return schedule_multipliers(scheduler, f'{max_duration}ba', samples_per_batch=1, tokens_per_batch=1)

    curves = [
        Curve(f'wsd_s (decay {decay_fraction:.0%} of each segment, {decay_shape})',
              alphas(WSDSScheduler(**times, decay_fraction=decay_fraction, decay_shape=decay_shape), budgets[-1]),
              color=COLORS['wsd_s']),
        Curve('cyclic_cosine', alphas(CyclicCosineScheduler(**times), budgets[-1]), color=COLORS['cyclic_cosine']),
        # The main run never decays: its decay start lies past its end.
        Curve('wsd main + one branch per budget (the same decays)',
              alphas(WSDScheduler(t_warmup=f'{t_warmup}ba', t_decay='1ba', t_decay_start=f'{2 * budgets[-1]}ba'),
                     layout.starts[-1]), '--', COLORS['wsd']),
    ]
    for start, budget, decay in zip(layout.starts, layout.budgets, layout.decays):
        steps, alpha = alphas(WSDScheduler(t_warmup=f'{t_warmup}ba', t_decay=f'{decay}ba',
                                           t_decay_start=f'{start}ba', decay_shape=decay_shape), budget)
        curves.append(Curve('_branch', (steps[start:], alpha[start:]), '--', COLORS['wsd']))  # '_': no legend entry
    return plot_lr_curves(curves, out, ylabel='LR multiplier',
                          title=f"Three ways to get a model at {', '.join(map(str, budgets[:-1]))} and "
                          f'{budgets[-1]} batches\nWSD-S goes on from each decayed model; the WSD main run (dashed) '
                          'never decays')

def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(',') if x.strip())


def main() -> None:
    """The command line of the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--gpu', action='store_true', help='larger model, 4x longer budgets, 3 seeds, bf16')
    parser.add_argument('--budgets', type=_ints, help='comma-separated budgets in batches (default 200,400,800)')
    parser.add_argument('--seeds', type=_ints, help='comma-separated seeds (default 17,18)')
    parser.add_argument('--out', type=Path, default=Path('docs'), help='where the results and PNGs go')
    parser.add_argument('--runs-dir', type=Path, default=Path('runs/budget_experiment'), help='run folders')
    parser.add_argument('--reuse', action='store_true', help='read finished runs with identical overrides')
    parser.add_argument('--dry-run', action='store_true', help='print the planned runs and compute only')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')

    config = GPU_CONFIG if args.gpu else CPU_CONFIG
    config = dataclasses.replace(config, budgets=args.budgets or config.budgets, seeds=args.seeds or config.seeds)
    if args.dry_run:
        layout = budget_layout(config.budgets, config.t_warmup, config.decay_fraction)
        for spec in plan_runs(config, layout, args.runs_dir.resolve(), config.seeds[0]).values():
            print(f'{spec.method}: {spec.command()}')
        print(f'WSD branches (foundry-ext branch): from {layout.starts}, decaying {layout.decays} batches')
        print(f'training batches per seed: {layout.compute_batches()}')
    else:
        print(f'wrote {plot_budget_schedules(args.out / "budget_schedules.png")}')
        print(format_results(run_experiment(config, args.runs_dir.resolve(), args.out, args.reuse)))


if __name__ == '__main__':
    main()
