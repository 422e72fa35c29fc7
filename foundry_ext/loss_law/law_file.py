"""A fitted loss law as a JSON file: what ``foundry-ext loss-law fit`` writes and every other command reads.

The file names its format and version; one of another format or version is refused with the fix (refit).
It holds the law's parameters (natural form, LRs divided by ``lr_ref``), the bootstrap and run-jackknife
replicates behind every interval, the keys and runs it was fitted on (each run's LR as a few interpolation knots,
so a branch schedule given later can be joined to it), and whether the decay term was identified.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from foundry_ext.core.errors import fail
from foundry_ext.loss_law.laws import LAWS, Law, get_law

log = logging.getLogger(__name__)

__all__ = ['FORMAT', 'VERSION', 'FittedRun', 'LossLaw', 'read_law', 'write_law']

FORMAT = 'foundry-ext/loss-law'
VERSION = 1


@dataclass
class FittedRun:
    """What a law file records of one fitted run."""

    name: str
    source: str
    first_step: int  # of its own losses
    final_step: int
    points: int  # loss windows fitted
    rel_rmse: float  # root mean square relative residual of the fit
    joined_to: Optional[str]
    knots: list[list[float]]  # [[step, lr], ...]: its per-step LR, linear between knots
    trend_rmse: float = 0.0  # the same as rel_rmse after smoothing out the noise (fit.trend_misfit)


@dataclass
class LossLaw:
    """A fitted law and how it was fitted.

    Attributes:
        law (str): ``multi-power`` or ``momentum``.
        params (dict[str, float]): Natural parameters (areas in steps at ``lr_ref``).
        param_std (dict[str, float]): Their bootstrap standard deviations.
        samples (list[list[float]]): Bootstrap replicates, natural parameters in the law's order.
        jackknife (list[list[float]]): Refits leaving out one run at a time (those that still identify the law).
        lr_ref (float): The LR that areas are counted at (the largest peak of the fitted runs).
        decay_identified (bool): Whether some fitted run decayed (else the decay term is off).
        loss_key (str): The loss fitted.
        lr_key (str): The LR column read.
        interval (float): Level of the intervals predictions report, e.g. 0.9.
        tokens_per_step (int, optional): Tokens per step of the fitted runs, if known.
        runs (list[FittedRun]): The fitted runs.
        fit (dict): Fit settings and statistics (Huber scale, points, fixed parameters).
    """

    law: str
    params: dict[str, float]
    param_std: dict[str, float]
    samples: list[list[float]]
    jackknife: list[list[float]]
    lr_ref: float
    decay_identified: bool
    loss_key: str
    lr_key: str
    interval: float = 0.9
    tokens_per_step: Optional[int] = None
    runs: list[FittedRun] = field(default_factory=list)
    fit: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> Law:
        """The law's equations."""
        return get_law(self.law)

    @property
    def theta(self) -> np.ndarray:
        """Internal parameter vector of the fit."""
        return self.model.from_natural(self.params)

    def replicate_thetas(self, which: str) -> np.ndarray:
        """Internal parameter vectors of the ``'samples'`` (bootstrap) or ``'jackknife'`` replicates."""
        model = self.model
        rows = getattr(self, which)
        return np.array([model.from_natural(dict(zip(model.names, row))) for row in rows]).reshape(len(rows),
                                                                                                   len(model.internal))

    def to_dict(self) -> dict[str, Any]:
        return {'format': FORMAT, 'version': VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> 'LossLaw':
        if not isinstance(data, dict) or data.get('format') != FORMAT:
            fail(f'{source} is not a loss-law file (no "format": "{FORMAT}"); write one with `foundry-ext loss-law '
                 f'fit RUN... -o law.json`.')
        if data.get('version') != VERSION:
            fail(f'{source} is a loss-law file of version {data.get("version")!r}; this foundry-ext reads version '
                 f'{VERSION}. Refit it with `foundry-ext loss-law fit` (same runs) to update it.')
        if data.get('law') not in LAWS:
            fail(f'{source}: unknown law {data.get("law")!r}; this foundry-ext knows {", ".join(LAWS)}. Refit it.')
        body = {k: v for k, v in data.items() if k not in ('format', 'version')}
        try:
            body['runs'] = [FittedRun(**run) for run in body.get('runs', [])]
            law = cls(**body)
        except TypeError as err:
            fail(f'{source} is a damaged or hand-edited loss-law file ({err}); refit it with `foundry-ext loss-law '
                 f'fit`.')
        if set(law.params) != set(law.model.names):
            fail(f'{source}: parameters {sorted(law.params)} do not match the {law.law} law '
                 f'({", ".join(law.model.names)}); refit it.')
        return law


def write_law(law: LossLaw, path: Union[str, Path]) -> Path:
    """Writes ``law`` as JSON at ``path`` (creating its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(law.to_dict(), indent=1, default=float) + '\n')
    return path


def read_law(path: Union[str, Path]) -> LossLaw:
    """Reads a law file; anything but a loss-law file of this version is a :class:`ConfigError` with the fix."""
    path = Path(path)
    if not path.is_file():
        fail(f'{path}: no such law file; write one with `foundry-ext loss-law fit RUN... -o {path}`.')
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        fail(f'{path} is not JSON ({err}); give the file `foundry-ext loss-law fit` wrote.')
    return LossLaw.from_dict(data, str(path))
