"""The offline demo: a byte-level tokenizer and the Python standard library as an MDS corpus."""

from foundry_ext.data.corpus import default_cache_dir, ensure_demo_corpus, stdlib_sources
from foundry_ext.data.tokenizer import BYTE_VOCAB_SIZE, EOS_TOKEN, PAD_TOKEN, build_byte_tokenizer

__all__ = [
    'BYTE_VOCAB_SIZE',
    'EOS_TOKEN',
    'PAD_TOKEN',
    'build_byte_tokenizer',
    'default_cache_dir',
    'ensure_demo_corpus',
    'stdlib_sources',
]
