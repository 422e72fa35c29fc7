"""The budget experiment's planning, accounting, reporting and figures, without training (the training paths
are tested in tests/cli/test_branch.py and tests/callbacks/test_budget_checkpoint.py)."""

import json
import math

import numpy as np
import pytest
from llmfoundry.utils.builders import build_scheduler

from foundry_ext.core.config import load_train_config
from foundry_ext.schedulers.preview import schedule_multipliers
from scripts.experiments.budgets import CPU_CONFIG, GPU_CONFIG, ExperimentConfig
from scripts.experiments.budgets import _train as train_once
from scripts.experiments.budgets import (budget_layout, format_results, paper_ordering, plan_runs,
                                         plot_budget_schedules, plot_results, read_budget_losses)


def test_layout_uses_wsd_s_decays_and_counts_the_branches_compute():
    layout = budget_layout((200, 400, 800), t_warmup=50, decay_fraction=0.1)
    assert layout.starts == (180, 380, 760) and layout.decays == (20, 20, 40)
    # WSD: main run to the last branch point plus every branch; the others: one run to the last budget.
    assert layout.compute_batches() == {'wsd_s': 800, 'wsd': 840, 'cyclic_cosine': 800}
    with pytest.raises(ValueError, match='before the warmup ends'):
        budget_layout((40, 80), t_warmup=50, decay_fraction=0.1)


@pytest.mark.parametrize('config', [CPU_CONFIG, GPU_CONFIG])
def test_planned_runs_train_the_layout(config, tmp_path):
    layout = budget_layout(config.budgets, config.t_warmup, config.decay_fraction)
    specs = plan_runs(config, layout, tmp_path, seed=5)
    cfgs = {m: load_train_config(str(s.yaml), s.overrides) for m, s in specs.items()}
    for cfg in cfgs.values():
        assert cfg['seed'] == 5 and cfg['train_loader']['dataset']['shuffle_seed'] == 5
        assert cfg['eval_subset_num_batches'] == config.eval_batches
        interval = int(cfg['eval_interval'].removesuffix('ba'))
        assert all(b % interval == 0 for b in config.budgets)  # an eval lands on every budget
    assert cfgs['wsd']['max_duration'] == f'{layout.starts[-1]}ba'
    assert int(cfgs['wsd']['save_interval'].removesuffix('ba')) == math.gcd(*layout.starts)
    assert len({s.run_dir for s in specs.values()}) == 3 and all(tmp_path in s.run_dir.parents for s in specs.values())

    def alphas(method):
        sched = {k: v for k, v in cfgs[method]['scheduler'].items() if k != 'name'}
        scheduler = build_scheduler(cfgs[method]['scheduler']['name'], sched)
        return schedule_multipliers(scheduler, cfgs[method]['max_duration'], 1, 1)[1]

    wsd_s, main = alphas('wsd_s'), alphas('wsd')
    # The main run holds the peak after warmup; WSD-S decays from each branch point into each budget.
    assert (main[config.t_warmup:] == 1.0).all()
    for start, budget in zip(layout.starts, layout.budgets):
        assert wsd_s[start] == 1.0 and wsd_s[start + 1] < 1.0 and wsd_s[budget - 1] < wsd_s[start + 1]
    np.testing.assert_array_equal(wsd_s[:layout.starts[0] + 1], main[:layout.starts[0] + 1])


def test_read_budget_losses_needs_an_eval_at_each_budget(tmp_path):
    entry = {'budget': '200ba', 'step': 200, 'eval': {'eval/LanguageCrossEntropy': 2.5}}
    manifest = tmp_path / 'budgets.json'
    manifest.write_text(json.dumps([entry, {**entry, 'budget': '400ba', 'step': 400,
                                            'eval': {'eval/LanguageCrossEntropy': 2.25}}]))
    assert read_budget_losses(manifest) == {200: 2.5, 400: 2.25}
    manifest.write_text(json.dumps([{**entry, 'eval': None}]))
    with pytest.raises(ValueError, match='budget 200ba has no eval/LanguageCrossEntropy: no eval ran at step 200'):
        read_budget_losses(manifest)


def test_reuse_skips_only_a_finished_run_with_the_same_overrides(tmp_path):
    folder, fits = tmp_path / 'run', []

    def fit():
        fits.append(sorted(p.name for p in folder.iterdir()))  # what the run finds in its folder
        (folder / 'out').write_text('model')

    def done():
        return (folder / 'out').is_file()

    first = train_once(folder, ['a=1'], done, fit, reuse=True)  # nothing to reuse yet
    assert train_once(folder, ['a=1'], done, fit, reuse=True) == first  # reused: its original stamp
    train_once(folder, ['a=2'], done, fit, reuse=True)  # other overrides: retrained in a cleared folder
    (folder / 'out').unlink()
    train_once(folder, ['a=2'], done, fit, reuse=True)  # outputs gone: retrained
    train_once(folder, ['a=2'], done, fit, reuse=False)
    assert fits == [[]] * 4 and first['record'] == ['a=1'] and first['wall_s'] >= 0 and len(first['load']) == 2


def _results(losses):
    return {
        'config': {**vars(ExperimentConfig()), 'seeds': [1, 2]},
        'layout': {'budgets': [200, 400], 'decay_starts': [180, 380], 'decays': [20, 20]},
        'compute_batches': {'wsd_s': 400, 'wsd': 420, 'cyclic_cosine': 400},
        'tokens_per_batch': 2048,
        'losses': losses,
        'wall_s': {'wsd_s': 30.0, 'wsd': 36.0, 'cyclic_cosine': 24.0},
        'machine': '2 CPU cores (torch threads: 1), no GPU',
        'load_average': [1.0, 2.5],
    }


RESULTS = _results({
    'wsd_s': {'200': [2.0, 2.2], '400': [1.8, 1.9]},
    'wsd': {'200': [2.0, 2.2], '400': [1.85, 1.88]},   # seed 2: WSD beats WSD-S at 400
    'cyclic_cosine': {'200': [2.1, 2.3], '400': [1.9, 2.0]},
})


def test_paper_ordering_per_budget_for_the_mean_and_each_seed():
    assert paper_ordering(RESULTS) == {200: (True, 2), 400: (True, 1)}
    swapped = _results({**RESULTS['losses'], 'wsd': {'200': [2.0, 2.2], '400': [1.95, 2.05]}})
    assert paper_ordering(swapped)[400] == (False, 0)


def test_format_results_table_differences_and_compute():
    text = format_results(RESULTS)
    assert '| method | training batches for all budgets | 200 ba | 400 ba |' in text
    assert '| WSD-S | 400 (1.00×) | 2.1000 ± 0.1414 | 1.8500 ± 0.0707 |' in text
    assert '| WSD main + branches | 420 (1.05×) |' in text
    assert '| WSD main + branches − WSD-S | +0.0000 [+0.0000, +0.0000] | +0.0150 [+0.0500, -0.0200] |' in text
    assert '- 400 ba: held for the mean; held in 1 of 2 seeds.' in text
    assert ('Wall time 1.5 min of training runs (WSD-S 0.5, WSD main + branches 0.6, cyclic cosine 0.4) on 2 CPU '
            'cores (torch threads: 1), no GPU; 1-minute load average 1.0 to 2.5 during the runs.') in text


def test_figures_are_written(tmp_path):
    png = plot_budget_schedules(tmp_path / 'schedules.png')
    steps = np.arange(1, 401)
    curve = (steps, 3.0 / np.sqrt(steps))
    main = (steps[:380], curve[1][:380])
    branches = [(steps[:b], curve[1][:b] - 0.01) for b in (200, 400)]  # joined to the main run, as measured
    curves = {'wsd_s': [curve], 'cyclic_cosine': [curve], 'wsd': [main, *branches]}
    results_png = plot_results(RESULTS, curves, tmp_path / 'results.png')
    for path in (png, results_png):
        assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and path.stat().st_size > 10_000


@pytest.mark.parametrize('kwargs,fragment', [
    ({'budgets': (200,)}, 'at least two'),
    ({'budgets': (400, 200)}, 'strictly increasing'),
    ({'seeds': ()}, 'at least one'),
    ({'seeds': (1, 1)}, 'without repeats'),
])
def test_bad_configs_are_refused(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        ExperimentConfig(**kwargs)
