"""Trains ``mlp()`` under FSDP2 (sharded DTensor optimizer state) and writes the guard's statistics as JSON.

Run by ``test_optimizer_stats.py`` as ``FSDP_VERSION=2 composer -n 2 fsdp_stats_worker.py OUT.json``: Composer's
FSDP2 runs on CPU with gloo. Rank 0 writes the all-reduced summary of the sharded state, the summary of the same
state gathered whole and summarized in one process, and the metrics the guard logged; then the element count
the guard records under plain DDP.
"""

import json
import sys

import torch
from composer import Trainer
from composer.loggers import InMemoryLogger
from composer.optim import DecoupledAdamW
from composer.utils import dist
from torch.distributed.tensor import DTensor
from torch.utils.data import DataLoader

from foundry_ext.algorithms import ResumeGuard, summarize_optimizer
from foundry_ext.core.checkpoint_state import unpack_state
from tests.algorithms.conftest import dataset, mlp

STEPS = 3
PER_RANK_BATCH = 4


def main(out: str) -> None:
    torch.set_num_threads(1)
    model = mlp()
    data = dataset()
    memory = InMemoryLogger()
    trainer = Trainer(model=model, train_dataloader=DataLoader(data, batch_size=PER_RANK_BATCH,
                                                               sampler=dist.get_sampler(data, shuffle=False)),
                      max_duration=f'{STEPS}ba', optimizers=DecoupledAdamW(model.parameters(), lr=1e-2),
                      algorithms=[ResumeGuard(monitor_interval=1)], loggers=[memory], progress_bar=False,
                      device='cpu', seed=3,
                      parallelism_config={'fsdp': {'sharding_strategy': 'FULL_SHARD', 'mixed_precision': 'FULL'}})
    trainer.fit()
    optimizer = trainer.state.optimizers[0]
    assert all(isinstance(s['exp_avg_sq'], DTensor) for s in optimizer.state.values()), 'state is not sharded'
    sharded = summarize_optimizer(optimizer)
    local_numel = sum(s['exp_avg_sq'].to_local().numel() for s in optimizer.state.values())

    # The same state, gathered whole into a plain optimizer and summarized without any reduction.
    params = [p.full_tensor().detach().clone() for p in optimizer.param_groups[0]['params']]
    whole = DecoupledAdamW(params, lr=1e-2)
    for full, param in zip(params, optimizer.param_groups[0]['params']):
        state = optimizer.state[param]
        whole.state[full] = {
            'step': state['step'].clone(),
            'exp_avg': state['exp_avg'].full_tensor(),
            'exp_avg_sq': state['exp_avg_sq'].full_tensor(),
        }
    gathered = summarize_optimizer(whole, reduce=False)
    record = unpack_state(trainer.state.algorithms[0].state_dict())  # a collective, as in a checkpoint save

    local_numels = dist.all_gather_object(local_numel)
    trainer.close()

    # Plain DDP: every rank holds the whole state, so the guard's counts must not be summed over the ranks.
    ddp_model = mlp()
    ddp = Trainer(model=ddp_model, train_dataloader=DataLoader(data, batch_size=PER_RANK_BATCH,
                                                               sampler=dist.get_sampler(data, shuffle=False)),
                  max_duration=f'{STEPS}ba', optimizers=DecoupledAdamW(ddp_model.parameters(), lr=1e-2),
                  algorithms=[ResumeGuard(monitor_interval=0)], progress_bar=False, device='cpu', seed=3)
    ddp.fit()
    ddp_record = unpack_state(ddp.state.algorithms[0].state_dict())
    if dist.get_global_rank() == 0:
        metrics = {k: float(v[-1][1]) for k, v in memory.data.items() if k.startswith('resume_guard/')}
        with open(out, 'w') as f:
            json.dump({'sharded': [s.to_dict() for s in sharded], 'gathered': [s.to_dict() for s in gathered],
                       'record': record['stats'], 'metrics': metrics, 'local_numels': local_numels,
                       'ddp_record_numel': ddp_record['stats'][0]['numel'],
                       'model_numel': sum(p.numel() for p in ddp_model.parameters())}, f)
    ddp.close()


if __name__ == '__main__':
    main(sys.argv[1])
