"""What the ``foundry-ext`` commands and ``scripts/train.py`` show as a one-line error.

Bad input is shown as ``error: <message>`` with exit code 2: a :class:`~foundry_ext.core.errors.ConfigError` (ours),
LLM-Foundry's ``UserError``, a file that is missing or unreadable, a YAML file that does not parse. Any other
exception is a bug (ours or in what we call) and keeps its traceback. :class:`App` applies this to every
``foundry-ext`` command; :func:`one_line_errors_on_every_rank` to a script that each rank of a ``composer`` launch
runs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Iterator
from typing import Any, Callable

import typer
import yaml
from omegaconf.errors import OmegaConfBaseException

from foundry_ext.core.errors import ConfigError
from foundry_ext.core.exits import EXIT_USAGE, exit_every_rank

log = logging.getLogger(__name__)

__all__ = ['App', 'error_message', 'is_user_error', 'one_line_errors', 'one_line_errors_on_every_rank']

_USER_ERRORS = (ConfigError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
                yaml.YAMLError, OmegaConfBaseException)


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is bad input rather than a bug: ours, a file's, a YAML's, or LLM-Foundry's ``UserError``."""
    if isinstance(err, _USER_ERRORS):
        return True
    # Foundry's error types exist only once Foundry is imported (which takes seconds): no import, no UserError.
    foundry = sys.modules.get('llmfoundry.utils.exceptions')
    return foundry is not None and isinstance(err, foundry.UserError)


def error_message(err: BaseException) -> str:
    """The message of ``err``; an ``OSError`` names its file."""
    if isinstance(err, OSError) and err.filename is not None:
        return f'{err.strerror}: {err.filename}'
    return str(err)


def one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps a command so that bad input (:func:`is_user_error`) prints one line and exits with code 2."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except Exception as err:
            if not is_user_error(err):
                raise
            typer.secho(f'error: {error_message(err)}', fg='red', err=True)
            raise typer.Exit(EXIT_USAGE) from err

    return run


class App(typer.Typer):
    """A ``typer.Typer`` whose every command shows bad input as one line (:func:`one_line_errors`)."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)
        return lambda command: register(one_line_errors(command))


@contextlib.contextmanager
def one_line_errors_on_every_rank() -> Iterator[None]:
    """For a script that every rank of a ``composer`` launch runs: bad input (:func:`is_user_error`) is shown as one
    line by global rank 0, and every rank exits with code 2; any other exception propagates with its traceback.

    Composer's launcher prints the whole output of every rank that exits non-zero by itself (its log included), but
    not of a rank it stops. So the other ranks wait, for at most 30 seconds, to be stopped by the launcher once
    rank 0 has exited, with the default SIGTERM action (Composer's handler would turn it into an exit code).
    Started without the launcher (``python scripts/train.py``), there is one rank and no wait.
    """
    try:
        yield
    except Exception as err:
        if not is_user_error(err):
            raise
        print(f'error: {error_message(err)}', file=sys.stderr, flush=True)  # other ranks: into their log file
        exit_every_rank(EXIT_USAGE)
