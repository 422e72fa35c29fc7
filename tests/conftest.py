"""Shared fixtures: an isolated corpus cache, a tiny real Composer Trainer, Foundry runs of the demo (in-process or
launched with ``composer``, or logged to a real MLflow SQLite store), and comparing checkpoints tensor by tensor."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pytest
import torch

from foundry_ext.testing.relaunch import composer_command, relaunch_until_done, start

REPO = Path(__file__).resolve().parents[1]
DEMO_YAML = str(REPO / 'yamls' / 'wsd.yaml')
# A smaller corpus than the demo's default keeps each test's first build to about a second.
SMALL_CORPUS = 'train_loader.dataset.train_tokens=400000'
# A smaller model than the demo's, for tests about files and processes rather than learning.
TINY_MODEL = ['model.n_layers=2', 'model.d_model=64', 'global_train_batch_size=8', 'device_train_microbatch_size=8',
              'device_eval_batch_size=8']
# scripts/train.py plus the test-only callbacks lr_jump and crash (and a dump of the components' state).
TRAIN_WORKER = 'tests/distributed/train_worker.py'


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


@pytest.fixture(scope='module', autouse=True)
def release_streaming_shared_memory():
    """Closes the shared memory of the StreamingDatasets a test module built, when the module ends.

    Streaming keeps every ``SharedMemory`` of every ``StreamingDataset`` open until the process exits (an ``atexit``
    handler holds each one), a few hundred file descriptors per training run; the whole suite in one process builds
    enough datasets to run out of descriptors (``OSError: [Errno 24] Too many open files``).
    """
    import gc

    from streaming.base.shared.memory import SharedMemory

    before = {id(obj) for obj in gc.get_objects() if isinstance(obj, SharedMemory)}
    yield
    for obj in gc.get_objects():
        if isinstance(obj, SharedMemory) and id(obj) not in before:
            try:
                obj.cleanup()
            except BufferError:  # still viewed by a live array: it stays open
                pass


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


def launch(run_dir: Path, args: Sequence[str], nproc: int = 1, env: Optional[Mapping[str, str]] = None,
           script: str = TRAIN_WORKER) -> subprocess.Popen:
    """Starts ``composer -n <nproc> <script> <args>`` from the repository, in a new session so that a kill reaches
    the launcher and every rank; its output is appended to ``run_dir/launcher.log``."""
    return start(composer_command(script, args, nproc), run_dir / 'launcher.log', cwd=str(REPO), env=env)


def relaunch(run_dir: Path, args: Sequence[str], launches: int, nproc: int = 1,
             env: Optional[Mapping[str, str]] = None) -> list[int]:
    """:func:`launch` again until it exits 0 (at most ``launches`` times), as a supervisor would; the exit codes."""
    return relaunch_until_done(composer_command(TRAIN_WORKER, args, nproc), run_dir / 'launcher.log', launches,
                               cwd=str(REPO), env=env, timeout=900)


def checkpoint_tensors(path: Path) -> dict:
    """The model and optimizer state of a checkpoint: a monolithic ``.pt`` file, or a sharded folder (gathered)."""
    import torch
    if path.is_dir():
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
        whole = path.parent / f'{path.name}.gathered.pt'
        if not whole.exists():
            dcp_to_torch_save(path, whole)
        path = whole
    state = torch.load(path, map_location='cpu', weights_only=False)['state']
    return {'model': state['model'], 'optimizers': state['optimizers']}


def assert_same_tensors(got: Any, expected: Any, where: str = '') -> None:
    """Nested dicts, lists and tensors are equal, every tensor bit for bit."""
    import torch
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor) and torch.equal(got, expected), where
    elif isinstance(expected, dict):
        assert got.keys() == expected.keys(), where
        for key in expected:
            assert_same_tensors(got[key], expected[key], f'{where}/{key}')
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_same_tensors(g, e, f'{where}/{i}')
    else:
        assert got == expected, where


@pytest.fixture(scope='session')
def mlflow_demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, str]:
    """A short demo run logged to ``metrics.jsonl`` and to a real MLflow SQLite store.

    Returns: the run folder, the store's URI, the MLflow run id, and the end-of-run summary of ``foundry-ext train``.

    It keeps its eval loader (evaluating once, at the end): Foundry 0.22 fails on the mlflow logger with
    ``eval_loader: null`` (``log_dataset_uri`` asserts that the eval loader is a dict).
    """
    import mlflow
    from llmfoundry.command_utils import train_from_yaml

    from foundry_ext.commands.train import report_outputs

    root = tmp_path_factory.mktemp('mlflow_demo')
    uri = f'sqlite:///{root}/mlflow.db'
    previous_uri = os.environ.get('MLFLOW_TRACKING_URI')
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # MLflow's SQLite store makes ./mlruns, its default artifact root, in the working folder
        trainer = train_from_yaml(DEMO_YAML, [
            f'variables.run_dir={root}/run', 'variables.run_name=mlflow-demo', 'max_duration=80ba',
            'scheduler.t_warmup=10ba', 'scheduler.t_decay=20ba', 'save_folder=null', 'eval_interval=80ba',
            'eval_subset_num_batches=1', 'console_log_interval=1000ba', 'python_log_level=null', SMALL_CORPUS,
            f'loggers.mlflow.tracking_uri={uri}', 'loggers.mlflow.log_system_metrics=false',
            'loggers.mlflow.log_duplicated_metric_every_n_steps=1'])
        summary = report_outputs(trainer)
        trainer.close()
        # The logger's mlflow.set_tracking_uri also set MLFLOW_TRACKING_URI for the whole process.
        mlflow.set_tracking_uri(previous_uri)
        client = mlflow.MlflowClient(uri)
        [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return root / 'run', uri, run.info.run_id, summary
