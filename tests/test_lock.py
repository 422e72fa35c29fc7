"""requirements/lock.txt against setup.py, against itself and against the environment the suite runs in.

The lock pins every package of ``foundry-ext[dev]`` (``make install`` installs it as pip constraints). These
checks are offline: they read setup.py and the lock, and the installed packages' own metadata for the
requirements of each locked package.
"""

import ast
import importlib.metadata as metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / 'requirements' / 'lock.txt'
LOCK_INPUT = REPO / 'requirements' / 'lock.in'
EXTRA = 'dev'


def _requirement_lines(path: Path) -> list[str]:
    lines = (line.split('#')[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _setup_requirements() -> list[Requirement]:
    """setup.py's install_requires and its `dev` extra, read from its source."""
    call = next(node for node in ast.walk(ast.parse((REPO / 'setup.py').read_text()))
                if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'setup')
    keywords = {k.arg: k.value for k in call.keywords}
    required = ast.literal_eval(keywords['install_requires'])
    required += ast.literal_eval(keywords['extras_require'])[EXTRA]
    return [Requirement(r) for r in required]


def _pins(lock: Path) -> dict[str, Version]:
    """The lock's version of each package for this interpreter and platform (its markers evaluated)."""
    pins: dict[str, Version] = {}
    for line in _requirement_lines(lock):
        pin = Requirement(line)
        if pin.marker is not None and not pin.marker.evaluate():
            continue
        [spec] = pin.specifier
        name = canonicalize_name(pin.name)
        assert spec.operator == '==' and name not in pins, f'{lock}: {line!r} is not the one exact pin of {name}'
        pins[name] = Version(spec.version)
    return pins


def _walk(lock: Path = LOCK, tools: bool = True) -> tuple[list[str], list[str]]:
    """Follows every requirement of setup.py (and of requirements/lock.in, with ``tools``) through the locked
    packages' metadata.

    Returns:
        (problems with the lock, locked packages installed at another version)
    """
    pins = _pins(lock)
    problems, mismatched = [], []
    todo = [(r, 'setup.py') for r in _setup_requirements()]
    if tools:  # the installers that `make lock` resolves too; `make install` installs only pip
        todo += [(Requirement(r), LOCK_INPUT.name) for r in _requirement_lines(LOCK_INPUT)]
    todo = [(r, by) for r, by in todo if r.marker is None or r.marker.evaluate()]  # sub-requirements: below
    seen = set()
    while todo:
        requirement, wanted_by = todo.pop()
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f'{requirement} (required by {wanted_by}) is not in the lock')
            continue
        if not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f'{requirement} (required by {wanted_by}) excludes the locked {name}=={pins[name]}')
        for extra in ('', *sorted(requirement.extras)):
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            try:
                installed = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                mismatched.append(f'{name}=={pins[name]} is not installed')
                continue
            if Version(installed.version) != pins[name]:
                mismatched.append(f'{name} is {installed.version}, the lock has {pins[name]}')
                continue  # its metadata is another version's: its requirements say nothing about the lock
            for sub in map(Requirement, installed.requires or ()):
                if sub.marker is None or sub.marker.evaluate({'extra': extra}):
                    todo.append((sub, f'{name}[{extra}]' if extra else name))
    return sorted(set(problems)), sorted(set(mismatched))


def test_the_lock_satisfies_setup_py_and_itself():
    problems, _ = _walk()
    assert not problems, 'requirements/lock.txt is out of date; run `make lock`:\n' + '\n'.join(problems)


def test_the_suite_runs_in_the_locked_environment():
    _, mismatched = _walk(tools=False)
    assert not mismatched, 'this environment is not the lock; run `make install`:\n' + '\n'.join(mismatched)


def test_the_checks_fail_on_a_stale_lock(tmp_path):
    stale = tmp_path / 'lock.txt'
    text = LOCK.read_text().replace('\nsqlalchemy==2.0.', '\nsqlalchemy==2.1.')
    stale.write_text(text.replace('\nnumpy==', '\nnumpyy=='))
    problems, mismatched = _walk(stale)
    assert any(p.startswith('sqlalchemy<2.1 (required by setup.py) excludes the locked sqlalchemy==2.1.')
               for p in problems)
    assert 'numpy (required by setup.py) is not in the lock' in problems
    assert any(m.startswith('sqlalchemy is 2.0.') for m in mismatched)
