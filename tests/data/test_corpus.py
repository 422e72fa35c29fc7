import json
from pathlib import Path

import numpy as np
import pytest
from streaming import StreamingDataset

from foundry_ext.data import build_byte_tokenizer, ensure_demo_corpus, stdlib_sources
from foundry_ext.data.corpus import MANIFEST, corpus_spec, default_cache_dir


def _tokens(root, split):
    ds = StreamingDataset(local=str(root / split), shuffle=False, batch_size=1)
    return np.stack([ds[i]['tokens'] for i in range(len(ds))])


def test_build_is_deterministic_cached_and_split(tmp_path):
    tok = build_byte_tokenizer()
    a = ensure_demo_corpus(tok, 64, str(tmp_path / 'a'), train_tokens=20000, val_tokens=4096)
    b = ensure_demo_corpus(tok, 64, str(tmp_path / 'b'), train_tokens=20000, val_tokens=4096)
    manifest = json.loads((a / MANIFEST).read_text())
    assert manifest['samples'] == {'train': 312, 'val': 64}
    train = _tokens(a, 'train')
    assert train.shape == (312, 64) and train.max() <= 256
    np.testing.assert_array_equal(train, _tokens(b, 'train'))
    assert not np.array_equal(train[:64], _tokens(a, 'val'))  # different files in val
    mtime = (a / MANIFEST).stat().st_mtime_ns
    assert ensure_demo_corpus(tok, 64, str(tmp_path / 'a'), train_tokens=20000, val_tokens=4096) == a
    assert (a / MANIFEST).stat().st_mtime_ns == mtime  # reused, not rebuilt
    # Documents are stdlib files joined by EOS.
    text = bytes(t for t in train.reshape(-1)[:2000] if t < 256).decode('utf-8', 'replace')
    assert 'import' in text or 'def ' in text
    assert (train == tok.eos_token_id).any()


def test_default_location_is_the_cache_keyed_by_settings(corpus_cache):
    tok = build_byte_tokenizer()
    a = ensure_demo_corpus(tok, 32, train_tokens=8192, val_tokens=1024)
    b = ensure_demo_corpus(tok, 48, train_tokens=8192, val_tokens=1024)
    assert a.parent == b.parent == corpus_cache / 'demo_corpus' and a != b


def test_mismatched_or_foreign_folder_is_refused(tmp_path):
    tok = build_byte_tokenizer()
    ensure_demo_corpus(tok, 32, str(tmp_path / 'c'), train_tokens=8192, val_tokens=1024)
    with pytest.raises(ValueError, match='train_loader.dataset.local=.*built with'):
        ensure_demo_corpus(tok, 64, str(tmp_path / 'c'), train_tokens=8192, val_tokens=1024)
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'index.json').write_text('{}')
    with pytest.raises(ValueError, match='is not a foundry-ext demo corpus'):
        ensure_demo_corpus(tok, 32, str(tmp_path / 'mine'))


def test_sources_are_sorted_library_code():
    files = stdlib_sources()
    assert len(files) > 100 and files == sorted(files, key=lambda p: p.as_posix())
    assert not any('site-packages' in p.parts or 'test' in p.parts for p in files)


def test_a_built_corpus_is_read_without_writing_a_lock(tmp_path):
    # So a corpus on a read-only mount (baked into an image, a shared volume) can be used as it is.
    tok = build_byte_tokenizer()
    root = ensure_demo_corpus(tok, 32, str(tmp_path / 'c'), train_tokens=8192, val_tokens=1024)
    (tmp_path / 'c.lock').unlink(missing_ok=True)
    assert ensure_demo_corpus(tok, 32, str(root), train_tokens=8192, val_tokens=1024) == root
    assert not (tmp_path / 'c.lock').exists()


def test_the_cache_key_ignores_padding_left_on_the_tokenizer(monkeypatch, tmp_path):
    tok = build_byte_tokenizer()
    before = corpus_spec(tok, 32, 8192, 1024)
    tok(['ab', 'abcdef'], padding=True, truncation=True, max_length=4)  # leaves its settings on the backend
    assert corpus_spec(tok, 32, 8192, 1024) == before
    monkeypatch.setenv('FOUNDRY_EXT_CACHE', '')  # exported but empty, as CI templates do: the default
    assert default_cache_dir() == Path.home() / '.cache' / 'foundry_ext'
