import pytest
import torch
from transformers import AutoTokenizer, DataCollatorForLanguageModeling

from foundry_ext.data import BYTE_VOCAB_SIZE, build_byte_tokenizer


def test_byte_ids_round_trip_and_save_as_a_plain_hf_tokenizer(tmp_path):
    tok = build_byte_tokenizer(model_max_length=64)
    text = 'def f(x):\n    return "héllo ✓"\t# \x00'
    ids = tok(text, add_special_tokens=False)['input_ids']
    assert ids == list(text.encode('utf-8'))
    assert tok.decode(ids) == text
    assert len(tok) == BYTE_VOCAB_SIZE and tok.eos_token_id == 256 and tok.pad_token_id == 257
    assert list(tok('ab')) == ['input_ids', 'attention_mask']  # no token_type_ids: MPT's generate() rejects them
    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)  # no foundry-ext class is needed to load it back
    assert reloaded(text, add_special_tokens=False)['input_ids'] == ids
    assert (reloaded.eos_token_id, reloaded.pad_token_id) == (256, 257)


def test_document_ends_stay_in_the_loss_of_foundrys_collator():
    # LLM-Foundry's text loader collates with HF's DataCollatorForLanguageModeling, which masks pad ids (-100).
    tok = build_byte_tokenizer()
    sample = torch.tensor([97, 98, tok.eos_token_id, 99, 100, tok.eos_token_id])
    labels = DataCollatorForLanguageModeling(tok, mlm=False)([{'input_ids': sample}])['labels'][0]
    assert labels.tolist() == sample.tolist()


@pytest.mark.parametrize('key', ['pad_token', 'eos_token', 'bos_token'])
def test_special_tokens_in_kwargs_are_refused(key):
    with pytest.raises(ValueError, match=f'tokenizer.kwargs.{key}=.*remove {key}'):
        build_byte_tokenizer(**{key: '<x>'})


def test_registered_in_foundry_by_name():
    from llmfoundry.utils.builders import build_tokenizer
    tok = build_tokenizer('foundry_ext_bytes', {'model_max_length': 32})
    assert tok.model_max_length == 32 and tok('ab', add_special_tokens=False)['input_ids'] == [97, 98]
