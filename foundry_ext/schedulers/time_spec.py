"""The one place where schedule times are parsed, validated and converted.

Every foundry-ext schedule describes its shape in *absolute* time (``ba``, ``tok``, ``sp``, or ``ep``
where Composer can turn epochs into batches). ``dur`` is refused because it multiplies by
``max_duration``, which ties the shape to the run length: the very thing these schedules remove.

Errors name the YAML key (``scheduler.<arg>``), the value and the fix, and are raised either when the
scheduler is built (pure argument checks) or when the Trainer compiles it (checks that need
``max_duration`` or the dataloader length); both happen before the first training step.
"""

from __future__ import annotations

import logging
import re
from typing import Optional, Union

from composer.core import State, Time, Timestamp, TimeUnit

from foundry_ext.core.errors import ConfigError, fail

log = logging.getLogger(__name__)

__all__ = [
    'TimeLike',
    'parse_time',
    'check_same_unit',
    'resolve_time',
    'max_duration_is_final',
    'resolve_max_duration',
    'current_time',
    'timestamp_count',
    'batches_in',
    'parse_steps',
]

TimeLike = Union[str, Time]

# Units Composer can count during training without knowing tokens-per-batch in advance.
_ABSOLUTE_UNITS = {TimeUnit.BATCH, TimeUnit.TOKEN, TimeUnit.SAMPLE, TimeUnit.EPOCH}

_TIME_STRING = re.compile(r'^([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)([a-z]+)$', re.IGNORECASE)

_UNIT_HELP = 'e.g. 100ba (batches), 2000000tok (tokens) or 800sp (samples)'


def parse_time(value: TimeLike, key: str, *, allow_zero: bool = True) -> Time:
    """Parses one schedule time and checks it is absolute and non-negative.

    Args:
        value (str | Time): A time string such as ``'100ba'`` or a Composer :class:`~composer.core.Time`.
        key (str): The YAML key, e.g. ``'scheduler.t_warmup'``, used in error messages.
        allow_zero (bool): Whether ``0`` is a valid value (e.g. no warmup).

    Returns:
        Time: The parsed time, in the unit given.

    Raises:
        ValueError: For a bare number or malformed string, a ``dur`` or ``sec`` time, or a negative (or, when
            ``allow_zero`` is False, zero) value.
    """
    if isinstance(value, (int, float)):
        # A bare number could mean batches, tokens or samples; guessing would silently change the schedule.
        raise ConfigError(f'{key}={value!r} has no unit. Write an absolute time with its unit, {_UNIT_HELP}.')
    if isinstance(value, Time):
        time = value
    elif isinstance(value, str):
        try:
            time = Time.from_timestring(value.strip())
        except TypeError as e:  # Composer's integer units (ba, ep, sp, tok) refuse fractions
            raise ConfigError(f'{key}={value!r} must be a whole number of its unit. Write it in a finer unit, '
                              f'e.g. batches instead of a fraction of an epoch.') from e
        except ValueError as e:
            raise ConfigError(f'{key}={value!r} is not a time string ({e}). Write an absolute time, '
                              f'{_UNIT_HELP}.') from e
    else:
        raise ConfigError(f'{key}={value!r} has type {type(value).__name__}. Write an absolute time, {_UNIT_HELP}.')

    if time.unit == TimeUnit.DURATION:
        raise ConfigError(
            f"{key}={value!r}: the 'dur' unit is a fraction of max_duration, so the schedule's shape would change "
            f'whenever the run length changes, and runs of different lengths would diverge from the first step. '
            f'Write an absolute time instead, {_UNIT_HELP}. For a decay that ends with the run, leave '
            f't_decay_start unset and give t_decay in absolute units.',
        )
    if time.unit not in _ABSOLUTE_UNITS:
        raise ConfigError(f"{key}={value!r}: unit '{time.unit.value}' cannot drive a schedule. Use {_UNIT_HELP}.")
    if time.value < 0 or (time.value == 0 and not allow_zero):
        bound = '>= 0' if allow_zero else '> 0'
        raise ConfigError(f'{key}={value!r} must be {bound}. Give a length {bound}, {_UNIT_HELP}.')
    return time


def _unit_family(unit: TimeUnit) -> TimeUnit:
    # Epochs are turned into batches (Composer does the same), so the two mix freely.
    return TimeUnit.BATCH if unit == TimeUnit.EPOCH else unit


def check_same_unit(times: dict[str, Optional[Time]]) -> Optional[TimeUnit]:
    """Checks that all given times can be compared, and returns their common unit.

    Batches and epochs count as one unit (epochs convert to batches). Batches, tokens and samples cannot
    be compared before training: tokens per batch is only known once batches are seen. A zero length
    (e.g. the default ``t_warmup: 0ba``) is zero in every unit, so it constrains nothing.

    Args:
        times (dict[str, Time | None]): YAML key to parsed time; ``None`` entries are skipped.

    Returns:
        TimeUnit | None: The common unit (``BATCH`` for ``ba``/``ep``), or None if no time was given.

    Raises:
        ValueError: If two times are in units that cannot be compared.
    """
    given = {k: t for k, t in times.items() if t is not None and t.value != 0}
    families = {k: _unit_family(t.unit) for k, t in given.items()}
    if len(set(families.values())) > 1:
        listing = ', '.join(f'{k}={t}' for k, t in given.items())
        raise ConfigError(
            f'Schedule times must share one unit, but got {listing}. Composer cannot compare batches, tokens and '
            f'samples before training, so write all of them in one unit, {_UNIT_HELP}.',
        )
    return next(iter(families.values()), None)


def resolve_time(time: Time, state: State, ssr: float = 1.0) -> int:
    """Converts a parsed time to an integer count in its unit (epochs become batches), scaled by ``ssr``.

    Args:
        time (Time): A time returned by :func:`parse_time`.
        state (State): The trainer state; its ``dataloader_len`` converts epochs.
        ssr (float): Composer's ``scale_schedule_ratio``.

    Returns:
        int: The time as a count of batches, tokens or samples.
    """
    if time.unit == TimeUnit.EPOCH:
        if state.dataloader_len is None:
            raise ConfigError(
                f'The schedule time {time} is in epochs, but the train dataloader has no length, so it cannot be '
                f'converted to batches. Write it in batches, tokens or samples instead.',
            )
        return int(time.value * int(state.dataloader_len) * ssr)
    return int(time.value * ssr)


def resolve_max_duration(state: State, unit: TimeUnit, needed_for: str) -> int:
    """Returns ``max_duration`` as a count in ``unit`` (``BATCH`` also accepts epochs).

    Args:
        state (State): The trainer state.
        unit (TimeUnit): The schedule's unit, from :func:`check_same_unit`.
        needed_for (str): What needs it, for the error message (e.g. ``'the default t_decay_start'``).

    Raises:
        ValueError: If ``max_duration`` is unset or in a unit that cannot be compared with ``unit``.
    """
    max_duration = state.max_duration
    if max_duration is None:
        raise ConfigError(f'{needed_for} needs max_duration, but it is not set. Set max_duration in the YAML.')
    if _unit_family(max_duration.unit) != unit:
        raise ConfigError(
            f"{needed_for} needs max_duration={max_duration} in the schedule's unit '{unit.value}'. Composer cannot "
            f"compare '{max_duration.unit.value}' with '{unit.value}' before training: write max_duration in "
            f"'{unit.value}' or the schedule times in '{max_duration.unit.value}'.",
        )
    return resolve_time(max_duration, state)


def max_duration_is_final(state: State, ssr: float) -> bool:
    """Whether ``state.max_duration`` can be checked against: False in the call that compiles a scaled schedule.

    With ``scale_schedule_ratio`` != 1, ``Trainer.__init__`` compiles the schedulers, which calls them once at
    batch 0, before it scales ``max_duration``. Checks against ``max_duration`` then wait for the next call,
    after the first batch.
    """
    return ssr == 1.0 or int(state.timestamp.batch) > 0


def timestamp_count(timestamp: Timestamp, unit: TimeUnit) -> int:
    """Returns a timestamp's count in ``unit`` (batches, samples or tokens)."""
    return int(timestamp.get(unit).value)


def current_time(state: State, unit: TimeUnit) -> int:
    """Returns the trainer's elapsed time in ``unit``: what every schedule is a pure function of."""
    return timestamp_count(state.timestamp, unit)


def batches_in(duration: TimeLike, samples_per_batch: int, tokens_per_batch: int, key: str = 'max_duration') -> int:
    """The number of batches Composer trains for ``duration`` (``ba``, ``sp`` or ``tok``).

    Composer stops at the first batch whose timestamp reaches the duration, so a sample or token count that is not
    a whole number of batches rounds up. Every sample is taken to hold ``tokens_per_batch / samples_per_batch``
    tokens (packed pre-training data, as Foundry's text dataloader makes).

    Args:
        duration (str | Time): E.g. ``'1000ba'``, ``'2e9tok'`` or ``Time(800, 'sp')``.
        samples_per_batch (int): Global batch size in samples.
        tokens_per_batch (int): Global batch size in tokens.
        key (str): The YAML key of ``duration``, for error messages.

    Raises:
        ConfigError: If ``duration`` is not a positive whole number of batches, samples or tokens (epochs depend on
            the dataset size and ``dur`` on ``max_duration`` itself).
    """
    time = duration if isinstance(duration, Time) else _time_string(duration, key)
    shown = duration if isinstance(duration, Time) else repr(duration)
    per_batch = {TimeUnit.BATCH: 1, TimeUnit.SAMPLE: samples_per_batch, TimeUnit.TOKEN: tokens_per_batch}
    if time.unit not in per_batch:
        fail(f"{key}={shown} is in '{time.unit.value}', which cannot be turned into a number of batches without "
             f"training (epochs depend on the dataset size, dur on max_duration itself). Write it in 'ba' (batches), "
             f"'tok' (tokens) or 'sp' (samples), e.g. 10000ba.")
    if time.value <= 0:
        fail(f'{key}={shown} must be > 0.')
    return -(-int(time.value) // per_batch[time.unit])  # ceil


def parse_steps(value: str, key: str) -> list[int]:
    """A comma-separated list of batch steps, each a whole number of batches written ``400`` or ``400ba``.

    Args:
        value (str): E.g. ``'200,400ba,600'``.
        key (str): The option or YAML key, e.g. ``'--at'``, for error messages.

    Returns:
        list[int]: The steps, in the order given.

    Raises:
        ConfigError: For an empty list, an entry in another unit (steps are batches), a fraction, a negative
            number, anything else that is not a step, or a step named twice.
    """
    items = [item.strip() for item in str(value).split(',')]
    if not any(items):
        fail(f'{key}={value!r} names no step; give batch steps, comma-separated, e.g. {key} 200,400.')
    steps = []
    for item in items:
        match = re.fullmatch(r'([0-9]+)(ba)?', item)
        if match is None:
            unit = _TIME_STRING.match(item)
            why = (f"is in '{unit.group(2)}', but steps are batches" if unit is not None and unit.group(2) != 'ba'
                   else 'is not a whole number of batches')
            fail(f'{key}={value!r}: {item!r} {why}. Give batch steps, comma-separated, e.g. {key} 200,400 or '
                 f'200ba,400ba.')
        steps.append(int(match.group(1)))
    if len(set(steps)) < len(steps):
        fail(f'{key}={value!r} names a step twice; give each step once.')
    return steps


def _time_string(value: object, key: str) -> Time:
    """A time string as Composer's :class:`Time`, also in scientific notation (``'2e9tok'``), which Composer's
    integer units refuse; anything else is a :class:`ConfigError`."""
    match = _TIME_STRING.match(value.strip()) if isinstance(value, str) else None
    if match is not None:
        count = float(match.group(1))
        try:
            return Time.from_timestring(f'{int(count) if count.is_integer() else count}{match.group(2)}')
        except (TypeError, ValueError):
            pass
    fail(f'{key}={value!r} is not a Composer time string; write e.g. 1000ba, 2e9tok or 20000sp.')
