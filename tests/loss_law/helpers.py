"""Synthetic runs of known loss laws for the loss-law tests."""

from __future__ import annotations

from typing import Optional

import numpy as np

from foundry_ext.loss_law.design import design_chunks
from foundry_ext.loss_law.laws import get_law
from foundry_ext.loss_law.runs import Run
from foundry_ext.loss_law.schedule import LRSchedule

PEAK = 1e-3
TRUE = {'L0': 2.9, 'A': 23.0, 'alpha': 0.45, 'B': 0.5, 'C': 0.2, 'beta': 0.3, 'gamma': 0.8}


def wsd_lr(n: int, decay_start: Optional[int], warmup: int = 100, shape: str = 'linear') -> np.ndarray:
    """Per-step LR (peak ``PEAK``) of a WSD run of ``n`` steps; no decay when ``decay_start`` is None."""
    step = np.arange(n, dtype=float)
    lr = np.minimum(step / warmup, 1.0)
    if decay_start is not None:
        progress = np.clip((step - decay_start) / (n - decay_start), 0.0, 1.0)
        lr = np.where(step >= decay_start, 1 - (np.sqrt(progress) if shape == '1-sqrt' else progress), lr)
    return lr * PEAK


def law_curve(lr: np.ndarray, steps: np.ndarray, params: dict = TRUE, law: str = 'multi-power') -> np.ndarray:
    """The exact-parameter law at ``steps`` for per-step LRs ``lr`` (areas at ``PEAK``)."""
    model = get_law(law)
    schedule = LRSchedule(lr / PEAK)
    return np.concatenate([model.evaluate(model.from_natural(params), d) for d in design_chunks(schedule, steps)])


def synthetic_run(name: str, lr: np.ndarray, every: int = 10, noise: float = 0.0, seed: int = 0,
                  start: int = 0) -> Run:
    """A run logging LR and a law loss (times log-normal noise) every ``every`` steps from ``start``."""
    n = lr.size
    steps = np.arange(max(start, every), n + 1, every, dtype=float)
    loss = law_curve(lr, steps) * np.exp(noise * np.random.default_rng(seed).standard_normal(steps.size))
    lr_steps = np.arange(max(start, 1), n, dtype=float)
    return Run(name, name, steps, loss, lr_steps, lr[lr_steps.astype(int)], 'loss', 'lr')
