"""The controls of loss-curve collapse: tokens per parameter, the AdamW timescale ``tau`` and the weight decay for a
target ``tau``, from explicit numbers or an LLM-Foundry training YAML.

[SwC] (Bergsma et al. 2025, arXiv:2509.25087) shows that training-loss curves divided by their final loss collapse
across model sizes when the LR schedule, ``TPP = D/N`` and the normalized AdamW timescale ``tau`` are held fixed.
This module holds the one table of how each optimizer applies weight decay and the one rule for a schedule's peak
multiplier (both also used by ``collapse_monitor``), and counts a model's parameters by building it through
Foundry's registry on the meta device (nothing is allocated).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from foundry_ext.core.errors import ConfigError, fail
from foundry_ext.schedulers.time_spec import batches_in

__all__ = [
    'CONTROL_KEYS',
    'Controls',
    'ParamCount',
    'TrainingBudget',
    'count_parameters',
    'duration_to_steps',
    'from_foundry_config',
    'optimizer_class_name',
    'per_step_decay',
    'schedule_peak',
    'weight_decay_for_tau_fraction',
]

log = logging.getLogger(__name__)

# How each optimizer class applies weight decay per step (docs/collapse.md):
#   'decoupled': p *= 1 - (lr_t / initial_lr) * weight_decay (composer/optim/decoupled_weight_decay.py and
#                llmfoundry/optim/lion.py), so at the schedule's peak the decay is peak * weight_decay;
#   'lr_scaled': torch.optim.AdamW, p *= 1 - lr_t * weight_decay.
_DECAY_CONVENTION = {
    'DecoupledAdamW': 'decoupled',
    'DecoupledSGDW': 'decoupled',
    'DecoupledLionW': 'decoupled',
    'AdamW': 'lr_scaled',
}
# [SwC] and [PL] study AdamW only; Lion shares the EMA form (SwC App. A hypothesises that tau carries over).
_ADAMW_FAMILY = frozenset({'DecoupledAdamW', 'AdamW'})


def optimizer_class_name(name: str) -> str:
    """The optimizer class that Foundry's registry builds for ``optimizer.name``, if its weight decay is known.

    ``adamw`` is torch's ``AdamW``, which Foundry registers only through a plugin.

    Raises:
        ConfigError: For a name that is not registered or whose weight-decay convention is unknown.
    """
    from llmfoundry import registry

    registered = registry.optimizers.get_all()
    cls_name = registered[name].__name__ if name in registered else ('AdamW' if name == 'adamw' else None)
    if cls_name not in _DECAY_CONVENTION:
        known = sorted(n for n, f in registered.items() if f.__name__ in _DECAY_CONVENTION) + ['adamw']
        fail(f'optimizer.name={name!r} has no known weight-decay convention; supported: {known}.')
    return cls_name


def per_step_decay(optimizer_class: str, weight_decay: float, lr: float, peak: float = 1.0) -> Optional[float]:
    """The weight decay per step at the schedule's peak, ``eta*lambda`` in [SwC]'s torch-AdamW terms.

    .. math::

        \\eta\\lambda = p\\,\\lambda_{\\text{YAML}} \\ \\text{(decoupled)}, \\qquad
        \\eta\\lambda = p\\,\\eta_0\\,\\lambda_{\\text{YAML}} \\ \\text{(torch AdamW)}

    with :math:`p` the schedule's peak multiplier and :math:`\\eta_0` the optimizer's (initial) LR.

    Args:
        optimizer_class (str): The optimizer's class name, e.g. ``'DecoupledAdamW'``.
        weight_decay (float): Its ``weight_decay``.
        lr (float): Its initial LR (the LR at a multiplier of 1).
        peak (float): The schedule's largest multiplier (:func:`schedule_peak`).

    Returns:
        float | None: The decay per step, or None for an optimizer whose convention is unknown.
    """
    convention = _DECAY_CONVENTION.get(optimizer_class)
    if convention is None:
        return None
    return peak * weight_decay * (lr if convention == 'lr_scaled' else 1.0)


def schedule_peak(scheduler: Any) -> float:
    """The largest LR multiplier of a ComposerScheduler: ``linear_decay_with_warmup`` peaks at ``alpha_i`` and
    ``constant_with_warmup`` at ``alpha``; the others (cosine, WSD and the budget schedules) at 1."""
    from composer.optim import ConstantWithWarmupScheduler, LinearWithWarmupScheduler

    if isinstance(scheduler, LinearWithWarmupScheduler):
        return float(scheduler.alpha_i)
    if isinstance(scheduler, ConstantWithWarmupScheduler):
        return float(scheduler.alpha)
    return 1.0


def duration_to_steps(max_duration: Any, global_train_batch_size: int, max_seq_len: int) -> int:
    """Optimizer steps Composer runs for ``max_duration`` (``'1000ba'``, ``'2e9tok'``, ``'20000sp'``).

    Token and sample durations round up to whole batches (:func:`foundry_ext.schedulers.time_spec.batches_in`);
    every sample is taken to hold ``max_seq_len`` tokens (packed pre-training data).

    Raises:
        ConfigError: For epochs, ``dur`` or anything else the YAML alone cannot turn into steps.
    """
    return batches_in(max_duration, global_train_batch_size, global_train_batch_size * max_seq_len)


CONTROL_KEYS = ('tau', 'tpp', 'params')


@dataclass(frozen=True)
class Controls:
    """The collapse controls of one run, as far as they are known ([SwC] Sec. 3: curves collapse when the LR
    schedule, TPP and ``tau`` match; a size-aware reference also weighs the model size).

    Attributes:
        tau (float, optional): AdamW timescale as a fraction of training, [SwC] Eq. (2).
        tpp (float, optional): Tokens per parameter ``D/N``, every parameter counted.
        params (float, optional): Parameters ``N``.
    """

    tau: Optional[float] = None
    tpp: Optional[float] = None
    params: Optional[float] = None

    def __post_init__(self) -> None:
        for key in CONTROL_KEYS:
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                fail(f'controls.{key}={value!r} must be a finite number > 0 (or unknown).')

    def known(self) -> dict[str, float]:
        """The known controls, ``{key: value}``."""
        return {k: float(getattr(self, k)) for k in CONTROL_KEYS if getattr(self, k) is not None}


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts of a model (tied weights counted once).

    Attributes:
        total (int): All trainable parameters: ``sum(p.numel() for p in model.parameters())``.
        non_embedding (int): ``total`` minus the token and positional embeddings (an untied output head stays).
        token_embedding (int): Parameters of the token embedding (the largest ``nn.Embedding``).
        position_embedding (int): Parameters of the other embeddings (learned positions; 0 without).
        lm_head (int): Parameters of an untied output projection (``lm_head``; 0 when tied).
    """

    total: int
    non_embedding: int
    token_embedding: int
    position_embedding: int
    lm_head: int


def count_parameters(model_cfg: Mapping[str, Any]) -> ParamCount:
    """Counts a Foundry model's parameters by building it from the registry on the meta device.

    ``llmfoundry.utils.builders.build_composer_model(name, cfg, tokenizer=None)`` with ``init_device: meta``
    allocates no memory, so even the 7B recipe counts in about two seconds. For ``mpt_causal_lm`` the loss
    function and attention implementation are set to the torch ones (they hold no parameters, and the fused or
    flash versions need a GPU to construct). Embeddings are the ``nn.Embedding`` modules; the output head is the
    module named ``lm_head``.

    Args:
        model_cfg (Mapping[str, Any]): The ``model:`` section of a resolved YAML (``name`` defaults to
            ``mpt_causal_lm``).

    Raises:
        ConfigError: If the model cannot be built without downloads or a GPU, naming the fix.
    """
    import torch
    from llmfoundry.utils.builders import build_composer_model

    cfg = copy.deepcopy(dict(model_cfg))
    name = cfg.pop('name', 'mpt_causal_lm')
    cfg['init_device'] = 'meta'
    if name == 'mpt_causal_lm':
        cfg['loss_fn'] = 'torch_crossentropy'
        cfg['attn_config'] = {**(cfg.get('attn_config') or {}), 'attn_impl': 'torch'}
    try:
        model = build_composer_model(name, cfg, tokenizer=None)
    except Exception as err:  # whatever the model's constructor refuses is the user's config
        raise ConfigError(
            f'model.name={name!r}: could not build the model on the meta device to count its parameters ({err}). '
            'Fix the model section, or pass param_count=ParamCount(...) (with the command line: give the run a '
            'run.json with "params").') from err
    total = sum(p.numel() for p in model.parameters())
    embeddings = sorted((m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding)),
                        reverse=True)
    lm_head = sum(p.numel() for n, p in model.named_parameters() if 'lm_head' in n.split('.'))
    token = embeddings[0] if embeddings else 0
    return ParamCount(total=total, non_embedding=total - sum(embeddings), token_embedding=token,
                      position_embedding=sum(embeddings) - token, lm_head=lm_head)


@dataclass(frozen=True)
class TrainingBudget:
    """The quantities [SwC] Table 1 uses to describe a run, from explicit numbers.

    Attributes:
        total_params (int): All parameters, embeddings included. [SwC] computes ``TPP = D/N`` with this count
            (Tables 2/8/10: Celerity-300M lists 2.71e8 parameters, both untied 128256 x 640 embedding matrices
            included, and trains 5.4e9 tokens at 20 TPP).
        non_embedding_params (int): Parameters without token and positional embeddings.
        global_train_batch_size (int): Samples per optimizer step.
        max_seq_len (int): Tokens per sample.
        total_steps (int): Optimizer steps ``T`` of the whole run.
        peak_lr (float): The YAML ``optimizer.lr``: the LR at a schedule multiplier of 1.
        weight_decay (float): YAML ``optimizer.weight_decay``.
        optimizer (str): LLM-Foundry optimizer name (``decoupled_adamw``, ``decoupled_lionw`` or ``adamw``); it
            decides how ``weight_decay`` turns into a per-step decay (:func:`per_step_decay`).
        peak_multiplier (float): The schedule's largest multiplier (:func:`schedule_peak`). The LR at its peak is
            ``peak_multiplier * peak_lr``, and ``decoupled_adamw``'s decay there ``peak_multiplier * weight_decay``.
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
                fail(f'TrainingBudget.{name} must be positive, got {getattr(self, name)}.')
        if self.peak_lr <= 0 or self.weight_decay < 0 or self.peak_multiplier <= 0:
            fail('TrainingBudget.peak_lr and peak_multiplier must be positive and weight_decay non-negative.')
        if optimizer_class_name(self.optimizer) not in _ADAMW_FAMILY:
            log.warning('tau for %s follows the AdamW EMA form by analogy; [SwC]/[PL] establish it for AdamW only.',
                        self.optimizer)

    @property
    def controls(self) -> Controls:
        """The run's collapse controls (``tau`` is unknown, i.e. infinite, without weight decay)."""
        tau = self.tau_fraction
        return Controls(tau=tau if math.isfinite(tau) else None, tpp=self.tpp, params=self.total_params)

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
        """The per-step decay at peak LR, ``eta * lambda`` in torch-AdamW terms ([SwC] Sec. 2; :func:`per_step_decay`).

        For ``decoupled_adamw`` (and ``decoupled_lionw``) it is ``peak_multiplier * weight_decay`` and does not
        depend on the LR (so also not on per-group muP LR scaling); for torch ``adamw`` it is
        ``peak_multiplier * peak_lr * weight_decay``.
        """
        decay = per_step_decay(optimizer_class_name(self.optimizer), self.weight_decay, self.peak_lr,
                               self.peak_multiplier)
        assert decay is not None  # the class was validated at construction
        return decay

    @property
    def tau_iter(self) -> float:
        """AdamW EMA timescale in steps, :math:`\\tau_{iter} = 1/(\\eta\\lambda)` ([SwC] Sec. 2)."""
        return math.inf if self.eta_lambda == 0 else 1.0 / self.eta_lambda

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

    with :math:`p` the schedule's peak multiplier (usually 1). [SwC] Sec. 5 recommends tuning with ``tau`` fixed
    (adjusting weight decay when LR or batch size change) so that partial curves keep their order.

    Args:
        target (float): Desired ``tau`` as a fraction of the run (> 0).
        budget (TrainingBudget): The run; its ``weight_decay`` is ignored.
    """
    if target <= 0:
        fail(f'target tau fraction must be positive, got {target}.')
    unit = per_step_decay(optimizer_class_name(budget.optimizer), 1.0, budget.peak_lr, budget.peak_multiplier)
    assert unit is not None
    return 1.0 / (target * budget.total_steps * unit)


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in mapping or mapping[key] is None:
        fail(f'{where}{key} is missing from the training config; set it in the YAML.')
    return mapping[key]


def _number(value: Any, key: str, kind: type = float) -> Any:
    """``kind(value)``, or a ConfigError naming the YAML key."""
    try:
        return kind(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f'{key}={value!r} is not a number{" (a whole one)" if kind is int else ""}; '
                          'set it to one in the YAML.') from err


def from_foundry_config(cfg: Mapping[str, Any], param_count: Optional[ParamCount] = None) -> TrainingBudget:
    """Build a :class:`TrainingBudget` from a resolved LLM-Foundry training config.

    Args:
        cfg (Mapping[str, Any]): The training YAML as a plain dict with variables interpolated. Reads ``model``,
            ``optimizer.{name, lr, weight_decay}``, ``max_duration``, ``global_train_batch_size``, ``max_seq_len``
            (falling back to ``variables.max_seq_len`` and ``model.max_seq_len``) and the ``scheduler``, which is
            built through Foundry's registry for its peak multiplier.
        param_count (ParamCount, optional): Parameter counts to use instead of building ``model``
            (:func:`count_parameters`).

    Raises:
        ConfigError: Naming the YAML key and the fix when a key is missing, a unit is unsupported, or the
            optimizer's weight-decay convention is unknown.
    """
    from foundry_ext.schedulers.preview import yaml_scheduler

    optimizer = _require(cfg, 'optimizer', '')
    name = _require(optimizer, 'name', 'optimizer.')
    lr = _number(_require(optimizer, 'lr', 'optimizer.'), 'optimizer.lr')
    if optimizer.get('weight_decay') is None:
        fail('optimizer.weight_decay is missing; its default differs between optimizers (DecoupledAdamW 1e-5, '
             'torch AdamW 1e-2), so set it explicitly in the YAML.')
    batch = _number(_require(cfg, 'global_train_batch_size', ''), 'global_train_batch_size', int)
    seq_len = cfg.get('max_seq_len') or (cfg.get('variables') or {}).get('max_seq_len') or (
        cfg.get('model') or {}).get('max_seq_len')
    if seq_len is None:
        fail('max_seq_len is missing; set max_seq_len (or variables.max_seq_len) in the YAML.')
    seq_len = _number(seq_len, 'max_seq_len', int)
    steps = duration_to_steps(_require(cfg, 'max_duration', ''), batch, seq_len)
    if param_count is None:
        param_count = count_parameters(_require(cfg, 'model', ''))
    peak = schedule_peak(yaml_scheduler(cfg['scheduler'])) if cfg.get('scheduler') else 1.0
    if peak <= 0:
        fail(f'scheduler={dict(cfg["scheduler"])} peaks at an LR multiplier of {peak:g}; it must be positive.')
    return TrainingBudget(
        total_params=param_count.total,
        non_embedding_params=param_count.non_embedding,
        global_train_batch_size=batch,
        max_seq_len=seq_len,
        total_steps=steps,
        peak_lr=lr,
        weight_decay=_number(optimizer['weight_decay'], 'optimizer.weight_decay'),
        optimizer=str(name),
        peak_multiplier=peak,
    )
