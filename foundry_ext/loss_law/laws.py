r"""The two loss laws: the multi-power law and the momentum law, with their derivatives.

Both predict the loss after step :math:`s` from the LR schedule alone (:mod:`foundry_ext.loss_law.design` gives
the LR terms; LRs are divided by a reference LR :math:`\eta_{ref}`, so areas count steps at that LR).

**Multi-power law** (Luo et al., ICLR 2025, arXiv 2503.12811):

.. math::

    L(s) = L_0 + A\,S(s)^{-\alpha} - B \sum_{k < s} (\eta_{k-1} - \eta_k)\,
           \Big(1 - \big(C\,\eta_k^{-\gamma} S_k(s) + 1\big)^{-\beta}\Big)

with :math:`S(s)` the whole LR area before :math:`s` (the paper's :math:`S_1 + S_W`) and the sum over LR changes
after the warmup. Each decrease lowers the loss by an amount that saturates, as a power of the area since the
decrease, at :math:`B` times its size. The fit varies :math:`K = B\beta` instead of :math:`B`:

.. math::

    B\Big(1 - u^{-\beta}\Big) = K\,\frac{1 - u^{-\beta}}{\beta} \;\xrightarrow{\beta \to 0}\; K \log u,
    \qquad u = C\,\eta_k^{-\gamma} S_k(s) + 1

so a small :math:`\beta` (slow saturation: long decays keep gaining) is reached without :math:`B` running away,
and the family's logarithmic limit is its edge at the lower bound :math:`\beta = 10^{-3}`. On real WSD cooldowns
the fits go there (docs/loss_law.md); with :math:`B` itself varied and :math:`\beta \ge 0.02` they stopped on that
bound. The law and its reported parameters are the paper's.

**Momentum law** (Tissue et al. 2024, "Scaling Law with Learning Rate Annealing", arXiv 2408.11029):

.. math::

    L(s) = L_0 + A\,S(s)^{-\alpha} - C\,S_2(s), \qquad S_2(s) = \sum_{k<s} (\eta_{k-1} - \eta_k)\,
           \frac{1 - \lambda^{s-k}}{1 - \lambda}

i.e. :math:`S_2` sums a momentum :math:`m_i = \lambda m_{i-1} + (\eta_{i-1} - \eta_i)` of the LR decreases.
Here :math:`\lambda = 1 - 1/\tau` with the timescale :math:`\tau` (steps) fitted; the paper uses
:math:`\lambda \approx 0.999`. After a decay ends, :math:`S_2` keeps growing by the total decrease per step, so the
law rewards long decays without bound: the reason the multi-power law replaced it.

Parameters are fitted in an internal form (logarithms of the positive scales, :math:`K` for :math:`B`) and
reported in natural form. Both laws are linear in :math:`L_0`, :math:`A` and the decay scale (:math:`K` or
:math:`C`) once the others are
fixed, which :meth:`Law.screen` uses to pick starting points by a grid over the rest.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import nnls

from foundry_ext.loss_law.design import Design

log = logging.getLogger(__name__)

__all__ = ['BETA_MIN', 'LAWS', 'Law', 'MomentumLaw', 'MultiPowerLaw', 'get_law']

BETA_MIN = 1e-3  # slowest saturation fitted: (1 - u^-beta) / beta is log u to within 0.05% per unit of log u


@dataclass(frozen=True)
class Law:
    """A loss law: parameter names, bounds, prediction with derivatives, and a grid to start fits from."""

    name: str
    names: tuple[str, ...]  # natural parameters, as reported; names[i] is what internal[i] is reported as
    internal: tuple[str, ...]  # what the fit varies
    decay: tuple[str, ...]  # internal parameters of the decay term: unidentifiable without a decay in the data
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    scale_index: int  # internal index of the decay scale (log K or log C)

    def to_natural(self, theta: np.ndarray) -> dict[str, float]:
        """Internal vector -> ``{name: value}`` in natural form."""
        raise NotImplementedError

    def from_natural(self, params: dict[str, float]) -> np.ndarray:
        """``{name: value}`` -> internal vector."""
        raise NotImplementedError

    def evaluate(self, theta: np.ndarray, design: Design, jacobian: bool = False):
        """Predicted loss at ``design.steps`` and, if asked, its derivatives by the internal parameters."""
        raise NotImplementedError

    def _basis(self, nonlinear: Sequence[float], design: Design) -> tuple[np.ndarray, np.ndarray]:
        """The columns multiplying ``A`` and the decay scale for fixed nonlinear parameters."""
        raise NotImplementedError

    def _grid(self) -> list[tuple[float, ...]]:
        raise NotImplementedError

    def _assemble(self, nonlinear: Sequence[float], l0: float, a: float, scale: float) -> np.ndarray:
        raise NotImplementedError

    def screen(self, designs: Sequence[Design], losses: Sequence[np.ndarray], weights: Sequence[np.ndarray],
               decay: bool = True, keep: int = 4) -> list[np.ndarray]:
        r"""The ``keep`` best starting points of a grid over the nonlinear parameters, each with the linear ones
        (:math:`L_0, A \ge 0` and the decay scale) solved by non-negative least squares on the relative error."""
        y = np.concatenate(losses)
        w = np.sqrt(np.concatenate(weights)) / y
        scored = []
        for nonlinear in self._grid():
            columns = [self._basis(nonlinear, d) for d in designs]
            power = np.concatenate([c[0] for c in columns])
            decay_term = np.concatenate([c[1] for c in columns])
            matrix = [np.ones_like(y), power] + ([-decay_term] if decay else [])
            # -LD enters with a minus sign; nnls keeps its scale >= 0 only if the column is negated.
            design_matrix = np.stack(matrix, axis=1) * w[:, None]
            if not np.all(np.isfinite(design_matrix)):
                continue
            coef, residual = nnls(design_matrix, y * w)
            if coef[1] <= 0:
                continue
            scored.append((residual, self._assemble(nonlinear, coef[0], coef[1], coef[2] if decay else 0.0)))
        scored.sort(key=lambda item: item[0])
        return [theta for _, theta in scored[:keep]]


def _log_floor(value: float) -> float:
    return float(np.log(max(value, 1e-300)))


class MultiPowerLaw(Law):
    """Luo et al.'s multi-power law, fitted with the decay scale :math:`K = B\beta`; see the module docstring."""

    def __init__(self) -> None:
        super().__init__(
            name='multi-power',
            names=('L0', 'A', 'alpha', 'B', 'C', 'beta', 'gamma'),
            internal=('L0', 'log_A', 'alpha', 'log_K', 'log_C', 'beta', 'gamma'),
            decay=('log_K', 'log_C', 'beta', 'gamma'),
            lower=(0.0, -30.0, 0.01, -30.0, -25.0, BETA_MIN, -1.0),
            upper=(np.inf, 30.0, 3.0, 30.0, 15.0, 5.0, 2.0),
            scale_index=3,
        )

    def to_natural(self, theta: np.ndarray) -> dict[str, float]:
        l0, log_a, alpha, log_k, log_c, beta, gamma = (float(v) for v in theta)
        return {'L0': l0, 'A': np.exp(log_a), 'alpha': alpha, 'B': np.exp(log_k) / beta, 'C': np.exp(log_c),
                'beta': beta, 'gamma': gamma}

    def from_natural(self, params: dict[str, float]) -> np.ndarray:
        return np.array([params['L0'], _log_floor(params['A']), params['alpha'],
                         _log_floor(params['B'] * params['beta']), _log_floor(params['C']), params['beta'],
                         params['gamma']])

    @staticmethod
    def _saturation(log_u: np.ndarray, beta: float) -> np.ndarray:
        """:math:`(1 - u^{-\beta}) / \beta`, exact for small :math:`\beta`."""
        return -np.expm1(-beta * log_u) / beta

    def evaluate(self, theta: np.ndarray, design: Design, jacobian: bool = False):
        l0, log_a, alpha, log_k, log_c, beta, gamma = theta
        a, k, c = np.exp(log_a), np.exp(log_k), np.exp(log_c)
        area = np.maximum(design.area, 1e-12)
        power = area**-alpha
        log_lr = design.log_lr[design.pair_bin]
        x = np.exp(-gamma * log_lr) * design.pair_area
        log_u = np.log1p(c * x)
        g = self._saturation(log_u, beta)
        drop = design.drop[design.pair_bin]
        saturation = design.per_point(drop * g)
        pred = l0 + a * power - k * saturation
        if not jacobian:
            return pred
        u_beta = np.exp(-beta * log_u)
        dlog_c = drop * u_beta * (c * x / (1.0 + c * x))  # d/dlogC of g, per pair
        dbeta = design.per_point(drop * (log_u * u_beta - g) / beta)
        dgamma = design.per_point(dlog_c * -log_lr)
        dlog_c = design.per_point(dlog_c)
        jac = np.stack([np.ones_like(pred), a * power, -a * power * np.log(area), -k * saturation, -k * dlog_c,
                        -k * dbeta, -k * dgamma], axis=1)
        return pred, jac

    def _basis(self, nonlinear: Sequence[float], design: Design) -> tuple[np.ndarray, np.ndarray]:
        alpha, log_c, beta, gamma = nonlinear
        x = np.exp(-gamma * design.log_lr[design.pair_bin]) * design.pair_area
        g = self._saturation(np.log1p(np.exp(log_c) * x), beta)
        return np.maximum(design.area, 1e-12)**-alpha, design.per_point(design.drop[design.pair_bin] * g)

    def _grid(self) -> list[tuple[float, ...]]:
        return list(itertools.product((0.2, 0.4, 0.7), np.log([1e-3, 1e-2, 1e-1, 1.0]), (0.05, 0.3, 0.6, 1.2),
                                      (0.0, 0.5, 1.0)))

    def _assemble(self, nonlinear: Sequence[float], l0: float, a: float, scale: float) -> np.ndarray:
        alpha, log_c, beta, gamma = nonlinear
        return np.array([l0, _log_floor(a), alpha, _log_floor(max(scale, 1e-6 * beta)), log_c, beta, gamma])


class MomentumLaw(Law):
    """Tissue et al.'s momentum law with a fitted timescale ``tau = 1 / (1 - lambda)``; see the module docstring."""

    def __init__(self) -> None:
        super().__init__(
            name='momentum',
            names=('L0', 'A', 'alpha', 'C', 'lambda'),
            internal=('L0', 'log_A', 'alpha', 'log_C', 'log_tau'),
            decay=('log_C', 'log_tau'),
            lower=(0.0, -30.0, 0.01, -30.0, 0.0),
            upper=(np.inf, 30.0, 3.0, 30.0, np.log(1e7)),
            scale_index=3,
        )

    def to_natural(self, theta: np.ndarray) -> dict[str, float]:
        l0, log_a, alpha, log_c, log_tau = (float(v) for v in theta)
        return {'L0': l0, 'A': np.exp(log_a), 'alpha': alpha, 'C': np.exp(log_c), 'lambda': 1.0 - np.exp(-log_tau)}

    def from_natural(self, params: dict[str, float]) -> np.ndarray:
        return np.array([params['L0'], _log_floor(params['A']), params['alpha'], _log_floor(params['C']),
                         -np.log(max(1.0 - params['lambda'], 1e-300))])

    @staticmethod
    def _momentum(log_tau: float, design: Design) -> tuple[np.ndarray, np.ndarray]:
        r""":math:`S_2` per step and, per pair, its derivative by :math:`\log\tau`."""
        tau = np.exp(log_tau)
        log_lambda = np.log1p(-1.0 / tau) if tau > 1.0 else -np.inf
        decayed = np.exp(design.pair_steps * log_lambda)  # lambda ** (s - k)
        drop = design.drop[design.pair_bin]
        s2 = design.per_point(drop * tau * (1.0 - decayed))
        # d/dtau [tau (1 - lambda^n)] = (1 - lambda^n) - n lambda^(n-1) / tau, with dlambda/dtau = 1 / tau^2.
        with np.errstate(invalid='ignore', divide='ignore'):
            previous = np.where(decayed > 0, decayed / (1.0 - 1.0 / tau), 0.0)  # lambda ** (s - k - 1)
            per_pair = (1.0 - decayed) - design.pair_steps * previous / tau
        ds2 = design.per_point(drop * tau * np.nan_to_num(per_pair))
        return s2, ds2

    def evaluate(self, theta: np.ndarray, design: Design, jacobian: bool = False):
        l0, log_a, alpha, log_c, log_tau = theta
        a, c = np.exp(log_a), np.exp(log_c)
        area = np.maximum(design.area, 1e-12)
        power = area**-alpha
        s2, ds2 = self._momentum(log_tau, design)
        pred = l0 + a * power - c * s2
        if not jacobian:
            return pred
        jac = np.stack([np.ones_like(pred), a * power, -a * power * np.log(area), -c * s2, -c * ds2], axis=1)
        return pred, jac

    def _basis(self, nonlinear: Sequence[float], design: Design) -> tuple[np.ndarray, np.ndarray]:
        alpha, log_tau = nonlinear
        return np.maximum(design.area, 1e-12)**-alpha, self._momentum(log_tau, design)[0]

    def _grid(self) -> list[tuple[float, ...]]:
        return list(itertools.product((0.2, 0.4, 0.7), np.log([10.0, 100.0, 1000.0, 10000.0])))

    def _assemble(self, nonlinear: Sequence[float], l0: float, a: float, scale: float) -> np.ndarray:
        alpha, log_tau = nonlinear
        return np.array([l0, _log_floor(a), alpha, _log_floor(max(scale, 1e-9)), log_tau])


LAWS: dict[str, Law] = {law.name: law for law in (MultiPowerLaw(), MomentumLaw())}


def get_law(name: str) -> Law:
    """The law called ``name`` (``multi-power`` or ``momentum``)."""
    return LAWS[name]
