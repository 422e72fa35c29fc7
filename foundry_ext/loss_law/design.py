r"""The LR terms of the loss laws at a set of steps, computed once per run and shared by every parameter value.

Both laws sum over the LR changes after the warmup, each weighted by a function of how far (in LR area, or in
steps) the evaluated step lies past the change. With :math:`\Delta_k = \eta_{k-1} - \eta_k` the change that takes
effect at update :math:`k` and :math:`S_k(s) = S(s) - S(k)` the area from update :math:`k` to step :math:`s`:

.. math::

    LD(s) = B \sum_{k < s} \Delta_k\, G\!\left(\eta_k^{-\gamma} S_k(s)\right), \qquad
    S_2(s) = \sum_{k < s} \Delta_k\, \frac{1 - \lambda^{s-k}}{1 - \lambda} .

Summed step by step that is :math:`O(n^2)` for a cosine run of :math:`n` steps. The changes are binned instead:
consecutive changes of one sign that no evaluated step separates form a bin (at most ``resolution`` bins across
the decaying part, plus one per evaluated step), and each bin acts as one change of its summed size placed at its
:math:`|\Delta|`-weighted mean area, step and :math:`\log\eta`. The error is of second order in a bin's width
against its distance from the step evaluated (checked against the exact sums in the tests). Only (step, bin)
pairs with the bin before the step are kept, as flat arrays, so a law evaluates with one ``bincount``.

LRs in a design are divided by a reference LR (the peak of the runs a law was fitted on), so that areas are in
"steps at the reference LR" and parameters do not depend on the LR's units. LRs below ``LR_FLOOR`` of the
reference are raised to it inside :math:`\eta^{-\gamma}` only, so that a decay to exactly zero stays finite.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from foundry_ext.loss_law.schedule import LRSchedule

log = logging.getLogger(__name__)

__all__ = ['LR_FLOOR', 'Design', 'build_design', 'design_chunks']

LR_FLOOR = 1e-4
_RESOLUTION = 512
_CHUNK = 512  # evaluated steps per design in design_chunks: pairs grow with steps x bins


@dataclass(frozen=True)
class Design:
    r"""The LR terms of one schedule at the steps ``steps`` (LRs divided by the reference LR).

    Attributes:
        steps (np.ndarray): Evaluated steps (may be fractional: the mean step of a window of logged points).
        area (np.ndarray): :math:`S(s)` at each step.
        drop (np.ndarray): Summed LR change :math:`\sum \Delta_k` of each bin (> 0 for a decrease).
        log_lr (np.ndarray): Weighted mean :math:`\log \eta_k` of each bin (floored at ``LR_FLOOR``).
        pair_point (np.ndarray): For each (step, bin) pair, the index of the step.
        pair_bin (np.ndarray): The index of the bin.
        pair_area (np.ndarray): :math:`S_k(s)`: the area from the bin to the step.
        pair_steps (np.ndarray): :math:`s - k`: the steps from the bin to the step.
    """

    steps: np.ndarray
    area: np.ndarray
    drop: np.ndarray
    log_lr: np.ndarray
    pair_point: np.ndarray
    pair_bin: np.ndarray
    pair_area: np.ndarray
    pair_steps: np.ndarray

    @property
    def size(self) -> int:
        """Number of evaluated steps."""
        return int(self.steps.size)

    def per_point(self, pair_values: np.ndarray) -> np.ndarray:
        """Sums values given per (step, bin) pair into one value per step."""
        return np.bincount(self.pair_point, weights=pair_values, minlength=self.size)


def build_design(schedule: LRSchedule, steps: np.ndarray, resolution: int = _RESOLUTION) -> Design:
    """Bins ``schedule``'s LR changes after its peak and pairs them with the steps they act on.

    Args:
        schedule (LRSchedule): The run's per-step LR, already divided by the reference LR.
        steps (np.ndarray): Increasing steps to evaluate, each in ``(0, schedule.n]``.
        resolution (int): Most bins across the decaying part, besides the cuts at evaluated steps.
    """
    steps = np.asarray(steps, dtype=float)
    lr = schedule.lr
    cumulative = schedule.cumulative
    area = np.interp(steps, np.arange(schedule.n + 1, dtype=float), cumulative)
    last = int(np.ceil(steps[-1])) if steps.size else 0
    k = np.arange(schedule.peak_step + 1, min(last, schedule.n))
    delta = lr[k - 1] - lr[k]
    keep = np.abs(delta) > 1e-12 * max(schedule.peak, 1e-300)
    k, delta = k[keep], delta[keep]
    if k.size == 0:
        empty = np.zeros(0)
        return Design(steps, area, empty, empty, np.zeros(0, int), np.zeros(0, int), empty, empty)
    # A change at update k acts on step s iff k < s: group the changes by the evaluated steps that separate them.
    group = np.searchsorted(steps, k, side='right')  # the first evaluated step past k
    width = max(1, int(np.ceil((k[-1] - k[0] + 1) / resolution)))
    chunk = (k - k[0]) // width
    sign = (delta < 0).astype(np.int64)
    key = np.stack([group, chunk, sign], axis=1)
    # Bins are runs of equal (group, chunk, sign) in k order.
    new_bin = np.concatenate([[True], np.any(key[1:] != key[:-1], axis=1)])
    bin_of = np.cumsum(new_bin) - 1
    n_bins = int(bin_of[-1]) + 1
    weight = np.abs(delta)
    total = np.bincount(bin_of, weights=weight, minlength=n_bins)
    drop = np.bincount(bin_of, weights=delta, minlength=n_bins)
    mean_area = np.bincount(bin_of, weights=weight * cumulative[k], minlength=n_bins) / total
    mean_step = np.bincount(bin_of, weights=weight * k, minlength=n_bins) / total
    floored = np.log(np.maximum(lr[k], LR_FLOOR))
    log_lr = np.bincount(bin_of, weights=weight * floored, minlength=n_bins) / total
    first_point = group[new_bin]  # every step from this index on lies after the bin
    reach = steps.size - first_point
    pair_bin = np.repeat(np.arange(n_bins), reach)
    offsets = np.arange(pair_bin.size) - np.repeat(np.cumsum(reach) - reach, reach)
    pair_point = np.repeat(first_point, reach) + offsets
    pair_area = np.maximum(area[pair_point] - mean_area[pair_bin], 0.0)
    pair_steps = np.maximum(steps[pair_point] - mean_step[pair_bin], 0.0)
    return Design(steps, area, drop, log_lr, pair_point, pair_bin, pair_area, pair_steps)


def design_chunks(schedule: LRSchedule, steps: np.ndarray, chunk: int = _CHUNK) -> list[Design]:
    """:func:`build_design` over consecutive groups of at most ``chunk`` steps, so that memory stays bounded for
    any number of steps (each group cuts the bins only at its own steps)."""
    steps = np.asarray(steps, dtype=float)
    return [build_design(schedule, steps[i:i + chunk]) for i in range(0, max(steps.size, 1), chunk)]
