"""Rebuilds the public loss curves vendored under ``data/multipowerlaw/`` and ``data/lr-scheduling-124m/``.

Both sources are MIT licensed and fetched as bare git mirrors (``fetch github:<owner>/<name>``); this script reads
them with ``git show`` at a pinned commit, so the output is reproducible byte for byte.

* ``thu-yao-01-luo/MultiPowerLaw`` (Luo et al., ICLR 2025): ``loss_curve_repo/csv_{25,100,400}/*.csv`` are copied
  unchanged (``step,lr,loss``; every 128 steps from the end of a 2160-step warmup to 3e-4).
* ``fabian-sp/lr-scheduling`` (Hägele et al. 2024 / Schaipp et al. 2025): the 124M Llama-style runs on SlimPajama
  (``nlayers12_nhead12``, 50,000 steps, 102,400 tokens per step) at peak LR 1e-3 (the benchmark) and 5e-4 (the
  development set used to choose settings): the constant run and every cooldown (linear 10-90%, 1-sqrt 20%). Each
  W&B export becomes ``step,lr,loss,val_loss``: ``history.train`` (``iter``, ``train_lr``, ``train_loss``; every 50
  steps) and ``history.val`` (``iter``, ``val_loss``; every 200 steps) merged by step. A step logged twice (a
  resumed run) keeps its last row. Files hold what their source holds: most cooldowns resumed from the constant
  run's checkpoint and start there (join them to the constant run for the LR before); the 80% and 90% ones ran
  from step 0. The constant run's
  last row (step 50,000) logs ``train_lr`` 0, the scheduler's value after the run ended: that LR is dropped (its
  loss is kept), since no step ran at LR 0.

Example::

    python scripts/data/loss_law_curves.py --mpl /work/.mirror/thu-yao-01-luo+MultiPowerLaw/repo \\
        --lrs /work/.mirror/fabian-sp+lr-scheduling/repo
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

MPL_COMMIT = '8da9f1902602f3391b971a811e3cc51604541769'
LRS_COMMIT = '8ace3a327a396fbd4998ff7615d54012eba71573'
MPL_SIZES = ('25', '100', '400')
_RUN = ('slimpajama_llama_norm_nlayers12_nhead12_lr{lr}_sched_wsd_warmup300_{decay}_iter50000_bs50x2_ws2_seed0_'
        'data_seed1337')
# output name -> (W&B run prefix, decay part of the name)
LRS_RUNS = {
    'constant': ('stable-124m', 'decay_linear_0.0'),
    **{f'cooldown-linear-{f}': (f'ann124-{f}', f'decay_linear_{f}')
       for f in ('0.1', '0.2', '0.4', '0.6', '0.8', '0.9')},
    'cooldown-1-sqrt-0.2': ('ann124-0.2', 'decay_sqrt_0.2'),
}
LRS_PEAKS = ('0.001', '0.0005')


def _show(repo: str, commit: str, path: str) -> bytes:
    return subprocess.run(['git', '-C', repo, 'show', f'{commit}:{path}'], check=True, capture_output=True).stdout


def _lrs_rows(export: dict) -> list[dict]:
    rows: dict[int, dict] = {}
    train, val = export['history']['train'], export['history']['val']
    for step, lr, loss in zip(train['iter'], train['train_lr'], train['train_loss']):
        rows.setdefault(int(step), {}).update(lr=lr, loss=loss)
    for step, loss in zip(val['iter'], val['val_loss']):
        rows.setdefault(int(step), {})['val_loss'] = loss
    return [{'step': step, **rows[step]} for step in sorted(rows)]


def _write_csv(path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator='\n')
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    path.write_text(out.getvalue())


def build(mpl_repo: str, lrs_repo: str, out: Path, peaks: tuple[str, ...] = LRS_PEAKS) -> list[Path]:
    """Writes every vendored CSV under ``out`` (the repository's ``data/``) and returns their paths; other
    ``peaks`` (e.g. ``0.002``) build held-out sets that are not vendored."""
    written = []
    for size in MPL_SIZES:
        folder = f'loss_curve_repo/csv_{size}'
        names = subprocess.run(['git', '-C', mpl_repo, 'ls-tree', '--name-only', f'{MPL_COMMIT}:{folder}'],
                               check=True, capture_output=True, text=True).stdout.split()
        for name in names:
            path = out / 'multipowerlaw' / f'csv_{size}' / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_show(mpl_repo, MPL_COMMIT, f'{folder}/{name}'))
            written.append(path)
    for peak in peaks:
        for name, (prefix, decay) in LRS_RUNS.items():
            export = json.loads(_show(lrs_repo, LRS_COMMIT, f'data/{prefix}_{_RUN.format(lr=peak, decay=decay)}.json'))
            rows = _lrs_rows(export)
            if name == 'constant' and rows[-1].get('lr') == 0:
                del rows[-1]['lr']
            path = out / 'lr-scheduling-124m' / f'lr{peak}' / f'{name}.csv'
            _write_csv(path, rows, ('step', 'lr', 'loss', 'val_loss'))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--mpl', default='/work/.mirror/thu-yao-01-luo+MultiPowerLaw/repo',
                        help='bare git mirror of thu-yao-01-luo/MultiPowerLaw')
    parser.add_argument('--lrs', default='/work/.mirror/fabian-sp+lr-scheduling/repo',
                        help='bare git mirror of fabian-sp/lr-scheduling')
    parser.add_argument('--out', default='data', help='output folder (default: data)')
    parser.add_argument('--peaks', nargs='+', default=list(LRS_PEAKS),
                        help=f'peak LRs of the 124M runs (default: {" ".join(LRS_PEAKS)}; also 0.002, 0.0001)')
    args = parser.parse_args(argv)
    written = build(args.mpl, args.lrs, Path(args.out), tuple(args.peaks))
    print(f'wrote {len(written)} files, {sum(p.stat().st_size for p in written) / 1e6:.2f} MB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
