"""Loss-curve collapse for Composer / LLM-Foundry runs: AdamW timescale, normalized curves,
reference fitting, early final-loss prediction and collapse residuals.

References:
    * [SwC] Bergsma, Zhang, Dey, Muhammad, Gosal, Hestness. "Scaling with Collapse: Efficient and
      Predictable Training of LLM Families", arXiv:2509.25087 (v2, ICLR 2026).
    * [PL] Bergsma, Dey, Gosal, Gray, Soboleva, Hestness. "Power Lines: Scaling Laws for Weight
      Decay and Batch Size in LLM Pre-training", arXiv:2505.13738 (NeurIPS 2025).
    * Wang & Aitchison. "How to set AdamW's weight decay as you scale model and dataset size",
      arXiv:2405.13698 (the EMA view of AdamW).

[SwC] shows that when the LR schedule, the tokens-per-parameter ratio ``TPP = D/N`` and the
normalized AdamW timescale ``tau`` are held fixed across model sizes, training-loss curves divided
by their final loss collapse onto one curve of the training fraction ``t/T``. This module computes
those controls from an LLM-Foundry YAML, fits a reference curve from finished runs, predicts the
final loss of a partial run and measures how far a run strays from the reference. Everything here
is pure numpy/scipy and deterministic. ``docs/collapse.md`` lists the definitions, the JSON format
of a reference and every approximation.
"""

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Union

import numpy as np
from scipy import optimize, stats

from foundry_ext.analysis.model_size import ParamCount, mpt_param_count

__all__ = [
    'CollapseResidual',
    'LRSchedule',
    'LossCurve',
    'Prediction',
    'ReferenceCurve',
    'TrainingBudget',
    'collapse_residual',
    'duration_to_steps',
    'estimate_final_loss',
    'final_window_losses',
    'fit_reference',
    'from_foundry_config',
    'normalize_curve',
    'predict_final_loss',
    'schedule_peak',
    'smooth_curve',
    'weight_decay_for_tau_fraction',
]

log = logging.getLogger(__name__)

# How each optimizer applies weight decay, per step at peak LR:
#   'decoupled': Composer/LLM-Foundry style, ``p *= 1 - (lr_t / initial_lr) * weight_decay``, so the
#                decay at peak is ``weight_decay`` itself (composer/optim/decoupled_weight_decay.py,
#                llmfoundry/optim/lion.py).
#   'lr_scaled': torch.optim.AdamW, ``p *= 1 - lr_t * weight_decay``.
_DECAY_CONVENTION = {
    'decoupled_adamw': 'decoupled',
    'decoupled_lionw': 'decoupled',
    'adamw': 'lr_scaled',
}
# [SwC] and [PL] study AdamW only; Lion shares the EMA form (SwC App. A hypothesises tau carries over).
_ADAMW_FAMILY = frozenset({'decoupled_adamw', 'adamw'})

_TIME_RE = re.compile(r'^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]+)\s*$', re.IGNORECASE)

# [SwC] Eq. (4): epsilon_1, epsilon_2 and m are fixed constants in the paper (Sec. 5, App. D.1).
_SURROGATE_EPS1 = 1e-3
_SURROGATE_EPS2 = 0.1
_SURROGATE_M = 0.05

_JSON_FORMAT = 'foundry_ext.collapse.reference'
_JSON_VERSION = 1


def _lr_factor(optimizer: str, lr: float) -> float:
    """Factor ``c`` with per-step decay at peak LR ``= c * weight_decay`` (``eta*lambda`` in [SwC])."""
    if optimizer not in _DECAY_CONVENTION:
        raise ValueError(
            f'optimizer.name={optimizer!r} has no known weight-decay convention; supported: '
            f'{sorted(_DECAY_CONVENTION)}.',
        )
    return 1.0 if _DECAY_CONVENTION[optimizer] == 'decoupled' else lr


def _parse_time(value: Union[str, int], key: str) -> tuple[float, str]:
    """Parse a Composer time string (``'1000ba'``, ``'2e9tok'``) into ``(value, unit)``.

    A bare integer is a number of epochs, as in ``composer.Trainer(max_duration=...)``.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f'{key}={value!r} must be a Composer time string such as "1000ba".')
    if isinstance(value, int):
        return float(value), 'ep'
    match = _TIME_RE.match(value)
    if match is None:
        raise ValueError(
            f'{key}={value!r} is not a Composer time string; use e.g. "1000ba", "2e9tok" or '
            '"20000sp".',
        )
    return float(match.group(1)), match.group(2).lower()


def duration_to_steps(
    max_duration: Union[str, int],
    global_train_batch_size: int,
    max_seq_len: int,
) -> int:
    """Number of optimizer steps Composer runs for ``max_duration``.

    Composer stops at the first batch whose timestamp reaches ``max_duration``, so sample and token
    durations round up to whole batches. Every sample is assumed to hold ``max_seq_len`` tokens
    (packed / concatenated pre-training data, as in LLM-Foundry's text dataloader).

    Args:
        max_duration (str | int): ``max_duration`` from the YAML: ``'<n>ba'``, ``'<n>tok'`` or
            ``'<n>sp'``; scientific notation is accepted (``'2e9tok'``).
        global_train_batch_size (int): Samples per optimizer step.
        max_seq_len (int): Tokens per sample.

    Returns:
        int: Total optimizer steps ``T``.

    Raises:
        ValueError: If the unit is epochs, ``dur`` or anything else that the YAML alone cannot turn
            into steps, or the value is not a positive integer.
    """
    value, unit = _parse_time(max_duration, 'max_duration')
    if unit not in ('ba', 'tok', 'sp'):
        raise ValueError(
            f'max_duration={max_duration!r} is in {unit!r}, which the YAML alone cannot turn into '
            'optimizer steps (epochs depend on the dataset size, dur on max_duration itself), so '
            "tau and TPP cannot be derived. Set max_duration in 'ba' (batches), 'tok' (tokens) or "
            "'sp' (samples), e.g. max_duration: 10000ba.",
        )
    if value <= 0 or value != int(value):
        raise ValueError(f'max_duration={max_duration!r} must be a positive whole number of {unit}.')
    count = int(value)
    if unit == 'ba':
        return count
    per_step = global_train_batch_size * (max_seq_len if unit == 'tok' else 1)
    return -(-count // per_step)  # ceil division on ints


@dataclass(frozen=True)
class TrainingBudget:
    """The quantities [SwC] Table 1 uses to describe a run, from explicit numbers.

    Attributes:
        total_params (int): All parameters, embeddings included. [SwC] computes ``TPP = D/N`` with
            this count (Table 4 and Tables 2/8/10: e.g. Celerity-300M lists 2.71e8 parameters,
            which includes both untied 128256 x 640 embedding matrices, and trains 5.4e9 tokens at
            20 TPP).
        non_embedding_params (int): Parameters without token and positional embeddings.
        global_train_batch_size (int): Samples per optimizer step.
        max_seq_len (int): Tokens per sample.
        total_steps (int): Optimizer steps ``T`` of the whole run.
        peak_lr (float): The YAML ``optimizer.lr``: the LR at a schedule multiplier of 1.
        weight_decay (float): YAML ``optimizer.weight_decay``.
        optimizer (str): LLM-Foundry optimizer name (``decoupled_adamw``, ``decoupled_lionw`` or
            ``adamw``); it decides how ``weight_decay`` turns into a per-step decay.
        peak_multiplier (float): The schedule's largest multiplier: 1 for most schedules, ``alpha_i`` of
            ``linear_decay_with_warmup``, ``alpha`` of ``constant_with_warmup``. The LR at its peak is
            ``peak_multiplier * peak_lr``, and ``decoupled_adamw``'s decay there ``peak_multiplier *
            weight_decay``.
    """

    total_params: int
    non_embedding_params: int
    global_train_batch_size: int
    max_seq_len: int
    total_steps: int
    peak_lr: float
    weight_decay: float
    optimizer: str
    peak_multiplier: float = 1.0

    def __post_init__(self) -> None:
        for name in ('total_params', 'non_embedding_params', 'global_train_batch_size', 'max_seq_len',
                     'total_steps'):
            if getattr(self, name) <= 0:
                raise ValueError(f'TrainingBudget.{name} must be positive, got {getattr(self, name)}.')
        if self.peak_lr <= 0 or self.weight_decay < 0 or self.peak_multiplier <= 0:
            raise ValueError('TrainingBudget.peak_lr and peak_multiplier must be positive and weight_decay '
                             'non-negative.')
        _lr_factor(self.optimizer, self.peak_lr)  # validates the optimizer name
        if self.optimizer not in _ADAMW_FAMILY:
            log.warning(
                'tau for %s follows the AdamW EMA form by analogy; [SwC]/[PL] establish it for AdamW '
                'only.',
                self.optimizer,
            )

    @property
    def tokens_per_batch(self) -> int:
        """``B`` in [SwC] Table 1: tokens per optimizer step."""
        return self.global_train_batch_size * self.max_seq_len

    @property
    def total_tokens(self) -> int:
        """``D = T * B``, the tokens actually trained (a 'tok' duration is rounded up to a batch)."""
        return self.total_steps * self.tokens_per_batch

    @property
    def tpp(self) -> float:
        """Tokens per parameter ``D/N`` with ``N = total_params``, the paper's choice."""
        return self.total_tokens / self.total_params

    @property
    def non_embedding_tpp(self) -> float:
        """``D/N`` with the non-embedding count, for comparison with Kaplan-style laws."""
        return self.total_tokens / self.non_embedding_params

    @property
    def eta_lambda(self) -> float:
        """The per-step decay at peak LR, ``eta * lambda`` in torch-AdamW terms ([SwC] Sec. 2).

        For ``decoupled_adamw`` (and ``decoupled_lionw``) Composer multiplies weights by
        ``1 - (lr_t / initial_lr) * weight_decay``, so at peak this is ``peak_multiplier * weight_decay``
        and does not depend on the LR at all (so also not on per-group muP LR scaling). For torch
        ``adamw`` it is ``peak_multiplier * peak_lr * weight_decay``.
        """
        return self.peak_multiplier * _lr_factor(self.optimizer, self.peak_lr) * self.weight_decay

    @property
    def tau_iter(self) -> float:
        """AdamW EMA timescale in steps, :math:`\\tau_{iter} = 1/(\\eta\\lambda)` ([SwC] Sec. 2)."""
        if self.eta_lambda == 0:
            return math.inf
        return 1.0 / self.eta_lambda

    @property
    def tau_fraction(self) -> float:
        """Normalized timescale, [SwC] Eq. (2):

        .. math::

            \\tau = \\frac{\\tau_{iter}}{T} = \\frac{1}{\\eta\\lambda T} = \\frac{B}{\\eta\\lambda D}
        """
        return self.tau_iter / self.total_steps


def weight_decay_for_tau_fraction(target: float, budget: TrainingBudget) -> float:
    """The YAML ``optimizer.weight_decay`` that gives ``budget`` the normalized timescale ``target``.

    Inverts [SwC] Eq. (2) for the optimizer's convention:

    .. math::

        \\lambda_{\\text{decoupled}} = \\frac{1}{\\tau T p}, \\qquad
        \\lambda_{\\text{adamw}} = \\frac{1}{\\tau T \\eta p}

    with :math:`p` the schedule's peak multiplier (usually 1).

    [SwC] Sec. 5 recommends tuning with ``tau`` fixed (adjusting weight decay when LR or batch size
    change) so that partial curves keep their order.

    Args:
        target (float): Desired ``tau`` as a fraction of the run (> 0).
        budget (TrainingBudget): The run; its ``weight_decay`` is ignored.

    Returns:
        float: The weight decay to put in the YAML.
    """
    if target <= 0:
        raise ValueError(f'target tau fraction must be positive, got {target}.')
    return 1.0 / (target * budget.total_steps * budget.peak_multiplier *
                  _lr_factor(budget.optimizer, budget.peak_lr))


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in mapping or mapping[key] is None:
        raise ValueError(f'{where}{key} is missing from the training config; set it in the YAML.')
    return mapping[key]


def _number(value: Any, key: str, kind: type = float) -> Any:
    """``kind(value)``, or a ValueError naming the YAML key."""
    try:
        return kind(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f'{key}={value!r} is not a number{" (a whole one)" if kind is int else ""}; '
                         f'set it to one in the YAML.') from err


def from_foundry_config(
    cfg: Mapping[str, Any],
    param_count: Optional[ParamCount] = None,
) -> TrainingBudget:
    """Build a :class:`TrainingBudget` from a resolved LLM-Foundry training config.

    Args:
        cfg (Mapping[str, Any]): The training YAML as a plain dict with variables already
            interpolated. Reads ``model``, ``optimizer.{name, lr, weight_decay}``,
            ``max_duration``, ``global_train_batch_size`` and ``max_seq_len`` (falling back to
            ``variables.max_seq_len`` and ``model.max_seq_len``), and the peak of ``scheduler``.
        param_count (ParamCount, optional): Parameter counts to use instead of counting the
            ``model`` section; required for models other than ``mpt_causal_lm``.

    Returns:
        TrainingBudget: The run's budget.

    Raises:
        ValueError: Naming the YAML key and the fix when a key is missing, a unit is unsupported,
            or the optimizer's weight-decay convention is unknown.
    """
    optimizer = _require(cfg, 'optimizer', '')
    name = _require(optimizer, 'name', 'optimizer.')
    lr = _number(_require(optimizer, 'lr', 'optimizer.'), 'optimizer.lr')
    if optimizer.get('weight_decay') is None:
        raise ValueError(
            'optimizer.weight_decay is missing; its default differs between optimizers '
            '(DecoupledAdamW 1e-5, torch AdamW 1e-2), so set it explicitly in the YAML.',
        )
    batch = _number(_require(cfg, 'global_train_batch_size', ''), 'global_train_batch_size', int)
    seq_len = cfg.get('max_seq_len') or (cfg.get('variables') or {}).get('max_seq_len') or (
        cfg.get('model') or {}
    ).get('max_seq_len')
    if seq_len is None:
        raise ValueError(
            'max_seq_len is missing; set max_seq_len (or variables.max_seq_len) in the YAML.',
        )
    seq_len = _number(seq_len, 'max_seq_len', int)
    steps = duration_to_steps(_require(cfg, 'max_duration', ''), batch, seq_len)
    if param_count is None:
        model = _require(cfg, 'model', '')
        if model.get('name', 'mpt_causal_lm') != 'mpt_causal_lm':
            raise ValueError(
                f"model.name={model.get('name')!r}: parameters can only be counted for "
                'mpt_causal_lm; pass param_count=ParamCount(...) for other models.',
            )
        param_count = mpt_param_count(model)
    return TrainingBudget(
        total_params=param_count.total,
        non_embedding_params=param_count.non_embedding,
        global_train_batch_size=batch,
        max_seq_len=seq_len,
        total_steps=steps,
        peak_lr=lr,
        weight_decay=_number(optimizer['weight_decay'], 'optimizer.weight_decay'),
        optimizer=str(name),
        peak_multiplier=schedule_peak(cfg.get('scheduler') or {}),
    )


# Composer schedules whose largest multiplier is a setting (the others peak at 1), with its default.
_PEAK_KEYS = {'linear_decay_with_warmup': ('alpha_i', 1.0), 'constant_with_warmup': ('alpha', 1.0)}


def schedule_peak(scheduler_cfg: Mapping[str, Any]) -> float:
    """The largest LR multiplier of a Foundry ``scheduler:`` section: its ``alpha_i``/``alpha``, else 1."""
    if scheduler_cfg.get('name') not in _PEAK_KEYS:
        return 1.0
    key, default = _PEAK_KEYS[scheduler_cfg['name']]
    peak = _number(scheduler_cfg.get(key, default), f'scheduler.{key}')
    if peak <= 0:
        raise ValueError(f'scheduler.{key}={peak!r} must be positive: it is the peak of the LR schedule.')
    return peak


class LossCurve(NamedTuple):
    """One run's training loss: ``losses[i]`` logged after step ``steps[i]`` of ``total_steps``."""

    steps: Sequence[float]
    losses: Sequence[float]
    total_steps: int


def _validated(
    steps: Sequence[float],
    losses: Sequence[float],
    total_steps: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(t/T, losses)`` as float arrays after checking shapes and values."""
    s = np.asarray(steps, dtype=float)
    y = np.asarray(losses, dtype=float)
    if s.ndim != 1 or s.shape != y.shape or s.size == 0:
        raise ValueError('steps and losses must be non-empty 1-D sequences of equal length.')
    if total_steps <= 0:
        raise ValueError(f'total_steps must be positive, got {total_steps}.')
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(y)) and np.all(y > 0)):
        raise ValueError('steps must be finite and losses finite and positive.')
    if np.any(np.diff(s) <= 0):
        raise ValueError('steps must be strictly increasing.')
    return s / total_steps, y


def estimate_final_loss(
    steps: Sequence[float],
    losses: Sequence[float],
    total_steps: int,
    tail_fraction: float = 0.02,
) -> float:
    """Robust estimate of ``L(T)`` from the end of a finished run.

    [SwC] divides by the (moving-average smoothed) final training loss. A trailing mean is biased
    upward when the LR decays to zero, because the loss still falls steeply at the end; instead this
    fits a Theil-Sen line (median of pairwise slopes, robust to spikes) to the points with
    ``t/T >= 1 - tail_fraction`` (at least the last 3 points) and evaluates it at ``T``.

    Args:
        steps (Sequence[float]): Logged steps, strictly increasing.
        losses (Sequence[float]): Training losses at those steps.
        total_steps (int): ``T``. The curve must reach ``t/T >= 1 - tail_fraction``.
        tail_fraction (float): Width of the tail window as a fraction of the run.

    Returns:
        float: Estimated final loss.
    """
    t, y = _validated(steps, losses, total_steps)
    # A finished run logs its last loss at step T - 1 (the loss of batch k is logged at step k).
    if t[-1] < min(1.0 - tail_fraction, (total_steps - 1) / total_steps):
        raise ValueError(
            f'the curve ends at t/T={t[-1]:.3f}; estimate_final_loss needs a finished run. Pass '
            'final_loss explicitly or use predict_final_loss for a partial run.',
        )
    tail = t >= 1.0 - tail_fraction
    if tail.sum() < 3:
        tail = np.arange(t.size) >= t.size - 3
    if tail.sum() < 2:
        return float(y[-1])
    slope, intercept, _, _ = stats.theilslopes(y[tail], t[tail])
    return float(intercept + slope * 1.0)


def normalize_curve(
    steps: Sequence[float],
    losses: Sequence[float],
    total_steps: int,
    final_loss: Optional[float] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalized training-loss curve of [SwC] Eq. (1) with :math:`\\hat L = 0` (Sec. 3):

    .. math::

        \\ell(\\hat t) = \\frac{L(\\hat t \\cdot T)}{L(T)}, \\qquad \\hat t = t/T

    [SwC] found dividing by the final loss (no irreducible-loss offset, unlike Qiu et al. 2025)
    aligned curves best. The paper also smooths with a 100-step moving average before
    normalizing; this function does not smooth, so pass already-smoothed losses if you want that.

    Args:
        steps (Sequence[float]): Logged steps, strictly increasing.
        losses (Sequence[float]): Training losses.
        total_steps (int): ``T``.
        final_loss (float, optional): ``L(T)``; estimated with :func:`estimate_final_loss` when
            omitted (which requires a finished curve).

    Returns:
        tuple[np.ndarray, np.ndarray]: ``(t/T, L/L(T))``.
    """
    t, y = _validated(steps, losses, total_steps)
    if final_loss is None:
        final_loss = estimate_final_loss(steps, losses, total_steps)
    if final_loss <= 0:
        raise ValueError(f'final_loss must be positive, got {final_loss}.')
    return t, y / final_loss


def smooth_curve(
    steps: Sequence[float],
    losses: Sequence[float],
    window: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Trailing moving average of ``window`` logged points, placed at the mean step of its window.

    [SwC] smooths training losses with a 100-step moving average before normalizing (Sec. 3). A
    trailing mean lags a falling curve by ``(window - 1) / 2`` steps; placing it at the mean step of
    its window removes that lag for a locally linear curve, while staying causal (an online monitor
    computes the same value once the window's last loss is known):

    .. math::

        \bar L_k = \frac{1}{W}\sum_{j=k-W+1}^{k} L_j \quad\text{at}\quad
        \bar t_k = \frac{1}{W}\sum_{j=k-W+1}^{k} t_j, \qquad k \ge W - 1

    Reference runs and monitored runs must be smoothed with the same ``window``, since the reference
    band measures the spread of the smoothed curves (:attr:`ReferenceCurve.smoothing` records it).

    Args:
        steps (Sequence[float]): Logged steps, strictly increasing (normally every step).
        losses (Sequence[float]): Training losses.
        window (int): Points per average; 1 returns the input unchanged.

    Returns:
        tuple[np.ndarray, np.ndarray]: ``(mean steps, mean losses)``, ``window - 1`` points shorter.
    """
    s = np.asarray(steps, dtype=float)
    y = np.asarray(losses, dtype=float)
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f'smoothing window must be a positive integer, got {window!r}.')
    if s.ndim != 1 or s.shape != y.shape or s.size < window:
        raise ValueError(f'need 1-D steps and losses of equal length with at least {window} points.')
    if window == 1:
        return s, y

    def trailing_mean(x: np.ndarray) -> np.ndarray:
        c = np.cumsum(np.concatenate([[0.0], x]))
        return (c[window:] - c[:-window]) / window

    return trailing_mean(s), trailing_mean(y)


@dataclass(frozen=True)
class LRSchedule:
    """LR multiplier ``eta(t/T)`` as piecewise-linear knots, normalized to peak 1.

    [SwC] Eq. (4) takes the LR schedule "normalized to be at 1.0 at its peak" and "interpreted
    over training fraction" (App. D.1). Knots represent any schedule (WSD, cosine, ...); smooth
    ones are tabulated finely enough that linear interpolation error is negligible.

    Attributes:
        fractions (tuple[float, ...]): Strictly increasing knots from 0.0 to 1.0.
        multipliers (tuple[float, ...]): Non-negative multipliers at the knots, maximum 1.0.
    """

    fractions: tuple[float, ...]
    multipliers: tuple[float, ...]

    def __post_init__(self) -> None:
        f = np.asarray(self.fractions, dtype=float)
        m = np.asarray(self.multipliers, dtype=float)
        if f.ndim != 1 or f.shape != m.shape or f.size < 2:
            raise ValueError('LRSchedule needs at least two knots with one multiplier each.')
        if f[0] != 0.0 or f[-1] != 1.0 or np.any(np.diff(f) <= 0):
            raise ValueError('LRSchedule.fractions must increase strictly from 0.0 to 1.0.')
        if np.any(m < 0) or not np.isclose(m.max(), 1.0):
            raise ValueError('LRSchedule.multipliers must be non-negative with peak 1.0.')

    def __call__(self, fractions: np.ndarray) -> np.ndarray:
        """``eta(t/T)`` at the given training fractions (clipped to [0, 1])."""
        return np.interp(np.clip(fractions, 0.0, 1.0), self.fractions, self.multipliers)

    @classmethod
    def from_series(
        cls,
        steps: Sequence[float],
        lrs: Sequence[float],
        total_steps: int,
        max_knots: int = 1024,
    ) -> 'LRSchedule':
        """The schedule a run actually trained with, from its logged LR (e.g. ``lr_monitor``'s series).

        Works for any scheduler (``wsd``, Composer's, a custom one), and is what [SwC] Eq. (4)
        needs: the LR "normalized to be at 1.0 at its peak" over ``t/T`` (App. D.1). Knots are the
        logged points at ``step / T``; interior knots collinear with their neighbours (to 1e-6) are
        dropped, which keeps piecewise-linear schedules exact, and if more than ``max_knots`` remain
        they are subsampled evenly. The first and last logged values are extended to ``t/T = 0`` and
        ``1``.

        Args:
            steps (Sequence[float]): Steps at which the LR was logged, strictly increasing.
            lrs (Sequence[float]): LR at those steps (any positive scale).
            total_steps (int): ``T`` of the run.
            max_knots (int): Most knots to keep (>= 2).

        Returns:
            LRSchedule: The normalized schedule.
        """
        s = np.asarray(steps, dtype=float)
        lr = np.asarray(lrs, dtype=float)
        if s.ndim != 1 or s.shape != lr.shape or s.size < 2 or np.any(np.diff(s) <= 0):
            raise ValueError('need at least two LR points at strictly increasing steps.')
        if not (np.all(np.isfinite(lr)) and np.all(lr >= 0) and lr.max() > 0) or max_knots < 2:
            raise ValueError('LRs must be finite, non-negative and not all zero; max_knots >= 2.')
        if s[0] < 0 or s[-1] > total_steps:
            raise ValueError(f'the LR is logged at steps {s[0]:g}..{s[-1]:g}, outside 0..total_steps={total_steps}; '
                             'is T right?')
        f, m = s / total_steps, lr / lr.max()
        if f[0] > 0:
            f, m = np.concatenate([[0.0], f]), np.concatenate([[m[0]], m])
        if f[-1] < 1:
            f, m = np.concatenate([f, [1.0]]), np.concatenate([m, [m[-1]]])
        keep = np.ones(f.size, dtype=bool)
        if f.size > 2:
            between = m[:-2] + (m[2:] - m[:-2]) * (f[1:-1] - f[:-2]) / (f[2:] - f[:-2])
            keep[1:-1] = np.abs(m[1:-1] - between) > 1e-6
        f, m = f[keep], m[keep]
        if f.size > max_knots:
            idx = np.round(np.linspace(0, f.size - 1, max_knots - 1)).astype(int)
            idx = np.unique(np.append(idx, np.argmax(m)))  # keep the peak knot: LRSchedule needs 1.0
            f, m = f[idx], m[idx]
        return cls(tuple(float(v) for v in f), tuple(float(v) for v in m))

    @classmethod
    def from_foundry_scheduler(
        cls,
        scheduler_cfg: Mapping[str, Any],
        budget: TrainingBudget,
    ) -> 'LRSchedule':
        """Tabulate an LLM-Foundry ``scheduler:`` section (Composer's formulas, ``t_max='1dur'``).

        Supports ``constant_with_warmup``, ``linear_decay_with_warmup`` and ``cosine_with_warmup``
        (``composer/optim/scheduler.py``): a linear warmup from 0 over ``t_warmup``, then constant
        ``alpha``, linear ``alpha_i -> alpha_f``, or
        :math:`\\alpha_f + (1-\\alpha_f)\\tfrac12(1+\\cos\\pi x)` over the rest of the run.
        ``t_warmup`` in ``'dur'`` is taken as the exact fraction (Composer rounds it down to a
        whole unit of ``max_duration``). The result is rescaled to peak 1.

        Args:
            scheduler_cfg (Mapping[str, Any]): The ``scheduler`` section of the YAML.
            budget (TrainingBudget): The run, to convert ``t_warmup`` into a fraction.

        Returns:
            LRSchedule: The tabulated schedule.
        """
        name = _require(scheduler_cfg, 'name', 'scheduler.')
        if scheduler_cfg.get('t_max', '1dur') != '1dur':
            raise ValueError("scheduler.t_max other than '1dur' is not supported; remove it from the YAML.")
        t_warmup = _require(scheduler_cfg, 't_warmup', 'scheduler.')
        value, unit = _parse_time(t_warmup, 'scheduler.t_warmup')
        per_unit = {
            'dur': 1.0,
            'ba': 1.0 / budget.total_steps,
            'sp': 1.0 / (budget.total_steps * budget.global_train_batch_size),
            'tok': 1.0 / budget.total_tokens,
        }
        if unit not in per_unit:
            raise ValueError(
                f"scheduler.t_warmup={t_warmup!r} is in {unit!r}; use 'ba', 'tok', 'sp' or 'dur'.",
            )
        warmup = value * per_unit[unit]
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f'scheduler.t_warmup={t_warmup!r} must be shorter than the run.')
        x = np.linspace(0.0, 1.0, 257)  # post-warmup progress; 256 segments keep cosine error < 1e-5
        if name == 'constant_with_warmup':
            decay = np.full_like(x, float(scheduler_cfg.get('alpha', 1.0)))
        elif name == 'linear_decay_with_warmup':
            alpha_i = float(scheduler_cfg.get('alpha_i', 1.0))
            decay = alpha_i + x * (float(scheduler_cfg.get('alpha_f', 0.0)) - alpha_i)
        elif name == 'cosine_with_warmup':
            alpha_f = float(scheduler_cfg.get('alpha_f', 0.0))
            decay = alpha_f + (1.0 - alpha_f) * 0.5 * (1.0 + np.cos(np.pi * x))
        else:
            raise ValueError(
                f'scheduler.name={name!r} is not supported; use constant_with_warmup, '
                'linear_decay_with_warmup or cosine_with_warmup, or build LRSchedule from knots.',
            )
        fractions = warmup + x * (1.0 - warmup)
        fractions[-1] = 1.0  # exact end knot despite rounding
        multipliers = decay
        if warmup > 0:
            fractions = np.concatenate([[0.0], fractions])
            multipliers = np.concatenate([[0.0], decay])
        peak = multipliers.max()
        if peak <= 0:
            raise ValueError('the scheduler never has a positive LR multiplier.')
        return cls(tuple(float(f) for f in fractions), tuple(float(m / peak) for m in multipliers))


def _surrogate(
    fractions: np.ndarray,
    schedule: LRSchedule,
    m: float,
    b: float,
    q: float,
) -> np.ndarray:
    """[SwC] Eq. (4), divided by its value at ``t/T = 1``:

    .. math::

        g(\\hat t) = \\Big(\\frac{1+\\epsilon_1}{\\hat t+\\epsilon_1}\\Big)^m
                     + b\\,(\\eta(\\hat t)+\\epsilon_2)^q, \\qquad
        \\hat\\ell(\\hat t) = g(\\hat t)/g(1)
    """
    def g(t: np.ndarray) -> np.ndarray:
        return ((1.0 + _SURROGATE_EPS1) / (t + _SURROGATE_EPS1))**m + b * (schedule(t) + _SURROGATE_EPS2)**q

    return g(np.asarray(fractions, dtype=float)) / g(np.array([1.0]))[0]


@dataclass(frozen=True)
class ReferenceCurve:
    """A fitted universal normalized curve plus the spread of the runs it was fitted on.

    Attributes:
        m (float): Power-law exponent of [SwC] Eq. (4) (fixed to 0.05 unless fitted).
        b (float): Weight of the LR-schedule term of Eq. (4).
        q (float): Exponent of the LR-schedule term of Eq. (4).
        schedule (LRSchedule): The LR schedule shared by the reference runs.
        fit_start (float): Training fraction below which the reference is not defined (warmup).
        band_edges (tuple[float, ...]): Bin edges over ``[fit_start, 1]``.
        band_sigma (tuple[float, ...]): Per bin, the RMS of ``ell - ell_hat`` over the reference
            runs (in normalized-loss units, floored at ``band_floor``).
        band_floor (float): Minimum band width.
        n_runs (int): Number of runs fitted.
        fit_rmse (float): RMS of ``ell - ell_hat`` over all fitted points.
        tau_fraction (float, optional): ``tau`` of the reference runs, for provenance.
        tpp (float, optional): TPP of the reference runs, for provenance.
        smoothing (int): Moving-average window (logged points) the reference runs were smoothed
            with (:func:`smooth_curve`); smooth monitored runs the same way.
    """

    m: float
    b: float
    q: float
    schedule: LRSchedule
    fit_start: float
    band_edges: tuple[float, ...]
    band_sigma: tuple[float, ...]
    band_floor: float
    n_runs: int
    fit_rmse: float
    tau_fraction: Optional[float] = None
    tpp: Optional[float] = None
    smoothing: int = 1

    def __call__(self, fractions: Union[Sequence[float], np.ndarray]) -> np.ndarray:
        """Reference normalized loss :math:`\\hat\\ell(\\hat t)` at the given training fractions."""
        return _surrogate(np.asarray(fractions, dtype=float), self.schedule, self.m, self.b, self.q)

    def band(self, fractions: Union[Sequence[float], np.ndarray]) -> np.ndarray:
        """Band width (normalized-loss units) at the given fractions; NaN before ``fit_start``."""
        t = np.asarray(fractions, dtype=float)
        idx = np.searchsorted(self.band_edges, t, side='right') - 1
        idx = np.clip(idx, 0, len(self.band_sigma) - 1)
        return np.where(t >= self.fit_start, np.asarray(self.band_sigma)[idx], np.nan)

    def controls_mismatch(self, tau_fraction: float, tpp: float, rtol: float = 0.1) -> list[str]:
        """Which collapse controls of a run differ from the reference's by more than ``rtol``.

        [SwC] Sec. 3: curves collapse only when the LR schedule, TPP and ``tau`` match. An empty
        list means the recorded controls agree (or were not recorded).
        """
        problems = []
        recorded = (('tau_fraction', self.tau_fraction, tau_fraction), ('tpp', self.tpp, tpp))
        for label, mine, theirs in recorded:
            if mine is not None and abs(theirs - mine) > rtol * abs(mine):
                problems.append(f'{label}: run {theirs:.4g} vs reference {mine:.4g}')
        return problems

    def to_json(self) -> str:
        """Serialize to the JSON format documented in ``docs/collapse.md``."""
        return json.dumps(
            {
                'format': _JSON_FORMAT,
                'version': _JSON_VERSION,
                'surrogate': {
                    'm': self.m,
                    'b': self.b,
                    'q': self.q,
                    'eps1': _SURROGATE_EPS1,
                    'eps2': _SURROGATE_EPS2,
                },
                'schedule': {
                    'fractions': list(self.schedule.fractions),
                    'multipliers': list(self.schedule.multipliers),
                },
                'fit_start': self.fit_start,
                'band': {
                    'edges': list(self.band_edges),
                    'sigma': list(self.band_sigma),
                    'floor': self.band_floor,
                },
                'n_runs': self.n_runs,
                'fit_rmse': self.fit_rmse,
                'controls': {'tau_fraction': self.tau_fraction, 'tpp': self.tpp},
                'smoothing': self.smoothing,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> 'ReferenceCurve':
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get('format') != _JSON_FORMAT or data.get('version') != _JSON_VERSION:
            raise ValueError(f'not a {_JSON_FORMAT} v{_JSON_VERSION} document.')
        sur = data['surrogate']
        if (sur['eps1'], sur['eps2']) != (_SURROGATE_EPS1, _SURROGATE_EPS2):
            raise ValueError('reference was fitted with different epsilon constants.')
        return cls(
            m=float(sur['m']),
            b=float(sur['b']),
            q=float(sur['q']),
            schedule=LRSchedule(
                tuple(data['schedule']['fractions']),
                tuple(data['schedule']['multipliers']),
            ),
            fit_start=float(data['fit_start']),
            band_edges=tuple(data['band']['edges']),
            band_sigma=tuple(data['band']['sigma']),
            band_floor=float(data['band']['floor']),
            n_runs=int(data['n_runs']),
            fit_rmse=float(data['fit_rmse']),
            tau_fraction=data['controls']['tau_fraction'],
            tpp=data['controls']['tpp'],
            smoothing=int(data.get('smoothing', 1)),  # absent in files written before it existed
        )


def fit_reference(
    runs: Sequence[LossCurve],
    schedule: LRSchedule,
    fit_start: float = 0.1,
    n_bins: int = 20,
    band_floor: float = 1e-3,
    fit_m: bool = False,
    tau_fraction: Optional[float] = None,
    tpp: Optional[float] = None,
    smoothing: int = 1,
    final_loss: str = 'tail',
) -> ReferenceCurve:
    """Fit [SwC] Eq. (4) to the pooled normalized curves of finished runs with matched controls.

    Each run is normalized by its own estimated final loss (:func:`normalize_curve`); points with
    ``t/T >= fit_start`` are pooled, each run weighted equally, and ``(b, q)`` (plus ``m`` when
    ``fit_m``) are fitted by least squares on :math:`\\log\\ell - \\log\\hat\\ell`, from three fixed
    starting points (deterministic). The paper fits ``b`` and ``q`` as power laws in ``tau`` and TPP
    across many runs (Eq. 5); with runs at one set of controls, as here, that reduces to fitting
    ``b`` and ``q`` directly (the paper's per-curve "oracle" fit, App. D.1, pooled over runs).

    The band is, per bin of ``t/T``, the RMS of ``ell - ell_hat`` over the runs, floored at
    ``band_floor``; empty bins copy the nearest filled bin. Near ``t/T = 1`` every run's residual
    is ~0 by construction, which the floor guards against.

    Args:
        runs (Sequence[LossCurve]): Finished runs (at least one) sharing LR schedule, TPP and tau.
        schedule (LRSchedule): Their LR schedule.
        fit_start (float): Ignore ``t/T < fit_start`` (LR warmup; the paper ignores the first 20%
            when scoring fits and warms up for 10%).
        n_bins (int): Number of band bins over ``[fit_start, 1]``.
        band_floor (float): Minimum band width in normalized-loss units.
        fit_m (bool): Also fit the power-law exponent ``m`` (the paper fixes 0.05).
        tau_fraction (float, optional): Recorded for :meth:`ReferenceCurve.controls_mismatch`.
        tpp (float, optional): Recorded for :meth:`ReferenceCurve.controls_mismatch`.
        smoothing (int): Moving-average window (:func:`smooth_curve`) applied to each run before
            normalizing and recorded in the reference. The band then measures the spread of smoothed
            curves.
        final_loss (str): How each run's ``L(T)`` is found. ``'tail'``: :func:`estimate_final_loss`
            on the raw tail, as [SwC] divides by the (smoothed) final loss. ``'fit'``: a per-run
            scale fitted jointly with the shape (variable projection), i.e. ``L(T)`` is the fitted
            curve's value at ``t/T = 1``:

            .. math::

                \min_{b,q}\sum_r\sum_i w_r\big(\log L_{ri} - \log L_r(T)
                    - \log\hat\ell(\hat t_{ri})\big)^2, \qquad
                \log L_r(T) = \operatorname{mean}_i\big(\log L_{ri} - \log\hat\ell(\hat t_{ri})\big)

            which uses every point after ``fit_start`` instead of the last 2%, and so suits noisy,
            small-batch curves (an approximation of ours; see docs/collapse.md). The ``L(T)`` of a
            finished run is then ``predict_final_loss`` over its whole curve.

    Returns:
        ReferenceCurve: The fitted reference.
    """
    if not runs:
        raise ValueError('fit_reference needs at least one finished run.')
    if not 0.0 <= fit_start < 1.0 or n_bins < 1 or band_floor <= 0:
        raise ValueError('need 0 <= fit_start < 1, n_bins >= 1 and band_floor > 0.')
    if final_loss not in ('tail', 'fit'):
        raise ValueError(f"final_loss={final_loss!r} must be 'tail' or 'fit'.")
    ts, ells, weights = [], [], []
    for run in runs:
        # 'tail': L(T) from the raw tail (a trailing window ends (smoothing-1)/2 steps before T);
        # 'fit': normalized below, once the shape is known.
        final = estimate_final_loss(*run) if final_loss == 'tail' else 1.0
        t, ell = normalize_curve(*smooth_curve(run.steps, run.losses, smoothing), run.total_steps, final)
        keep = t >= fit_start
        if keep.sum() < 2:
            raise ValueError(f'a run has fewer than 2 points with t/T >= fit_start={fit_start}.')
        ts.append(t[keep])
        ells.append(ell[keep])
        weights.append(np.full(int(keep.sum()), 1.0 / math.sqrt(keep.sum())))
    t_all, ell_all, w_all = np.concatenate(ts), np.concatenate(ells), np.concatenate(weights)
    run_idx = np.repeat(np.arange(len(runs)), [t.size for t in ts])
    counts_per_run = np.bincount(run_idx)

    def unpack(p: np.ndarray) -> tuple[float, float, float]:
        return (p[0], p[1], p[2]) if fit_m else (_SURROGATE_M, p[0], p[1])

    def log_scales(r: np.ndarray) -> np.ndarray:
        """Per-run ``log L(T)`` that minimizes the squared residuals ``r - log L(T)`` (their mean)."""
        return np.bincount(run_idx, weights=r) / counts_per_run

    def residuals(p: np.ndarray) -> np.ndarray:
        r = np.log(ell_all) - np.log(_surrogate(t_all, schedule, *unpack(p)))
        return w_all * (r - log_scales(r)[run_idx] if final_loss == 'fit' else r)

    lower, upper = ([1e-4, 1e-6, 1e-3], [1.0, 1e3, 20.0]) if fit_m else ([1e-6, 1e-3], [1e3, 20.0])
    best = None
    for q0 in (0.5, 1.0, 2.0):
        x0 = [_SURROGATE_M, 0.3, q0] if fit_m else [0.3, q0]
        sol = optimize.least_squares(residuals, x0, bounds=(lower, upper), x_scale='jac')
        if best is None or sol.cost < best.cost:
            best = sol
    assert best is not None
    m, b, q = (float(v) for v in unpack(best.x))
    if final_loss == 'fit':
        ell_all = ell_all / np.exp(log_scales(np.log(ell_all) - np.log(_surrogate(t_all, schedule, m, b, q))))[run_idx]

    diff = ell_all - _surrogate(t_all, schedule, m, b, q)
    edges = np.linspace(fit_start, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, t_all, side='right') - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    rms = np.sqrt(np.bincount(idx, weights=diff**2, minlength=n_bins) / np.maximum(counts, 1))
    centers = 0.5 * (edges[:-1] + edges[1:])
    filled = counts > 0
    nearest = np.abs(centers[:, None] - centers[filled][None, :]).argmin(axis=1)
    sigma = np.maximum(rms[filled][nearest], band_floor)
    return ReferenceCurve(
        m=m,
        b=b,
        q=q,
        schedule=schedule,
        fit_start=fit_start,
        band_edges=tuple(float(e) for e in edges),
        band_sigma=tuple(float(s) for s in sigma),
        band_floor=band_floor,
        n_runs=len(runs),
        fit_rmse=float(np.sqrt(np.mean(diff**2))),
        tau_fraction=tau_fraction,
        tpp=tpp,
        smoothing=smoothing,
    )


@dataclass(frozen=True)
class Prediction:
    """Predicted final loss of a partial run.

    Attributes:
        final_loss (float): Point estimate of ``L(T)``.
        lower (float): Lower end of the interval.
        upper (float): Upper end of the interval.
        log_sigma (float): Standard error of ``log L(T)``.
        n_points (int): Points used in the alignment.
        fraction_used (float): Largest ``t/T`` used.
    """

    final_loss: float
    lower: float
    upper: float
    log_sigma: float
    n_points: int
    fraction_used: float


def _align(
    t: np.ndarray,
    y: np.ndarray,
    ref: ReferenceCurve,
    lo: float,
    hi: float,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares ``log L(T)`` aligning ``y`` on ``[lo, hi]`` with the reference.

    Minimizing :math:`\\sum_i (\\log L_i - \\log L(T) - \\log\\hat\\ell(\\hat t_i))^2` over the
    window gives the mean of :math:`r_i = \\log L_i - \\log\\hat\\ell(\\hat t_i)`.

    Returns:
        tuple: ``(log L(T), r_i, window mask)``.
    """
    window = (t >= lo) & (t <= hi)
    if window.sum() < 2:
        raise ValueError(
            f'need at least 2 logged points with {lo:.3f} <= t/T <= {hi:.3f} to align with the '
            'reference.',
        )
    r = np.log(y[window]) - np.log(ref(t[window]))
    return float(np.mean(r)), r, window


def predict_final_loss(
    steps: Sequence[float],
    losses: Sequence[float],
    total_steps: int,
    ref: ReferenceCurve,
    fraction_used: Optional[float] = None,
    ignore_before: Optional[float] = None,
    z: float = 2.0,
) -> Prediction:
    """Extrapolate ``L(T)`` from a partial curve, [SwC] Sec. 5 step 5.

    The divisor ``L(T)`` that best aligns the partial curve with the reference is the prediction:

    .. math::

        \\log \\hat L(T) = \\frac{1}{n}\\sum_{i} \\big(\\log L_i - \\log\\hat\\ell(\\hat t_i)\\big),
        \\qquad \\sigma^2 = \\frac{s_r^2}{n} + \\overline{(\\sigma_{band}/\\hat\\ell)^2}

    over the logged points with ``ignore_before <= t/T <= fraction_used``. The uncertainty (an
    approximation; the paper gives none) adds the standard error of the mean residual (assumes
    independent noise, so it is optimistic for smoothed curves) and the reference band over the
    window as a fully correlated shape error (a run whose shape differs from the reference by one
    band width shifts the estimate by that much). The interval is ``exp(+-z sigma)`` around the
    estimate.

    Args:
        steps (Sequence[float]): Logged steps of the partial run.
        losses (Sequence[float]): Training losses.
        total_steps (int): ``T`` of the full run.
        ref (ReferenceCurve): Reference with the run's LR schedule, TPP and tau.
        fraction_used (float, optional): Use only ``t/T <= fraction_used`` (default: all points),
            e.g. 0.1-0.3 as in the paper.
        ignore_before (float, optional): Drop noisy warmup points below this fraction
            (default ``ref.fit_start``).
        z (float): Interval half-width in standard errors.

    Returns:
        Prediction: The estimate and interval.
    """
    t, y = _validated(steps, losses, total_steps)
    lo = ref.fit_start if ignore_before is None else max(ignore_before, ref.fit_start)
    hi = float(t[-1]) if fraction_used is None else fraction_used
    log_final, r, window = _align(t, y, ref, lo, hi)
    shape_rel = ref.band(t[window]) / ref(t[window])
    sigma = math.sqrt(np.var(r, ddof=1) / r.size + np.mean(shape_rel**2))
    final = math.exp(log_final)
    return Prediction(
        final_loss=final,
        lower=final * math.exp(-z * sigma),
        upper=final * math.exp(z * sigma),
        log_sigma=sigma,
        n_points=int(r.size),
        fraction_used=float(t[window][-1]),
    )


def final_window_losses(
    steps: Sequence[float],
    losses: Sequence[float],
    total_steps: int,
    ref: ReferenceCurve,
    predicted_final_loss: float,
    window: float = 0.05,
) -> tuple[float, float]:
    """Measured and predicted mean training loss over the last ``window`` of a finished run.

    ``L(T)`` of a single noisy curve is itself an estimate (the last logged losses scatter by
    several percent with small batches). The mean raw loss over the last ``window`` of training
    is a model-free measurement; the prediction of the same quantity is
    :math:`\hat L(T)\cdot\operatorname{mean}_i \hat\ell(\hat t_i)` over the same steps.

    Args:
        steps (Sequence[float]): Logged steps of the finished run (raw, not smoothed).
        losses (Sequence[float]): Training losses.
        total_steps (int): ``T``.
        ref (ReferenceCurve): The reference the prediction used.
        predicted_final_loss (float): Predicted ``L(T)`` (e.g. :attr:`Prediction.final_loss`).
        window (float): Trailing fraction of the run to average over.

    Returns:
        tuple[float, float]: ``(measured mean, predicted mean)``.
    """
    t, y = _validated(steps, losses, total_steps)
    tail = t >= 1.0 - window
    if not tail.any() or t[-1] < (total_steps - 1) / total_steps:
        raise ValueError(f'need a finished run with points in the last {window:.0%} of training.')
    return float(np.mean(y[tail])), float(predicted_final_loss * np.mean(ref(t[tail])))


@dataclass(frozen=True, eq=False)  # array fields: element-wise equality is not meaningful here
class CollapseResidual:
    """Deviation of a run from the reference, point by point.

    Attributes:
        fractions (np.ndarray): ``t/T`` of each logged point.
        normalized (np.ndarray): ``L / L(T)`` with the ``final_loss`` below.
        reference (np.ndarray): :math:`\\hat\\ell(t/T)`.
        z (np.ndarray): ``(normalized - reference) / band``; NaN before ``fit_start`` (warmup is
            not monitored).
        final_loss (float): The ``L(T)`` used to normalize.
    """

    fractions: np.ndarray
    normalized: np.ndarray
    reference: np.ndarray
    z: np.ndarray
    final_loss: float

    @property
    def residual(self) -> np.ndarray:
        """``normalized - reference``: the collapse residual plotted in [SwC] Fig. 1 (right)."""
        return self.normalized - self.reference

    def out_of_band(self, threshold: float = 3.0) -> np.ndarray:
        """Boolean mask of points with ``|z| > threshold`` (NaN, i.e. warmup, is never out of band)."""
        with np.errstate(invalid='ignore'):
            return np.abs(self.z) > threshold

    def onset(self, threshold: float = 3.0, consecutive: int = 5) -> Optional[float]:
        """``t/T`` where the first run of ``consecutive`` out-of-band points starts, else None."""
        if consecutive < 1:
            raise ValueError('consecutive must be >= 1.')
        run = 0
        for i, flagged in enumerate(self.out_of_band(threshold)):
            run = run + 1 if flagged else 0
            if run == consecutive:
                return float(self.fractions[i - consecutive + 1])
        return None


def collapse_residual(
    steps: Sequence[float],
    losses: Sequence[float],
    total_steps: int,
    ref: ReferenceCurve,
    final_loss_estimate: Optional[float] = None,
    align_window: tuple[float, float] = (0.25, 0.5),
) -> CollapseResidual:
    """Residual of a (possibly in-progress) run against the reference, in units of the band.

    Normalizing needs ``L(T)`` before the run ends. Without ``final_loss_estimate`` this uses the
    paper's "early-align" strategy ([SwC] Sec. 4): ``L(T)`` is chosen so the curve best aligns
    with the reference over ``align_window`` (25-50% of training); until the run reaches the window,
    the points from ``ref.fit_start`` up to ``align_window[1]`` are used instead, and if fewer than two
    points lie there (sparse evaluations), every point from ``ref.fit_start`` on. Deviations that
    start after the window (like the numerics bug near 60% in the paper) then show as growing
    residuals.

    A point is *out of band* when
    :math:`|\\ell(\\hat t) - \\hat\\ell(\\hat t)| > k\\,\\sigma_{band}(\\hat t)` (``k = 3`` by
    default), i.e. outside the spread the reference runs themselves showed at that
    training fraction. A monitor should alert on ``N`` consecutive out-of-band evaluations
    (:meth:`CollapseResidual.onset`), not on single points, and should feed curves smoothed like
    the reference runs, since the band includes their logging noise.

    Args:
        steps (Sequence[float]): Logged steps.
        losses (Sequence[float]): Training losses.
        total_steps (int): ``T`` of the full run.
        ref (ReferenceCurve): Reference with the run's controls.
        final_loss_estimate (float, optional): ``L(T)`` to normalize with (e.g. from a scaling law:
            the paper's "estimate" strategy).
        align_window (tuple[float, float]): Early-align window in ``t/T``.

    Returns:
        CollapseResidual: Per-point residuals.
    """
    t, y = _validated(steps, losses, total_steps)
    if final_loss_estimate is None:
        # Widen the window until it holds two points: the paper's, then from fit_start, then everything.
        lo, hi = next(((a, b) for a, b in ((max(align_window[0], ref.fit_start), align_window[1]),
                                          (ref.fit_start, align_window[1]))
                       if np.count_nonzero((t >= a) & (t <= b)) >= 2), (ref.fit_start, 1.0))
        final_loss_estimate = math.exp(_align(t, y, ref, lo, hi)[0])
    normalized = y / final_loss_estimate
    reference = ref(t)
    z = (normalized - reference) / ref.band(t)
    return CollapseResidual(
        fractions=t,
        normalized=normalized,
        reference=reference,
        z=z,
        final_loss=float(final_loss_estimate),
    )
