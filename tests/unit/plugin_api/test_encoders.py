"""The 4D attention mask a pooled encoder hands its transformer on GPUs gives what the 2D one gives."""

from __future__ import annotations

import pytest
import torch

from review_toolkit.plugin_api.encoders import prepared_attention_mask


def tiny_transformer(architecture: str, attention: str) -> torch.nn.Module:
    from transformers import BertConfig, BertModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    if architecture == "t5":  # relative position bias, added to the mask inside attention
        config = T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu")
        model = T5EncoderModel(config)
    else:
        model = BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64))
    model.config._attn_implementation = attention
    return model.eval()


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("architecture", ["t5", "bert"])
def test_the_prepared_mask_gives_the_hidden_states_of_the_padding_mask(architecture, attention):
    transformer = tiny_transformer(architecture, attention)
    ids = torch.randint(3, 100, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, 5:] = 0
    mask[2, 2:] = 0

    prepared = prepared_attention_mask(transformer, mask)
    with torch.inference_mode():
        expected = transformer(input_ids=ids, attention_mask=mask)[0]
        hidden = transformer(input_ids=ids, attention_mask=prepared)[0]

    assert prepared.dim() == 4
    torch.testing.assert_close(hidden, expected, rtol=0, atol=0)


def test_other_attention_implementations_get_the_padding_mask_back():
    transformer = tiny_transformer("bert", "flash_attention_2")  # needs the 2D mask; never built here
    mask = torch.ones(2, 4, dtype=torch.long)
    assert prepared_attention_mask(transformer, mask) is mask
