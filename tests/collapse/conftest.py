"""A synthetic family with a known collapsed shape, shared by the reference and prediction tests."""

from typing import Any

import numpy as np
import pytest

from foundry_ext.collapse.curves import LossCurve
from foundry_ext.collapse.reference import fit_reference
from foundry_ext.collapse.schedule import LRSchedule

WARMUP = 0.05
D2Z = LRSchedule((0.0, WARMUP, 1.0), (0.0, 1.0, 0.0))


def true_shape(t: np.ndarray) -> np.ndarray:
    """The known collapsed shape f(t/T): [SwC] Eq. (4) with m=0.05, b=0.4, q=1.3, decay-to-zero."""

    def g(x: np.ndarray) -> np.ndarray:
        eta = np.interp(x, [0.0, WARMUP, 1.0], [0.0, 1.0, 0.0])
        return (1.001 / (x + 0.001))**0.05 + 0.4 * (eta + 0.1)**1.3

    return g(t) / g(np.array([1.0]))[0]


def synthetic_run(
    rng: np.random.Generator,
    total_steps: int,
    final_loss: float,
    drift: float = 0.0,
) -> LossCurve:
    """L(t) = L(T) f(t/T) (1 + noise), optionally drifting up by ``drift`` between 60% and 100%."""
    steps = np.arange(10, total_steps + 1, 10)
    t = steps / total_steps
    losses = final_loss * true_shape(t) * (1 + drift * np.clip((t - 0.6) / 0.4, 0.0, None))
    return LossCurve(steps, losses * (1 + 0.002 * rng.standard_normal(t.size)), total_steps)


@pytest.fixture(scope='module')
def family() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    small, medium = synthetic_run(rng, 1000, 3.3), synthetic_run(rng, 2000, 2.9)
    return {
        'ref': fit_reference([small, medium], D2Z, tau_fraction=0.2, tpp=80.0),
        'large': synthetic_run(rng, 4000, 2.5),
        'drifting': synthetic_run(rng, 4000, 2.5, drift=0.03),
    }


