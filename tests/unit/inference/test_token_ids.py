"""Token ids for scoring come from the Rust tokenizer, and equal what the run's tokenizer gives."""

from __future__ import annotations

import pandas as pd
import pytest

from review_toolkit.data import default_data_path
from review_toolkit.inference.token_ids import pad_right, token_id_encoder


@pytest.fixture(scope="module")
def reviews() -> list[str]:
    return pd.read_csv(default_data_path())["text"].astype(str).tolist()[:300] + ["", "  ", "word " * 600]


@pytest.mark.parametrize("max_length", [16, 128, 512])
@pytest.mark.parametrize("side", ["right", "left"])
def test_ids_equal_the_tokenizers_own_at_every_length_and_truncation_side(minilm_path, reviews, max_length, side):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path, truncation_side=side)
    expected = tokenizer(reviews, truncation=True, max_length=max_length)["input_ids"]
    assert token_id_encoder(tokenizer, max_length)(reviews) == [list(ids) for ids in expected]


def test_a_tokenizer_without_a_rust_backend_is_used_as_it_is(minilm_path, reviews):
    from transformers import BertTokenizer

    slow = BertTokenizer.from_pretrained(minilm_path)
    assert token_id_encoder(slow, 64)(reviews[:20]) == slow(reviews[:20], truncation=True, max_length=64)["input_ids"]


def test_one_encoder_per_tokenizer_and_length(minilm_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    assert token_id_encoder(tokenizer, 64) is token_id_encoder(tokenizer, 64)
    assert token_id_encoder(tokenizer, 64) is not token_id_encoder(tokenizer, 65)


def test_padding_on_the_right_with_a_mask():
    ids, mask = pad_right([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
