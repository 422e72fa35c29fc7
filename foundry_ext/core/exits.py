"""Exit codes of foundry-ext's training entry points, and ending every rank of a ``composer`` launch with one code.

| code | meaning | a supervisor should |
|---|---|---|
| 0 | the run finished, or stopped on purpose (``loss_spike_monitor`` action ``stop``, or after ``max_rollbacks``) | stop |
| 2 | bad input: one line ``error: ...`` names the key, the value and the fix | stop, fix the input |
| 75 | ``EX_TEMPFAIL``: ``loss_spike_monitor`` decided a rollback; ``<save_folder>/rollbacks.json`` holds the instruction that the next launch applies | relaunch the same command |
| other | a crash (a bug, a killed process) | relaunch the same command |
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import NoReturn

log = logging.getLogger(__name__)

__all__ = ['EXIT_ROLLBACK', 'EXIT_USAGE', 'exit_every_rank']

EXIT_USAGE = 2  # as click's own usage errors
EXIT_ROLLBACK = 75  # sysexits.h EX_TEMPFAIL: "temporary failure; the user is invited to retry"
# Composer's launcher stops the other ranks within a second of one's exit, and SIGKILLs them after 30 s.
_LAUNCHER_STOPS_RANKS_S = 30.0


def exit_every_rank(code: int) -> NoReturn:
    """Ends this rank so that the launch as a whole exits with ``code``.

    Composer's launcher returns the exit code of the lowest rank that failed, and stops the other ranks (SIGTERM)
    as soon as one has exited non-zero. So global rank 0 exits with ``code`` at once, and the other ranks wait, for at
    most 30 seconds, to be stopped by the launcher, with the default SIGTERM action (Composer's handler would turn it
    into an exit code of its own). Started without the launcher (one rank), the process exits at once.
    """
    rank, world_size = int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1))
    if rank != 0 and world_size > 1:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        time.sleep(_LAUNCHER_STOPS_RANKS_S)
    raise SystemExit(code)
