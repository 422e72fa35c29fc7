"""A byte-level tokenizer built in memory: no download, no training, no files.

Token ``b`` (0-255) is the byte ``b``; ``<|endoftext|>`` is token 256 and ``<|pad|>`` token 257. It is
a standard :class:`~transformers.PreTrainedTokenizerFast`, so ``save_pretrained`` writes a
``tokenizer.json`` that ``AutoTokenizer`` loads anywhere (HF exports included). Use it in YAML as
``tokenizer: {name: foundry_ext_bytes}`` (registered in ``llmfoundry_tokenizers``); the model's ``vocab_size``
must be at least 258.
"""

from __future__ import annotations

import logging
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

from foundry_ext.core.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ['EOS_TOKEN', 'BYTE_VOCAB_SIZE', 'PAD_TOKEN', 'ByteTokenizer', 'build_byte_tokenizer']

EOS_TOKEN = '<|endoftext|>'
PAD_TOKEN = '<|pad|>'
BYTE_VOCAB_SIZE = 258  # 256 bytes, EOS (256) and padding (257)
# Set by the tokenizer itself: a special token from kwargs would take id 256 and move EOS.
_FIXED = ('bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token',
          'additional_special_tokens')


def build_byte_tokenizer(**kwargs: Any) -> PreTrainedTokenizerFast:
    """Builds the byte-level tokenizer; ``kwargs`` (e.g. ``model_max_length``) go to the HF tokenizer.

    Padding has its own id: LLM-Foundry's collator (HF ``DataCollatorForLanguageModeling``) drops the labels of
    pad ids from the loss, so a pad that were EOS would hide every document end from training.
    """
    fixed = sorted(set(kwargs) & set(_FIXED))
    if fixed:
        raise ConfigError(f'tokenizer.kwargs.{fixed[0]}={kwargs[fixed[0]]!r}: the byte tokenizer sets its own special '
                          f'tokens (256 = {EOS_TOKEN}, 257 = {PAD_TOKEN}); remove {", ".join(fixed)} from '
                          f'tokenizer.kwargs.')
    # GPT-2's printable stand-ins for the 256 bytes, ordered so that token id == byte value.
    byte_chars = bytes_to_unicode()
    vocab = {byte_chars[b]: b for b in range(256)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    kwargs.setdefault('model_max_length', int(1e30))
    kwargs.setdefault('model_input_names', ['input_ids', 'attention_mask'])  # MPT's generate() takes no token types
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    tokenizer.add_special_tokens({'eos_token': EOS_TOKEN, 'pad_token': PAD_TOKEN})
    return tokenizer


class ByteTokenizer(PreTrainedTokenizerFast):
    """The registry entry ``foundry_ext_bytes``: ``ByteTokenizer(**kwargs)`` returns :func:`build_byte_tokenizer`'s.

    Foundry's tokenizer registry only accepts classes. Constructing this one returns a plain
    :class:`~transformers.PreTrainedTokenizerFast`, so a saved tokenizer names no foundry-ext class and
    ``AutoTokenizer`` loads it without foundry-ext installed.
    """

    def __new__(cls, **kwargs: Any) -> PreTrainedTokenizerFast:  # type: ignore[misc]
        return build_byte_tokenizer(**kwargs)
