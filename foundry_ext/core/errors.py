"""The one error type for bad user input, and the shared checks that raise it.

Every YAML key, command-line option or input file that a user got wrong raises :class:`ConfigError`, whose message
names the key (or option, or file), the bad value and the fix. The ``foundry-ext`` commands and
``scripts/train.py`` show a ``ConfigError`` as one line; any other exception is a bug in foundry-ext (or in what
it calls) and keeps its traceback.

``ConfigError`` is a ``ValueError``, so code that caught the ``ValueError`` of bad input still does, and a
subclass of LLM-Foundry's ``UserError``, so Foundry's error attribution counts it as the user's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, NoReturn, Optional

from llmfoundry.utils.exceptions import UserError

log = logging.getLogger(__name__)

__all__ = ['ConfigError', 'choice', 'fail', 'flag', 'fraction', 'number', 'positive', 'whole']


class ConfigError(UserError, ValueError):
    """Bad user input: a YAML value, a command-line option or an input file, with the key, the value and the fix.

    Args:
        message (str): The whole message, e.g. ``'scheduler.t_decay=0ba must be > 0; set a decay length.'``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __reduce__(self) -> tuple:
        # Foundry's base class pickles its keyword attributes only; the message must travel between processes.
        return (type(self), (self.error,))


def fail(message: str) -> NoReturn:
    """Raises :class:`ConfigError` with ``message``."""
    raise ConfigError(message)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _fix(fix: str) -> str:
    return f' {fix}' if fix else ''


def flag(value: Any, key: str, fix: str = '') -> bool:
    """``value`` if it is a bool, else a :class:`ConfigError` naming ``key``."""
    if not isinstance(value, bool):
        fail(f'{key}={value!r} must be true or false.{_fix(fix)}')
    return value


def whole(value: Any, key: str, minimum: int = 0, fix: str = '') -> int:
    """``value`` if it is an integer (not a bool) ``>= minimum``, else a :class:`ConfigError` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        fail(f'{key}={value!r} must be an integer >= {minimum}.{_fix(fix)}')
    return value


def number(value: Any, key: str, minimum: Optional[float] = None, maximum: Optional[float] = None,
           fix: str = '') -> float:
    """``float(value)`` for a finite number in ``[minimum, maximum]``, else a :class:`ConfigError` naming ``key``."""
    ok = _is_number(value) and math.isfinite(value)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        bounds = ' and '.join(b for b in ((f'>= {minimum:g}' if minimum is not None else ''),
                                          (f'<= {maximum:g}' if maximum is not None else '')) if b)
        fail(f'{key}={value!r} must be a finite number{" " + bounds if bounds else ""}.{_fix(fix)}')
    return float(value)


def positive(value: Any, key: str, fix: str = '') -> float:
    """``float(value)`` for a finite number ``> 0``, else a :class:`ConfigError` naming ``key``."""
    if not (_is_number(value) and math.isfinite(value) and value > 0):
        fail(f'{key}={value!r} must be a number > 0.{_fix(fix)}')
    return float(value)


def fraction(value: Any, key: str, fix: str = '') -> float:
    """``float(value)`` for a number in ``[0, 1]``, else a :class:`ConfigError` naming ``key``."""
    if not (_is_number(value) and 0.0 <= value <= 1.0):
        fail(f'{key}={value!r} must be a number in [0, 1].{_fix(fix)}')
    return float(value)


def choice(value: Any, key: str, choices: Sequence[Any], fix: str = '') -> Any:
    """``value`` if it is one of ``choices``, else a :class:`ConfigError` naming ``key`` and the choices."""
    if isinstance(value, bool) or value not in choices:
        fail(f'{key}={value!r} must be one of {", ".join(str(c) for c in choices)}.{_fix(fix)}')
    return value
