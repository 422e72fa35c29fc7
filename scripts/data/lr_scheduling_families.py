"""Rebuilds ``data/lr_scheduling_families/`` from the W&B exports of ``fabian-sp/lr-scheduling`` (MIT).

The repository (Schaipp, Hägele et al., ICML 2025) holds the training logs of Hägele et al. 2024's Llama-style
size families on SlimPajama and OpenWebText2 (code: epfml/schedules-and-scaling): 33M to 360M parameters, 102,400
tokens per step (204,800 for the 360M model), AdamW with weight decay 0.1, cosine to 10% of the peak LR or WSD with
a 20% linear cooldown, 300 warmup steps, the validation loss every 200 steps. Each run here becomes a folder with

* ``metrics.csv``: ``step``, ``metrics/eval/LanguageCrossEntropy`` (the validation loss after ``step`` steps, every
  200) and ``lr-AdamW/group0`` (the logged LR, every 50 steps); resumed runs log a step twice: the values are
  averaged, as the source's own ``reanalysis/data_utils.py`` does;
* ``run.json``: the controls ``params`` (the logged parameter count, embeddings included), ``tokens``,
  ``batch_tokens``, ``peak_lr`` and ``weight_decay`` (torch AdamW's, so ``tau = B / (peak_lr * weight_decay *
  tokens)``, [SwC] Eq. 2).

A WSD run of length ``T`` is its family's long constant-LR run up to the cooldown joined to the ``ann0.2_*`` file
that holds the cooldown (the source's ``merge_wsd_base``). The source's ``final-val/loss`` is left out: it is
computed on a different number of validation batches and sits about 1.2% above the series.

Usage::

    python scripts/data/lr_scheduling_families.py --repo /work/.mirror/fabian-sp+lr-scheduling/repo
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

log = logging.getLogger(__name__)

__all__ = ['COMMIT', 'convert', 'main']

COMMIT = '8ace3a327a396fbd4998ff7615d54012eba71573'
OUT = Path(__file__).resolve().parents[2] / 'data' / 'lr_scheduling_families'
EVAL_KEY = 'metrics/eval/LanguageCrossEntropy'
LR_KEY = 'lr-AdamW/group0'
_NAME = re.compile(r'^(?P<prefix>[^_]+)_(?P<dataset>slimpajama|openwebtext2)_llama_norm_nlayers(?P<layers>\d+)_'
                   r'nhead(?P<heads>\d+)_lr(?P<lr>[0-9.]+)_sched_(?P<sched>cos|wsd)_warmup300_(?:decay_[a-z]+_[0-9.]+_)?iter(?P<iters>\d+)_'
                   r'bs50x(?P<acc>\d)_ws2_seed0_data_seed1337\.json$')
# Cosine families: the size-family prefixes; cos-10-124m is the 124M LR sweep with the same recipe.
_COSINE_PREFIXES = ('sl', 'sl53', 'sl93', 'cos-10-124m', 'openwebtext2')


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(['git', '-C', str(repo), *args], check=True, capture_output=True, text=True).stdout


def _grouped(history: dict[str, list], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The history's rows averaged per ``iter`` (resumed runs log an iteration twice), sorted by ``iter``."""
    iters = np.asarray(history['iter'], dtype=float)
    unique = np.unique(iters)
    out = {'iter': unique}
    for key in keys:
        values = np.asarray(history[key], dtype=float)
        out[key] = np.array([values[iters == i].mean() for i in unique])
    return out


def _parse(name: str) -> Optional[dict[str, Any]]:
    # The source names the OpenWebText2 runs without a prefix: give them one so the pattern has a single form.
    match = _NAME.match(name if not name.startswith('openwebtext2') else f'openwebtext2_{name}')
    return match.groupdict() if match else None


def _runs(repo: Path) -> list[tuple[str, dict[str, Any]]]:
    names = _git(repo, 'ls-tree', '--name-only', COMMIT, 'data/').split()  # the top level: no grad_norm/ etc.
    return [(n, parsed) for n in names if (parsed := _parse(Path(n).name)) is not None]


def _load(repo: Path, path: str) -> dict[str, Any]:
    return json.loads(_git(repo, 'show', f'{COMMIT}:{path}'))


def _write(folder: Path, config: dict[str, Any], summary: dict[str, Any], val: dict[str, np.ndarray],
           train: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    batch_tokens = config['batch_size'] * config['acc_steps'] * config['world_size'] * config['sequence_length']
    rows = {int(i): {EVAL_KEY: f'{v:.6g}'} for i, v in zip(val['iter'], val['val_loss']) if i > 0}
    for i, lr in zip(train['iter'], train['train_lr']):
        rows.setdefault(int(i), {})[LR_KEY] = f'{lr:.6g}'
    with (folder / 'metrics.csv').open('w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=['step', EVAL_KEY, LR_KEY])
        writer.writeheader()
        for step in sorted(rows):
            writer.writerow({'step': step, **rows[step]})
    controls = {'params': int(summary['parameters']), 'tokens': int(config['iterations']) * batch_tokens,
                'batch_tokens': batch_tokens, 'peak_lr': float(config['lr']),
                'weight_decay': float(config['weight_decay'])}
    (folder / 'run.json').write_text(json.dumps(controls, indent=1) + '\n')


def _folder(parsed: dict[str, Any], params: int, schedule: str) -> str:
    dataset = 'slimpajama' if parsed['dataset'] == 'slimpajama' else 'openwebtext2'
    return f'{dataset}-{schedule}/{params / 1e6:.0f}m-{int(parsed["iters"])}ba-lr{float(parsed["lr"]):g}'


def convert(repo: Path, out: Path = OUT) -> list[str]:
    """Writes every cosine and WSD run of the size families under ``out``; returns the source files used."""
    runs = _runs(repo)
    used = []
    stable = {}  # (dataset, layers, heads, lr, acc) -> path of the long constant-LR WSD run
    for path, parsed in runs:
        if parsed['sched'] == 'wsd' and not parsed['prefix'].startswith('ann'):
            stable[(parsed['dataset'], parsed['layers'], parsed['heads'], parsed['lr'], parsed['acc'])] = path
    for path, parsed in runs:
        if parsed['sched'] == 'cos' and parsed['prefix'] in _COSINE_PREFIXES:
            data = _load(repo, path)
            val = _grouped(data['history']['val'], ('val_loss',))
            train = _grouped(data['history']['train'], ('train_lr',))
            schedule = 'cosine-lr-sweep' if parsed['prefix'] == 'cos-10-124m' else 'cosine'
            _write(out / _folder(parsed, data['summary']['parameters'], schedule), data['config'], data['summary'],
                   val, train)
            used.append(path)
        elif parsed['prefix'] == 'ann0.2':
            key = (parsed['dataset'], parsed['layers'], parsed['heads'], parsed['lr'], parsed['acc'])
            if key not in stable:
                log.warning('%s: no constant-LR run to join it to; skipped.', path)
                continue
            cool, base = _load(repo, path), _load(repo, stable[key])
            total = int(cool['config']['iterations'])
            start = total * (1 - float(cool['config']['wsd_fract_decay']))
            parts = {}
            for part in ('val', 'train'):
                keys = ('val_loss',) if part == 'val' else ('train_lr',)
                after = _grouped(cool['history'][part], keys)
                before = _grouped(base['history'][part], keys)
                keep = before['iter'] < min(start, after['iter'].min())
                parts[part] = {k: np.concatenate([before[k][keep], after[k]]) for k in after}
            _write(out / _folder(parsed, cool['summary']['parameters'], 'wsd'), cool['config'], cool['summary'],
                   parts['val'], parts['train'])
            used += [path, stable[key]]
    return sorted(set(used))


def main(argv: Optional[list[str]] = None) -> int:
    """The command line of the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repo', type=Path, required=True, help='a clone (or bare mirror) of fabian-sp/lr-scheduling')
    parser.add_argument('--out', type=Path, default=OUT, help=f'output folder (default: {OUT})')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    used = convert(args.repo, args.out)
    print(f'wrote {len(list(args.out.glob("*/*/run.json")))} runs from {len(used)} source files to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
