"""Packed batches (reviews concatenated into one row) train the model padded batches train.

On CPUs packed attention runs through its block-diagonal fallback; the flash kernel it uses
on GPUs is PyTorch's own. Compared here: logits and every gradient of packed against padded
batches on tiny random BERT and GTE encoders, and a packed training run that saves, reloads
and predicts like any other.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, DataCollatorWithPadding, GteConfig, GteModel

from review_toolkit.plugin_api.encoders import PooledEncoder
from review_toolkit.errors import ConfigError
from review_toolkit.train.model import ReviewClassifierModel
from review_toolkit.accel.packing import (
    PackedBatchEncoder,
    PackedCollator,
    enable_packed_attention,
    mean_per_review,
    packing_wanted,
    supports_packing,
)


def tiny_gte(attention_dropout: float = 0.0) -> GteModel:
    torch.manual_seed(0)
    config = GteConfig(
        vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=attention_dropout, max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    return GteModel(config)


def tiny_bert_model(path: str, attention_dropout: float = 0.0):
    return AutoModel.from_pretrained(path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=attention_dropout)


def features(tokenizer, texts):
    encoded = tokenizer(texts, truncation=True, max_length=64)
    return [
        {"input_ids": ids, "attention_mask": mask, "labels": index % 2, "length": len(ids)}
        for index, (ids, mask) in enumerate(zip(encoded["input_ids"], encoded["attention_mask"]))
    ]


def train_on_packed_batches(model):
    """What the acceleration plan does to a model it packs batches for."""
    enable_packed_attention(model.encoder)
    model.batch_encoder = PackedBatchEncoder()


def logits_and_gradients(model, batch):
    model.zero_grad()
    output = model(**batch)
    output.loss.backward()
    return output.logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("architecture", ["bert", "gte"])
def test_packed_batches_give_the_padded_logits_and_gradients(architecture, tiny_bert, fifty_reviews):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    transformer = tiny_bert_model(tiny_bert) if architecture == "bert" else tiny_gte()
    torch.manual_seed(1)
    model = ReviewClassifierModel(PooledEncoder(transformer, 64), torch.nn.Linear(64, 2)).train()
    # Reviews of different lengths: padding would matter if packing mishandled it.
    batch_features = features(tokenizer, fifty_reviews[:6])
    assert len({f["length"] for f in batch_features}) > 1

    padded = DataCollatorWithPadding(tokenizer)([{k: f[k] for k in ("input_ids", "attention_mask", "labels")} for f in batch_features])
    expected_logits, expected_gradients = logits_and_gradients(model, dict(padded))

    assert supports_packing(model.encoder)
    train_on_packed_batches(model)
    packed = PackedCollator()(batch_features)
    real_tokens = sum(f["length"] for f in batch_features)
    assert packed["input_ids"].shape[1] % 64 == 0 and real_tokens < packed["input_ids"].shape[1] <= real_tokens + 64
    logits, gradients = logits_and_gradients(model, packed)

    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=1e-4)
    assert gradients.keys() == expected_gradients.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, expected_gradients[name], atol=1e-5, rtol=1e-4, msg=name)
    # Padded batches still work through the packed attention implementation (evaluation, prediction).
    padded_again, _ = logits_and_gradients(model, dict(padded))
    torch.testing.assert_close(padded_again, expected_logits)


def test_packed_collator_restarts_positions_marks_each_review_and_fills_to_a_multiple():
    reviews = [
        {"input_ids": [101, 7, 102], "labels": 1},
        {"input_ids": [101, 102], "labels": 0},
        {"input_ids": [101, 5, 6, 102], "labels": 1},
    ]
    batch = PackedCollator(pad_token_id=0, multiple=4)(reviews)
    assert next(iter(batch)) == "labels"  # Trainer reads the batch size from the first tensor
    assert batch["labels"].tolist() == [1, 0, 1]
    # 9 tokens of reviews, then a filler segment of 3 padding tokens up to 12.
    assert batch["input_ids"].tolist() == [[101, 7, 102, 101, 102, 101, 5, 6, 102, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3, 0, 1, 2]]
    assert batch["cu_seq_lens"].tolist() == [0, 3, 5, 9, 12] and batch["cu_seq_lens"].dtype == torch.int32
    assert batch["max_length"] == 4
    assert batch["review_index"].tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3]
    assert batch["reviews"] == 3

    # A row already at a multiple still ends with a filler segment, left out of pooling.
    exact = PackedCollator(pad_token_id=0, multiple=3)(reviews)
    assert exact["cu_seq_lens"].tolist() == [0, 3, 5, 9, 12]
    hidden = torch.arange(12, dtype=torch.float32).unsqueeze(-1)
    torch.testing.assert_close(
        mean_per_review(hidden, exact["review_index"], exact["cu_seq_lens"], exact["reviews"]),
        torch.tensor([[1.0], [3.5], [6.5]]),
    )


def test_static_layout_holds_every_batch_the_sampler_cuts_for_it_in_one_shape():
    from review_toolkit.accel.batching import TokenBudgetBatchSampler
    from review_toolkit.accel.packing import ROW_MULTIPLE, StaticRowLayout

    layout = StaticRowLayout.for_budget(max_tokens=4096, max_reviews=32, max_review_length=512)
    assert layout.row_length == 4096 and layout.filler_segments == 4096 // ROW_MULTIPLE
    collate = PackedCollator(pad_token_id=0, layout=layout)
    generator = torch.Generator().manual_seed(0)
    # Short and long reviews: batches of 32 short ones, and batches the token budget cuts.
    lengths = torch.cat([torch.randint(3, 60, (300,), generator=generator), torch.randint(200, 513, (100,), generator=generator)])
    batches = list(TokenBudgetBatchSampler(lengths.tolist(), max_tokens=4096, max_batch_size=32, packed=True, layout=layout))
    assert sorted(i for batch in batches for i in batch) == list(range(400))
    assert min(len(batch) for batch in batches) < 32 <= max(len(batch) for batch in batches)
    for batch_indices in batches:
        batch_lengths = [int(lengths[i]) for i in batch_indices]
        assert layout.fits(batch_lengths)
        reviews = [{"input_ids": torch.randint(1, 99, (n,), generator=generator).tolist(), "labels": 0} for n in batch_lengths]
        batch = collate(reviews)
        segment_lengths = batch["cu_seq_lens"].diff()
        assert batch["input_ids"].shape == (1, layout.row_length)
        assert len(segment_lengths) == layout.review_slots + layout.filler_segments
        assert segment_lengths[: len(batch_lengths)].tolist() == batch_lengths  # the reviews, in order
        # Every segment holds a token (the empty review slots one each), none is longer than max_length.
        assert segment_lengths.min() >= 1 and segment_lengths.max() <= batch["max_length"] == layout.max_segment_length
        assert batch["reviews"] == len(batch_lengths) and batch["input_ids"][0, sum(batch_lengths):].eq(0).all()
    # A batch over the layout (an evaluation batch of more reviews) gets a row of its own length.
    more = collate([{"input_ids": [101, 5, 102], "labels": 1}] * 40)
    assert more["input_ids"].shape == (1, 128) and more["reviews"] == 40 and not layout.fits([3] * 40)


def test_reviews_score_the_same_in_the_static_layout_as_in_their_own_row(tiny_bert, fifty_reviews):
    from transformers import AutoTokenizer

    from review_toolkit.accel.packing import StaticRowLayout

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = ReviewClassifierModel(PooledEncoder(tiny_gte(), 64), torch.nn.Linear(64, 2)).train()
    train_on_packed_batches(model)
    batch_features = features(tokenizer, fifty_reviews[:6])
    layout = StaticRowLayout.for_budget(max_tokens=512, max_reviews=8, max_review_length=64)
    expected_logits, expected_gradients = logits_and_gradients(model, PackedCollator()(batch_features))
    static = PackedCollator(layout=layout)(batch_features)
    assert static["input_ids"].shape[1] == layout.row_length > PackedCollator()(batch_features)["input_ids"].shape[1]
    logits, gradients = logits_and_gradients(model, static)
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=1e-4)
    assert gradients.keys() == expected_gradients.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, expected_gradients[name], atol=1e-5, rtol=1e-4, msg=name)


def test_packing_is_refused_by_name_where_the_encoder_cannot_pack(tiny_bert, caplog):
    class OwnPooling(PooledEncoder):
        def forward(self, input_ids, attention_mask):
            return super().forward(input_ids, attention_mask)

    encoder = OwnPooling(tiny_bert_model(tiny_bert), 64)
    assert not supports_packing(encoder)
    with pytest.raises(ConfigError, match="pack_sequences: the 'custom' backbone"):
        packing_wanted(True, encoder, backbone="custom", bf16=True)
    assert packing_wanted(None, encoder, backbone="custom", bf16=True) is False
    supported = PooledEncoder(tiny_bert_model(tiny_bert), 64)
    # By default only where the flash kernel runs (bf16 on a GPU); asked for, anywhere.
    assert packing_wanted(None, supported, backbone="bert", bf16=False) is False
    assert packing_wanted(None, supported, backbone="bert", bf16=True) is True
    with caplog.at_level("WARNING", logger="review_toolkit.accel.packing"):
        assert packing_wanted(True, supported, backbone="bert", bf16=False) is True
    assert "block-diagonal mask" in caplog.text  # asked for where it is slow: said so
    assert packing_wanted(False, supported, backbone="bert", bf16=True) is False
    # Batches padded to the maximum length (the research recipe) are what was asked for: not packed.
    assert packing_wanted(None, supported, backbone="bert", bf16=True, pad_to_max_length=True) is False


@pytest.mark.parametrize("method,options", [("full", {}), ("qlora", {}), ("lora", {"gradient_checkpointing": True})])
def test_packed_training_saves_reloads_and_predicts(method, options, tiny_bert, small_reviews, fifty_reviews, tmp_path):
    import json

    import numpy as np

    from review_toolkit import TrainConfig, load_run, train

    config = TrainConfig(
        backbone="bert", model=tiny_bert, data=str(small_reviews), output_dir=str(tmp_path / "run"),
        method=method, epochs=1, batch_size=16, eval_batch_size=32, max_length=64, pack_sequences=True, **options,
    )
    result = train(config, progress=False)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["packed_sequences"] is True
    # Trainer's evaluation saw packed batches and scored every validation review.
    assert 0 <= info["best_validation_f1_macro"] <= 1
    before = result.classifier.predict_proba(fifty_reviews)
    after = load_run(result.run_dir).predict_proba(fifty_reviews)
    np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)


def test_packing_and_padding_to_max_length_are_refused_together():
    from review_toolkit import TrainConfig

    with pytest.raises(ConfigError, match="pack_sequences and pad_to_max_length"):
        TrainConfig.from_mapping({"pack_sequences": True, "pad_to_max_length": True}, source="test")


def random_reviews(count: int, seed: int = 0) -> list[dict]:
    """Token ids of reviews 5 to 60 tokens long, labelled alternately."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, 61, (count,), generator=generator).tolist()
    return [
        {"input_ids": torch.randint(1000, 30000, (n,), generator=generator).tolist(), "labels": i % 2}
        for i, n in enumerate(lengths)
    ]


def padded_batch(reviews: list[dict]) -> dict:
    longest = max(len(review["input_ids"]) for review in reviews)
    ids = torch.zeros(len(reviews), longest, dtype=torch.long)
    mask = torch.zeros(len(reviews), longest, dtype=torch.long)
    for row, review in enumerate(reviews):
        ids[row, : len(review["input_ids"])] = torch.tensor(review["input_ids"])
        mask[row, : len(review["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([r["labels"] for r in reviews])}


def tiny_transformer(architecture: str, attention_dropout: float = 0.0):
    from transformers import BertConfig, BertModel

    if architecture == "gte":
        return tiny_gte(attention_dropout)
    torch.manual_seed(0)
    return BertModel(BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=attention_dropout,
    ))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the flash kernel runs on CUDA GPUs")
@pytest.mark.parametrize("architecture", ["bert", "gte"])
def test_flash_kernel_on_packed_reviews_matches_padded_sdpa_under_bf16(architecture):
    torch.manual_seed(1)
    model = ReviewClassifierModel(PooledEncoder(tiny_transformer(architecture), 64), torch.nn.Linear(64, 2))
    model = model.cuda().train()
    reviews = random_reviews(16)

    def run(batch):
        batch = {key: value.cuda() if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return logits_and_gradients(model, batch)

    expected_logits, expected_gradients = run(padded_batch(reviews))
    train_on_packed_batches(model)
    logits, gradients = run(PackedCollator()(reviews))
    torch.testing.assert_close(logits, expected_logits, atol=2e-2, rtol=2e-2)
    for name, gradient in gradients.items():
        expected = expected_gradients[name]
        assert (gradient - expected).norm() <= 0.05 * expected.norm() + 1e-6, name

    # Attention dropout in training goes through the flash kernel's own dropout.
    model = ReviewClassifierModel(PooledEncoder(tiny_transformer(architecture, 0.5), 64), torch.nn.Linear(64, 2))
    model = model.cuda().train()
    train_on_packed_batches(model)
    first, _ = run(PackedCollator()(reviews))
    second, gradients = run(PackedCollator()(reviews))
    assert not torch.equal(first, second) and all(torch.isfinite(g).all() for g in gradients.values())


def test_packed_batches_count_their_rows_tokens_against_the_budget():
    from review_toolkit.accel.batching import TokenBudgetBatchSampler
    from review_toolkit.accel.packing import packed_row_length

    lengths = torch.randint(8, 300, (500,), generator=torch.Generator().manual_seed(0)).tolist()
    packed = list(TokenBudgetBatchSampler(lengths, max_tokens=2048, max_batch_size=64, packed=True))
    padded = list(TokenBudgetBatchSampler(lengths, max_tokens=2048, max_batch_size=64))
    assert sorted(i for batch in packed for i in batch) == list(range(500))
    # The packed row, filler included, fits the budget; the filler is never more than one multiple.
    assert all(packed_row_length(sum(lengths[i] for i in batch)) <= 2048 and len(batch) <= 64 for batch in packed)
    assert packed_row_length(1000) == 1024 and packed_row_length(1024) == 1152
    assert all(len(batch) * max(lengths[i] for i in batch) <= 2048 for batch in padded)
    assert len(packed) < len(padded)  # no padding within rows: fuller batches
