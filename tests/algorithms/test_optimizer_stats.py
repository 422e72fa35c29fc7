"""The optimizer-state summary: its definitions against direct computation, and sharded (2 processes) vs. 1."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from composer.optim import DecoupledAdamW

from foundry_ext.algorithms import ResumeGuard, summarize_optimizer
from foundry_ext.algorithms.optimizer_stats import BINS_PER_DECADE, QUANTILES, GroupSummary
from tests.algorithms.conftest import adam_trainer, dataset, last, mlp

REPO = Path(__file__).resolve().parents[2]
ONE_BIN = 1.0 / BINS_PER_DECADE  # quantiles are exact to one histogram bin, in decades


def _trained_optimizer(weight_decay: float,
                       amsgrad: bool = False) -> tuple[DecoupledAdamW, list[torch.Tensor], list[torch.Tensor]]:
    """Five real DecoupledAdamW steps on the MLP; returns the optimizer and the parameters before/after the last."""
    model = mlp()
    optimizer = DecoupledAdamW(model.parameters(), lr=1e-2, weight_decay=weight_decay, amsgrad=amsgrad)
    data = dataset()
    for step in range(5):
        x, y = data[step * 8:(step + 1) * 8]
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model.module(x), y).backward()
        before = [p.detach().clone() for p in model.parameters()]
        optimizer.step()
    return optimizer, before, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize('amsgrad', [False, True])
def test_summary_matches_direct_computation(amsgrad):
    optimizer, before, after = _trained_optimizer(weight_decay=0.0, amsgrad=amsgrad)
    [summary] = summarize_optimizer(optimizer)
    states = [optimizer.state[p] for p in optimizer.param_groups[0]['params']]
    v = torch.cat([s['exp_avg_sq'].reshape(-1) for s in states]).double()
    m = torch.cat([s['exp_avg'].reshape(-1) for s in states]).double()
    # amsgrad's update divides by the running maximum of v.
    denominator = torch.cat([s['max_exp_avg_sq'].reshape(-1) for s in states]).double() if amsgrad else v
    precond = 1 / ((1 - 0.9**5) * ((denominator / (1 - 0.95**5)).sqrt() + 1e-8))
    assert summary.numel == v.numel() and summary.mean_step == 5 and summary.nonfinite == 0
    assert summary.v_mean == pytest.approx(v.mean().item(), rel=1e-12)
    exact = torch.quantile(precond, torch.tensor(QUANTILES, dtype=torch.float64))
    for ours, q in zip(summary.precond_quantiles, exact.tolist()):
        assert abs(math.log10(ours / q)) <= ONE_BIN
    # lr * RMS(f m) is the RMS of the update the last step really applied (no weight decay here).
    delta = torch.cat([(a - b).reshape(-1) for a, b in zip(after, before)]).double()
    assert summary.update_rms_per_lr * 1e-2 == pytest.approx(delta.square().mean().sqrt().item(), rel=1e-5)
    theta = torch.cat([a.reshape(-1) for a in after]).double()
    assert summary.update_to_param(1e-2) == pytest.approx((delta.norm() / theta.norm()).item(), rel=1e-5)
    assert summary.effective_step(2.0) == tuple(2.0 * q for q in summary.precond_quantiles)
    assert GroupSummary.from_dict(summary.to_dict()) == summary


def test_monitor_logs_the_statistics_at_its_interval():
    trainer, memory = adam_trainer(None, '6ba', [ResumeGuard(monitor_interval=3)])
    trainer.fit()
    steps = [int(ts.batch) for ts, _ in memory.data['resume_guard/group0/eff_step_p50']]
    assert steps == [3, 6]
    [summary] = summarize_optimizer(trainer.state.optimizers[0])
    assert last(memory, 'resume_guard/group0/eff_step_p50') == pytest.approx(1e-2 * summary.precond_quantiles[1])
    assert last(memory, 'resume_guard/group0/update_rms_ratio') == pytest.approx(summary.update_to_param(1e-2))
    assert last(memory, 'resume_guard/group0/v_mean') == pytest.approx(summary.v_mean)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_process_sharded_statistics_equal_one_process(tmp_path: Path):
    out = tmp_path / 'fsdp.json'
    env = {**os.environ, 'FSDP_VERSION': '2', 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1'}
    composer = Path(sys.executable).with_name('composer')
    result = subprocess.run([str(composer), '-n', '2', '--master_port', str(_free_port()),
                             str(REPO / 'tests' / 'algorithms' / 'fsdp_stats_worker.py'), str(out)],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    [sharded], [gathered] = (GroupSummary.from_dict(d) for d in report['sharded']), \
        (GroupSummary.from_dict(d) for d in report['gathered'])

    # Each rank holds part of the state, and the all-reduced summary is the one of the whole state.
    assert all(0 < n < gathered.numel for n in report['local_numels'])
    assert sum(report['local_numels']) == gathered.numel == sharded.numel
    assert sharded.precond_quantiles == gathered.precond_quantiles  # integer histogram counts: exact
    for key in ('mean_step', 'v_mean', 'update_rms_per_lr', 'param_rms'):
        assert getattr(sharded, key) == pytest.approx(getattr(gathered, key), rel=1e-12), key
    assert report['record'] == report['sharded']  # the checkpoint record goes through the same reduction
    assert report['ddp_record_numel'] == report['model_numel']  # DDP replicas are not summed

    # And a real 1-process run on the same global batches ends in the same state. One difference is torch's,
    # not ours: FSDP2 on gloo (torch 2.7) sums the gradients over the ranks instead of averaging them, so the
    # sharded run's gradients are 2x, v 4x and f 1/2x; Adam's update (m f) and the parameters do not change.
    trainer, memory = adam_trainer(None, '3ba', [ResumeGuard(monitor_interval=1)], batch_size=8)
    trainer.fit()
    [single] = summarize_optimizer(trainer.state.optimizers[0])
    assert single.numel == sharded.numel and single.mean_step == sharded.mean_step
    assert sharded.v_mean == pytest.approx(4 * single.v_mean, rel=1e-4)
    for a, b in zip(single.precond_quantiles, sharded.precond_quantiles):
        assert abs(math.log10(a / (2 * b))) <= ONE_BIN
    for key in ('update_rms_per_lr', 'param_rms'):
        assert getattr(single, key) == pytest.approx(getattr(sharded, key), rel=1e-4), key
    key = 'resume_guard/group0/update_rms_ratio'
    assert report['metrics'][key] == pytest.approx(last(memory, key), rel=1e-4)
