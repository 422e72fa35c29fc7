"""checkpoint_guard on real Foundry runs: what a kill leaves in the save folder no longer stops autoresume.

Each test puts a save folder in the state a kill leaves (a checkpoint cut off half way, a ``latest`` symlink at a
broken file or missing, a run killed after its final checkpoint), relaunches the same run in-process, and checks
that it finishes with the uninterrupted run's final weights and optimizer state. Real kills of real processes:
``tests/test_chaos.py``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from foundry_ext.callbacks.checkpoint_guard import RUN_STATUS, RunComplete
from foundry_ext.core.metrics_io import read_metrics
from foundry_ext.testing.crash import InjectedCrash, register_crash
from tests.conftest import SMALL_CORPUS, TINY_MODEL, assert_same_tensors, checkpoint_tensors, demo_yaml_with

GUARD_LOG = 'foundry_ext.callbacks.checkpoint_guard'
WSD_S = {'name': 'wsd_s', 't_warmup': '2ba', 'budgets': ['8ba', '16ba'], 'decay_fraction': 0.5}
# Checkpoints at 4, 8, 12, 16; evaluations at 5, 10, 15 and, after the final checkpoint, at the end (16).
RUN = [*TINY_MODEL, SMALL_CORPUS, 'max_duration=16ba', 'save_interval=4ba', 'eval_interval=5ba',
       'eval_subset_num_batches=1', 'autoresume=true', 'run_name=guarded', 'python_log_level=null',
       'console_log_interval=1000ba', 'callbacks.budget_checkpoint={}', 'callbacks.checkpoint_guard={}']


def run(run_dir: Path, *extra: str) -> None:
    """Trains the run in ``run_dir`` (a relaunch of the same command autoresumes), as ``train_from_yaml`` does."""
    from llmfoundry.command_utils import train_from_yaml
    register_crash()
    yaml_path = run_dir.parent / 'wsd_s.yaml'
    if not yaml_path.exists():
        demo_yaml_with(yaml_path, scheduler=WSD_S)
    trainer = train_from_yaml(str(yaml_path), [f'variables.run_dir={run_dir}', f'save_folder={run_dir}/ckpt', *RUN,
                                               *extra])
    trainer.close()


def crash_plan(run_dir: Path, *points: dict) -> str:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / 'crash.json').write_text(json.dumps(list(points)))
    return f'callbacks.crash.plan={run_dir / "crash.json"}'


def final_state(run_dir: Path) -> dict:
    return checkpoint_tensors(run_dir / 'ckpt' / 'ep0-ba16-rank0.pt')


def manifest(run_dir: Path) -> list[dict]:
    """budgets.json without its file paths (they name the run's folder)."""
    entries = json.loads((run_dir / 'ckpt' / 'budgets' / 'budgets.json').read_text())
    return [{k: v for k, v in e.items() if k not in ('checkpoint', 'hf_checkpoint')} for e in entries]


@pytest.fixture(scope='module')
def straight(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    run_dir = tmp_path_factory.mktemp('guard') / 'straight'
    run(run_dir)
    return run_dir


def _killed_copy(straight: Path, tmp_path: Path, newest: int) -> Path:
    """A copy of ``straight``'s save folder as a kill after the checkpoint of batch ``newest`` leaves it."""
    run_dir = tmp_path / 'killed'
    shutil.copytree(straight / 'ckpt', run_dir / 'ckpt', symlinks=True)
    for batch in range(newest + 4, 17, 4):
        os.remove(run_dir / 'ckpt' / f'ep0-ba{batch}-rank0.pt')
    (run_dir / 'ckpt' / RUN_STATUS).unlink(missing_ok=True)  # the run has not ended
    return run_dir


def _point(ckpt: Path, target: str) -> None:
    (ckpt / 'latest-rank0.pt').unlink(missing_ok=True)
    os.symlink(target, ckpt / 'latest-rank0.pt')


def _cut_in_half(path: Path) -> None:
    """``torch.save`` writes a checkpoint front to back, so its first half is what a write cut off there leaves."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize('damage', ['partial_newer', 'broken_latest', 'missing_latest'])
def test_a_damaged_save_folder_resumes_from_the_newest_complete_checkpoint(straight, tmp_path, caplog, damage):
    run_dir = _killed_copy(straight, tmp_path, newest=12)
    ckpt = run_dir / 'ckpt'
    if damage == 'partial_newer':  # killed while writing batch 12's checkpoint: `latest` still at batch 8
        _cut_in_half(ckpt / 'ep0-ba12-rank0.pt')
        _point(ckpt, 'ep0-ba8-rank0.pt')
    elif damage == 'broken_latest':  # the newest checkpoint, `latest`'s target, is damaged; batch 8's is intact
        _cut_in_half(ckpt / 'ep0-ba12-rank0.pt')
        _point(ckpt, 'ep0-ba12-rank0.pt')
    else:  # killed between Composer's removing the old symlink and making the new one
        (ckpt / 'latest-rank0.pt').unlink()
    caplog.set_level(logging.WARNING, logger=GUARD_LOG)
    run(run_dir)

    assert_same_tensors(final_state(run_dir), final_state(straight))
    assert manifest(run_dir) == manifest(straight)
    warnings = ' '.join(r.getMessage() for r in caplog.records if r.name == GUARD_LOG)
    if damage == 'missing_latest':
        assert 'latest-rank0.pt was missing; it now points at ep0-ba12-rank0.pt' in warnings, warnings
        assert not (ckpt / 'quarantine').exists()
    else:
        quarantined = ckpt / 'quarantine' / 'ep0-ba12-rank0.pt'
        assert quarantined.stat().st_size == (straight / 'ckpt' / 'ep0-ba12-rank0.pt').stat().st_size // 2
        assert f'{ckpt}/ep0-ba12-rank0.pt is not a complete checkpoint' in warnings, warnings
        assert f'moved it to {quarantined}' in warnings
        # resumed from batch 8: the relaunch logged steps 8..15 again
        assert read_metrics(run_dir / 'metrics.jsonl')['loss/train/total'][0].tolist() == list(range(8, 16))


def test_relaunching_a_finished_run_exits_0_with_one_line(straight, capsys):
    before = sorted(p.name for p in (straight / 'ckpt').iterdir())
    with pytest.raises(RunComplete) as exit_info:
        run(straight)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    line = (f"foundry-ext: run 'guarded' is already complete (16ba of max_duration=16ba); final checkpoint: "
            f"{straight / 'ckpt' / 'ep0-ba16-rank0.pt'}. Nothing to do.")
    assert line in out.splitlines()
    assert sorted(p.name for p in (straight / 'ckpt').iterdir()) == before


def test_a_kill_after_the_final_checkpoint_redoes_the_end_of_training(straight, tmp_path, caplog):
    run_dir = tmp_path / 'killed'
    plan = crash_plan(run_dir, {'event': 'fit_end', 'how': 'raise'})
    with pytest.raises(InjectedCrash):
        run(run_dir, plan)
    # What the kill left: the final checkpoint, a manifest without the end-of-run evaluation of the last budget.
    assert (run_dir / 'ckpt' / 'ep0-ba16-rank0.pt').exists()
    assert manifest(run_dir)[-1]['eval'] is None and manifest(straight)[-1]['eval']

    caplog.set_level(logging.WARNING, logger=GUARD_LOG)
    run(run_dir, plan)  # the same command: it redoes batches 12..16 and the end
    assert 'stopped after its final checkpoint ep0-ba16-rank0.pt' in caplog.text
    assert (run_dir / 'ckpt' / 'quarantine' / 'ep0-ba16-rank0.pt').exists()
    assert_same_tensors(final_state(run_dir), final_state(straight))
    assert manifest(run_dir) == manifest(straight)
    eval_key = 'metrics/eval/LanguageCrossEntropy'
    assert read_metrics(run_dir / 'metrics.jsonl')[eval_key][0].tolist() == [5, 10, 15, 16]
    assert json.loads((run_dir / 'ckpt' / RUN_STATUS).read_text())['status'] == 'finished'
    with pytest.raises(RunComplete):
        run(run_dir, plan)


def test_with_only_the_final_checkpoint_left_the_end_is_not_redone_from_scratch(straight, tmp_path, caplog):
    """save_num_checkpoints_to_keep: 1 and a kill after the final checkpoint: redoing the end would retrain it all."""
    run_dir = tmp_path / 'kept_one'
    shutil.copytree(straight / 'ckpt', run_dir / 'ckpt', symlinks=True)
    for batch in (4, 8, 12):
        os.remove(run_dir / 'ckpt' / f'ep0-ba{batch}-rank0.pt')
    status = json.loads((run_dir / 'ckpt' / RUN_STATUS).read_text())
    (run_dir / 'ckpt' / RUN_STATUS).write_text(json.dumps({**status, 'status': 'finishing'}))
    caplog.set_level(logging.WARNING, logger=GUARD_LOG)
    with pytest.raises(RunComplete):
        run(run_dir)
    assert 'No earlier checkpoint is left to redo it from' in caplog.text
    assert (run_dir / 'ckpt' / 'ep0-ba16-rank0.pt').exists() and not (run_dir / 'ckpt' / 'quarantine').exists()
