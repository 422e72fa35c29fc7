"""Rebuilds the vendored real loss curves under ``data/`` from clones of their public repositories.

* ``data/modded-nanogpt/``: per-step training logs of GPT-2-class records from ``KellerJordan/modded-nanogpt``
  (MIT). Each ``records/**`` log holds the training script's source, then lines ``step:i/N train_loss:x ...`` and
  ``step:i/N val_loss:x ...`` (the llm.c records: ``s:i trl:x`` and ``s:i tel:x``); converted to
  ``step,loss,val_loss`` (val_loss empty where there is none).
* ``data/lr-scheduling/``: W&B exports of ``fabian-sp/lr-scheduling`` (MIT): ``history.train`` (``iter``,
  ``train_loss`` every 50 steps) and ``history.val`` (every 200); a repeated ``iter`` (a resumed run) keeps its
  last value. WSD runs are their constant-LR run up to the cooldown, joined to the cooldown file (``ann*``).

The spike benchmark also reads ``data/multipowerlaw/`` (the MultiPowerLaw curves, rebuilt by
``scripts/data/loss_law_curves.py``).

Example (the mirrors are bare clones)::

    python scripts/data/real_loss_curves.py --modded-nanogpt /work/.mirror/KellerJordan+modded-nanogpt/repo \\
        --lr-scheduling /work/.mirror/fabian-sp+lr-scheduling/repo
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

# Runs of different sizes and eras; the three ScaleUp1B runs and the two ScaleShortcuts runs each include runs
# that share a data order (their outliers recur at the same steps).
MODDED_NANOGPT = [
    'records/track_1_short/2024-06-06_AdamW/f66d43d7-e449-4029-8adf-e8537bab49ea.log',
    'records/track_1_short/2024-10-10_Muon/eb5659d0-fb6a-49e5-a311-f1f89412f726.txt',
    'records/track_1_short/2024-10-13_llmc/main.log',
    'records/track_1_short/2024-10-20_ScaleUp1B/87bd51fd-6203-4c88-b3aa-8a849a6a83ca.txt',
    'records/track_1_short/2024-10-20_ScaleUp1B/ad8d7ae5-7b2d-4ee9-bc52-f912e9174d7a.txt',
    'records/track_1_short/2024-10-20_ScaleUp1B/c0078066-c8c9-49c8-868a-ff4d4f32e615.txt',
    'records/track_1_short/2024-11-10_ScaleShortcuts/4897c987-9d09-435c-a23f-20585912936a.txt',
    'records/track_1_short/2024-11-10_ScaleShortcuts/70a0ada6-8dee-4fef-8980-135379479c21.txt',
]
_TAIL = '_slimpajama_llama_norm_nlayers12_nhead12_lr{lr}_sched_{sched}_iter50000_bs50x2_ws2_seed0_data_seed1337.json'
# (name, run, cooldown joined after it or None)
LR_SCHEDULING = [
    *((f'cos-124m-lr{lr}', f'data/cos-zero-124m{_TAIL.format(lr=lr, sched="cos_warmup300_decay_sqrt_0.0")}', None)
      for lr in ('0.0001', '0.0005', '0.001', '0.002', '0.005')),
    *((f'constant-124m-lr{lr}', f'data/stable-124m{_TAIL.format(lr=lr, sched="wsd_warmup300_decay_linear_0.0")}', None)
      for lr in ('0.0005', '0.001', '0.002')),
    *((f'wsd{fraction}-124m-lr0.001', f'data/stable-124m{_TAIL.format(lr="0.001", sched="wsd_warmup300_decay_linear_0.0")}',
       f'data/ann124-{fraction}{_TAIL.format(lr="0.001", sched=f"wsd_warmup300_decay_linear_{fraction}")}')
      for fraction in ('0.1', '0.2', '0.4', '0.8')),
    ('cos-210m-lr0.001', 'data/cos-210m_slimpajama_llama_nlayers24_nhead12_lr0.001_sched_cos_warmup300_iter44444_bs50x2'
     '_ws2_seed0_data_seed1337.json', None),
    ('constant-210m-lr0.0005', 'data/stable-210m_slimpajama_llama_nlayers24_nhead12_lr0.0005_sched_wsd_warmup300_iter'
     '40000_bs50x2_ws2_seed0_data_seed1337.json', None),
    ('owt2-wsd-lr0.001', 'data/openwebtext2_llama_norm_nlayers12_nhead10_lr0.001_sched_wsd_warmup300_iter25000_bs50x2'
     '_ws2_seed0_data_seed1337.json', None),
    ('owt2-cos-lr0.002', 'data/openwebtext2_llama_norm_nlayers12_nhead10_lr0.002_sched_cos_warmup300_iter25000_bs50x2'
     '_ws2_seed0_data_seed1337.json', None),
]
_STEP = re.compile(r'^(?:step:(\d+)/\d+ (train_loss|val_loss):|s:(\d+) (trl|tel):)([-+0-9.eEnaif]+)')


def _show(repo: Path, path: str) -> str:
    return subprocess.run(['git', '-C', str(repo), 'show', f'HEAD:{path}'], capture_output=True, text=True,
                          check=True).stdout


def _write(path: Path, header: str, rows: dict[int, tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [header] + [','.join([str(step)] + ['' if v is None else f'{v:.6g}' for v in values])
                        for step, values in sorted(rows.items())]
    path.write_text('\n'.join(lines) + '\n')
    log.info('wrote %s (%d rows)', path, len(rows))


def modded_nanogpt(repo: Path, out: Path) -> None:
    """Converts the per-step train and val losses of :data:`MODDED_NANOGPT` to CSV."""
    for record in MODDED_NANOGPT:
        train: dict[int, float] = {}
        val: dict[int, float] = {}
        for line in _show(repo, record).splitlines():
            match = _STEP.match(line)
            if match:
                step = int(match[1] or match[3])
                (train if match[2] == 'train_loss' or match[4] == 'trl' else val)[step] = float(match[5])
        name = f'{record.split("/")[-2]}-{Path(record).stem[:8]}.csv'
        _write(out / name, 'step,loss,val_loss', {s: (train.get(s), val.get(s)) for s in sorted(set(train) | set(val))})


def _history(repo: Path, path: str) -> tuple[dict[int, float], dict[int, float]]:
    history = json.loads(_show(repo, path))['history']
    train = dict(zip(map(int, history['train']['iter']), map(float, history['train']['train_loss'])))
    val = dict(zip(map(int, history['val']['iter']), map(float, history['val']['val_loss'])))
    return train, val


def lr_scheduling(repo: Path, out: Path) -> None:
    """Converts :data:`LR_SCHEDULING` to CSV, joining each cooldown to its constant-LR run."""
    for name, run, cooldown in LR_SCHEDULING:
        train, val = _history(repo, run)
        if cooldown is not None:
            cool_train, cool_val = _history(repo, cooldown)
            start = min(cool_train)
            train = {**{s: v for s, v in train.items() if s < start}, **cool_train}
            val = {**{s: v for s, v in val.items() if s < start}, **cool_val}
        _write(out / f'{name}.csv', 'step,loss,val_loss',
               {s: (train.get(s), val.get(s)) for s in sorted(set(train) | set(val))})


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--modded-nanogpt', type=Path, help='clone of KellerJordan/modded-nanogpt')
    parser.add_argument('--lr-scheduling', type=Path, help='clone of fabian-sp/lr-scheduling')
    parser.add_argument('--out', type=Path, default=Path('data'), help='data folder (default: data)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.modded_nanogpt:
        modded_nanogpt(args.modded_nanogpt, args.out / 'modded-nanogpt')
    if args.lr_scheduling:
        lr_scheduling(args.lr_scheduling, args.out / 'lr-scheduling')
    return 0


if __name__ == '__main__':
    sys.exit(main())
