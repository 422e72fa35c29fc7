import logging
from pathlib import Path

import pytest
import torch
from composer.loggers import InMemoryLogger
from torch.utils.data import DataLoader

from foundry_ext.callbacks.resume_data_guard import ResumeDataError, ResumeDataGuard
from foundry_ext.core.checkpoint_state import unpack_state
from foundry_ext.data.fingerprints import row_fingerprints
from tests.conftest import foundry_run, tiny_trainer

LOGGER = 'foundry_ext.callbacks.resume_data_guard'
# The demo recipe, cut to 16 batches with a checkpoint at batch 8 (the schedule only has to fit the run).
DEMO = ['max_duration=16ba', 'save_interval=8ba', 'scheduler.t_warmup=2ba', 'scheduler.t_decay=4ba',
        'callbacks.resume_data_guard.history=64']


def _guard(trainer) -> ResumeDataGuard:
    return next(cb for cb in trainer.state.callbacks if isinstance(cb, ResumeDataGuard))


def _record(guard: ResumeDataGuard) -> dict:
    return unpack_state(guard.state_dict())


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def _series(metrics: dict, name: str) -> dict[int, float]:
    steps, values = metrics[name]
    return dict(zip(steps.tolist(), values.tolist()))


def _tiny(tmp_path: Path, guard: ResumeDataGuard, duration: str, batches: int = 8, **kwargs):
    """The tiny Trainer on a plain map-style dataset (batches of 2 rows, in order), saving every 2 batches."""
    return tiny_trainer(None, duration, callbacks=[guard], batches=batches, save_folder=str(tmp_path / 'ck'),
                        save_interval='2ba', **kwargs)


@pytest.fixture(scope='module')
def demo_reference(tmp_path_factory):
    """An uninterrupted 16-batch run of the demo recipe; its batch-8 checkpoint is what the resumes load."""
    run_dir = tmp_path_factory.mktemp('reference')
    trainer, _ = foundry_run(run_dir, DEMO, metrics=None)
    return _record(_guard(trainer)), run_dir / 'checkpoints' / 'ep0-ba8-rank0.pt'


def test_streaming_resume_continues_the_stream_bit_identically(tmp_path, demo_reference, caplog):
    reference, checkpoint = demo_reference
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        trainer, metrics = foundry_run(tmp_path, [*DEMO, f'load_path={checkpoint}'], metrics=None)
    resumed = _record(_guard(trainer))
    assert resumed['recent'] == reference['recent'] and len(reference['recent']) == 16
    assert len({fp for batch in reference['recent'] for fp in batch}) == 16 * 16  # every sample fingerprinted
    assert _series(metrics, 'resume_data_guard/checked_samples') == {step: 16 for step in range(8, 16)}
    assert _series(metrics, 'resume_data_guard/repeated_samples') == {step: 0 for step in range(8, 16)}
    assert not _warnings(caplog)


def test_streaming_ignores_a_changed_shuffle_seed_when_its_state_is_restored(tmp_path, demo_reference, caplog):
    reference, checkpoint = demo_reference
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        trainer, _ = foundry_run(tmp_path, [*DEMO, 'max_duration=10ba', f'load_path={checkpoint}',
                                            'train_loader.dataset.shuffle_seed=99'], metrics=None)
    assert _record(_guard(trainer))['recent'] == reference['recent'][:10]  # the order is the checkpoint's
    assert _warnings(caplog) == [
        'resume_data_guard: shuffle_seed=99 in the config has no effect on this resume: Streaming restores '
        'shuffle_seed=17 from the checkpoint, so the sample order continues unchanged. To reshuffle on purpose, '
        'start a new run.']


def test_streaming_with_a_changed_shuffle_seed_and_no_restored_state_is_caught(tmp_path, demo_reference, caplog):
    reference, checkpoint = demo_reference
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        trainer, _ = foundry_run(tmp_path, [*DEMO, 'max_duration=10ba', f'load_path={checkpoint}',
                                            'load_ignore_keys=[state/dataset_state]',
                                            'train_loader.dataset.shuffle_seed=99',
                                            'callbacks.resume_data_guard.on_violation=warn'], metrics=None)
    messages = '\n'.join(_warnings(caplog))
    assert 'StreamingDataset state was not restored' in messages
    assert 'Sample order: the StreamingDataset orders its samples differently from the checkpointed run ' \
           '(shuffle_seed 17 -> 99), and its resume state was not restored' in messages
    resumed = _record(_guard(trainer))['recent'][8:]
    assert not set(resumed[0]) & set(reference['recent'][8])  # the data did change


def test_streaming_resume_from_an_epoch_end_checkpoint_replays_the_finished_epoch(tmp_path, caplog):
    # A 125-sample corpus: 7 batches per epoch. Composer saves the epoch-end checkpoint with the Streaming state of
    # the finished epoch 0, so the resumed epoch 1 gets epoch 0's sample order again.
    tiny_epochs = [*DEMO, 'train_loader.dataset.train_tokens=16000', 'save_interval=1ep']
    foundry_run(tmp_path / 'first', [*tiny_epochs, 'max_duration=8ba'])
    checkpoint = tmp_path / 'first' / 'checkpoints' / 'ep1-ba7-rank0.pt'
    epoch0 = unpack_state(torch.load(checkpoint, weights_only=False)['state']['callbacks']['ResumeDataGuard'])['head']
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        resumed, _ = foundry_run(tmp_path / 'resumed', [*tiny_epochs, 'max_duration=9ba', f'load_path={checkpoint}',
                                                        'callbacks.resume_data_guard.on_violation=warn'], metrics=None)
    assert _record(_guard(resumed))['head'] == epoch0[:2]  # epoch 1 starts with epoch 0's batches
    assert 'Sample offset: the StreamingDataset resumed at epoch 0, sample 0 of the epoch, but the timestamp is at ' \
           'epoch 1, sample 0. A checkpoint taken at the end of an epoch' in _warnings(caplog)[0]


def test_a_second_fit_on_a_streaming_loader_is_caught(tmp_path, caplog):
    # Re-iterating the StreamingDataset moves it on to its epoch-1 order while the run is still in epoch 0.
    from llmfoundry.command_utils import train_from_yaml

    from tests.conftest import DEMO_YAML, SMALL_CORPUS
    trainer = train_from_yaml(DEMO_YAML, [f'variables.run_dir={tmp_path}', 'eval_loader=null', 'eval_interval=1',
                                          'python_log_level=null', SMALL_CORPUS, *DEMO, 'max_duration=6ba',
                                          'save_interval=100ba', 'callbacks.resume_data_guard.on_violation=warn'])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        trainer.fit(duration='1ba')
    trainer.close()
    assert 'Sample order: the StreamingDataset iterates the sample order of its epoch 1, but the timestamp is in ' \
           'epoch 0' in '\n'.join(_warnings(caplog))


@pytest.mark.parametrize('resume', ['spin_dataloaders=False', "load_ignore_keys=['state/timestamp']"])
def test_map_style_loader_that_restarts_is_stopped_before_training_on_the_replay(tmp_path, resume):
    _tiny(tmp_path, ResumeDataGuard(), '8ba').fit()
    checkpoint = tmp_path / 'ck' / 'ep0-ba4-rank0.pt'
    kwargs = {'spin_dataloaders': False} if resume.startswith('spin') else {'load_ignore_keys': ['state/timestamp']}
    trainer = _tiny(tmp_path / 'resumed', ResumeDataGuard(), '8ba', load_path=str(checkpoint), **kwargs)
    batch = int(trainer.state.timestamp.batch)
    with pytest.raises(ResumeDataError, match=r'Repeated data: 2 of the 2 samples .*restarted at batch 0, the start '
                                              r'of the epoch') as error:
        trainer.fit()
    assert 'on_violation: warn' in str(error.value)
    if resume.startswith('load_ignore_keys'):
        assert 'Sample offset: the restored timestamp is at epoch 0, sample 0 of the epoch, but the guard saved ' \
               'its record at epoch 0, sample 8' in str(error.value)
    # Nothing was trained on the replayed batch: the weights are the checkpoint's, the clock did not move.
    saved = torch.load(checkpoint, weights_only=False)['state']['model']
    assert all(torch.equal(v, saved[k]) for k, v in trainer.state.model.state_dict().items())
    assert int(trainer.state.timestamp.batch) == batch


@pytest.mark.parametrize('spin', [False, True])
def test_map_style_warn_logs_the_explanation_and_the_metric(tmp_path, spin, caplog):
    _tiny(tmp_path, ResumeDataGuard(), '8ba').fit()
    metrics = InMemoryLogger()
    trainer = _tiny(tmp_path / 'resumed', ResumeDataGuard(on_violation='warn'), '8ba', spin_dataloaders=spin,
                    load_path=str(tmp_path / 'ck' / 'ep0-ba4-rank0.pt'), loggers=[metrics])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        trainer.fit()
    repeated = [value for _, value in metrics.data['resume_data_guard/repeated_samples']]
    if spin:  # Composer fast-forwards the loader: the stream continues
        assert repeated == [0, 0, 0, 0] and not _warnings(caplog)
    else:
        assert repeated == [2, 2, 2, 2] and len(_warnings(caplog)) == 1
        assert 'Repeated data: 2 of the 2 samples checked since the resume were already trained on in this epoch' \
               ', in batches [0] of the epoch: the loader restarted at batch 0, the start of the epoch.' \
               in _warnings(caplog)[0]
        assert 'spin_dataloaders: false' in _warnings(caplog)[0]


@pytest.mark.parametrize('checkpoint, checked', [('ep0-ba4-rank0.pt', 8), ('ep1-ba6-rank0.pt', 6)])
def test_samples_of_earlier_epochs_are_no_repeats(tmp_path, checkpoint, checked, caplog):
    # 4 batches per epoch, in the same order every epoch; the check window spans epoch ends.
    _tiny(tmp_path, ResumeDataGuard(), '12ba', batches=4).fit()
    metrics = InMemoryLogger()
    trainer = _tiny(tmp_path / 'resumed', ResumeDataGuard(), '12ba', batches=4, loggers=[metrics],
                    load_path=str(tmp_path / 'ck' / checkpoint))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        trainer.fit()
    assert [value for _, value in metrics.data['resume_data_guard/repeated_samples']] == [0] * checked
    assert not _warnings(caplog)


def test_global_batch_size_change_is_caught(tmp_path):
    # Composer fast-forwards 4 batches of the new size: to sample 16, not 8. Nothing repeats; 8 samples are skipped.
    _tiny(tmp_path, ResumeDataGuard(), '8ba', batches=16).fit()
    trainer = _tiny(tmp_path / 'resumed', ResumeDataGuard(), '8ba', batches=16,
                    load_path=str(tmp_path / 'ck' / 'ep0-ba4-rank0.pt'))
    wider = DataLoader(trainer.state.train_dataloader.dataset, batch_size=4)
    with pytest.raises(ResumeDataError, match='Global batch size: 4 samples per batch now, 2 before the checkpoint'):
        trainer.fit(train_dataloader=wider)


def test_a_new_run_from_loaded_weights_with_reset_time_is_not_a_resume(tmp_path):
    _tiny(tmp_path, ResumeDataGuard(), '4ba').fit()
    guard = ResumeDataGuard()
    trainer = _tiny(tmp_path / 'again', guard, '4ba', load_path=str(tmp_path / 'ck' / 'ep0-ba4-rank0.pt'))
    trainer.fit(duration='6ba', reset_time=True)  # the same data from its start, on purpose
    assert int(trainer.state.timestamp.batch) == 6 and _record(guard)['position'] == [0, 6, 12]
    # Likewise without a load: a new run on the same trainer, then a fit() that continues it.
    fresh = ResumeDataGuard()
    trainer = _tiny(tmp_path / 'fresh', fresh, '6ba', save_overwrite=True)
    trainer.fit()
    trainer.fit(duration='2ba', reset_time=True)
    trainer.fit(duration='2ba')  # checked against the new run's record, not the first run's
    assert int(trainer.state.timestamp.batch) == 4 and _record(fresh)['position'] == [0, 4, 8]
    # Whereas a checkpoint loaded without its timestamp still does not match its own data record.
    ignored = _tiny(tmp_path / 'ignored', ResumeDataGuard(), '4ba', load_path=str(tmp_path / 'ck' / 'ep0-ba4-rank0.pt'),
                    load_ignore_keys=['state/timestamp'])
    with pytest.raises(ResumeDataError, match='Sample offset: the restored timestamp is at epoch 0, sample 0'):
        ignored.fit()


def test_state_round_trips_through_a_real_checkpoint(tmp_path):
    guard = ResumeDataGuard(check_batches=2, history=3)
    trainer = _tiny(tmp_path, guard, '6ba')
    trainer.fit()
    rows = trainer.state.train_dataloader.dataset.tensors[0]
    trainer.close()
    expected = [row_fingerprints(rows[2 * i:2 * i + 2]).tolist() for i in range(6)]
    saved = torch.load(tmp_path / 'ck' / 'ep0-ba6-rank0.pt', weights_only=False)['state']['callbacks']
    assert unpack_state(saved['ResumeDataGuard']) == _record(guard) == {
        'version': 1, 'position': [0, 6, 12], 'batch_size': 2, 'head': expected[:2], 'recent': expected[3:],
        'streaming_order': None}
    restored = ResumeDataGuard(check_batches=2, history=3)
    _tiny(tmp_path / 'resumed', restored, '6ba', load_path=str(tmp_path / 'ck' / 'ep0-ba6-rank0.pt'))
    assert restored.state_dict() == saved['ResumeDataGuard']


def test_fingerprints_are_fixed_per_row_bytes():
    ids = torch.arange(12, dtype=torch.int64).reshape(3, 4)
    fps = row_fingerprints(ids)
    assert fps.tolist() == row_fingerprints(ids.clone()).tolist() and len(set(fps.tolist())) == 3
    assert fps[1] == row_fingerprints(ids[1:2])[0]  # a row's fingerprint does not depend on its batch
    assert row_fingerprints(torch.tensor([[0, 1, 2, 3]])).tolist() == [GOLDEN]  # the same in every process
    assert row_fingerprints(torch.tensor([[0, 1, 2, 3, 0]]))[0] != GOLDEN  # a trailing zero is a different row
    assert row_fingerprints(torch.rand(3, 5, dtype=torch.float16)).shape == (3,)


GOLDEN = 437803448801379840


@pytest.mark.gpu
def test_fingerprints_are_the_same_on_gpu():
    ids = torch.randint(0, 50000, (8, 2048))
    assert row_fingerprints(ids.cuda()).cpu().tolist() == row_fingerprints(ids).tolist()


@pytest.mark.parametrize('kwargs, message', [
    ({'on_violation': 'stop'}, r"callbacks\.resume_data_guard\.on_violation='stop' must be one of warn, error"),
    ({'check_batches': 0}, r'callbacks\.resume_data_guard\.check_batches=0 must be an integer >= 1'),
    ({'history': 2.5}, r'callbacks\.resume_data_guard\.history=2\.5 must be an integer >= 1'),
    ({'max_repeated_fraction': 1}, r'callbacks\.resume_data_guard\.max_repeated_fraction=1 must be a number in'),
    ({'batch_key': ['input_ids']}, r"callbacks\.resume_data_guard\.batch_key=\['input_ids'\] must be a mapping key"),
])
def test_bad_config_is_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResumeDataGuard(**kwargs)


def test_batch_key_that_is_not_in_the_batch_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"callbacks\.resume_data_guard\.batch_key='input_ids': the batch \(list\)"):
        tiny_trainer(None, '1ba', callbacks=[ResumeDataGuard(batch_key='input_ids')]).fit()
