r"""A compact summary of an Adam-family optimizer's state, exact under sharding and cheap to compute.

For each element :math:`i` of a parameter whose optimizer state holds ``exp_avg`` (:math:`m`),
``exp_avg_sq`` (:math:`v`) and ``step`` (:math:`t`), with the parameter group's :math:`\beta_1, \beta_2,
\epsilon`, the *preconditioner* is

.. math::

    f_i = \frac{1}{(1 - \beta_1^t)\,\big(\sqrt{v_i / (1 - \beta_2^t)} + \epsilon\big)}

(with ``amsgrad``, :math:`v` in :math:`f` is the running maximum ``max_exp_avg_sq``, as in the update) and the
*effective step* at learning rate :math:`\eta` is :math:`e_i = \eta f_i`. This is exactly the factor
by which ``decoupled_adamw`` (and torch's ``Adam``/``AdamW``) multiply the first moment in their update,
:math:`\Delta\theta_i = -e_i m_i` (weight decay aside), so :math:`e_i` is the per-element learning rate Adam
really applies: the quantity a resume with a higher LR multiplies. :math:`f` does not depend on the LR, which
is why it is what we histogram: the effective step at any LR is :math:`\eta` times its quantiles.

Per parameter group the summary holds: the number of elements, their mean Adam step count, the mean of
:math:`v`, the 10/50/90% quantiles of :math:`f`, the RMS of :math:`f m` (the Adam update per unit LR, so
:math:`\eta \cdot \mathrm{RMS}(f m)` is the RMS of the last update, weight decay excluded), the RMS of the
parameters, and the number of non-finite values of :math:`f m`.

**Sharding.** Every quantity is a sum over elements (counts, sums of :math:`v`, of :math:`(f m)^2`, of
:math:`\theta^2`, and a histogram of :math:`\log_{10} f` in fixed bins), computed on the local tensors and
all-reduced once (one ``float64`` tensor per call, SUM): no tensor is ever gathered. This is exact for plain
tensors (no sharding), FSDP1 shards (flat or ``use_orig_params`` views; a ``FlatParameter``'s padding is left
out) and DTensors (FSDP2: the local shard; mesh dimensions with a ``Replicate`` placement are counted on their
first coordinate only, so HSDP replicas are not double-counted). Under DDP every rank holds the whole state,
so its local sums are already the run's: summarize without the reduce (``reduce=False``), or every sum, the
counts included, is multiplied by the world size. FSDP1's ``HYBRID_SHARD`` replicas are plain tensors too, so
their counts are multiplied by the number of replicas (the ratios are not). Histogram counts are integers and
add up exactly, so the quantiles of a sharded run equal those of one process; sums agree to floating-point
rounding.

**Quantile accuracy.** :math:`\log_{10} f` is binned in [``LOG10_MIN``, ``LOG10_MAX``] with ``BINS_PER_DECADE``
bins per decade (values outside land in the edge bins), and a quantile is interpolated linearly inside its
bin, so it is off by at most one bin: 0.02 decades, i.e. within 4.7% of the exact quantile.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Optional, Sequence

import torch
from composer.utils import dist

from foundry_ext.algorithms.schedule_lookahead import lr_ratio

log = logging.getLogger(__name__)

__all__ = [
    'BINS_PER_DECADE',
    'LOG10_MAX',
    'LOG10_MIN',
    'QUANTILES',
    'GroupSummary',
    'effective_step_lines',
    'local_sums',
    'reduce_sums',
    'summarize',
    'summarize_optimizer',
]

QUANTILES = (0.1, 0.5, 0.9)
_MEDIAN = QUANTILES.index(0.5)
LOG10_MIN = -4.0  # f = 1e-4: |v_hat| ~ 1e8, far beyond any sane gradient scale
LOG10_MAX = 12.0  # f = 1e12: above 1/eps for eps >= 1e-12, i.e. above the v = 0 elements
BINS_PER_DECADE = 50
_NUM_BINS = int((LOG10_MAX - LOG10_MIN) * BINS_PER_DECADE)
# Columns of the per-group sums: count, sum(step), sum(v), sum((f m)^2), sum(theta^2), non-finite, histogram.
_SCALARS = 6


@dataclasses.dataclass(frozen=True)
class GroupSummary:
    """The optimizer-state summary of one parameter group (see the module docstring for the definitions).

    Attributes:
        numel (int): Elements with optimizer state.
        mean_step (float): Their mean Adam step count :math:`t`.
        v_mean (float): Mean of ``exp_avg_sq``.
        precond_quantiles (tuple[float, ...]): Quantiles of :math:`f` at :data:`QUANTILES`.
        update_rms_per_lr (float): RMS of :math:`f m`.
        param_rms (float): RMS of the parameters.
        nonfinite (int): Elements whose :math:`f m` is NaN or infinite.
    """
    numel: int
    mean_step: float
    v_mean: float
    precond_quantiles: tuple[float, ...]
    update_rms_per_lr: float
    param_rms: float
    nonfinite: int

    def effective_step(self, lr: float) -> tuple[float, ...]:
        """Quantiles of the effective step :math:`\\eta f` at learning rate ``lr``."""
        return tuple(lr * q for q in self.precond_quantiles)

    def update_to_param(self, lr: float) -> float:
        """RMS of the Adam update at ``lr`` over the RMS of the parameters (``nan`` if the parameters are 0)."""
        return lr * self.update_rms_per_lr / self.param_rms if self.param_rms > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values, for checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> 'GroupSummary':
        return cls(**{**values, 'precond_quantiles': tuple(values['precond_quantiles'])})


def _local(tensor: torch.Tensor, param: torch.Tensor) -> Optional[torch.Tensor]:
    """This rank's own elements of ``tensor`` (state or parameter) as a flat view, or None if it owns none."""
    from torch.distributed.tensor import DTensor

    if isinstance(tensor, DTensor):
        coordinate = tensor.device_mesh.get_coordinate()
        if coordinate is None:  # this rank is not in the tensor's mesh
            return None
        if any(p.is_replicate() and coordinate[d] != 0 for d, p in enumerate(tensor.placements)):
            return None  # a replica of elements another rank already counts
        tensor = tensor.to_local()
    flat = tensor.detach().reshape(-1)
    padded = getattr(param, '_shard_numel_padded', 0)  # FSDP1 FlatParameter: zeros appended to the last shard
    return flat[:flat.numel() - padded] if padded else flat


def local_sums(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """This rank's per-group sums, shape ``(num_groups, 6 + bins)``, float64, on the optimizer state's device.

    Parameters without ``exp_avg``/``exp_avg_sq``/``step`` in their state (no step taken yet, or not an
    Adam-family optimizer) contribute nothing.
    """
    device = next((s['exp_avg_sq'].device for s in optimizer.state.values() if 'exp_avg_sq' in s),
                  torch.device('cpu'))
    sums = torch.zeros(len(optimizer.param_groups), _SCALARS + _NUM_BINS, dtype=torch.float64, device=device)
    for g, group in enumerate(optimizer.param_groups):
        beta1, beta2 = group['betas']
        for param in group['params']:
            state = optimizer.state.get(param, {})
            if not {'exp_avg', 'exp_avg_sq', 'step'} <= state.keys():
                continue
            v = _local(state['exp_avg_sq'], param)
            if v is None or v.numel() == 0:
                continue
            v = v.float()
            # amsgrad divides by the running maximum of v, so that is what sets the preconditioner.
            denominator = (_local(state['max_exp_avg_sq'], param).float()
                           if group.get('amsgrad') and 'max_exp_avg_sq' in state else v)
            m = _local(state['exp_avg'], param).float()
            theta = _local(param, param).float()
            # Tensor arithmetic on the step keeps this free of host-device syncs.
            step = torch.as_tensor(state['step'], dtype=torch.float64, device=v.device)
            bias1, bias2 = 1 - beta1**step, 1 - beta2**step
            precond = (denominator / bias2.float()).sqrt_().add_(group['eps']).mul_(bias1.float()).reciprocal_()
            update = precond * m
            row = sums[g]
            row[0] += v.numel()
            row[1] += (step * v.numel()).to(device)
            row[2] += v.sum(dtype=torch.float64).to(device)
            row[3] += update.square().sum(dtype=torch.float64).to(device)
            row[4] += theta.square().sum(dtype=torch.float64).to(device)
            row[5] += (~torch.isfinite(update)).sum().to(device)
            # histc skips NaN; clamping puts out-of-range values (and +-inf) into the edge bins.
            logs = precond.log10_().clamp_(LOG10_MIN, LOG10_MAX)
            row[_SCALARS:] += torch.histc(logs, bins=_NUM_BINS, min=LOG10_MIN, max=LOG10_MAX).to(device,
                                                                                                torch.float64)
    return sums


def reduce_sums(sums: torch.Tensor) -> torch.Tensor:
    """All-reduces (SUM) the per-group sums across ranks, in place; a no-op in a single process."""
    if dist.get_world_size() > 1:
        dist.all_reduce(sums, reduce_operation='SUM')
    return sums


def _quantile(hist: Sequence[float], q: float) -> float:
    total = sum(hist)
    if total == 0:
        return math.nan
    target, cumulative = q * total, 0.0
    width = 1.0 / BINS_PER_DECADE
    for b, count in enumerate(hist):
        if count > 0 and cumulative + count >= target:
            return 10**(LOG10_MIN + width * (b + (target - cumulative) / count))
        cumulative += count
    return 10**LOG10_MAX


def summarize(sums: torch.Tensor) -> list[GroupSummary]:
    """Turns (reduced) per-group sums into one :class:`GroupSummary` per group."""
    summaries = []
    for row in sums.cpu().tolist():
        count = row[0]
        hist = row[_SCALARS:]
        summaries.append(
            GroupSummary(
                numel=int(count),
                mean_step=row[1] / count if count else math.nan,
                v_mean=row[2] / count if count else math.nan,
                precond_quantiles=tuple(_quantile(hist, q) for q in QUANTILES),
                update_rms_per_lr=math.sqrt(row[3] / count) if count else math.nan,
                param_rms=math.sqrt(row[4] / count) if count else math.nan,
                nonfinite=int(row[5]),
            ))
    return summaries


def summarize_optimizer(optimizer: torch.optim.Optimizer, reduce: bool = True,
                        device: Optional[torch.device] = None) -> list[GroupSummary]:
    """The summary of every parameter group of ``optimizer``.

    Args:
        optimizer (torch.optim.Optimizer): An Adam-family optimizer (``betas``, ``eps`` in its groups).
        reduce (bool): All-reduce across ranks (a collective: every rank must call it). False summarizes only
            this rank's elements.
        device (torch.device, optional): Where to reduce, e.g. the rank's GPU for NCCL; every rank must use
            the same kind of device, also a rank that holds no optimizer state. Default: the state's device.
    """
    sums = local_sums(optimizer)
    if device is not None:
        sums = sums.to(device)
    return summarize(reduce_sums(sums) if reduce else sums)


def effective_step_lines(lines: list[str], now: list[GroupSummary], saved: Optional[list[GroupSummary]],
                         saved_lr: Sequence[float], plan: list[list[float]], group: int) -> float:
    """Appends to ``lines`` how the median effective step of ``group`` changes from the save (``saved`` summary at
    ``saved_lr``, else ``now``) to the highest LR of the resumed ``plan``, and returns that ratio (NaN without
    Adam state)."""
    quantiles = '/'.join(f'p{int(q * 100)}' for q in QUANTILES)
    current = now[group]
    if current.numel == 0:
        lines.append('  effective step: the optimizer has no Adam state after the load (not in the checkpoint, '
                     'or dropped by load_ignore_keys): Adam restarts from v = 0 at the resumed LR')
        return math.nan
    before = saved[group] if saved else current
    eff_before = before.effective_step(saved_lr[group])
    eff_after = current.effective_step(max(plan[group]))
    eff_ratio = lr_ratio(eff_after[_MEDIAN], eff_before[_MEDIAN])
    lines.append(f'  effective step lr/((1-b1^t)(sqrt(v_hat)+eps)) {quantiles}: '
                 f'{_joined(eff_before)} at save -> {_joined(eff_after)} '
                 f'at the highest resumed LR (x{eff_ratio:.3g})')
    return eff_ratio


def _joined(values: Sequence[float]) -> str:
    return '/'.join(f'{v:.3g}' for v in values)
