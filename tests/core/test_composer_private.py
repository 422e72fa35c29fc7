"""Each private Composer/Foundry access of foundry_ext.core.composer_private, against the installed packages.

An upgrade that removes or renames one of them fails here, naming it, instead of deep inside a training run.
"""

import inspect
import os

import pytest
import torch
from composer.callbacks import CheckpointSaver
from composer.core import Callback, Event, Time, TimeUnit, Timestamp

from foundry_ext.core.composer_private import (CheckpointNames, checkpoint_due, checkpoint_interval, checkpoint_names,
                                               checkpoint_saver, checkpoint_saver_folders, checkpoints_saved_before,
                                               composer_scheduler_of, evaluators_due, exempt_from_rotation, hf_export,
                                               lambda_lrs_at, local_checkpoint_saver, local_save_folder,
                                               pending_checkpoint_name, remote_save_folder,
                                               sharded_checkpoint_extents, streaming_train_dataset)
from foundry_ext.schedulers import WSDScheduler
from tests.conftest import tiny_trainer


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp('private') / 'ckpt'
    scheduler = WSDScheduler(t_warmup='2ba', t_decay='4ba')
    trainer = tiny_trainer(scheduler, '10ba', lr=0.5, save_folder=str(folder), save_interval='3ba',
                           save_num_checkpoints_to_keep=2)
    trainer.fit()
    yield trainer, scheduler, folder
    trainer.close()


def test_the_compiled_lambda_still_closes_over_the_scheduler_and_its_ratio():
    scheduler = WSDScheduler(t_warmup='2ba', t_decay='4ba')
    trainer = tiny_trainer(scheduler, '10ba', scale_schedule_ratio=0.5)
    found = composer_scheduler_of(trainer.state.schedulers[0])
    assert found is not None, 'compile_composer_scheduler no longer closes over `scheduler`'
    assert found[0] is scheduler and found[1] == 0.5, 'the closure variable `ssr` is gone or renamed'


def test_the_compiled_lambda_reads_the_state_timestamp(trained):
    trainer, scheduler, _ = trained
    state = trainer.state
    # At the timestamp of batch k, the LambdaLR stepped once more gives lr * alpha(k) (Composer's one-batch lag).
    stamps = [Timestamp(batch=k, sample=2 * k, token=0) for k in (2, 6, 8)]
    lrs = lambda_lrs_at(state, stamps, 1)[0]
    expected = []
    saved = state.timestamp
    for stamp in stamps:
        state.timestamp = stamp
        expected.append(0.5 * scheduler(state, 1.0))
    state.timestamp = saved
    assert lrs == pytest.approx(expected)
    assert state.timestamp is saved


def test_the_trainer_keeps_its_checkpoint_saver_and_its_folders(trained, tmp_path):
    trainer, _, folder = trained
    saver = checkpoint_saver(trainer)
    assert isinstance(saver, CheckpointSaver), 'Trainer._checkpoint_saver is gone'
    assert local_save_folder(trainer.state) == str(folder)
    assert remote_save_folder(saver, trainer.state.run_name) is None
    remote = CheckpointSaver(folder='s3://bucket/{run_name}/ckpt')
    assert remote_save_folder(remote, 'run7') == 's3://bucket/run7/ckpt'


def test_the_savers_interval_is_read_back_from_its_closure(trained):
    trainer, _, _ = trained
    saver = local_checkpoint_saver(trainer.state)
    assert saver is checkpoint_saver(trainer)
    assert checkpoint_interval(saver) == Time(3, TimeUnit.BATCH), 'create_interval_scheduler no longer keeps ' \
        'time_interval in its closure'
    assert checkpoint_interval(CheckpointSaver(folder='x', save_interval=lambda state, event: False)) is None


def test_a_plain_dataloader_has_no_streaming_train_dataset(trained):
    # The Streaming case is exercised by tests/test_rollback.py and tests/callbacks/test_resume_data_guard.py.
    assert streaming_train_dataset(trained[0].state) is None


def test_saved_checkpoints_are_listed_with_their_batch_and_can_be_kept_out_of_rotation(trained):
    trainer, _, folder = trained
    saved = checkpoints_saved_before(trainer.state, 10)
    assert [s.batch for s in saved] == [3, 6, 9]
    assert all(s.path.startswith(str(folder)) for s in saved)
    newest = saved[-1]
    assert exempt_from_rotation(newest), 'CheckpointSaver.saved_checkpoints no longer lists the rotated names'
    assert newest.path not in newest.saver.saved_checkpoints
    assert not exempt_from_rotation(newest)  # already out


def test_foundrys_hf_checkpointer_still_has_the_export_call_we_use():
    from llmfoundry.callbacks import HuggingFaceCheckpointer
    params = inspect.signature(HuggingFaceCheckpointer._save_checkpoint).parameters
    assert {'state', 'logger', 'upload_to_save_folder', 'register_to_mlflow'} <= set(params)
    checkpointer = HuggingFaceCheckpointer(save_folder='unset', save_interval='1000000ba')
    for attribute in ('save_dir_format_str', 'huggingface_folder_name_fstr'):
        assert hasattr(checkpointer, attribute), f'HuggingFaceCheckpointer.{attribute} is gone'
    assert callable(hf_export)


def test_a_plain_torch_lambda_has_no_composer_scheduler():
    compiled = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0),
                                                 lambda step: 1.0)
    assert composer_scheduler_of(compiled) is None


def test_the_savers_names_and_folders_are_read(trained):
    trainer, _, folder = trained
    assert checkpoint_names(trainer.state) == CheckpointNames(str(folder), 'ep{epoch}-ba{batch}-rank0.pt',
                                                              'latest-rank0.pt', False)
    assert checkpoint_saver_folders(trainer.state) == [str(folder)]
    assert checkpoint_names(tiny_trainer(None, '1ba').state) is None


class _Probe(Callback):
    """Before Composer's saver (which the Trainer appends after the given callbacks): what is due at each event."""

    def __init__(self):
        self.due, self.fit_end_eval, self.evals_after_fit_end, self._ended = [], None, 0, False

    def batch_checkpoint(self, state, logger):
        if checkpoint_due(state, Event.BATCH_CHECKPOINT):
            self.due.append(pending_checkpoint_name(state))

    def fit_end(self, state, logger):
        self.fit_end_eval, self._ended = evaluators_due(state, Event.FIT_END), True

    def eval_after_all(self, state, logger):
        self.evals_after_fit_end += self._ended


@pytest.mark.parametrize('duration,eval_at_end', [('10ba', True), ('8ba', False)])
def test_due_checkpoints_and_evaluations_are_predicted_exactly_and_asking_changes_nothing(tmp_path, duration,
                                                                                          eval_at_end):
    from torch.utils.data import DataLoader, TensorDataset
    probe = _Probe()
    evaluation = DataLoader(TensorDataset(torch.randn(4, 4), torch.randint(0, 2, (4,))), batch_size=2)
    trainer = tiny_trainer(None, duration, callbacks=[probe], save_folder=str(tmp_path), save_interval='3ba',
                           eval_dataloader=evaluation, eval_interval='4ba')
    trainer.fit()
    trainer.close()
    saved = sorted((n for n in os.listdir(tmp_path) if n.startswith('ep')), key=lambda n: int(n.split('-ba')[1][:-9]))
    last = int(duration[:-2])
    assert probe.due == saved == [f'ep0-ba{b}-rank0.pt' for b in (3, 6) + ((9, 10) if last == 10 else (8,))]
    assert probe.fit_end_eval is eval_at_end and probe.evals_after_fit_end == int(eval_at_end)


def test_the_sharded_checkpoint_index_gives_each_shards_size(tmp_path):
    import torch.distributed.checkpoint as dcp
    dcp.save({'a': torch.arange(100.0), 'b': {'c': torch.ones(3)}, 'n': 7}, checkpoint_id=str(tmp_path), no_dist=True)
    shards = {name: os.path.getsize(tmp_path / name) for name in os.listdir(tmp_path) if name.endswith('.distcp')}
    assert sharded_checkpoint_extents(str(tmp_path)) == shards
