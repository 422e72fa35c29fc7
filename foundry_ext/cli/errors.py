"""What the ``foundry-ext`` commands show as a one-line error instead of a traceback."""

from __future__ import annotations

__all__ = ['USER_ERRORS', 'error_message']

# Bad input: a wrong YAML value or unit (ValueError), a missing metric (KeyError), a missing or unreadable file
# (OSError), an unknown scheduler or callback argument in a YAML (TypeError from its constructor).
USER_ERRORS = (ValueError, KeyError, OSError, TypeError)


def error_message(err: BaseException) -> str:
    """The message of ``err``, without ``KeyError``'s quotes and with an ``OSError``'s file name."""
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    return str(err)
