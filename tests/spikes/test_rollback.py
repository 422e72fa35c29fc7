"""The bookkeeping of a rollback: settings, checkpoint choice, the skipped window, the manifest."""

from __future__ import annotations

import pytest

from foundry_ext.core.errors import ConfigError
from foundry_ext.spikes.rollback import (RollbackSettings, check_rollback_settings, checkpoints_to_keep,
                                         entries_to_apply, onset_position, read_manifest, rollback_checkpoint,
                                         skip_window, write_manifest)

WHERE = 'callbacks.loss_spike_monitor.rollback'


def test_settings_default_to_palms_recipe_and_bad_values_name_the_key():
    assert check_rollback_settings(None, WHERE) == RollbackSettings(100, 300, 3)
    assert check_rollback_settings({'skip_batches': 50}, WHERE) == RollbackSettings(100, 50, 3)
    with pytest.raises(ConfigError, match=r'rollback\.skip_batches=0'):
        check_rollback_settings({'skip_batches': 0}, WHERE)
    with pytest.raises(ConfigError, match=r'rollback\.steps_back=5: unknown rollback setting'):
        check_rollback_settings({'steps_back': 5}, WHERE)
    with pytest.raises(ConfigError, match='must be a mapping'):
        check_rollback_settings(3, WHERE)


def test_checkpoints_to_keep_covers_the_rollback_checkpoint_at_the_latest_decision():
    # Brute force: every onset and every decision up to the delay, checkpoints every I batches, the last K kept.
    for interval in (1, 3, 5, 10):
        for before in (1, 4, 10):
            for delay in (0, 6, 13):
                keep = checkpoints_to_keep(interval, before, delay)
                for onset in range(before + interval, 60):
                    target = interval * ((onset - before) // interval)
                    newest = interval * ((onset + delay) // interval)
                    assert newest - (keep - 1) * interval <= target, (interval, before, delay, onset)


def test_the_rollback_checkpoint_is_the_newest_far_enough_before_the_onset():
    saved = [(10, 'a'), (20, 'b'), (30, 'c')]
    assert rollback_checkpoint(saved, 40, 10) == (30, 'c')
    assert rollback_checkpoint(saved, 39, 10) == (20, 'b')
    assert rollback_checkpoint(saved, 15, 10) is None


def test_the_window_starts_at_the_onsets_batch_and_stops_before_the_epochs_end():
    # Batch 50 of the epoch starts at sample 400 (8 per batch); the onset was 5 steps earlier.
    assert onset_position(50, 50, 400, 8, 45, 0) == (45, 360)
    assert onset_position(50, 50, 400, 8, 45, 48) == (48, 384)  # not before the stretch's first step
    assert onset_position(50, 3, 24, 8, 45, 0) == (0, 0)  # not before the epoch
    assert skip_window(0, 45, 360, 8, 20, 100) == {'epoch': 0, 'batches': [45, 65], 'samples': [360, 520]}
    assert skip_window(0, 90, 720, 8, 20, 100) == {'epoch': 0, 'batches': [90, 99], 'samples': [720, 792]}


def test_the_manifest_round_trips_and_a_damaged_one_is_refused(tmp_path):
    assert read_manifest(str(tmp_path)) == []
    entries = [{'index': 0, 'status': 'pending'}]
    write_manifest(str(tmp_path), entries)
    assert read_manifest(str(tmp_path)) == entries
    (tmp_path / 'rollbacks.json').write_text('{"not": "a list"}')
    with pytest.raises(ConfigError, match='not a rollback manifest'):
        read_manifest(str(tmp_path))


def test_a_skip_is_made_at_the_rollback_checkpoint_only_when_the_checkpoint_does_not_record_it():
    entry = {'index': 0, 'onset_step': 40, 'checkpoint': {'batch': 28, 'name': 'ep0-ba28-rank0.pt'}}
    assert entries_to_apply([entry], [], 28, 'rollbacks.json') == [entry]
    assert entries_to_apply([entry], [0], 36, 'rollbacks.json') == []
    with pytest.raises(ConfigError, match='loaded a checkpoint at batch 36 that does not record it'):
        entries_to_apply([entry], [], 36, 'rollbacks.json')
