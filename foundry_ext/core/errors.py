"""The one error type for bad user input, and the shared checks that raise it.

Every YAML key, command-line option or input file that a user got wrong raises :class:`ConfigError`, whose message
names the key (or option, or file), the bad value and the fix. The ``foundry-ext`` commands and
``scripts/train.py`` show a ``ConfigError`` as one line; any other exception is a bug in foundry-ext (or in what
it calls) and keeps its traceback.

``ConfigError`` is a ``ValueError``, so code that caught the ``ValueError`` of bad input still does. It is not a
subclass of LLM-Foundry's ``UserError``: importing Foundry takes seconds and pulls in torch, which the pure numpy
analyses and the command line must not pay for; the command line treats both as bad input.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, NoReturn, Optional

log = logging.getLogger(__name__)

__all__ = ['ConfigError', 'choice', 'fail', 'flag', 'fraction', 'number', 'positive', 'whole']


class ConfigError(ValueError):
    """Bad user input: a YAML value, a command-line option or an input file, with the key, the value and the fix.

    Args:
        message (str): The whole message, e.g. ``'scheduler.t_decay=0ba must be > 0; set a decay length.'``.
    """


def fail(message: str) -> NoReturn:
    """Raises :class:`ConfigError` with ``message``."""
    raise ConfigError(message)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _refuse(key: str, value: Any, requirement: str, fix: str) -> NoReturn:
    """``<key>=<value> must be <requirement>[: <fix>].``"""
    fail(f'{key}={value!r} must be {requirement}' + (f': {fix.rstrip(".")}.' if fix else '.'))


def flag(value: Any, key: str, fix: str = '') -> bool:
    """``value`` if it is a bool, else a :class:`ConfigError` naming ``key``."""
    if not isinstance(value, bool):
        _refuse(key, value, 'true or false', fix)
    return value


def whole(value: Any, key: str, minimum: int = 0, fix: str = '') -> int:
    """``value`` if it is an integer (not a bool) ``>= minimum``, else a :class:`ConfigError` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _refuse(key, value, f'an integer >= {minimum}', fix)
    return value


def number(value: Any, key: str, minimum: Optional[float] = None, maximum: Optional[float] = None,
           fix: str = '') -> float:
    """``float(value)`` for a finite number in ``[minimum, maximum]``, else a :class:`ConfigError` naming ``key``."""
    ok = _is_number(value) and math.isfinite(value)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        bounds = ' and '.join(b for b in ((f'>= {minimum:g}' if minimum is not None else ''),
                                          (f'<= {maximum:g}' if maximum is not None else '')) if b)
        _refuse(key, value, 'a finite number' + (f' {bounds}' if bounds else ''), fix)
    return float(value)


def positive(value: Any, key: str, fix: str = '', above: float = 0.0) -> float:
    """``float(value)`` for a finite number ``> above`` (default 0), else a :class:`ConfigError` naming ``key``."""
    if not (_is_number(value) and math.isfinite(value) and value > above):
        _refuse(key, value, f'a number > {above:g}', fix)
    return float(value)


def fraction(value: Any, key: str, fix: str = '', low_open: bool = False, high_open: bool = False) -> float:
    """``float(value)`` for a number in ``[0, 1]`` (``(0`` with ``low_open``, ``1)`` with ``high_open``), else a
    :class:`ConfigError` naming ``key`` and the interval."""
    ok = _is_number(value) and (0.0 < value if low_open else 0.0 <= value) and (
        value < 1.0 if high_open else value <= 1.0)
    if not ok:
        _refuse(key, value, f'a number in {"(" if low_open else "["}0, 1{")" if high_open else "]"}', fix)
    return float(value)


def choice(value: Any, key: str, choices: Sequence[Any], fix: str = '') -> Any:
    """``value`` if it is one of ``choices``, else a :class:`ConfigError` naming ``key`` and the choices."""
    if isinstance(value, bool) or value not in choices:
        _refuse(key, value, f'one of {", ".join(str(c) for c in choices)}', fix)
    return value
