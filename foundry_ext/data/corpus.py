"""The demo corpus: the Python standard library's sources, as a local MosaicML Streaming (MDS) dataset.

Every machine with Python has this text, so the demo and the tests need no download. The build is
deterministic for a given Python version, tokenizer and sample length: files are read in sorted order,
every 20th file goes to ``val``, documents are joined with the tokenizer's EOS token and cut into
samples of exactly ``max_seq_len`` tokens, stored in a ``tokens`` column that LLM-Foundry's ``text``
dataloader reads without re-tokenizing. A build takes a few seconds and is cached; concurrent builders
(several ranks, several runs) wait on a file lock and the first one's result is reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
from filelock import FileLock
from streaming import MDSWriter
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from foundry_ext.core.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ['CORPUS_VERSION', 'MANIFEST', 'default_cache_dir', 'stdlib_sources', 'corpus_spec', 'ensure_demo_corpus']

CORPUS_VERSION = 1
MANIFEST = 'foundry_ext_corpus.json'
VAL_EVERY = 20
# Tests and tooling, not prose-like library code, and a large share of the bytes.
_SKIPPED_DIRS = {'site-packages', 'dist-packages', '__pycache__', 'test', 'tests', 'idlelib', 'lib2to3'}


def default_cache_dir() -> Path:
    """``$FOUNDRY_EXT_CACHE`` (``~`` expanded), else, also when it is empty, ``~/.cache/foundry_ext``."""
    return Path(os.environ.get('FOUNDRY_EXT_CACHE') or Path.home() / '.cache' / 'foundry_ext').expanduser()


def stdlib_sources() -> list[Path]:
    """The standard library's ``.py`` files, tests excluded, in a stable order."""
    root = Path(sysconfig.get_paths()['stdlib'])
    files = [p for p in root.rglob('*.py') if not _SKIPPED_DIRS & set(p.relative_to(root).parts)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def corpus_spec(tokenizer: PreTrainedTokenizerBase, max_seq_len: int, train_tokens: int, val_tokens: int) -> dict:
    """What determines the corpus's content; equal specs give identical datasets."""
    backend = getattr(tokenizer, 'backend_tokenizer', None)
    if backend is not None:
        # Without the padding/truncation state a padded or truncated call leaves behind: it does not change the ids.
        backend = Tokenizer.from_str(backend.to_str())
        backend.no_padding()
        backend.no_truncation()
        tok_id = backend.to_str()
    else:
        tok_id = repr(sorted(tokenizer.get_vocab().items()))
    return {
        'version': CORPUS_VERSION,
        'python': '.'.join(map(str, sys.version_info[:3])),
        'tokenizer_sha': hashlib.sha256(tok_id.encode()).hexdigest()[:16],
        'max_seq_len': int(max_seq_len),
        'train_tokens': int(train_tokens),
        'val_tokens': int(val_tokens),
    }


def _spec_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _write_split(out: Path, docs: list[str], tokenizer: PreTrainedTokenizerBase, max_seq_len: int,
                 budget: int) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError('The demo corpus needs a tokenizer with an eos_token to separate documents.')
    ids: list[int] = []
    for doc_ids in tokenizer(docs, add_special_tokens=False, verbose=False)['input_ids']:
        ids.extend(doc_ids)
        ids.append(eos)
        if len(ids) >= budget:
            break
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.uint32
    tokens = np.asarray(ids[:budget], dtype=dtype)
    n_samples = len(tokens) // max_seq_len
    if n_samples == 0:
        raise ConfigError(f'The demo corpus has too few tokens for one sample of max_seq_len={max_seq_len}.')
    with MDSWriter(out=str(out), columns={'tokens': f'ndarray:{np.dtype(dtype).name}'}, size_limit='64mb') as w:
        for sample in tokens[:n_samples * max_seq_len].reshape(n_samples, max_seq_len):
            w.write({'tokens': sample})
    return n_samples


def _built(root: Path, spec: dict) -> bool:
    """Whether ``root`` holds the demo corpus of ``spec``; a ValueError if it holds one of another spec."""
    manifest = root / MANIFEST
    if not manifest.exists():
        return False
    built = json.loads(manifest.read_text())
    if built['spec'] != spec:
        raise ConfigError(
            f'train_loader.dataset.local={str(root)!r} holds a demo corpus built with {built["spec"]}, but this '
            f'run needs {spec}. Point dataset.local at another folder, or leave it unset to use the cache.',
        )
    return True


def ensure_demo_corpus(
    tokenizer: PreTrainedTokenizerBase,
    max_seq_len: int,
    local: Optional[str] = None,
    train_tokens: int = 8_000_000,
    val_tokens: int = 262_144,
) -> Path:
    """Builds the demo corpus once, and returns its folder (with ``train/`` and ``val/`` MDS splits).

    Args:
        tokenizer (PreTrainedTokenizerBase): Encodes the text; its identity is part of the cache key.
        max_seq_len (int): Tokens per sample.
        local (str, optional): Where to put it. Default: a folder under :func:`default_cache_dir` named by a
            hash of everything that determines the content.
        train_tokens (int): At most this many training tokens (the stdlib has about 11M bytes).
        val_tokens (int): At most this many validation tokens.

    Returns:
        Path: The dataset folder, for ``dataset.local``.

    Raises:
        ValueError: If ``local`` holds a demo corpus built with other settings.
    """
    spec = corpus_spec(tokenizer, max_seq_len, train_tokens, val_tokens)
    root = Path(local) if local else default_cache_dir() / 'demo_corpus' / _spec_key(spec)
    # A corpus appears whole (one rename), so a built one is read without the lock, also on a read-only mount.
    if _built(root, spec):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + '.lock'):
        if _built(root, spec):
            return root
        if root.exists() and any(root.iterdir()):
            raise ConfigError(
                f'train_loader.dataset.local={str(root)!r} exists and is not a foundry-ext demo corpus. Point '
                f'dataset.local at an empty or new folder, or use the `text` dataloader for your own data.',
            )
        texts = [p.read_text(encoding='utf-8', errors='replace') for p in stdlib_sources()]
        splits = {'train': ([t for i, t in enumerate(texts) if i % VAL_EVERY], train_tokens),
                  'val': (texts[::VAL_EVERY], val_tokens)}
        # Build next to the target and rename, so a crash never leaves a half-written corpus behind.
        tmp = Path(tempfile.mkdtemp(prefix=root.name + '.tmp-', dir=root.parent))
        try:
            counts = {name: _write_split(tmp / name, docs, tokenizer, max_seq_len, budget)
                      for name, (docs, budget) in splits.items()}
            (tmp / MANIFEST).write_text(json.dumps({'spec': spec, 'samples': counts}, indent=2))
            if root.exists():
                root.rmdir()
            tmp.rename(root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info(f'Built the demo corpus in {root}: {counts} samples of {max_seq_len} tokens.')
    return root
