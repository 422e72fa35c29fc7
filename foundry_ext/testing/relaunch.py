"""Relaunching a training command as a supervisor would: again after a rollback (exit code 75) or a crash, until
it exits 0.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Optional, Sequence

from foundry_ext.core.exits import EXIT_USAGE

log = logging.getLogger(__name__)

__all__ = ['composer_command', 'relaunch_until_done', 'start']


def composer_command(script: str, args: Sequence[str], nproc: int = 1) -> list[str]:
    """``composer -n <nproc> <script> <args>``, with the ``composer`` launcher of this Python environment."""
    return [str(Path(sys.executable).with_name('composer')), '-n', str(nproc), script, *args]


def start(command: Sequence[str], log_path: Path, cwd: Optional[str] = None,
          env: Optional[Mapping[str, str]] = None) -> subprocess.Popen:
    """Starts ``command`` in a new session, so that a kill reaches the launcher and every rank, appending its output
    to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, 'a') as out:
        return subprocess.Popen(list(command), cwd=cwd, env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def relaunch_until_done(command: Sequence[str], log_path: Path, launches: int, cwd: Optional[str] = None,
                        env: Optional[Mapping[str, str]] = None, timeout: float = 1800) -> list[int]:
    """Runs ``command`` (appending its output to ``log_path``) until it exits 0 or 2 (bad input: relaunching does
    not help), at most ``launches`` times; returns the exit codes, one per launch."""
    codes: list[int] = []
    while len(codes) < launches and (not codes or codes[-1] not in (0, EXIT_USAGE)):
        codes.append(start(command, log_path, cwd, env).wait(timeout=timeout))
        log.info(f'relaunch_until_done: launch {len(codes)} exited {codes[-1]}')
    return codes
