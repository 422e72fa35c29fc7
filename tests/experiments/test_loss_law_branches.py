"""The loss-law branch experiment's plan and report, without training (the training paths are tested in
tests/cli/test_branch.py, tests/cli/test_loss_law_cli.py and tests/callbacks/test_loss_law_forecast.py)."""

from pathlib import Path

from scripts.experiments.loss_law_branches import (FIT_BRANCHES, MAIN_STEPS, TEST_BRANCHES, Branch, format_results,
                                                    main_overrides)


def test_branches_start_at_main_checkpoints_inside_the_main_run():
    for branch in map(lambda b: Branch(*b), (*FIT_BRANCHES, *TEST_BRANCHES)):
        assert branch.at % 100 == 0 and branch.at < MAIN_STEPS  # save_interval=100ba
        assert branch.folder(Path('r')) == Path(f'r/branches/at{branch.at}ba-decay{branch.decay}ba')
    assert set(FIT_BRANCHES).isdisjoint(TEST_BRANCHES)
    assert 'scheduler.t_decay_start=100000ba' in main_overrides(Path('r'))


def test_report_scores_every_predictor_and_counts_the_covered_branches():
    def cell(predicted, lo, hi, measured):
        return {'predicted': predicted, 'interval': [lo, hi], 'error': predicted / measured - 1}

    fit = {'seconds': 1.0, 'params': {}, 'fit_from': None}
    results = {
        'branches': [{'at': 400, 'decay': 300, 'shape': '1-sqrt', 'measured': 2.0,
                      'multi-power': cell(2.02, 1.9, 2.1, 2.0), 'multi-power, fit from auto': cell(2.0, 1.99, 2.01, 2.0),
                      'momentum': cell(2.2, 2.1, 2.3, 2.0), 'baseline': {'predicted': 1.9, 'error': -0.05}}],
        'multi-power fit': fit, 'multi-power, fit from auto fit': {**fit, 'fit_from': 302}, 'momentum fit': fit,
    }
    text = format_results(results)
    assert '| at 400, decay 300, 1-sqrt | 2.0000 | 2.0200 (1.9000..2.1000) | +1.00% |' in text
    assert 'momentum: mean abs error 10.00%, max 10.00%; 0/1 inside the 90% interval' in text
    assert 'fitted from step 302' in text and 'baseline: mean abs error 5.00%' in text
