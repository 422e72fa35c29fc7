"""The installed wheel needs no file of the repository: built, installed into a fresh venv, run from elsewhere."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.conftest import DEMO_YAML, REPO


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f'{args}:\n{result.stdout}\n{result.stderr}'
    return result


def test_the_wheel_works_outside_the_repository(tmp_path):
    # Build from a copy, so that the build's own files (build/, *.egg-info) stay out of the checkout.
    source = tmp_path / 'source'
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns('.git', '.venv', 'runs', 'build', '*.egg-info',
                                                                 '__pycache__', 'data', 'docs'))
    _run(sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(tmp_path / 'dist'),
         str(source), cwd=tmp_path)
    wheel = next((tmp_path / 'dist').glob('foundry_ext-*.whl'))
    shutil.rmtree(source)

    # A venv that sees the test environment's packages (torch, Composer, Foundry), but not its editable foundry-ext.
    venv = tmp_path / 'venv'
    _run(sys.executable, '-m', 'venv', '--system-site-packages', str(venv), cwd=tmp_path)
    python = venv / 'bin' / 'python'
    site = Path(_run(str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])',
                     cwd=tmp_path).stdout.strip())
    (site / 'zz_test_env.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    _run(str(python), '-m', 'pip', 'install', '-q', '--no-deps', '--no-index', str(wheel), cwd=tmp_path)

    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    where = _run(str(python), '-c', 'import foundry_ext; print(foundry_ext.__file__)', cwd=elsewhere).stdout
    assert where.startswith(str(site)), f'foundry_ext came from {where}, not from the installed wheel'
    cli = str(venv / 'bin' / 'foundry-ext')
    assert 'plot-schedule' in _run(cli, '--help', cwd=elsewhere).stdout
    shutil.copy(DEMO_YAML, elsewhere / 'recipe.yaml')
    _run(cli, 'plot-schedule', 'recipe.yaml', '-m', '400ba', '-o', 'lr.png', cwd=elsewhere)
    assert (elsewhere / 'lr.png').stat().st_size > 10_000
