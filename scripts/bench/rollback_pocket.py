"""Rollback past a pocket of bad data: clean runs vs. the pocket without and with ``loss_spike_monitor`` rollback.

    python scripts/bench/rollback_pocket.py [--out runs/bench_rollback] [--seeds 17 18 19]

The tiny demo MPT (2 layers, d_model 64, 8 samples per batch) trains 80 batches of the demo corpus in order
(``shuffle: false``) through ``composer scripts/train.py``, relaunched until it exits 0. The pocket is train samples
``[192, 320)`` (batches 24-39) replaced by random tokens (:func:`foundry_ext.testing.garbage_data.
garbage_corpus_copy`). Per seed: a clean run, the pocket with ``actions: log``, the pocket with ``actions:
rollback``; the pocket with rollback once more for the first seed, to compare bitwise. Reported: the final eval loss (val
split, 8 batches) and the mean train loss of the last 10 steps; the rollback runs' distance to the clean run of the
same seed against the spread of the clean runs over seeds; whether two rollback runs of one seed end with bitwise
equal weights. Writes ``rollback_pocket.json`` and a plot of seed 17's losses into ``--out`` and ``docs/``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from foundry_ext.core.metrics_io import read_metrics
from foundry_ext.core.plots import Curve, plot_lr_curves
from foundry_ext.spikes.rollback import read_manifest
from foundry_ext.testing.garbage_data import garbage_corpus_copy
from foundry_ext.testing.relaunch import composer_command, relaunch_until_done

REPO = Path(__file__).resolve().parents[2]
BATCH, MAX = 8, 80
POCKET = (24 * BATCH, 40 * BATCH)
COMMON = ['model.n_layers=2', 'model.d_model=64', f'global_train_batch_size={BATCH}', 'device_train_microbatch_size=8',
          'device_eval_batch_size=8', 'train_loader.dataset.train_tokens=400000', 'train_loader.dataset.shuffle=false',
          f'max_duration={MAX}ba', f'eval_interval={MAX}ba', 'eval_subset_num_batches=8', 'save_interval=4ba',
          'autoresume=true', 'python_log_level=warn', 'console_log_interval=1000ba', 'scheduler.t_warmup=8ba',
          'scheduler.t_decay=20ba', 'callbacks.resume_data_guard={}',
          'callbacks.loss_spike_monitor.detector.warmup_steps=8',
          'callbacks.loss_spike_monitor.detector.fast_recovery_steps=4',
          'callbacks.loss_spike_monitor.detector.max_follow_steps=8']
ROLLBACK = ['callbacks.loss_spike_monitor.rollback.steps_before_onset=6',
            'callbacks.loss_spike_monitor.rollback.skip_batches=20']


def _run(run_dir: Path, seed: int, corpus: Path | None, action: str) -> dict:
    args = [str(REPO / 'yamls' / 'wsd.yaml'), *COMMON, f'variables.run_dir={run_dir}', f'save_folder={run_dir}/ckpt',
            f'variables.global_seed={seed}', f'run_name=s{seed}',
            *(f'callbacks.loss_spike_monitor.actions.{kind}={action}' for kind in ('not_recovering', 'divergence')),
            *(ROLLBACK if action == 'rollback' else []),
            *([f'train_loader.dataset.local={corpus}'] if corpus is not None else [])]
    codes = relaunch_until_done(composer_command('scripts/train.py', args), run_dir / 'launcher.log', 4, cwd=str(REPO))
    metrics = read_metrics(run_dir / 'metrics.jsonl')
    steps, losses = metrics['loss/train/total']
    return {'codes': codes, 'eval': float(metrics['metrics/eval/LanguageCrossEntropy'][1][-1]),
            'train_last10': float(losses[-10:].mean()), 'rollbacks': read_manifest(str(run_dir / 'ckpt')),
            'curve': (steps.tolist(), losses.tolist())}


def _weights(run_dir: Path) -> dict:
    path = run_dir / 'ckpt' / f'ep0-ba{MAX}-rank0.pt'
    return torch.load(path, map_location='cpu', weights_only=False)['state']['model']


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='runs/bench_rollback')
    parser.add_argument('--seeds', type=int, nargs='+', default=[17, 18, 19])
    opts = parser.parse_args()
    out = Path(opts.out).resolve()
    pocket = out / 'pocket_corpus'
    if not pocket.exists():
        garbage_corpus_copy(pocket, [POCKET], vocab_size=258)
    runs = {}
    for seed in opts.seeds:
        runs[f'clean/{seed}'] = _run(out / f'clean_{seed}', seed, None, 'log')
        runs[f'pocket/{seed}'] = _run(out / f'pocket_{seed}', seed, pocket, 'log')
        runs[f'rollback/{seed}'] = _run(out / f'rollback_{seed}', seed, pocket, 'rollback')
    first = opts.seeds[0]
    runs[f'rollback_again/{first}'] = _run(out / f'rollback_again_{first}', first, pocket, 'rollback')
    a, b = _weights(out / f'rollback_{first}'), _weights(out / f'rollback_again_{first}')
    bitwise = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    clean = [runs[f'clean/{s}']['eval'] for s in opts.seeds]
    spread = statistics.stdev(clean) if len(clean) > 1 else float('nan')
    print(f'{"run":<22}{"exit codes":<14}{"eval CE":>9}{"train, last 10":>16}  rollbacks')
    for name, run in runs.items():
        skips = [(r['onset_step'], r['checkpoint']['batch'], r['skip']['samples']) for r in run['rollbacks']]
        print(f'{name:<22}{str(run["codes"]):<14}{run["eval"]:>9.4f}{run["train_last10"]:>16.4f}  {skips}')
    diffs = [runs[f'rollback/{s}']['eval'] - runs[f'clean/{s}']['eval'] for s in opts.seeds]
    lost = [runs[f'pocket/{s}']['eval'] - runs[f'clean/{s}']['eval'] for s in opts.seeds]
    print(f'clean eval CE over seeds: mean {statistics.mean(clean):.4f}, std {spread:.4f}')
    print(f'rollback - clean, per seed: {[round(d, 4) for d in diffs]}')
    print(f'pocket without rollback - clean, per seed: {[round(d, 4) for d in lost]}')
    print(f'two rollback runs of seed {first} bitwise equal: {bitwise}')

    curves = [Curve(f'clean (seed {first})', runs[f'clean/{first}']['curve'], color='tab:green'),
              Curve('pocket, no rollback', runs[f'pocket/{first}']['curve'], color='tab:red'),
              Curve('pocket, rollback', runs[f'rollback/{first}']['curve'], color='tab:blue', linestyle='--')]
    for folder in (out, REPO / 'docs'):
        plot_lr_curves(curves, folder / 'rollback_pocket.png', ylabel='training loss',
                       title=f'Garbage samples {POCKET[0]}-{POCKET[1]} (batches 24-39), rollback vs. none')
    summary = {'clean_eval_mean': statistics.mean(clean), 'clean_eval_std': spread, 'rollback_minus_clean': diffs,
               'pocket_minus_clean': lost, 'bitwise_equal_rollback_runs': bitwise,
               'runs': {k: {key: v for key, v in run.items() if key != 'curve'} for k, run in runs.items()}}
    for r in summary['runs'].values():
        for entry in r['rollbacks']:
            entry.pop('fingerprints', None)
    (out / 'rollback_pocket.json').write_text(json.dumps(summary, indent=2))


if __name__ == '__main__':
    main()
