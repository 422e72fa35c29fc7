"""The reference curve of a family: [SwC]'s surrogate of the collapsed normalized loss, fitted on finished runs.

[SwC] (Bergsma et al. 2025, arXiv:2509.25087) Eq. (4) models the normalized loss :math:`\\ell(\\hat t)` of runs
with matched controls with a power law in the training fraction plus a term in the LR schedule. The fitted
reference also records how far the reference runs themselves stray from it (the band), and serializes to JSON
(format in docs/collapse.md).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
from scipy import optimize

from foundry_ext.collapse.controls import Controls
from foundry_ext.collapse.curves import LossCurve, estimate_final_loss, normalize_curve, smooth_curve
from foundry_ext.collapse.drift import ShapeDrift, shape_drift
from foundry_ext.collapse.schedule import LRSchedule
from foundry_ext.core.errors import ConfigError, fail

__all__ = ['ReferenceCurve', 'default_fit_start', 'fit_reference']

log = logging.getLogger(__name__)

# [SwC] Eq. (4): epsilon_1, epsilon_2 and m are fixed constants in the paper (Sec. 5, App. D.1).
_SURROGATE_EPS1 = 1e-3
_SURROGATE_EPS2 = 0.1
_SURROGATE_M = 0.05

_JSON_FORMAT = 'foundry_ext.collapse.reference'
_JSON_VERSION = 2


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
        drift (ShapeDrift, optional): For reference runs whose controls differ (a size-aware reference), each
            run's deviation from the collapsed curve (:mod:`foundry_ext.collapse.drift`).
        correction (tuple[float, ...]): The deviation applied for one run's controls, zero at ``t/T = 1``, on
            ``drift.grid`` (:meth:`for_controls`); empty for the collapsed curve itself.
        extrapolation (tuple[float, ...]): For one run's controls beyond the reference runs', the error expected of
            ``correction`` (log units, zero at ``t/T = 1``, on ``drift.grid``; :meth:`ShapeDrift.extrapolation`);
            empty within their range.
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
    drift: Optional[ShapeDrift] = None
    correction: tuple[float, ...] = ()
    extrapolation: tuple[float, ...] = ()

    def __call__(self, fractions: Union[Sequence[float], np.ndarray]) -> np.ndarray:
        """Reference normalized loss :math:`\\hat\\ell(\\hat t)` at the given training fractions."""
        t = np.asarray(fractions, dtype=float)
        curve = _surrogate(t, self.schedule, self.m, self.b, self.q)
        if self.correction:
            assert self.drift is not None
            curve = curve * np.exp(np.interp(t, self.drift.grid, self.correction))
        return curve

    def for_controls(self, controls: Optional[Controls]) -> 'ReferenceCurve':
        """The reference for a run with ``controls``: the collapsed curve bent toward the reference runs with the
        nearest controls (:mod:`foundry_ext.collapse.drift`), rescaled so that :math:`\\hat\\ell(1) = 1`:

        .. math::

            \\hat\\ell_x(\\hat t) = \\hat\\ell(\\hat t)\\,e^{\\delta(\\hat t; x) - \\delta(1; x)}

        (a reference run normalized by its fitted ``L(T)`` need not end at 1: its deviation at ``t/T = 1`` is the
        collapsed curve's misfit of its end). The collapsed curve itself when the reference runs share their controls.
        Unknown controls weigh every reference run alike. Controls beyond the reference runs' also set
        ``extrapolation``, the error expected of the correction there, likewise zero at ``t/T = 1``."""
        if self.drift is None:
            return self
        # ell_hat(1) = 1, as for the collapsed curve: the L(T) a prediction divides by is then the loss at T.
        delta = self.drift.correction(controls)
        delta = delta - np.interp(1.0, self.drift.grid, delta)
        beyond = self.drift.extrapolation(controls)
        beyond = beyond - np.interp(1.0, self.drift.grid, beyond)
        return dataclasses.replace(self, correction=tuple(float(v) for v in delta),
                                   extrapolation=tuple(float(v) for v in beyond) if np.any(beyond) else ())

    def extrapolation_error(self, fractions: Union[Sequence[float], np.ndarray]) -> np.ndarray:
        """The error in :math:`\\log\\hat\\ell` expected at the given fractions from extrapolating beyond the
        reference runs' controls (zeros within their range); see :meth:`for_controls`."""
        t = np.asarray(fractions, dtype=float)
        if not self.extrapolation:
            return np.zeros_like(t)
        assert self.drift is not None
        return np.interp(t, self.drift.grid, self.extrapolation)

    def weights(self, controls: Optional[Controls]) -> list[float]:
        """How much each reference run weighs for a run with ``controls`` (empty without a drift)."""
        return [] if self.drift is None else [float(w) for w in self.drift.weights(controls)]

    def band(self, fractions: Union[Sequence[float], np.ndarray]) -> np.ndarray:
        """Band width (normalized-loss units) at the given fractions; NaN before ``fit_start``."""
        t = np.asarray(fractions, dtype=float)
        idx = np.searchsorted(self.band_edges, t, side='right') - 1
        idx = np.clip(idx, 0, len(self.band_sigma) - 1)
        return np.where(t >= self.fit_start, np.asarray(self.band_sigma)[idx], np.nan)

    def controls_mismatch(self, tau_fraction: Optional[float], tpp: Optional[float], rtol: float = 0.1) -> list[str]:
        """Which collapse controls of a run differ from the reference's by more than ``rtol``.

        [SwC] Sec. 3: curves collapse only when the LR schedule, TPP and ``tau`` match. For a size-aware reference
        a control is a mismatch only outside the range of the reference runs (beyond it the nearest run decides).
        An empty list means the controls agree (or were not recorded).
        """
        problems = []
        for label, key, theirs in (('tau_fraction', 'tau', tau_fraction), ('tpp', 'tpp', tpp)):
            if theirs is None:
                continue
            if self.drift is not None and key in self.drift.keys:
                values = [c.known()[key] for c in self.drift.controls]
                lo, hi = min(values), max(values)
                if not lo * (1 - rtol) <= theirs <= hi * (1 + rtol):
                    problems.append(f'{label}: run {theirs:.4g} outside the reference runs\' {lo:.4g}..{hi:.4g}')
                continue
            mine = self.tau_fraction if key == 'tau' else self.tpp
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
                'drift': self.drift.to_dict() if self.drift is not None else None,
                'correction': list(self.correction),
                'extrapolation': list(self.extrapolation),
            },
            indent=2,
        )

    @classmethod
    def from_file(cls, path: Union[str, Path]) -> 'ReferenceCurve':
        """Reads a reference written by ``foundry-ext collapse fit``; anything else is a one-line ConfigError."""
        try:
            return cls.from_json(Path(path).read_text())
        except (ConfigError, ValueError, KeyError, TypeError) as err:
            fail(f'{path} is not a collapse reference ({err}). Give the file `foundry-ext collapse fit -o` wrote.')

    @classmethod
    def from_json(cls, text: str) -> 'ReferenceCurve':
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get('format') != _JSON_FORMAT or data.get('version') not in (1, 2):
            fail(f'not a {_JSON_FORMAT} v1 or v{_JSON_VERSION} document.')
        sur = data['surrogate']
        if (sur['eps1'], sur['eps2']) != (_SURROGATE_EPS1, _SURROGATE_EPS2):
            fail('reference was fitted with different epsilon constants.')
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
            drift=ShapeDrift.from_dict(data['drift']) if data.get('drift') else None,  # v2
            correction=tuple(data.get('correction', ())),
            extrapolation=tuple(data.get('extrapolation', ())),
        )


def default_fit_start(schedule: LRSchedule) -> float:
    """Where a reference starts by default: where ``schedule`` first reaches its peak (the end of the warmup), but
    not before 5% of the run."""
    peak = np.asarray(schedule.multipliers) >= 1.0 - 1e-3
    return max(0.05, float(np.asarray(schedule.fractions)[np.argmax(peak)]))


def fit_reference(
    runs: Sequence[LossCurve],
    schedule: LRSchedule,
    fit_start: Optional[float] = 0.1,
    n_bins: int = 20,
    band_floor: float = 1e-3,
    fit_m: bool = False,
    tau_fraction: Optional[float] = None,
    tpp: Optional[float] = None,
    smoothing: int = 1,
    final_loss: str = 'tail',
    controls: Optional[Sequence[Optional[Controls]]] = None,
    bandwidths: Optional[Mapping[str, float]] = None,
    starts: Optional[Sequence[float]] = None,
) -> ReferenceCurve:
    """Fit [SwC] Eq. (4) to the pooled normalized curves of finished runs, and, when their controls differ, how
    each run deviates from it (a size-aware reference).

    Each run is normalized by its own estimated final loss (:func:`normalize_curve`); points with
    ``t/T >= fit_start`` are pooled, each run weighted equally, and ``(b, q)`` (plus ``m`` when
    ``fit_m``) are fitted by least squares on :math:`\\log\\ell - \\log\\hat\\ell`, from three fixed
    starting points (deterministic). The paper fits ``b`` and ``q`` as power laws in ``tau`` and TPP
    across many runs (Eq. 5); with runs at one set of controls, as here, that reduces to fitting
    ``b`` and ``q`` directly (the paper's per-curve "oracle" fit, App. D.1, pooled over runs).

    The band is, per bin of ``t/T``, the RMS of ``ell - ell_hat`` over the runs, floored at
    ``band_floor``; empty bins copy the nearest filled bin. Near ``t/T = 1`` every run's residual
    is ~0 by construction, which the floor guards against.

    With ``controls`` that differ between the runs (``tau``, TPP or size), each run's deviation from the collapsed
    curve is kept (:func:`foundry_ext.collapse.drift.shape_drift`); :meth:`ReferenceCurve.for_controls` then gives
    the reference for another run's controls, and the band is the leave-one-out error of that interpolation.

    Args:
        runs (Sequence[LossCurve]): Finished runs (at least one) sharing LR schedule, TPP and tau.
        schedule (LRSchedule): Their LR schedule.
        fit_start (float, optional): Ignore ``t/T < fit_start`` (LR warmup; the paper ignores the first 20%
            when scoring fits and warms up for 10%). None: where ``schedule`` first reaches its peak, but at
            least 0.05.
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

                \\min_{b,q}\\sum_r\\sum_i w_r\\big(\\log L_{ri} - \\log L_r(T)
                    - \\log\\hat\\ell(\\hat t_{ri})\\big)^2, \\qquad
                \\log L_r(T) = \\operatorname{mean}_i\\big(\\log L_{ri} - \\log\\hat\\ell(\\hat t_{ri})\\big)

            which uses every point after ``fit_start`` instead of the last 2%, and so suits noisy,
            small-batch curves (an approximation of ours; see docs/collapse.md). The ``L(T)`` of a
            finished run is then ``predict_final_loss`` over its whole curve.
        controls (Sequence[Controls | None], optional): Each run's controls, for a size-aware reference.
        bandwidths (Mapping[str, float], optional): Kernel widths of the size-aware part
            (:data:`foundry_ext.collapse.drift.DEFAULT_BANDWIDTHS`).
        starts (Sequence[float], optional): Per run, the ``t/T`` before which its points are left out as well
            (the end of its own warmup, when runs warm up for a fixed number of steps).

    Returns:
        ReferenceCurve: The fitted reference.
    """
    if not runs:
        fail('fit_reference needs at least one finished run.')
    if controls is not None and len(controls) != len(runs):
        fail(f'fit_reference got {len(controls)} controls for {len(runs)} runs.')
    if starts is not None and len(starts) != len(runs):
        fail(f'fit_reference got {len(starts)} starts for {len(runs)} runs.')
    fit_start = default_fit_start(schedule) if fit_start is None else fit_start
    if not 0.0 <= fit_start < 1.0 or n_bins < 1 or band_floor <= 0:
        fail('need 0 <= fit_start < 1, n_bins >= 1 and band_floor > 0.')
    if final_loss not in ('tail', 'fit'):
        fail(f"final_loss={final_loss!r} must be 'tail' or 'fit'.")
    ts, ells, weights = [], [], []
    for i, run in enumerate(runs):
        # 'tail': L(T) from the raw tail (a trailing window ends (smoothing-1)/2 steps before T);
        # 'fit': normalized below, once the shape is known.
        final = estimate_final_loss(*run) if final_loss == 'tail' else 1.0
        t, ell = normalize_curve(*smooth_curve(run.steps, run.losses, smoothing), run.total_steps, final)
        start = max(fit_start, starts[i]) if starts is not None else fit_start
        keep = t >= start
        if keep.sum() < 2:
            fail(f'a run has fewer than 2 points with t/T >= fit_start={start:.3g}.')
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
    drift = None
    if controls is not None:
        per_run = np.split(np.log(ell_all / _surrogate(t_all, schedule, m, b, q)), np.cumsum(counts_per_run)[:-1])
        drift = shape_drift(ts, per_run, controls, fit_start, bandwidths=bandwidths)
    if drift is not None:
        # The band of a size-aware reference: how far a run lies from what the others predict for its controls.
        grid = np.asarray(drift.grid)
        step = grid[1] - grid[0] if grid.size > 1 else 1.0 - fit_start
        edges = np.concatenate([[fit_start], grid[:-1] + step / 2, [1.0]])
        sigma = np.maximum(drift.loo_rms() * _surrogate(grid, schedule, m, b, q), band_floor)
    else:
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
        drift=drift,
    )
