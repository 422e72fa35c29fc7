"""foundry-ext: an extension package for MosaicML Composer and LLM-Foundry."""

import re
from pathlib import Path

from setuptools import find_packages, setup

_version = re.search(r"__version__ = '([^']+)'", Path('foundry_ext/__init__.py').read_text()).group(1)

setup(
    name='foundry-ext',
    version=_version,
    description='Run-length-independent LR schedules (WSD, WSD-S), resume guards and loss-curve analysis '
    'for Composer and LLM-Foundry.',
    long_description=Path('README.md').read_text(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['foundry_ext', 'foundry_ext.*']),
    python_requires='>=3.10',
    install_requires=[
        'llm-foundry==0.22.*',
        # llmfoundry imports pkg_resources, which setuptools 81 removed.
        'setuptools<81',
        # foundry-ext reads MLflow runs through MlflowClient (llm-foundry installs MLflow too).
        'mlflow>=2.14.1,<3',
        # MLflow 2.x cannot open a SQLite tracking store with SQLAlchemy 2.1 (ImportError:
        # FallbackAsyncAdaptedQueuePool), neither for Foundry's mlflow logger nor for reading runs.
        'sqlalchemy<2.1',
        'omegaconf>=2.2,<3',
        'numpy',
        'scipy',
        'matplotlib',
        'typer',
    ],
    extras_require={
        'dev': ['pytest>=7', 'wheel'],  # wheel: tests build the package offline
    },
    entry_points={
        'console_scripts': ['foundry-ext = foundry_ext.cli.main:main'],
        'llmfoundry_schedulers': [
            'wsd = foundry_ext.schedulers:WSDScheduler',
            'wsd_s = foundry_ext.schedulers:WSDSScheduler',
            'cyclic_cosine = foundry_ext.schedulers:CyclicCosineScheduler',
        ],
        'llmfoundry_callbacks': [
            'resume_data_guard = foundry_ext.callbacks.resume_data_guard:ResumeDataGuard',
            'budget_checkpoint = foundry_ext.callbacks.budget_checkpoint:BudgetCheckpoint',
            'checkpoint_guard = foundry_ext.callbacks.checkpoint_guard:CheckpointGuard',
            'loss_spike_monitor = foundry_ext.callbacks.loss_spike_monitor:LossSpikeMonitor',
            'collapse_monitor = foundry_ext.callbacks.collapse_monitor:CollapseMonitor',
            'loss_law_forecast = foundry_ext.callbacks.loss_law_forecast:LossLawForecast',
        ],
        'llmfoundry_algorithms': [
            'resume_guard = foundry_ext.algorithms.resume_guard:ResumeGuard',
        ],
        'llmfoundry_loggers': [
            'jsonl = foundry_ext.callbacks.jsonl_logger:JSONLLogger',
        ],
        'llmfoundry_tokenizers': [
            'foundry_ext_bytes = foundry_ext.data.tokenizer:ByteTokenizer',
        ],
        'llmfoundry_dataloaders': [
            'demo_text = foundry_ext.data.dataloader:build_demo_text_dataloader',
        ],
    },
)
