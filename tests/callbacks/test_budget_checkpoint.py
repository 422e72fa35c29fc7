"""WSD-S with budget checkpoints on real training: one finished model per budget, exact across resume."""

import json

import pytest
import torch

from foundry_ext.core.checkpoint_state import unpack_state
from tests.conftest import demo_yaml_with, foundry_run

WSD_S = {'name': 'wsd_s', 't_warmup': '2ba', 'budgets': ['10ba', '20ba', '30ba'], 'decay_fraction': 0.5}
RUN = ['callbacks.budget_checkpoint={}', 'max_duration=30ba', 'save_interval=6ba']


def _weights(path):
    return torch.load(path, map_location='cpu', weights_only=False)['state']['model']


def test_budget_checkpoints_manifest_and_resume_mid_decay_is_exact(tmp_path):
    yaml_path = demo_yaml_with(tmp_path / 'wsd_s.yaml', scheduler=WSD_S)
    straight = tmp_path / 'straight'
    foundry_run(straight, [*RUN, f'save_folder={straight}/ckpt'], yaml_path)
    budgets = straight / 'ckpt' / 'budgets'
    manifest = json.loads((budgets / 'budgets.json').read_text())
    assert [(e['index'], e['budget'], e['step'], e['samples']) for e in manifest] == [
        (1, '10ba', 10, 160), (2, '20ba', 20, 320), (3, '30ba', 30, 480)]
    assert all(e['train_loss'] > 0 for e in manifest)
    for e in manifest:
        path = budgets / f"budget{e['index']}-{e['budget']}-ba{e['step']}-rank0.pt"
        # Each budget checkpoint carries the manifest up to and including itself: resuming from it keeps it.
        stored = torch.load(path, map_location='cpu', weights_only=False)['state']['callbacks']['BudgetCheckpoint']
        assert [s['index'] for s in unpack_state(stored)['manifest']] == list(range(1, e['index'] + 1))
    # The budget-30 model is the final model of the run.
    final = _weights(straight / 'ckpt' / 'ep0-ba30-rank0.pt')
    budget3 = _weights(budgets / 'budget3-30ba-ba30-rank0.pt')
    assert all(torch.equal(final[k], budget3[k]) for k in final)

    # Resume from step 18, in the middle of the decay into budget 20, into a fresh folder.
    resumed = tmp_path / 'resumed'
    foundry_run(resumed, [*RUN, f'save_folder={resumed}/ckpt', f'load_path={straight}/ckpt/ep0-ba18-rank0.pt'],
                yaml_path)
    got = _weights(resumed / 'ckpt' / 'ep0-ba30-rank0.pt')
    for name in final:
        assert torch.equal(final[name], got[name]), name
    # The manifest came back with the checkpoint (budget 1) and the resumed run added budgets 2 and 3.
    resumed_manifest = json.loads((resumed / 'ckpt' / 'budgets' / 'budgets.json').read_text())
    assert [e['index'] for e in resumed_manifest] == [1, 2, 3]
    assert resumed_manifest[1]['train_loss'] == pytest.approx(manifest[1]['train_loss'], rel=0, abs=0)


def test_needs_a_budget_schedule_and_a_folder(tmp_path):
    cosine = demo_yaml_with(tmp_path / 'cosine.yaml', scheduler={'name': 'cosine_with_warmup', 't_warmup': '1ba'})
    with pytest.raises(ValueError, match='needs a schedule with budgets.*uses CosineAnnealingWithWarmupScheduler'):
        foundry_run(tmp_path / 'a', ['callbacks.budget_checkpoint={}', 'max_duration=4ba',
                                     f'save_folder={tmp_path}/a/ckpt'], cosine)
    with pytest.raises(ValueError, match='folder is unset and the run has no save_folder'):
        foundry_run(tmp_path / 'b', ['callbacks.budget_checkpoint={}', 'max_duration=4ba', 'save_folder=null',
                                     'scheduler.t_warmup=1ba', 'scheduler.t_decay=2ba'])


def test_hf_export_per_budget_loads_with_transformers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    yaml_path = demo_yaml_with(tmp_path / 'w.yaml', scheduler={'name': 'wsd_s', 't_warmup': '1ba',
                                                                'budgets': ['3ba', '6ba'], 'decay_fraction': 0.5})
    run = tmp_path / 'run'
    foundry_run(run, ['callbacks.budget_checkpoint={hf_export: true}', 'max_duration=6ba',
                      f'save_folder={run}/ckpt', 'save_interval=6ba'], yaml_path)
    manifest = json.loads((run / 'ckpt' / 'budgets' / 'budgets.json').read_text())
    assert [e['hf_checkpoint'] for e in manifest] == [f'{run}/ckpt/budgets/hf/budget1-ba3',
                                                        f'{run}/ckpt/budgets/hf/budget2-ba6']
    model = AutoModelForCausalLM.from_pretrained(manifest[-1]['hf_checkpoint'], trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(manifest[-1]['hf_checkpoint'])
    assert type(model).__name__ == 'MPTForCausalLM' and tokenizer('ab')['input_ids'] == [97, 98]


def test_a_remote_save_folder_is_refused_rather_than_written_to_a_temporary_folder(tmp_path):
    from composer.callbacks import CheckpointSaver

    from foundry_ext.callbacks.budget_checkpoint import BudgetCheckpoint
    from foundry_ext.schedulers import WSDScheduler
    from tests.conftest import tiny_trainer

    trainer = tiny_trainer(WSDScheduler(t_decay='2ba'), '4ba')
    # Composer stages s3://... in a mkdtemp() folder. The saver is only attached: uploading needs credentials.
    trainer.state.callbacks.append(CheckpointSaver(folder='s3://some-bucket/ckpt'))
    with pytest.raises(ValueError, match='or only a remote one .* Set save_folder to a local path, or '
                                         r'callbacks\.budget_checkpoint\.folder'):
        BudgetCheckpoint().fit_start(trainer.state, trainer.logger)
    with pytest.raises(ValueError, match=r"budget_checkpoint\.folder='s3://some-bucket/budgets' is remote.*Set a local"):
        BudgetCheckpoint(folder='s3://some-bucket/budgets')
    explicit = BudgetCheckpoint(folder=str(tmp_path / 'budgets'))
    explicit.fit_start(trainer.state, trainer.logger)
    assert explicit.folder == str(tmp_path / 'budgets')


def _manifest_of(trainer_kwargs, scheduler, max_duration, tmp_path, **kwargs):
    from foundry_ext.callbacks.budget_checkpoint import BudgetCheckpoint
    from tests.conftest import tiny_trainer

    trainer = tiny_trainer(scheduler, max_duration, callbacks=[BudgetCheckpoint()], save_folder=str(tmp_path / 'ckpt'),
                           save_interval='100ba', **trainer_kwargs, **kwargs)
    trainer.fit()
    return json.loads((tmp_path / 'ckpt' / 'budgets' / 'budgets.json').read_text())


def test_budgets_follow_scale_schedule_ratio(tmp_path):
    from foundry_ext.schedulers import WSDSScheduler

    # Composer calls the schedule with ssr 0.5: its decays end at 5 and 10, where the models are saved.
    manifest = _manifest_of({'scale_schedule_ratio': 0.5}, WSDSScheduler(budgets=['10ba', '20ba']), '20ba', tmp_path)
    assert [(e['budget'], e['step']) for e in manifest] == [('5ba', 5), ('10ba', 10)]


def _eval_loader():
    from torch.utils.data import DataLoader, TensorDataset
    return DataLoader(TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))), batch_size=4)


def test_eval_metrics_are_those_measured_at_the_budget_step(tmp_path):
    from composer.core import Evaluator

    from foundry_ext.schedulers import WSDSScheduler

    evaluators = [Evaluator(label='often', dataloader=_eval_loader(), eval_interval='4ba'),
                  Evaluator(label='rare', dataloader=_eval_loader(), eval_interval='8ba')]
    manifest = _manifest_of({'eval_dataloader': evaluators}, WSDSScheduler(budgets=['4ba', '12ba']), '12ba', tmp_path)
    # 'rare' never ran by batch 4; at 12 (the end of training) both ran, after the checkpoint was written.
    assert set(manifest[0]['eval']) == {'often/CrossEntropy', 'often/MulticlassAccuracy'}
    assert set(manifest[1]['eval']) == {f'{label}/{name}' for label in ('often', 'rare')
                                        for name in ('CrossEntropy', 'MulticlassAccuracy')}


def test_an_eval_at_the_end_of_an_epoch_is_added_to_that_budget(tmp_path):
    from foundry_ext.schedulers import WSDSScheduler

    manifest = _manifest_of({'eval_dataloader': _eval_loader(), 'eval_interval': '1ep', 'batches': 8},
                            WSDSScheduler(budgets=['1ep', '2ep']), '2ep', tmp_path)
    assert [e['step'] for e in manifest] == [8, 16]
    assert all(set(e['eval']) == {'eval/CrossEntropy', 'eval/MulticlassAccuracy'} for e in manifest)
