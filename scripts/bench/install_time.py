"""Fresh-machine install time of the demo/test environment: pip without the lock, pip with it, uv with it.

Each method installs a clean copy of the repository (``git archive HEAD``) into a new venv with a new, empty
download cache (``PIP_CACHE_DIR`` / ``UV_CACHE_DIR``), as ``make install`` does on a fresh clone, and is timed
from ``python -m venv`` to the end of the install. The package index is PyPI alone for every method (pip's
config files and ``PIP_FIND_LINKS`` are switched off, so no method reads wheels from this machine's disk). The
venv and the cache are deleted after each method; the methods run one after the other (the network and the
disk are shared). Prints each method's seconds and its speed-up over the first method.

Methods:

- ``pip``: the old ``make install``: ``pip install --upgrade pip``, ``pip install -e '.[dev]'`` (a fresh resolve);
- ``pip-lock``: today's ``make install``: the same with ``-c requirements/lock.txt``;
- ``pip-lock-nocompile``: the same with ``--no-compile`` (no bytecode compilation at install, as uv's default);
- ``uv-lock``: ``pip install uv`` (locked version) into the venv, then ``uv pip install -c requirements/lock.txt
  -e '.[dev]'`` (uv's default: no bytecode compilation at install);
- ``uv-lock-bytecode``: the same with ``--compile-bytecode``, which pip always does.

Example::

    python scripts/bench/install_time.py --methods pip-lock,uv-lock,uv-lock-bytecode,pip
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK = 'requirements/lock.txt'


def _commands(method: str, venv: Path) -> list[list[str]]:
    pip, python = str(venv / 'bin' / 'pip'), str(venv / 'bin' / 'python')
    lock = ['-c', LOCK]
    if method == 'pip':
        return [[pip, 'install', '--upgrade', 'pip'], [pip, 'install', '-e', '.[dev]']]
    if method in ('pip-lock', 'pip-lock-nocompile'):
        extra = ['--no-compile'] if method == 'pip-lock-nocompile' else []
        return [[pip, 'install', '--upgrade', *lock, 'pip'], [pip, 'install', *lock, *extra, '-e', '.[dev]']]
    if method in ('uv-lock', 'uv-lock-bytecode'):
        extra = ['--compile-bytecode'] if method == 'uv-lock-bytecode' else []
        return [[pip, 'install', *lock, 'uv'],
                [str(venv / 'bin' / 'uv'), 'pip', 'install', '--python', python, *lock, *extra, '-e', '.[dev]']]
    raise SystemExit(f'unknown method {method!r}; choose from pip, pip-lock, pip-lock-nocompile, uv-lock, '
                     'uv-lock-bytecode')


def _time_install(method: str, work: Path, timeout: float) -> float:
    src, venv, cache = work / 'src', work / 'src' / '.venv', work / 'cache'
    src.mkdir(parents=True)
    cache.mkdir()
    archive = subprocess.run(['git', '-C', str(REPO), 'archive', 'HEAD'], check=True, capture_output=True).stdout
    subprocess.run(['tar', '-x', '-C', str(src)], input=archive, check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(('PIP_', 'UV_'))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK='1', PIP_CACHE_DIR=str(cache),
               UV_CACHE_DIR=str(cache), UV_NO_CONFIG='1')
    if 'PIP_CERT' in os.environ:
        env['PIP_CERT'] = os.environ['PIP_CERT']
    start = time.monotonic()
    steps = [[sys.executable, '-m', 'venv', str(venv)], *_commands(method, venv)]
    for command in steps:
        left = timeout - (time.monotonic() - start)
        subprocess.run(command, cwd=src, env=env, check=True, timeout=max(left, 1), stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--methods', default='pip-lock,uv-lock', help='comma-separated, the first is the baseline '
                        '(pip, pip-lock, pip-lock-nocompile, uv-lock, uv-lock-bytecode; default: pip-lock,uv-lock)')
    parser.add_argument('--work', default=None, help='scratch folder (default: a new temporary one, deleted after)')
    parser.add_argument('--timeout', type=float, default=1800, help='seconds per method (default: 1800)')
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(',') if m.strip()]
    for method in methods:
        _commands(method, Path('.'))  # unknown names fail before anything is downloaded
    seconds = {}
    for method in methods:
        work = Path(tempfile.mkdtemp(prefix=f'install-{method}-', dir=args.work))
        try:
            seconds[method] = _time_install(method, work, args.timeout)
            print(f'{method:<18} {seconds[method]:7.1f} s', flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    base = methods[0]
    for method in methods[1:]:
        print(f'{method} is {seconds[base] / seconds[method]:.2f}x as fast as {base}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
