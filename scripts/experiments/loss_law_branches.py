"""Loss-law forecasts of WSD branches on our own training, checked by running the branches.

On the demo corpus and model (``yamls/wsd.yaml``): a WSD main run held at the peak LR (``t_decay_start`` past
``max_duration``) with a checkpoint every 100 batches; two short branches off it (``foundry-ext branch``); a law
fitted on the main run and those two branches (``foundry-ext loss-law fit``) on the eval loss
(``metrics/eval/LanguageCrossEntropy``: the same 8 validation batches every 20 batches, so a smooth curve);
``foundry-ext loss-law branches`` predicts the final eval loss of three other branches (longer decays, and
another shape); then those branches are run for real and their final eval loss is compared with the prediction
and its interval. The multi-power law is fitted twice: from the end of warmup (the default) and from the step that
cross-validation over the fitted runs chooses (``--fit-from auto``: the demo model's first few hundred steps
follow no power law in the LR area). The momentum law and a naive baseline (the fitted branches' mean relative
drop below the main run at the same step, applied to the main run at the held-out branch's end) are scored
alongside.

Run from the repository root::

    python scripts/experiments/loss_law_branches.py              # trains (about 1600 batches in all), then reports
    python scripts/experiments/loss_law_branches.py --reuse      # re-analyse runs already in --runs-dir

It writes ``<out>/loss_law_branches.{md,json,png}`` (the law files go to ``--runs-dir``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from foundry_ext.commands.branch import plan_branch, run_branches
from foundry_ext.commands.loss_law import branch_grid, fit, predict_schedule
from foundry_ext.core.metric_names import EVAL_CROSS_ENTROPY
from foundry_ext.core.metrics_io import read_metric
from foundry_ext.core.plots import save_figure

import matplotlib.pyplot as plt  # noqa: E402,I001  (after core.plots, which selects the headless backend)

log = logging.getLogger(__name__)

YAML = 'yamls/wsd.yaml'
MAIN_STEPS = 800
FIT_BRANCHES = ((400, 100, '1-sqrt'), (600, 100, '1-sqrt'))
TEST_BRANCHES = ((400, 300, '1-sqrt'), (600, 200, '1-sqrt'), (700, 100, 'linear'))


@dataclass(frozen=True)
class Branch:
    """A branch off the main run: its start, decay length (batches) and shape."""
    at: int
    decay: int
    shape: str

    @property
    def end(self) -> int:
        return self.at + self.decay

    def folder(self, runs: Path) -> Path:
        return runs / 'branches' / f'at{self.at}ba-decay{self.decay}ba'


def main_overrides(runs: Path) -> list[str]:
    """The main run: the demo recipe held at the peak, evaluated every 20 batches, saved every 100."""
    return [f'variables.run_dir={runs}', f'max_duration={MAIN_STEPS}ba', 'scheduler.t_warmup=50ba',
            'scheduler.t_decay_start=100000ba', 'save_interval=100ba', 'eval_interval=20ba',
            'eval_subset_num_batches=8', 'console_log_interval=100ba', 'python_log_level=null']


def train(runs: Path, branches: Sequence[Branch]) -> None:
    """Trains the main run and the branches (real ``train_from_yaml`` runs)."""
    from llmfoundry.command_utils import train_from_yaml

    overrides = main_overrides(runs)
    if not (runs / 'metrics.jsonl').exists():
        train_from_yaml(YAML, overrides).close()
    for branch in branches:
        if (branch.folder(runs) / 'metrics.jsonl').exists():
            continue
        plan = plan_branch(YAML, str(runs / 'checkpoints'), branch.at, f'{branch.decay}ba',
                           overrides=[*overrides, f'scheduler.decay_shape={branch.shape}'])
        run_branches([plan], YAML)


def _eval_at(path: Path, step: int) -> float:
    steps, values = read_metric(path / 'metrics.jsonl', EVAL_CROSS_ENTROPY)
    if step not in steps:
        raise SystemExit(f'{path} logs no {EVAL_CROSS_ENTROPY} at step {step}; did the run finish?')
    return float(values[np.flatnonzero(steps == step)[0]])


def analyse(runs: Path, out: Path) -> dict:
    """Fits both laws, predicts the held-out branches, and scores them against the runs and the baseline."""
    fit_branches = [Branch(*b) for b in FIT_BRANCHES]
    test_branches = [Branch(*b) for b in TEST_BRANCHES]
    sources = [str(runs), *(str(b.folder(runs)) for b in fit_branches)]
    overrides = main_overrides(runs)
    drops = [1 - _eval_at(b.folder(runs), b.end) / _eval_at(runs, b.end) for b in fit_branches]
    results: dict = {'fit_branches': [b.__dict__ for b in fit_branches], 'baseline_drop': float(np.mean(drops)),
                     'branches': []}
    laws = {}
    for name, law, fit_from in (('multi-power', 'multi-power', None), ('multi-power, fit from auto', 'multi-power',
                                                                        'auto'), ('momentum', 'momentum', None)):
        path = runs / f'law_{name.replace(", ", "_").replace(" ", "_")}.json'
        start = time.perf_counter()
        fitted = fit(sources, str(path), loss_key=EVAL_CROSS_ENTROPY, law=law, fit_from=fit_from)
        results[f'{name} fit'] = {'seconds': time.perf_counter() - start, 'params': fitted.params,
                                  'fit_from': fitted.fit['fit_from']}
        laws[name] = path
    for branch in test_branches:
        measured = _eval_at(branch.folder(runs), branch.end)
        row = {**branch.__dict__, 'measured': measured}
        for law, path in laws.items():
            forecasts, _ = branch_grid(str(path), YAML, overrides, str(branch.at), f'{branch.decay}ba', branch.shape)
            row[law] = {'predicted': forecasts[0].final_loss, 'interval': list(forecasts[0].interval),
                        'error': forecasts[0].final_loss / measured - 1}
        baseline = _eval_at(runs, branch.end) * (1 - results['baseline_drop'])
        row['baseline'] = {'predicted': baseline, 'error': baseline / measured - 1}
        results['branches'].append(row)
    _plot(runs, out, laws['multi-power, fit from auto'], test_branches)
    return results


def _plot(runs: Path, out: Path, law: Path, branches: Sequence[Branch]) -> Path:
    fig, ax = plt.subplots(figsize=(9, 5))
    steps, values = read_metric(runs / 'metrics.jsonl', EVAL_CROSS_ENTROPY)
    ax.plot(steps, values, 'o-', color='0.5', markersize=3, label='main run (measured)')
    for i, branch in enumerate(branches):
        pred = predict_schedule(str(law), YAML, [*main_overrides(runs), f'scheduler.t_decay_start={branch.at}ba',
                                                 f'scheduler.t_decay={branch.decay}ba',
                                                 f'scheduler.decay_shape={branch.shape}',
                                                 f'max_duration={branch.end}ba'])
        keep = pred.steps >= branch.at - 50
        color = f'C{i}'
        label = f'branch at {branch.at}, decay {branch.decay} ({branch.shape})'
        ax.plot(pred.steps[keep], pred.loss[keep], color=color, label=f'{label}: predicted')
        ax.fill_between(pred.steps[keep], pred.lower[keep], pred.upper[keep], color=color, alpha=0.2)
        b_steps, b_values = read_metric(branch.folder(runs) / 'metrics.jsonl', EVAL_CROSS_ENTROPY)
        ax.plot(b_steps, b_values, 's', color=color, markersize=4, label=f'{label}: measured')
    ax.set_ylim(values[steps >= 200].min() * 0.93, values[steps >= 200].max() * 1.02)
    ax.set_xlabel('step (batch)')
    ax.set_ylabel('eval loss')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title('Held-out branches: multi-power law (fit from auto) on the main run + branches at 400 and 600',
                 fontsize=10)
    return save_figure(fig, out / 'loss_law_branches.png')


def format_results(results: dict) -> str:
    """A markdown table of every held-out branch, and the summary."""
    names = ('multi-power', 'multi-power, fit from auto', 'momentum')
    lines = ['| held-out branch | measured final eval loss | ' + ' | '.join(f'{n} (90% interval) | error' for n in names)
             + ' | baseline | error |', '|---|---|' + '---|---|' * (len(names) + 1)]
    for row in results['branches']:
        cells = [f'{row[n]["predicted"]:.4f} ({row[n]["interval"][0]:.4f}..{row[n]["interval"][1]:.4f}) | '
                 f'{row[n]["error"]:+.2%}' for n in names]
        lines.append(f'| at {row["at"]}, decay {row["decay"]}, {row["shape"]} | {row["measured"]:.4f} | '
                     f'{" | ".join(cells)} | {row["baseline"]["predicted"]:.4f} | {row["baseline"]["error"]:+.2%} |')
    lines.append('')
    for name in (*names, 'baseline'):
        errors = np.abs([r[name]['error'] for r in results['branches']])
        line = f'{name}: mean abs error {errors.mean():.2%}, max {errors.max():.2%}'
        if name != 'baseline':
            covered = sum(r[name]['interval'][0] <= r['measured'] <= r[name]['interval'][1] for r in results['branches'])
            fitted = results[f'{name} fit']
            start = 'the warmup end' if fitted['fit_from'] is None else f'step {fitted["fit_from"]}'
            line += (f'; {covered}/{len(results["branches"])} inside the 90% interval; fitted from {start} in '
                     f'{fitted["seconds"]:.1f} s')
        lines.append(line)
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--runs-dir', default='runs/loss_law_branches', help='where the runs go')
    parser.add_argument('--out', default='docs', help='where the report, JSON and PNG go (default docs)')
    parser.add_argument('--reuse', action='store_true', help='only analyse runs already in --runs-dir')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    runs, out = Path(args.runs_dir).resolve(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.reuse:
        start = time.perf_counter()
        train(runs, [Branch(*b) for b in (*FIT_BRANCHES, *TEST_BRANCHES)])
        print(f'trained in {time.perf_counter() - start:.0f} s')
    results = analyse(runs, out)
    text = format_results(results)
    (out / 'loss_law_branches.md').write_text(text + '\n')
    (out / 'loss_law_branches.json').write_text(json.dumps(results, indent=1) + '\n')
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
