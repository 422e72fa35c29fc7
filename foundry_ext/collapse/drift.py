"""The size-aware part of a reference: how each reference run's normalized curve deviates from the collapsed
curve, and the deviation expected for a run with other controls.

[SwC] (Bergsma et al. 2025, arXiv:2509.25087) Sec. 5 and App. D let the surrogate's parameters depend on the
controls (``b`` on ``tau``, ``q`` on TPP, Eq. 5) so that a reference fitted on small runs describes larger ones.
Across real families the residual drift is neither monotone nor a power law in one control (docs/collapse.md
measures it), so here it is interpolated instead of parametrized: each reference run ``r`` keeps its smoothed
log-deviation :math:`\\rho_r(\\hat t)` from the collapsed curve, and a run with controls :math:`x` gets the
kernel-weighted mean (Nadaraya-Watson)

.. math::

    \\delta(\\hat t; x) = \\frac{\\sum_r w_r \\rho_r(\\hat t)}{\\sum_r w_r}, \\qquad
    w_r = \\exp\\Big(-\\tfrac12 \\sum_k \\big(\\tfrac{\\log x_{rk} - \\log x_k}{h_k}\\big)^2\\Big)

over the controls ``k`` (``tau``, TPP, parameters) that differ between the reference runs. The reference for
that run is :math:`\\hat\\ell(\\hat t) e^{\\delta(\\hat t; x) - \\delta(1; x)}` (so that it ends at 1; see
:meth:`foundry_ext.collapse.reference.ReferenceCurve.for_controls`): the runs with the nearest controls weigh most,
and beyond the range of the reference runs the nearest ones decide. The band is the leave-one-out error of this
interpolation: how far each reference run lies from what the others predict for its controls.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from foundry_ext.collapse.controls import CONTROL_KEYS, Controls

log = logging.getLogger(__name__)

__all__ = ['DEFAULT_BANDWIDTHS', 'ShapeDrift', 'shape_drift']

# Kernel widths in natural-log units of each control: 30% in TPP or tau, a factor of 2 in size. Chosen on the
# SlimPajama/OpenWebText2 cosine families (docs/collapse.md), before the WSD families were looked at.
DEFAULT_BANDWIDTHS = {'tau': 0.3, 'tpp': 0.3, 'params': 0.7}
# Controls whose log-values differ by less than this across the reference runs do not vary.
_SAME = 1e-6


@dataclass(frozen=True)
class ShapeDrift:
    """Per-run deviations of the reference runs from the collapsed curve, on a grid of ``t/T``.

    Attributes:
        grid (tuple[float, ...]): Bin centres in ``t/T`` where the deviations are tabulated.
        controls (tuple[Controls, ...]): Each reference run's controls.
        residuals (tuple[tuple[float, ...], ...]): Each run's mean ``log(ell / ell_hat)`` per bin.
        bandwidths (tuple[tuple[str, float], ...]): Kernel width per control, in natural-log units.
    """

    grid: tuple[float, ...]
    controls: tuple[Controls, ...]
    residuals: tuple[tuple[float, ...], ...]
    bandwidths: tuple[tuple[str, float], ...]

    @property
    def keys(self) -> tuple[str, ...]:
        """The controls known for every reference run that differ between them."""
        out = []
        for key in CONTROL_KEYS:
            values = [c.known().get(key) for c in self.controls]
            if all(v is not None for v in values) and np.ptp(np.log(values)) > _SAME:
                out.append(key)
        return tuple(out)

    def weights(self, controls: Optional[Controls], exclude: Optional[int] = None) -> np.ndarray:
        """Kernel weights of the reference runs for a run with ``controls`` (uniform over what it does not know)."""
        known = controls.known() if controls is not None else {}
        widths = dict(self.bandwidths)
        d2 = np.zeros(len(self.controls))
        for key in self.keys:
            if key in known:
                mine = np.log([c.known()[key] for c in self.controls])
                d2 += ((mine - math.log(known[key])) / widths[key])**2
        if exclude is not None:
            d2[exclude] = np.inf
        w = np.exp(-0.5 * (d2 - np.min(d2)))  # relative to the nearest run: no underflow far away
        return w / w.sum()

    def correction(self, controls: Optional[Controls], exclude: Optional[int] = None) -> np.ndarray:
        """:math:`\\delta(\\hat t; x)` on :attr:`grid`."""
        return self.weights(controls, exclude) @ np.asarray(self.residuals)

    def extrapolation(self, controls: Optional[Controls]) -> np.ndarray:
        """:math:`\\epsilon(\\hat t; x)` on :attr:`grid`: the error expected of :meth:`correction` for a run beyond
        the reference runs' controls (0 within their range, or without controls).

        The interpolation extrapolates flat: beyond the range the nearest run decides, and a trend with size goes
        on unmodelled (modelling it hurt held-out splits: docs/collapse.md). What flat extrapolation costs is
        measured on that nearest run: its leave-one-out error :math:`e(\\hat t)` (its deviation less what the other
        runs predict for it) over the distance :math:`h` from it to the kernel-weighted mean of the others' controls
        (where that prediction stands: for a deviation linear in the controls, :math:`e/h` is its slope), scaled to
        the target's distance :math:`D` beyond the range (distances in kernel widths, over the controls that vary):

        .. math::

            \\epsilon(\\hat t; x) = e(\\hat t)\\, D / h
        """
        known = controls.known() if controls is not None else {}
        keys = [key for key in self.keys if key in known]
        if not keys:
            return np.zeros(len(self.grid))
        widths = dict(self.bandwidths)
        runs = np.array([[math.log(c.known()[k]) / widths[k] for k in keys] for c in self.controls])
        x = np.array([math.log(known[k]) / widths[k] for k in keys])
        beyond = float(np.linalg.norm(np.maximum(x - runs.max(axis=0), 0) + np.maximum(runs.min(axis=0) - x, 0)))
        if beyond <= 0:
            return np.zeros(len(self.grid))
        edge = int(np.argmin(np.linalg.norm(runs - x, axis=1)))
        weights = self.weights(self.controls[edge], exclude=edge)
        step = float(np.linalg.norm(weights @ runs - runs[edge]))
        if step <= 1e-9:  # the others stand where it stands: no trend to measure
            return np.zeros(len(self.grid))
        error = np.asarray(self.residuals[edge]) - weights @ np.asarray(self.residuals)
        return error * beyond / step

    def loo_rms(self) -> np.ndarray:
        """Per grid point, the RMS over reference runs of their deviation from what the other runs predict."""
        res = np.asarray(self.residuals)
        errors = [res[i] - self.correction(c, exclude=i) for i, c in enumerate(self.controls)]
        return np.sqrt(np.mean(np.square(errors), axis=0))

    def to_dict(self) -> dict[str, Any]:
        return {'grid': list(self.grid), 'bandwidths': dict(self.bandwidths),
                'runs': [{'controls': c.known(), 'residual': list(r)} for c, r in zip(self.controls, self.residuals)]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> 'ShapeDrift':
        return cls(grid=tuple(data['grid']), bandwidths=tuple(sorted(data['bandwidths'].items())),
                   controls=tuple(Controls(**r['controls']) for r in data['runs']),
                   residuals=tuple(tuple(r['residual']) for r in data['runs']))


def shape_drift(
    fractions: Sequence[np.ndarray],
    log_residuals: Sequence[np.ndarray],
    controls: Sequence[Optional[Controls]],
    fit_start: float,
    n_bins: int = 40,
    bandwidths: Optional[Mapping[str, float]] = None,
) -> Optional[ShapeDrift]:
    """Tabulates each run's deviation from the collapsed curve, if the runs' controls differ.

    Args:
        fractions (Sequence[np.ndarray]): Per run, the ``t/T`` of its points past ``fit_start``.
        log_residuals (Sequence[np.ndarray]): Per run, ``log(ell / ell_hat)`` at those points.
        controls (Sequence[Controls | None]): Per run, its controls.
        fit_start (float): The reference's lower end.
        n_bins (int): Bins over ``[fit_start, 1]``; empty ones are interpolated from their neighbours.
        bandwidths (Mapping[str, float], optional): Kernel widths (default :data:`DEFAULT_BANDWIDTHS`).

    Returns:
        ShapeDrift | None: None when fewer than two runs, a run without controls, or no control that varies.
    """
    widths = {**DEFAULT_BANDWIDTHS, **(bandwidths or {})}
    if len(controls) < 2 or any(c is None for c in controls):
        return None
    edges = np.linspace(fit_start, 1.0, n_bins + 1)
    centres = 0.5 * (edges[:-1] + edges[1:])
    rows = []
    for t, r in zip(fractions, log_residuals):
        idx = np.clip(np.searchsorted(edges, t, side='right') - 1, 0, n_bins - 1)
        counts = np.bincount(idx, minlength=n_bins)
        means = np.bincount(idx, weights=r, minlength=n_bins) / np.maximum(counts, 1)
        filled = counts > 0
        rows.append(tuple(float(v) for v in np.interp(centres, centres[filled], means[filled])))
    drift = ShapeDrift(grid=tuple(float(c) for c in centres), controls=tuple(controls), residuals=tuple(rows),
                       bandwidths=tuple(sorted(widths.items())))
    return drift if drift.keys else None
