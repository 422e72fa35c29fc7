"""The demo_text loader's own checks (the loading itself is LLM-Foundry's text loader, used by every run)."""

import pytest

from foundry_ext.data import build_byte_tokenizer
from foundry_ext.data.dataloader import build_demo_text_dataloader

LOADER = {'drop_last': True, 'num_workers': 0, 'prefetch_factor': None, 'persistent_workers': False}


def test_a_corpus_smaller_than_one_batch_is_refused_instead_of_looping_over_empty_epochs(tmp_path):
    dataset = {'split': 'train', 'max_seq_len': 128, 'local': str(tmp_path / 'corpus'), 'train_tokens': 1000}
    with pytest.raises(ValueError, match=r'train split holds 7 samples, fewer than one global batch of 16 .* '
                                         r'Raise its train_tokens/val_tokens \(dataset.train_tokens\)'):
        build_demo_text_dataloader(build_byte_tokenizer(), 16, dataset, **LOADER)
    spec = build_demo_text_dataloader(build_byte_tokenizer(), 4, dataset, **LOADER)
    assert len(spec.dataloader) == 1  # 7 samples, batches of 4, the partial one dropped


def test_the_train_split_is_the_default(tmp_path):
    dataset = {'max_seq_len': 128, 'local': str(tmp_path / 'corpus'), 'train_tokens': 2048}
    spec = build_demo_text_dataloader(build_byte_tokenizer(), 4, dataset, **LOADER)
    assert len(spec.dataloader) == 4  # the 16 samples of train/, not a missing index.json at the corpus root
