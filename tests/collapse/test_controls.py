"""Tests for foundry_ext.collapse.controls: tau, TPP, the weight decay for a target tau, YAML parsing and
parameter counting through Foundry on the meta device."""

import copy
import dataclasses
import math
import time
from typing import Any

import pytest

from foundry_ext.collapse.controls import (TrainingBudget, count_parameters, duration_to_steps, from_foundry_config,
                                           weight_decay_for_tau_fraction)
from foundry_ext.core.errors import ConfigError


def _budget(
    optimizer: str = 'decoupled_adamw',
    weight_decay: float = 1e-5,
    lr: float = 6e-4,
) -> TrainingBudget:
    return TrainingBudget(
        total_params=100_000_000,
        non_embedding_params=80_000_000,
        global_train_batch_size=256,
        max_seq_len=2048,
        total_steps=10_000,
        peak_lr=lr,
        weight_decay=weight_decay,
        optimizer=optimizer,
    )


def _foundry_cfg(**overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        'max_seq_len': 128,
        'global_train_batch_size': 32,
        'max_duration': '1000ba',
        'model': {'name': 'mpt_causal_lm', 'd_model': 64, 'n_heads': 4, 'n_layers': 2, 'vocab_size': 101},
        'optimizer': {'name': 'decoupled_adamw', 'lr': 6e-4, 'weight_decay': 1e-4},
        'scheduler': {'name': 'cosine_with_warmup', 't_warmup': '100ba', 'alpha_f': 0.1},
    }
    cfg.update(overrides)
    return cfg



# ---------------------------------------------------------------- timescale, TPP, weight decay


def test_tau_decoupled_adamw_uses_weight_decay_as_per_step_decay():
    budget = _budget('decoupled_adamw', weight_decay=1e-5)
    assert budget.eta_lambda == pytest.approx(1e-5)
    assert budget.tau_iter == pytest.approx(1e5)
    assert budget.tau_fraction == pytest.approx(10.0)
    # Eq. (2): tau = B / (eta lambda D).
    eq2 = budget.tokens_per_batch / (budget.eta_lambda * budget.total_tokens)
    assert budget.tau_fraction == pytest.approx(eq2)


def test_tau_torch_adamw_scales_weight_decay_by_lr():
    budget = _budget('adamw', weight_decay=0.1, lr=6e-4)
    assert budget.eta_lambda == pytest.approx(6e-5)
    assert budget.tau_fraction == pytest.approx(1.0 / (6e-5 * 10_000))
    # The same YAML number means a 1/lr times longer timescale under torch AdamW.
    same_number = _budget('decoupled_adamw', weight_decay=0.1)
    assert budget.tau_fraction / same_number.tau_fraction == pytest.approx(1.0 / 6e-4)


def test_zero_weight_decay_is_an_infinite_timescale():
    assert math.isinf(_budget(weight_decay=0.0).tau_fraction)


@pytest.mark.parametrize('optimizer', ['decoupled_adamw', 'adamw', 'decoupled_lionw'])
@pytest.mark.parametrize('target', [0.05, 0.2, 1.0])
def test_weight_decay_for_tau_fraction_round_trips(optimizer: str, target: float):
    budget = _budget(optimizer)
    wd = weight_decay_for_tau_fraction(target, budget)
    assert dataclasses.replace(budget, weight_decay=wd).tau_fraction == pytest.approx(target)


def test_weight_decay_for_tau_fraction_values():
    assert weight_decay_for_tau_fraction(0.2, _budget('decoupled_adamw')) == pytest.approx(1 / (0.2 * 10_000))
    torch_adamw = _budget('adamw', lr=1e-3)
    assert weight_decay_for_tau_fraction(0.2, torch_adamw) == pytest.approx(1 / (0.2 * 10_000 * 1e-3))
    with pytest.raises(ValueError, match='positive'):
        weight_decay_for_tau_fraction(0.0, _budget())


def test_tpp_counts_all_parameters():
    budget = _budget()
    assert budget.tokens_per_batch == 256 * 2048
    assert budget.total_tokens == 10_000 * 256 * 2048
    assert budget.tpp == pytest.approx(10_000 * 256 * 2048 / 100_000_000)
    assert budget.non_embedding_tpp == pytest.approx(10_000 * 256 * 2048 / 80_000_000)


def test_unknown_optimizer_is_rejected():
    with pytest.raises(ValueError, match='optimizer.name'):
        _budget('sgd')


# ---------------------------------------------------------------- max_duration and YAML parsing


@pytest.mark.parametrize(
    'duration, steps',
    [
        ('1000ba', 1000),
        ('5e2ba', 500),
        (' 1000BA ', 1000),
        ('2e9tok', math.ceil(2e9 / (256 * 2048))),
        ('524288tok', 1),
        ('524289tok', 2),
        ('20000sp', math.ceil(20000 / 256)),
    ],
)
def test_duration_to_steps(duration: str, steps: int):
    assert duration_to_steps(duration, 256, 2048) == steps


@pytest.mark.parametrize('duration', ['1ep', '0.5dur', 3, '1.5ba', 'abc', '10sec', '100xyz', '0ba'])
def test_duration_errors_name_the_key(duration: Any):
    with pytest.raises(ValueError, match='max_duration'):
        duration_to_steps(duration, 256, 2048)


def test_from_foundry_config():
    cfg = _foundry_cfg()
    budget = from_foundry_config(cfg)
    params = count_parameters(cfg['model'])
    assert budget.total_steps == 1000
    assert budget.tokens_per_batch == 32 * 128
    assert budget.total_params == params.total
    assert budget.non_embedding_params == params.non_embedding
    assert budget.tau_fraction == pytest.approx(1 / (1e-4 * 1000))
    torch_cfg = _foundry_cfg(optimizer={'name': 'adamw', 'lr': 1e-3, 'weight_decay': 0.1})
    torch_adamw = from_foundry_config(torch_cfg)
    assert torch_adamw.tau_fraction == pytest.approx(1 / (1e-3 * 0.1 * 1000))


def test_from_foundry_config_reads_variables_max_seq_len():
    cfg = _foundry_cfg(max_duration='4096000tok')
    del cfg['max_seq_len']
    cfg['variables'] = {'max_seq_len': 256}
    assert from_foundry_config(cfg).total_steps == 4096000 // (32 * 256)


@pytest.mark.parametrize(
    'mutate, key',
    [
        (lambda c: c['optimizer'].pop('weight_decay'), 'optimizer.weight_decay'),
        (lambda c: c['optimizer'].pop('lr'), 'optimizer.lr'),
        (lambda c: c.pop('global_train_batch_size'), 'global_train_batch_size'),
        (lambda c: c.pop('max_seq_len'), 'max_seq_len'),
        (lambda c: c.update(max_duration='2ep'), 'max_duration'),
        (lambda c: c['model'].update(name='hf_causal_lm'), 'param_count'),
        (lambda c: c['optimizer'].update(name='no_op'), 'optimizer.name'),
        (lambda c: c['optimizer'].update(lr='abc'), "optimizer.lr='abc' is not a number"),
        (lambda c: c['optimizer'].update(weight_decay='x'), "optimizer.weight_decay='x' is not a number"),
        (lambda c: c.update(global_train_batch_size='16x'), "global_train_batch_size='16x' is not a number"),
    ],
)
def test_from_foundry_config_errors(mutate: Any, key: str):
    cfg = _foundry_cfg()
    mutate(cfg)
    with pytest.raises(ValueError, match=key):
        from_foundry_config(cfg)


# ---------------------------------------------------------------- parameter counts

SMALL: dict[str, Any] = {
    'name': 'mpt_causal_lm',
    'd_model': 64,
    'n_heads': 4,
    'n_layers': 2,
    'max_seq_len': 32,
    'vocab_size': 101,
    'expansion_ratio': 4,
    'attn_config': {'attn_impl': 'torch'},
}


def test_default_mpt_block_with_biases_and_learned_positions():
    d, f, v, s = 64, 256, 101, 32
    norm = 2 * d  # LayerNorm weight + bias
    block = norm + (d * 3 * d + 3 * d) + (d * d + d) + norm + (d * f + f) + (f * d + d)
    pc = count_parameters(SMALL)
    assert (pc.token_embedding, pc.position_embedding, pc.lm_head) == (v * d, s * d, 0)
    assert pc.total == v * d + s * d + 2 * block + norm
    assert pc.non_embedding == 2 * block + norm


def test_no_bias_gqa_untied_rmsnorm():
    cfg = {
        **SMALL,
        'no_bias': True,
        'norm_type': 'low_precision_rmsnorm',
        'tie_word_embeddings': False,
        'attn_config': {'attn_impl': 'torch', 'attn_type': 'grouped_query_attention', 'kv_n_heads': 2},
    }
    d, f, v, head = 64, 256, 101, 16
    block = d + d * (d + 2 * 2 * head) + d * d + d + d * f + f * d
    pc = count_parameters(cfg)
    assert pc.lm_head == v * d
    assert pc.total == v * d + 32 * d + 2 * block + d + v * d
    # The untied output head is not an embedding: it stays in the non-embedding count.
    assert pc.non_embedding == 2 * block + d + v * d


@pytest.mark.filterwarnings('ignore:alibi or rope is turned on')
def test_alibi_disables_learned_positions_and_attention_bias_overrides_no_bias():
    cfg = {**SMALL, 'no_bias': True, 'attention_bias': True, 'attn_config': {'alibi': True}}
    pc = count_parameters(cfg)
    assert pc.position_embedding == 0
    assert pc.total - count_parameters({**cfg, 'attention_bias': None}).total == 2 * 3 * 64  # Wqkv bias, 2 blocks


def test_glu_qk_ln_and_explicit_hidden_size():
    cfg = {
        **SMALL,
        'ffn_config': {'ffn_type': 'mptglu', 'ffn_hidden_size': 100},
        'attn_config': {'qk_ln': True, 'attn_type': 'multiquery_attention'},
    }
    d, f, head = 64, 100, 16
    norm = 2 * d
    attn = d * (d + 2 * head) + (d + 2 * head) + d * d + d + 2 * d + 2 * head  # q_ln, k_ln
    ffn = 2 * (d * f + f) + f * d + d
    assert count_parameters(cfg).non_embedding == 2 * (2 * norm + attn + ffn) + norm


@pytest.mark.filterwarnings('ignore:alibi or rope is turned on')
def test_mpt_7b_counts_exactly_in_seconds_on_the_meta_device():
    cfg = {'d_model': 4096, 'n_heads': 32, 'n_layers': 32, 'expansion_ratio': 4, 'max_seq_len': 2048,
           'vocab_size': 50432, 'no_bias': True, 'attn_config': {'alibi': True}}
    start = time.perf_counter()
    pc = count_parameters(cfg)
    block = 4096 + 4096 * 3 * 4096 + 4096 * 4096 + 4096 + 2 * 4096 * 16384
    assert pc.total == 50432 * 4096 + 32 * block + 4096 == 6_649_286_656
    assert time.perf_counter() - start < 60, 'the meta device allocates nothing: seconds, not minutes'


@pytest.mark.filterwarnings('ignore:alibi or rope is turned on')
@pytest.mark.parametrize('override', [
    {},
    {'no_bias': True, 'tie_word_embeddings': False},
    {'attn_config': {'attn_impl': 'torch', 'attn_type': 'grouped_query_attention', 'kv_n_heads': 2}},
    {'no_bias': True, 'norm_type': 'low_precision_rmsnorm', 'ffn_config': {'ffn_type': 'mptglu'},
     'attn_config': {'attn_impl': 'torch', 'alibi': True, 'qk_ln': True}},
])
def test_matches_the_real_model(override: dict[str, Any]):
    from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
    cfg = {**SMALL, **override}
    model = MPTForCausalLM(MPTConfig(**{k: v for k, v in copy.deepcopy(cfg).items() if k != 'name'}))
    wpe = getattr(model.transformer, 'wpe', None)
    embeddings = model.transformer.wte.weight.numel() + (wpe.weight.numel() if wpe is not None else 0)
    pc = count_parameters(cfg)
    assert pc.total == sum(p.numel() for p in model.parameters())
    assert pc.non_embedding == pc.total - embeddings


@pytest.mark.parametrize('override, message', [
    ({'n_heads': 5}, "model.name='mpt_causal_lm': could not build the model"),
    ({'name': 'hf_causal_lm'}, 'param_count=ParamCount'),
])
def test_models_that_cannot_be_built_are_config_errors(override: dict[str, Any], message: str):
    with pytest.raises(ConfigError, match=message.replace('(', r'\(')):
        count_parameters({**SMALL, **override})
