"""Each private Composer/Foundry access of foundry_ext.core.composer_private, against the installed packages.

An upgrade that removes or renames one of them fails here, naming it, instead of deep inside a training run.
"""

import inspect

import pytest
import torch
from composer.callbacks import CheckpointSaver
from composer.core import Timestamp

from foundry_ext.core.composer_private import (checkpoint_saver, checkpoints_saved_before, composer_scheduler_of,
                                               exempt_from_rotation, hf_export, lambda_lrs_at, local_save_folder,
                                               remote_save_folder)
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
