"""Settings and records shared by the ``loss_spike_monitor`` callback and ``foundry-ext analyze-loss``.

Both run one :class:`~foundry_ext.spikes.detector.SpikeDetector` per loss stream with the same settings, so an
offline analysis of an exported series reports what the callback reported online. A stream is named by its
metric key as the run logs it: ``loss/train/total`` (one point per batch) or ``metrics/<eval label>/<metric>``
(one point per evaluation). Eval streams are sparse, so their detectors use shorter windows
(:data:`EVAL_DETECTOR_DEFAULTS`): the detector's windows and half-lives count observations, not steps.
"""

from __future__ import annotations

import inspect
import logging
import math
from typing import Any, Mapping, Optional

from foundry_ext.core.errors import ConfigError
from foundry_ext.core.jsonl import to_json
from foundry_ext.core.metric_names import is_eval_metric
from foundry_ext.spikes.detector import LossEvent, SpikeDetector

log = logging.getLogger(__name__)

__all__ = [
    'DETECTOR_DEFAULTS',
    'EVAL_DETECTOR_DEFAULTS',
    'check_detector_kwargs',
    'event_record',
    'stream_detector_kwargs',
]

# SpikeDetector's own defaults, read off its signature so they cannot drift from the documentation.
DETECTOR_DEFAULTS: dict[str, Any] = {
    name: param.default
    for name, param in inspect.signature(SpikeDetector.__init__).parameters.items()
    if name != 'self'
}

# Eval streams have one point per evaluation (e.g. every 250 batches), so 100 warmup points would be 25k steps.
# Windows and half-lives are scaled down about tenfold; the thresholds in steps (fast_recovery_steps,
# max_follow_steps) stay. Not tuned: no labelled sparse suite exists.
EVAL_DETECTOR_DEFAULTS: dict[str, Any] = {
    'warmup_steps': 10,
    'recover_window': 3,
    'recover_confirm': 2,
    'divergence_span': 10,
    'trend_halflife': 20,
    'slope_halflife': 80,
    'noise_halflife': 10,
}

# Settings that may be 0; every other one must be > 0.
_MAY_BE_ZERO = frozenset({'min_height'})


def check_detector_kwargs(kwargs: Optional[Mapping[str, Any]], where: str) -> dict[str, Any]:
    """Checks user-given :class:`SpikeDetector` settings key by key.

    Args:
        kwargs (Mapping[str, Any], optional): Settings to check (``None`` for none).
        where (str): Config path of ``kwargs`` for the error messages, e.g.
            ``'callbacks.loss_spike_monitor.detector'``.

    Returns:
        dict[str, Any]: The settings as plain ``int``/``float`` values.

    Raises:
        ConfigError: For an unknown key, or a value of the wrong type or sign; the message names
            ``<where>.<key>``, the value and the valid choices.
    """
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f'{where}={kwargs!r} must be a mapping of detector settings, e.g. {{z_threshold: 5.0}}.')
    checked: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key not in DETECTOR_DEFAULTS:
            raise ConfigError(f'{where}.{key}={value!r}: unknown detector setting. Valid settings: '
                              f'{", ".join(sorted(DETECTOR_DEFAULTS))}.')
        integral = isinstance(DETECTOR_DEFAULTS[key], int)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integral and not isinstance(value, int)):
            kind = 'an integer' if integral else 'a number'
            raise ConfigError(f'{where}.{key}={value!r} must be {kind} (default {DETECTOR_DEFAULTS[key]!r}).')
        if not math.isfinite(value) or value < 0 or (value == 0 and key not in _MAY_BE_ZERO):
            bound = '>= 0' if key in _MAY_BE_ZERO else '> 0'
            raise ConfigError(f'{where}.{key}={value!r} must be finite and {bound} '
                              f'(default {DETECTOR_DEFAULTS[key]!r}).')
        checked[key] = int(value) if integral else float(value)
    return checked


def stream_detector_kwargs(stream: str, detector: Mapping[str, Any], eval_detector: Mapping[str, Any],
                           where: str) -> dict[str, Any]:
    """Settings of the detector for ``stream``, checked as a whole.

    Precedence, lowest first: :class:`SpikeDetector` defaults, ``detector`` (every stream), then for eval streams
    :data:`EVAL_DETECTOR_DEFAULTS` and ``eval_detector``.

    Args:
        stream (str): Metric key of the stream.
        detector (Mapping[str, Any]): Checked settings for every stream.
        eval_detector (Mapping[str, Any]): Checked settings for eval streams.
        where (str): Config path of the settings for error messages, e.g.
            ``'callbacks.loss_spike_monitor.detector'``.

    Raises:
        ConfigError: If the combination is refused by :class:`SpikeDetector` (e.g.
            ``fast_recovery_steps >= max_follow_steps``).
    """
    kwargs = {**detector, **EVAL_DETECTOR_DEFAULTS, **eval_detector} if is_eval_metric(stream) else dict(detector)
    try:
        SpikeDetector(**kwargs)
    except ConfigError as err:
        raise ConfigError(f'{where} for stream {stream!r}: {err} Settings: {kwargs}.') from err
    return kwargs


def event_record(stream: str, event: LossEvent, **extra: Any) -> dict[str, Any]:
    """A loss event as one strict-JSON object: ``{"stream": ..., <event fields>, <extra>}``.

    Non-finite floats (the height of a NaN loss is ``inf``) become the strings ``'inf'``, ``'-inf'`` and
    ``'nan'``, which :func:`float` reads back.
    """
    return to_json({'stream': stream, **event.to_dict(), **extra})
