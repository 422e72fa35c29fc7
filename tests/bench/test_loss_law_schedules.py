"""scripts/bench/loss_law_schedules.py on the vendored 124M cooldowns (branches joined to the fitted constant run)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from scripts.bench import loss_law_schedules as bench

DATA = Path(__file__).resolve().parents[2] / 'data' / 'lr-scheduling-124m' / 'lr0.001'


def test_fits_some_runs_of_a_folder_and_scores_the_others_against_the_naive_baseline(tmp_path, capsys):
    for name in ('constant', 'cooldown-linear-0.1', 'cooldown-linear-0.2', 'cooldown-linear-0.4'):
        shutil.copy(DATA / f'{name}.csv', tmp_path / f'{name}.csv')
    assert bench.main(['--data', str(tmp_path), '--fit', 'constant', 'cooldown-linear-0.1',
                       'cooldown-linear-0.2', '--loss-key', 'val_loss']) == 0
    out = capsys.readouterr().out
    row = re.search(r'\| cooldown-linear-0\.4 \| 49800 \| [\d.]+ \| [\d.]+ \(.*\) \| ([+-][\d.]+)% \|', out)
    assert row and abs(float(row.group(1))) < 0.3, out  # joined to the constant run: the 124M result
    assert 'naive: mean' in out
