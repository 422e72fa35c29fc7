"""Telling complete checkpoints from cut-off ones, on real torch.save and torch.distributed.checkpoint output."""

import os

import pytest
import torch
import torch.distributed.checkpoint as dcp

from foundry_ext.core.checkpoint_files import checkpoint_problem, find_checkpoints, point_latest, quarantine

STATE = {'state': {'model': {'w': torch.randn(64, 64)}, 'timestamp': {'batch': 3}}, 'rng': [1, 2]}


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / 'ep0-ba3-rank0.pt'
    torch.save(STATE, path)
    return path


@pytest.mark.parametrize('keep', [0.0, 0.1, 0.5, 0.9, 0.999])
def test_every_cut_off_write_of_a_torch_save_checkpoint_is_detected(saved, keep):
    assert checkpoint_problem(str(saved), sharded=False) is None
    data = saved.read_bytes()
    saved.write_bytes(data[:int(len(data) * keep)])
    assert 'not a complete torch.save archive' in checkpoint_problem(str(saved), sharded=False)


def test_a_zip_archive_that_is_no_torch_checkpoint_is_detected(tmp_path):
    import zipfile
    other = tmp_path / 'ep0-ba4-rank0.pt'
    with zipfile.ZipFile(other, 'w') as archive:
        archive.writestr('notes.txt', 'hello')
    assert 'without the data.pkl record' in checkpoint_problem(str(other), sharded=False)


def test_compressed_checkpoints_are_taken_as_they_are(tmp_path):
    (tmp_path / 'ep0-ba1-rank0.pt.lz4').write_bytes(b'not checked')
    assert checkpoint_problem(str(tmp_path / 'ep0-ba1-rank0.pt.lz4'), sharded=False) is None


def test_a_sharded_checkpoint_is_complete_only_with_its_index_and_full_shards(tmp_path):
    folder = tmp_path / 'ep0-ba8'
    dcp.save({'state': {'w': torch.randn(256), 'n': 3}}, checkpoint_id=str(folder), no_dist=True)
    assert checkpoint_problem(str(folder), sharded=True) is None
    shard = folder / '__0_0.distcp'
    data = shard.read_bytes()
    shard.write_bytes(data[:len(data) // 2])
    assert 'shard __0_0.distcp has' in checkpoint_problem(str(folder), sharded=True)
    shard.unlink()
    assert checkpoint_problem(str(folder), sharded=True) == 'shard __0_0.distcp is missing'
    (folder / '.metadata').unlink()
    assert 'no .metadata' in checkpoint_problem(str(folder), sharded=True)
    (folder / '.metadata').write_bytes(b'garbage')
    assert 'its .metadata cannot be read' in checkpoint_problem(str(folder), sharded=True)


def test_checkpoints_are_found_by_the_name_template_in_time_order(tmp_path, saved):
    for name in ('ep0-ba10-rank0.pt', 'ep0-ba9-rank0.pt', 'ep1-ba20-rank1.pt', 'budgets.json', 'loss_events.jsonl'):
        (tmp_path / name).write_bytes(saved.read_bytes())
    os.symlink('ep0-ba10-rank0.pt', tmp_path / 'latest-rank0.pt')
    found = find_checkpoints(str(tmp_path), 'ep{epoch}-ba{batch}-rank0.pt', sharded=False)
    assert [(c.name, c.order, c.problem) for c in found] == [
        ('ep0-ba3-rank0.pt', (3, 0), None), ('ep0-ba9-rank0.pt', (9, 0), None), ('ep0-ba10-rank0.pt', (10, 0), None)]
    assert find_checkpoints(str(tmp_path / 'missing'), 'ep{epoch}-ba{batch}-rank0.pt', sharded=False) == []
    custom = find_checkpoints(str(tmp_path), 'ep{epoch}-ba{batch}-rank{rank}.pt', sharded=False)
    assert [c.name for c in custom] == ['ep0-ba3-rank0.pt', 'ep0-ba9-rank0.pt', 'ep0-ba10-rank0.pt',
                                        'ep1-ba20-rank1.pt']  # an unknown placeholder matches anything


def test_quarantine_never_overwrites_and_latest_is_replaced_in_one_step(tmp_path, saved):
    first = find_checkpoints(str(tmp_path), 'ep{epoch}-ba{batch}-rank0.pt', sharded=False)[0]
    assert quarantine(first, str(tmp_path)) == str(tmp_path / 'quarantine' / 'ep0-ba3-rank0.pt')
    torch.save(STATE, saved)
    again = find_checkpoints(str(tmp_path), 'ep{epoch}-ba{batch}-rank0.pt', sharded=False)[0]
    assert quarantine(again, str(tmp_path)) == str(tmp_path / 'quarantine' / 'ep0-ba3-rank0.pt.1')
    point_latest(str(tmp_path), 'latest-rank0.pt', 'ep0-ba3-rank0.pt')
    point_latest(str(tmp_path), 'latest-rank0.pt', 'ep0-ba6-rank0.pt')
    assert os.readlink(tmp_path / 'latest-rank0.pt') == 'ep0-ba6-rank0.pt'
    assert sorted(os.listdir(tmp_path)) == ['latest-rank0.pt', 'quarantine']
    point_latest(str(tmp_path), 'latest-rank0.pt', None)
    assert not os.path.lexists(tmp_path / 'latest-rank0.pt')
