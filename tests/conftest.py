"""Shared fixtures: an isolated corpus cache, a tiny real Composer Trainer, and Foundry runs of the demo."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEMO_YAML = str(REPO / 'yamls' / 'wsd.yaml')
# A smaller corpus than the demo's default keeps each test's first build to about a second.
SMALL_CORPUS = 'train_loader.dataset.train_tokens=400000'


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA GPU')
    for item in items:
        if 'gpu' in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope='session', autouse=True)
def corpus_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test builds the demo corpus into one session-wide cache, never into the user's."""
    path = tmp_path_factory.mktemp('foundry_ext_cache')
    os.environ['FOUNDRY_EXT_CACHE'] = str(path)
    return path


def tiny_trainer(schedulers: Any, max_duration: str, callbacks: Sequence[Any] = (), lr: float = 1.0,
                 batches: int = 64, **kwargs: Any):
    """A real Composer Trainer on a linear classifier: fast, and enough to drive schedulers and callbacks."""
    from composer import Trainer
    from composer.models import ComposerClassifier
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = ComposerClassifier(torch.nn.Linear(4, 2), num_classes=2)
    data = TensorDataset(torch.randn(batches * 2, 4), torch.randint(0, 2, (batches * 2,)))
    return Trainer(model=model, train_dataloader=DataLoader(data, batch_size=2), max_duration=max_duration,
                   optimizers=torch.optim.SGD(model.parameters(), lr=lr), schedulers=schedulers,
                   callbacks=list(callbacks), progress_bar=False, **kwargs)


def demo_yaml_with(path: Path, **sections: Any) -> str:
    """Writes the demo recipe with whole top-level sections replaced (OmegaConf overrides can only merge)."""
    from omegaconf import OmegaConf as om
    cfg = om.load(DEMO_YAML)
    for key, value in sections.items():
        cfg[key] = value
    om.save(cfg, path)
    return str(path)


def foundry_run(run_dir: Path, overrides: Sequence[str] = (), yaml_path: str = DEMO_YAML,
                metrics: Optional[str] = 'loss/train/total'):
    """Trains the demo recipe with ``train_from_yaml`` into ``run_dir``; returns (trainer, {step: metric})."""
    from llmfoundry.command_utils import train_from_yaml

    from foundry_ext.core.metrics_io import read_metrics

    args = [f'variables.run_dir={run_dir}', 'eval_loader=null', 'eval_interval=1', 'console_log_interval=1000ba',
            'python_log_level=null', SMALL_CORPUS, *overrides]
    trainer = train_from_yaml(yaml_path, args)
    trainer.close()
    series = read_metrics(run_dir / 'metrics.jsonl')
    if metrics is None:
        return trainer, series
    steps, values = series[metrics]
    return trainer, dict(zip(steps.tolist(), values.tolist()))
