"""The run lifecycle matrix: every stateful component through every kind of fit() start, on a real Trainer.

The six components (``jsonl`` logger, ``loss_spike_monitor``, ``resume_data_guard``, ``collapse_monitor``,
``resume_guard``, ``budget_checkpoint``) decide "new run, resume, second fit, reset_time restart" through
``foundry_ext.core.lifecycle``. Each scenario trains a small MLP with all six at once and checks what each one holds
and wrote afterwards: the steps it covers, and whether the earlier run's state was kept or started over.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from composer import Trainer
from composer.callbacks import LRMonitor
from composer.loggers import InMemoryLogger
from composer.models import ComposerClassifier
from composer.optim import DecoupledAdamW
from torch.utils.data import DataLoader, TensorDataset

from foundry_ext.algorithms.resume_guard import ResumeGuard
from foundry_ext.collapse.curves import LossCurve
from foundry_ext.collapse.reference import fit_reference
from foundry_ext.collapse.schedule import LRSchedule
from foundry_ext.callbacks.budget_checkpoint import BudgetCheckpoint
from foundry_ext.callbacks.collapse_monitor import CollapseMonitor
from foundry_ext.callbacks.jsonl_logger import JSONLLogger
from foundry_ext.callbacks.loss_spike_monitor import LossSpikeMonitor
from foundry_ext.callbacks.resume_data_guard import ResumeDataGuard
from foundry_ext.core.checkpoint_state import unpack_state
from foundry_ext.core.lifecycle import FitPhase
from foundry_ext.core.metric_names import LOSS_KEY
from foundry_ext.schedulers import WSDSScheduler

COMPONENTS = ('jsonl', 'loss_spike_monitor', 'resume_data_guard', 'collapse_monitor', 'resume_guard',
              'budget_checkpoint')


@pytest.fixture(scope='module')
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A collapse reference of smooth power-law curves (any shape will do: only the monitor's history is checked)."""
    steps = np.arange(1, 401)
    runs = [LossCurve(steps, (2.0 + s) * (steps / 400 + 0.05)**-0.2, 400) for s in (0.0, 0.1)]
    ref = fit_reference(runs, LRSchedule((0.0, 1.0), (1.0, 1.0)), fit_start=0.1)
    path = tmp_path_factory.mktemp('lifecycle') / 'ref.json'
    path.write_text(ref.to_json())
    return str(path)


class Run:
    """One Trainer with all six components, saving into ``folder``; ``memory`` holds what it logged."""

    def __init__(self, folder: Path, reference: str, max_duration: str, **kwargs) -> None:
        torch.manual_seed(0)
        model = ComposerClassifier(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                                       torch.nn.Linear(16, 2)), num_classes=2)
        g = torch.Generator().manual_seed(1)
        data = TensorDataset(torch.randn(256, 8, generator=g), torch.randint(0, 2, (256,), generator=g))
        self.metrics = folder / 'metrics.jsonl'
        self.memory = InMemoryLogger()
        self.components = {
            'jsonl': JSONLLogger(path=str(self.metrics)),
            'loss_spike_monitor': LossSpikeMonitor(detector={'warmup_steps': 3}),
            'resume_data_guard': ResumeDataGuard(on_violation='warn'),
            'collapse_monitor': CollapseMonitor(reference, interval=2, smoothing=1),
            'resume_guard': ResumeGuard(),
            'budget_checkpoint': BudgetCheckpoint(),
        }
        # WSD-S into budgets at 4, 8 and 12 batches; decaying only to 0.8 keeps the return to the peak below
        # resume_guard's in-run jump limit.
        schedule = WSDSScheduler(t_warmup='2ba', budgets=['4ba', '8ba', '12ba'], decay_fraction=0.5, alpha_f=0.8)
        callbacks = [c for name, c in self.components.items() if name not in ('jsonl', 'resume_guard')]
        self.trainer = Trainer(model=model, train_dataloader=DataLoader(data, batch_size=4), max_duration=max_duration,
                               optimizers=DecoupledAdamW(model.parameters(), lr=1e-2), schedulers=schedule,
                               algorithms=[self.components['resume_guard']],
                               callbacks=[LRMonitor(), *callbacks],
                               loggers=[self.components['jsonl'], self.memory], progress_bar=False, device='cpu',
                               seed=3, save_folder=str(folder / 'ckpt'), save_interval='4ba', save_overwrite=True,
                               run_name='lifecycle',
                               **kwargs)

    def observe(self) -> dict[str, object]:
        """What each component holds and wrote, in comparable form."""
        c = self.components
        self.trainer.close()
        logged = [json.loads(line)['step'] for line in self.metrics.read_text().splitlines()
                  if LOSS_KEY in json.loads(line)]
        detector = c['loss_spike_monitor'].detectors.get(LOSS_KEY)
        return {
            'jsonl': logged,  # the loss lines in file order: stale lines of an earlier run would show
            'loss_spike_monitor': None if detector is None else detector.last_step,
            'resume_data_guard': c['resume_data_guard']._position,
            'collapse_monitor': unpack_state(c['collapse_monitor'].state_dict())['evaluations'],
            'resume_guard': 'resume_guard/resume/lr_ratio' in self.memory.data,
            'budget_checkpoint': [(e['index'], e['step']) for e in c['budget_checkpoint'].manifest],
        }

    def phases(self) -> set[FitPhase]:
        return {c._lifecycle.current.phase for c in self.components.values()}


def _fresh(tmp: Path, ref: str) -> Run:
    run = Run(tmp, ref, '8ba')
    run.trainer.fit()
    return run


def _second_fit(tmp: Path, ref: str) -> Run:
    run = Run(tmp, ref, '8ba')
    run.trainer.fit()
    run.trainer.fit(duration='4ba')
    return run


def _reset_time(tmp: Path, ref: str) -> Run:
    run = Run(tmp, ref, '8ba')
    run.trainer.fit()
    run.trainer.fit(duration='4ba', reset_time=True)
    return run


def _autoresume(tmp: Path, ref: str) -> Run:
    interrupted = Run(tmp, ref, '4ba', autoresume=True)
    interrupted.trainer.fit()
    interrupted.trainer.close()
    run = Run(tmp, ref, '8ba', autoresume=True)
    run.trainer.fit()
    return run


def _load_without_timestamp(tmp: Path, ref: str) -> Run:
    first = Run(tmp, ref, '8ba')
    first.trainer.fit()
    first.trainer.close()
    run = Run(tmp, ref, '6ba', load_path=str(tmp / 'ckpt' / 'ep0-ba8-rank0.pt'),
              load_ignore_keys=['state/timestamp'])
    run.trainer.fit()
    return run


# What every component holds after each scenario (resume_data_guard: (epoch, batch, sample) after the last batch;
# collapse_monitor: the evaluations of its curve, one every 2 batches).
EXPECTED = {
    'fresh': (_fresh, {FitPhase.NEW}, {
        'jsonl': list(range(8)), 'loss_spike_monitor': 7, 'resume_data_guard': (0, 8, 32),
        'collapse_monitor': 4, 'resume_guard': False, 'budget_checkpoint': [(1, 4), (2, 8)]}),
    'second fit': (_second_fit, {FitPhase.CONTINUED}, {
        'jsonl': list(range(12)), 'loss_spike_monitor': 11, 'resume_data_guard': (0, 12, 48),
        'collapse_monitor': 6, 'resume_guard': False, 'budget_checkpoint': [(1, 4), (2, 8), (3, 12)]}),
    'reset_time': (_reset_time, {FitPhase.RESTARTED}, {
        'jsonl': list(range(4)), 'loss_spike_monitor': 3, 'resume_data_guard': (0, 4, 16),
        'collapse_monitor': 2, 'resume_guard': False, 'budget_checkpoint': [(1, 4)]}),
    'autoresume': (_autoresume, {FitPhase.RESUMED}, {
        'jsonl': list(range(8)), 'loss_spike_monitor': 7, 'resume_data_guard': (0, 8, 32),
        'collapse_monitor': 4, 'resume_guard': True, 'budget_checkpoint': [(1, 4), (2, 8)]}),
    # Weights and component state loaded, the timestamp back at 0: a new timeline from loaded state. The data guard
    # keeps its record and reports the offset mismatch (checked below); the others start their timeline over.
    'load_ignore_keys timestamp': (_load_without_timestamp, {FitPhase.RESUMED, FitPhase.NEW}, {
        'jsonl': list(range(6)), 'loss_spike_monitor': 5, 'resume_data_guard': (0, 6, 24),
        'collapse_monitor': 3, 'resume_guard': True, 'budget_checkpoint': [(1, 4)]}),
}


@pytest.mark.parametrize('scenario', list(EXPECTED))
def test_every_stateful_component_through_every_kind_of_fit(scenario, reference, tmp_path, caplog):
    make, phases, expected = EXPECTED[scenario]
    caplog.set_level(logging.WARNING)
    run = make(tmp_path, reference)
    assert run.phases() == phases
    observed = run.observe()
    for name in COMPONENTS:
        assert observed[name] == expected[name], f'{name} after {scenario}'
    offset_warnings = [r for r in caplog.records if 'Sample offset' in r.getMessage()]
    assert bool(offset_warnings) == (scenario == 'load_ignore_keys timestamp')
    manifest = json.loads((tmp_path / 'ckpt' / 'budgets' / 'budgets.json').read_text())
    assert [(e['index'], e['step']) for e in manifest] == expected['budget_checkpoint']
