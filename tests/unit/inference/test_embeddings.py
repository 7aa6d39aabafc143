"""How frozen embeddings are batched: every review once, the same vector however it is batched."""

import random

import numpy as np

from review_toolkit import registry
from review_toolkit.inference.embeddings import (
    CPU_ACTIVATION_BYTES, cpu_token_budget_batches, embed_texts, feed_forward_width, tokenized_ahead,
)


def test_cpu_batches_hold_every_review_once_within_the_token_budget():
    lengths = [random.Random(seed).randint(3, 512) for seed in range(2_000)]
    batch_size, width = 64, 256  # a small encoder's feed-forward width: the budget is 4,096 tokens
    budget = min(batch_size * 128, CPU_ACTIVATION_BYTES // (4 * width))

    batches = cpu_token_budget_batches(lengths, batch_size, width)

    assert sorted(index for batch in batches for index in batch) == list(range(len(lengths)))
    for batch in batches:
        padded_tokens = len(batch) * max(lengths[i] for i in batch)
        assert padded_tokens <= budget or len(batch) == 1, (len(batch), padded_tokens)
    # Short reviews share batches larger than batch_size; the longest go in small ones.
    assert max(len(batch) for batch in batches) > batch_size
    assert len(batches[-1]) < batch_size
    for batch in batches:  # padding stays within a quarter of the real tokens
        real = sum(lengths[i] for i in batch)
        assert len(batch) * max(lengths[i] for i in batch) <= 1.25 * real or len(batch) == 1


def test_a_few_reviews_of_scattered_lengths_are_not_padded_to_the_longest():
    lengths = [12, 300, 40, 15, 280, 38, 13, 45]  # a server's batch: short, medium and long reviews

    batches = cpu_token_budget_batches(lengths, 64, 1_536)

    assert sorted(sorted(batch) for batch in batches) == [[0, 3, 6], [1, 4], [2, 5, 7]]


def test_cpu_embedding_of_a_review_does_not_depend_on_its_batch(tiny_bert, fifty_reviews):
    backbone, _ = registry.get("backbone", "bert")
    method, _ = registry.get("method", "frozen")
    encoder = method.load_for_training(backbone, tiny_bert, None)
    tokenizer = backbone.load_tokenizer(tiny_bert)
    texts = fifty_reviews + [" ".join(fifty_reviews[:8])]  # one long review among short ones
    assert feed_forward_width(encoder) == 128

    together = embed_texts(encoder, tokenizer, texts, max_length=256, progress=False)
    alone = np.stack([embed_texts(encoder, tokenizer, [text], max_length=256, progress=False)[0] for text in texts])

    np.testing.assert_allclose(together, alone, atol=1e-5)  # input order kept, padding masked out


def test_reviews_tokenized_ahead_arrive_in_order_in_chunks(tiny_bert, fifty_reviews):
    tokenizer = registry.get("backbone", "bert")[0].load_tokenizer(tiny_bert)

    chunks = list(tokenized_ahead(tokenizer, fifty_reviews, max_length=32, first=2, piece=3, largest=16))

    assert [len(chunk) for chunk in chunks] == [2, 8, 16, 16, 8]  # a small chunk first, then four times larger
    assert [ids.tolist() for chunk in chunks for ids in chunk] == tokenizer(fifty_reviews, truncation=True, max_length=32)["input_ids"]
