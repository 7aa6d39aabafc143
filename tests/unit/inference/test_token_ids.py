"""Token ids for scoring come from the Rust tokenizer, and equal what the run's tokenizer gives."""

from __future__ import annotations

import pandas as pd
import pytest

from review_toolkit.data import default_data_path
import json
import subprocess
import sys

from review_toolkit.inference.token_ids import pad_right, portable_token_ids, token_id_encoder


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


def test_another_process_without_transformers_computes_the_same_ids(minilm_path, reviews, tmp_path):
    """What serve's HTTP processes do: tokenize from the portable form, importing only tokenizers."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path, truncation_side="left")
    (tmp_path / "portable.json").write_text(json.dumps(portable_token_ids(tokenizer, 48)))
    (tmp_path / "reviews.json").write_text(json.dumps(reviews))
    script = (
        "import json, sys\n"
        "from review_toolkit.inference.token_ids import token_ids_from_portable\n"
        f"encode = token_ids_from_portable(json.load(open({str(tmp_path / 'portable.json')!r})))\n"
        f"print(json.dumps(encode(json.load(open({str(tmp_path / 'reviews.json')!r})))))\n"
        "assert 'transformers' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)

    assert json.loads(result.stdout) == [list(ids) for ids in tokenizer(reviews, truncation=True, max_length=48)["input_ids"]]


def test_one_encoder_per_tokenizer_and_length(minilm_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    assert token_id_encoder(tokenizer, 64) is token_id_encoder(tokenizer, 64)
    assert token_id_encoder(tokenizer, 64) is not token_id_encoder(tokenizer, 65)


def test_padding_on_the_right_with_a_mask():
    ids, mask = pad_right([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
