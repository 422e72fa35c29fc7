"""The laws on the vendored public curves (data/): small, fast regressions of the benchmarks' numbers."""

import numpy as np
import pytest

from foundry_ext.commands.loss_law import fit, predict_schedule
from foundry_ext.loss_law.from_runs import fit_runs
from foundry_ext.loss_law.predict import predict
from foundry_ext.loss_law.runs import load_runs
from tests.conftest import REPO

MPL = REPO / 'data' / 'multipowerlaw' / 'csv_25'
LRS = REPO / 'data' / 'lr-scheduling-124m' / 'lr0.0005'


def test_multi_power_law_on_the_paper_split_beats_the_momentum_law():
    train = load_runs([MPL / f'{n}.csv' for n in ('cosine_24000', 'constant_24000', 'wsdcon_9')], 'loss', 'lr')
    errors = {}
    for law in ('multi-power', 'momentum'):
        fitted = fit_runs(train, law, n_boot=0)
        rel = []
        for name in ('wsd_20000_24000', 'wsdcon_3', 'cosine_72000'):
            run = load_runs([MPL / f'{name}.csv'], 'loss', 'lr')[0]
            pred = predict(fitted, run.schedule(), steps=run.loss_steps)
            rel.append(np.mean(np.abs(pred.loss / run.losses - 1)))
        errors[law] = np.mean(rel)
    assert errors['multi-power'] < 0.0015
    assert errors['multi-power'] < errors['momentum']


def test_cli_fit_and_predict_a_cooldown_file_joined_through_the_law(tmp_path):
    law_path = tmp_path / 'law.json'
    law = fit([str(LRS / 'constant.csv'), str(LRS / 'cooldown-linear-0.1.csv'), str(LRS / 'cooldown-linear-0.2.csv')],
              str(law_path), loss_key='val_loss', lr_key='lr', bootstrap=8)
    assert law.decay_identified and [r.joined_to for r in law.runs] == [None, 'constant', 'constant']
    # The held-out cooldown file holds only its cooldown: predict joins it to the fitted constant run's LR.
    pred = predict_schedule(str(law_path), str(LRS / 'cooldown-linear-0.4.csv'))
    measured = load_runs([LRS / 'constant.csv', LRS / 'cooldown-linear-0.4.csv'], 'val_loss')[1].losses[-1]
    assert pred.final_step == 50000
    assert pred.final_loss == pytest.approx(measured, rel=0.003)
    lo, hi = pred.final_interval
    assert lo <= measured <= hi
