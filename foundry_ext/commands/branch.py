"""``foundry-ext branch``: decay a WSD main run from one of its checkpoints into a finished model.

A branch is an ordinary Foundry training run of the main YAML with a few overrides: it loads the main
checkpoint at step ``s`` (weights, optimizer, scheduler, RNG and dataloader position, so the data stream
continues exactly where the main run was), starts the ``wsd`` decay at ``s`` and ends at ``s + d``:

    load_path=<ckpt> load_weights_only=false scheduler.t_decay_start=<s> scheduler.t_decay=<d>
    max_duration=<s + d> save_folder=<branch folder> run_name=<main>-at<s>-decay<d> ...

so a branch ends with the same weights as one uninterrupted run with ``max_duration = s + d`` and the
same ``t_decay``. Branches write only into their own folder (default
``<main save_folder>/../branches/at<s>-decay<d>``); pointing one at the main run's folder is refused.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from composer.core import Time, Timestamp, TimeUnit
from composer.utils import parse_uri

from foundry_ext.core.config import load_train_config
from foundry_ext.core.errors import ConfigError, fail
from foundry_ext.schedulers.time_spec import parse_time, timestamp_count
from foundry_ext.schedulers.wsd import WSDScheduler

log = logging.getLogger(__name__)

__all__ = ['BranchPlan', 'check_branch_start', 'find_checkpoints', 'plan_branch', 'run_branches', 'wsd_main_schedule']

# Monolithic checkpoints are files `...-ba<step>-rank0.pt`; sharded ones (FSDP `state_dict_type: sharded`) are
# folders `...-ba<step>` holding `.metadata` and `__<rank>_0.distcp` files.
_STEP = re.compile(r'-ba(\d+)(-rank0\.pt)?$')


@dataclass
class BranchPlan:
    """One branch: where it starts, what it runs, and the command that runs it elsewhere."""
    checkpoint: str
    step: int
    start: Time
    decay: Time
    save_folder: str
    overrides: list[str]

    def command(self, yaml_path: str) -> str:
        return shlex.join(['composer', 'scripts/train.py', yaml_path, *self.overrides])


def _is_sharded(path: Path) -> bool:
    return path.is_dir() and (path / '.metadata').exists()


def _step_of(path: Path) -> Optional[int]:
    match = _STEP.search(path.name)
    if match is None or path.is_symlink() or bool(match.group(2)) != path.is_file():
        return None
    return int(match.group(1)) if path.is_file() or _is_sharded(path) else None


def find_checkpoints(source: str) -> dict[int, str]:
    """Maps step (batches) to checkpoint path for one checkpoint or a folder of Composer checkpoints.

    Both monolithic (``...-ba<step>-rank0.pt``) and sharded (``...-ba<step>/`` with ``.metadata``) checkpoints
    are found; the ``latest`` symlinks are skipped.
    """
    path = Path(source)
    if path.is_file() or _is_sharded(path):
        step = _step_of(path)
        if step is None:
            raise ConfigError(f'--from {source}: cannot read the step from the name; expected ...-ba<step>[-rank0.pt].')
        return {step: str(path)}
    if not path.is_dir():
        raise ConfigError(f'--from {source}: no such checkpoint file or folder.')
    found = {step: str(p) for p in sorted(path.iterdir()) if (step := _step_of(p)) is not None}
    if not found:
        raise ConfigError(f'--from {source}: the folder holds no Composer checkpoints (*-ba<step>-rank0.pt or sharded '
                          f'*-ba<step>/ folders).')
    return found


def _checkpoint_time(checkpoint: str, step: int, unit: TimeUnit) -> int:
    if unit == TimeUnit.BATCH:
        return step
    if _is_sharded(Path(checkpoint)):
        raise ConfigError(
            f"Branching a schedule in '{unit.value}' from the sharded checkpoint {checkpoint} is not supported: its "
            f'{unit.value} count cannot be read without loading it on every rank. Branch from a monolithic checkpoint '
            f"or write the schedule in 'ba'.",
        )
    # mmap keeps this cheap for large checkpoints: only the timestamp is read.
    import torch
    state = torch.load(checkpoint, map_location='cpu', weights_only=False, mmap=True)['state']
    timestamp = Timestamp()
    timestamp.load_state_dict(state['timestamp']['Timestamp'])  # State keys it by class name
    return timestamp_count(timestamp, unit)


def _same_or_inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def _beside(main_folder: str, run_name: Optional[str], name: str) -> str:
    """``name`` in the parent of the main run's save folder, for local folders and URIs (``s3://b/run/ckpt``)."""
    if run_name:  # the branch gets a run_name of its own, which must not move the branches away
        main_folder = main_folder.replace('{run_name}', run_name)
    backend, bucket, path = parse_uri(main_folder)
    if not backend:
        return os.path.join(os.path.dirname(os.path.normpath(main_folder)), name)
    return f'{backend}://{bucket}/{posixpath.join(posixpath.dirname(posixpath.normpath(path)), name)}'


def wsd_main_schedule(cfg: dict) -> WSDScheduler:
    """The main run's ``wsd`` scheduler, built through Foundry's registry; any other scheduler is refused."""
    if cfg['scheduler'].get('name') != 'wsd':
        fail(f"scheduler.name={cfg['scheduler'].get('name')!r}: branching decays needs a wsd main run (its decay "
             f'start is what a branch moves). For wsd_s, the run itself decays into every budget.')
    from llmfoundry.utils.builders import build_scheduler
    return build_scheduler('wsd', {k: v for k, v in cfg['scheduler'].items() if k != 'name'})


def check_branch_start(cfg: dict, main_schedule: WSDScheduler, start: Time, step: int) -> None:
    """Refuses a branch point in the main run's warmup or after its own decay began."""
    warmup = main_schedule.t_warmup
    if warmup.unit == start.unit and start.value < warmup.value:
        fail(f'--at {step}: the main run was still warming up there (scheduler.t_warmup={warmup}), so a branch would '
             f'decay from below the peak LR. Branch from a checkpoint of the stable phase.')
    main_decay_start = main_schedule.configured_decay_start(cfg.get('max_duration') or None)
    if main_decay_start is not None and start.value > main_decay_start.value:
        fail(f'--at {step}: the main run was already decaying there (its decay starts at {main_decay_start}), so a '
             f'branch would restart the decay from the peak LR. Branch from a checkpoint of the stable phase, or run '
             f'the main run with scheduler.t_decay_start past max_duration.')


def plan_branch(
    yaml_path: str,
    source: str,
    at: Optional[int],
    decay: str,
    save_folder: Optional[str] = None,
    overrides: Sequence[str] = (),
) -> BranchPlan:
    """Works out one branch's checkpoint and overrides; refuses anything that would touch the main run.

    Args:
        yaml_path (str): The main run's YAML (its scheduler must be ``wsd``).
        source (str): The main run's save folder, or one checkpoint file.
        at (int, optional): The step (batch) to branch from; default the newest checkpoint.
        decay (str): Decay length in the schedule's unit, e.g. ``'100ba'``.
        save_folder (str, optional): The branch's folder.
        overrides (Sequence[str]): Further Foundry overrides, applied to the main YAML first.
    """
    cfg = load_train_config(yaml_path, overrides)
    main_schedule = wsd_main_schedule(cfg)
    checkpoints = find_checkpoints(source)
    step = max(checkpoints) if at is None else at
    if step not in checkpoints:
        raise ConfigError(f'--at {at}: no checkpoint at that step in {source}; steps with one: {sorted(checkpoints)}.')
    checkpoint = checkpoints[step]
    decay_time = parse_time(decay, '--decay', allow_zero=False)
    unit = main_schedule.unit
    if decay_time.unit != unit:
        raise ConfigError(f"--decay {decay}: give it in the schedule's unit, '{unit.value}'.")
    start = Time(_checkpoint_time(checkpoint, step, unit), unit)
    check_branch_start(cfg, main_schedule, start, step)
    tag = f'at{start}-decay{decay_time}'
    main_folder = cfg.get('save_folder')
    if save_folder is None:
        if not main_folder:
            raise ConfigError('--save-folder is required: the main YAML sets no save_folder to put branches beside.')
        save_folder = _beside(main_folder, cfg.get('run_name'), os.path.join('branches', tag))
    for protected in filter(None, [main_folder, os.path.dirname(checkpoint)]):
        if _same_or_inside(save_folder, protected):
            raise ConfigError(
                f'--save-folder {save_folder} is inside the main run\'s checkpoint folder {protected}; a branch must '
                f'never write there (it would move the main run\'s `latest`). Pick a folder of its own.',
            )
    run_name = f"{cfg.get('run_name') or 'main'}-{tag}"
    branch_overrides = [
        *overrides,
        f'load_path={checkpoint}',
        'load_weights_only=false',
        f'scheduler.t_decay_start={start}',
        f'scheduler.t_decay={decay_time}',
        f'max_duration={Time(start.value + decay_time.value, unit)}',
        f'save_folder={save_folder}',
        f'run_name={run_name}',
        f"save_filename=branch-{tag}-ep{{epoch}}-ba{{batch}}-rank{{rank}}.pt",
    ]
    if 'jsonl' in (cfg.get('loggers') or {}):
        # Beside the branch's checkpoints, or for a remote save_folder in a local runs/<branch run_name>/.
        metrics_folder = os.path.join('runs', run_name) if parse_uri(save_folder)[0] else save_folder
        branch_overrides.append(f'loggers.jsonl.path={os.path.join(metrics_folder, "metrics.jsonl")}')
    return BranchPlan(checkpoint, step, start, decay_time, save_folder, branch_overrides)


def run_branches(plans: Sequence[BranchPlan], yaml_path: str, dry_run: bool = False) -> list[str]:
    """Prints each branch's equivalent command and, unless ``dry_run``, trains it with ``train_from_yaml``."""
    commands = []
    for plan in plans:
        command = plan.command(yaml_path)
        commands.append(command)
        print(f'branch from step {plan.step} ({plan.checkpoint}), decay {plan.decay} -> {plan.save_folder}\n'
              f'  equivalent command: {command}', flush=True)
        if not dry_run:
            from llmfoundry.command_utils import train_from_yaml
            train_from_yaml(yaml_path, plan.overrides).close()
    return commands
