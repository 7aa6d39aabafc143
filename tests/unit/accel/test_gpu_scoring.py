"""Scoring on GPUs: every review once in packed rows or token-budget batches, the padded path's vectors."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from review_toolkit.accel.gpu_scoring import (
    PADDED_BATCH_MIN_TOKENS, PADDED_LENGTH_SPREAD, embed_on_gpu, keep_linear_weights_in_bf16, packed_inputs, packed_rows,
    padded_batches, queue_on_gpu, record_scoring_graphs, replays_one_graph,
)
from review_toolkit.accel.packing import enable_packed_attention, packed_pooled, packed_row_length
from review_toolkit.accel.scoring_graphs import ScoringGraphs
from review_toolkit.accel.scoring_lanes import MAX_LANES, scoring_lanes_for
from review_toolkit.plugin_api.encoders import PooledEncoder


def random_lengths(count: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(3, 512) for _ in range(count)]


def tiny_encoder(architecture: str) -> PooledEncoder:
    torch.manual_seed(0)
    if architecture == "gte":
        try:
            from transformers import GteConfig, GteModel
        except ImportError:
            pytest.skip("this transformers has no native gte classes (Stella's); newer ones do")

        transformer = GteModel(GteConfig(
            vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            max_position_embeddings=512, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ))
    else:
        transformer = BertModel(BertConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, vocab_size=30522,
        ))
    return PooledEncoder(transformer, 64, projection=torch.nn.Linear(64, 32)).eval()


def reviews_of(lengths: list[int], seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(1000, 30000, (length,), generator=generator).tolist() for length in lengths]


def padded_vectors(encoder: PooledEncoder, reviews: list[list[int]]) -> torch.Tensor:
    longest = max(map(len, reviews))
    ids = torch.zeros(len(reviews), longest, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, review in enumerate(reviews):
        ids[row, : len(review)] = torch.tensor(review)
        mask[row, : len(review)] = 1
    device = next(encoder.parameters()).device
    return encoder(input_ids=ids.to(device), attention_mask=mask.to(device))


def distinct_review_chunks(count: int = 48) -> list[list[list[int]]]:
    """Chunks of 1-7 reviews in which each review repeats a token of its own, so that no two
    reviews' vectors are alike (random tokens, mean-pooled, give vectors too close to tell a
    mix-up from bf16 rounding)."""
    return [
        [[1000 + 37 * index + slot] * length for slot, length in enumerate(random_lengths(1 + index % 7, seed=index))]
        for index in range(count)
    ]  # fmt: skip


def scored_from_threads(encoder: PooledEncoder, chunks: list, threads: int, device: torch.device) -> list[np.ndarray]:
    """Each chunk's vectors, the chunks scored from ``threads`` threads at once (a server's batches in flight)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda chunk: embed_on_gpu(encoder, [chunk], pad_token_id=0, device=device), chunks))


def test_packed_rows_hold_every_review_once_within_the_token_budget():
    lengths = random_lengths(3_000)
    rows = packed_rows(lengths, max_tokens=8192)

    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(packed_row_length(sum(lengths[i] for i in row)) <= 8192 for row in rows)
    # Longest first and filled to the budget: all rows but the last are nearly full.
    assert all(packed_row_length(sum(lengths[i] for i in row)) >= 8192 - 512 for row in rows[:-1])


def test_padded_gpu_batches_are_length_sorted_within_the_token_budget():
    lengths = random_lengths(3_000, seed=1)
    batches = padded_batches(lengths, max_tokens=8192)

    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert all(len(batch) * max(lengths[i] for i in batch) <= 8192 for batch in batches)
    assert len(batches[0]) > len(batches[-1])  # short reviews share larger batches


def test_padded_gpu_batches_of_a_long_tail_pad_little():
    """Few reviews per length (a chunk of a thousand long-tailed lengths): batches close on a wide
    spread of lengths rather than pad every review to the longest the budget allows (filled to
    the budget, these batches would compute 1.47 times the reviews' tokens)."""
    rng = random.Random(2)
    lengths = [int(rng.paretovariate(1.5) * 30) % 512 + 3 for _ in range(1000)]
    batches = padded_batches(lengths)

    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)
    assert padded <= 1.3 * sum(lengths)
    for batch in batches:
        head = batch[:-1]  # the batch as it was before its last review joined
        if head and len(head) * lengths[head[-1]] >= PADDED_BATCH_MIN_TOKENS:
            assert lengths[batch[-1]] <= PADDED_LENGTH_SPREAD * lengths[batch[0]]


@pytest.mark.parametrize("architecture", ["bert", "gte"])
def test_a_packed_row_gives_each_review_its_padded_vector(architecture):
    """The row's positions, review starts and pooling segments (checked on a CPU, in float32,
    where packed attention takes a block-diagonal mask)."""
    encoder = tiny_encoder(architecture)
    reviews = reviews_of([5, 40, 17, 64, 3, 29])
    expected = padded_vectors(encoder, reviews)

    enable_packed_attention(encoder)
    ids = [np.asarray(review) for review in reviews]
    with torch.inference_mode():
        vectors = packed_pooled(encoder, **packed_inputs(ids, list(range(len(reviews))), torch.device("cpu")))

    torch.testing.assert_close(vectors, expected.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("architecture", ["bert", "gte"])
def test_a_row_in_a_graph_layout_gives_each_review_its_padded_vector(architecture):
    """Empty review slots and filler segments change nothing for the row's reviews."""
    encoder = tiny_encoder(architecture)
    reviews = reviews_of([5, 40, 17, 64, 3, 29, 100])
    expected = padded_vectors(encoder, reviews)
    lengths = [len(review) for review in reviews]
    graphs = ScoringGraphs(encoder)
    layout = graphs.layout_for(lengths)
    assert layout is not None and layout.row_length == 384  # 258 tokens, 7 reviews: the 384-token layout
    assert graphs.layout_for([600]) is None and graphs.layout_for([3] * 300) is None  # eager instead

    enable_packed_attention(encoder)
    inputs = packed_inputs([np.asarray(review) for review in reviews], list(range(len(reviews))), torch.device("cpu"), layout)
    assert inputs["input_ids"].shape == (1, 384) and inputs["cu_seq_lens"].shape == (layout.review_slots + 3 + 1,)
    # The empty review slots hold no token; the 126 tokens of filler fill one piece, the other two are empty.
    segments = inputs["cu_seq_lens"].diff().tolist()
    assert segments == [*lengths, *[0] * (layout.review_slots - len(reviews)), 126, 0, 0]
    with torch.inference_mode():
        vectors = packed_pooled(
            encoder, inputs["input_ids"], inputs["position_ids"], inputs["cu_seq_lens"], inputs["max_length"],
            inputs["review_index"], layout.review_slots,
        )
    torch.testing.assert_close(vectors[: len(reviews)], expected.detach(), atol=1e-5, rtol=1e-5)


def test_a_graph_row_holds_in_one_buffer_the_inputs_of_the_row_in_its_layout():
    """A replayed row's inputs travel in one copy: its buffer's views are the row's tensors."""
    from review_toolkit.accel.gpu_scoring import graph_row
    from review_toolkit.accel.scoring_graphs import input_views, input_words, scoring_layouts

    reviews = [np.asarray(review) for review in reviews_of([5, 40, 17, 64, 3, 29, 100])]
    row = [6, 3, 1, 5, 2, 0, 4]  # longest first, as packed_rows cuts them
    for layout in scoring_layouts()[2:4]:
        expected = packed_inputs(reviews, row, torch.device("cpu"), layout)
        buffer = graph_row(reviews, row, layout)

        assert buffer.shape == (input_words(layout),) and buffer.dtype == torch.int64
        views = input_views(buffer, layout, torch.int32)
        for name, view in views.items():
            assert torch.equal(view, expected[name]), name
        assert views["cu_seq_lens"].dtype == torch.int32 and views["cu_seq_lens"].is_contiguous()


def test_every_graph_layout_fills_its_row_with_as_few_filler_pieces_as_it_needs():
    """However little of a layout its reviews fill, its segments add up to the row, no filler piece
    is longer than the flash kernel is told, and the pieces it does not need are empty."""
    from review_toolkit.accel.packing import ROW_MULTIPLE
    from review_toolkit.accel.scoring_graphs import scoring_layouts

    for layout in scoring_layouts():
        for lengths in ([1], [layout.longest_review], [1] * layout.review_slots):
            assert layout.fits(lengths)
            segments = layout.segment_lengths(lengths)
            filler = segments[layout.review_slots:]
            assert len(segments) == layout.review_slots + layout.filler_segments and sum(segments) == layout.row_length
            assert max(filler) <= layout.max_segment_length
            # As few pieces as that allows: all but the last are full, the unused ones empty.
            used = [piece for piece in filler if piece]
            assert all(piece == used[0] >= ROW_MULTIPLE for piece in used[:-1]) and 0 not in filler[: len(used)]


@pytest.mark.parametrize("architecture", ["bert", "gte"])
def test_linear_weights_kept_in_bf16_give_the_vectors_autocast_gives(architecture):
    encoder = tiny_encoder(architecture)
    cast = copy.deepcopy(encoder)
    reviews = reviews_of(random_lengths(12, seed=3))

    assert keep_linear_weights_in_bf16(cast) > 0
    linears = [m for m in cast.modules() if type(m) is torch.nn.Linear]
    assert all(p.dtype == torch.bfloat16 for m in linears for p in m.parameters())
    assert all(m.weight.dtype == torch.float32 for m in cast.modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.Embedding)))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = padded_vectors(encoder, reviews)
        vectors = padded_vectors(cast, reviews)
    torch.testing.assert_close(vectors, expected, rtol=0, atol=0)  # the same bf16 products, cast once


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="scoring on GPUs needs a CUDA GPU")
@pytest.mark.parametrize("architecture", ["bert", "gte"])
def test_small_rows_replayed_from_graphs_score_as_eager_rows(architecture):
    encoder = tiny_encoder(architecture).cuda()
    device = torch.device("cuda")
    chunks = [reviews_of(random_lengths(count, seed=count)) for count in (1, 3, 9, 30, 1, 3)]

    replayed = [embed_on_gpu(encoder, [chunk], pad_token_id=0, device=device) for chunk in chunks]
    eager = [embed_on_gpu(encoder, [chunk], pad_token_id=0, device=device, replay_graphs=False) for chunk in chunks]

    (lane,) = scoring_lanes_for(encoder, device).lanes  # one thread scoring: one lane
    assert len(lane.graphs._graphs) >= 2  # several layouts recorded, then replayed
    for graphed, plain in zip(replayed, eager):
        np.testing.assert_allclose(graphed, plain, atol=1e-2, rtol=1e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="scoring on GPUs needs a CUDA GPU")
@pytest.mark.parametrize("architecture", ["bert", "gte"])
def test_gpu_scoring_matches_the_padded_path_to_bf16_rounding(architecture):
    encoder = tiny_encoder(architecture).cuda()
    reviews = reviews_of(random_lengths(300, seed=2))
    with torch.inference_mode():
        expected = torch.cat([padded_vectors(encoder, reviews[i : i + 16]) for i in range(0, 300, 16)]).cpu().numpy()

    vectors = embed_on_gpu(encoder, [reviews[:100], reviews[100:]], pad_token_id=0, device=torch.device("cuda"), max_tokens=4096)

    assert vectors.shape == expected.shape and vectors.dtype == np.float32
    cosine = (vectors * expected).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > 0.999, cosine.min()
    np.testing.assert_allclose(vectors, expected, atol=5e-2, rtol=5e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="scoring on GPUs needs a CUDA GPU")
def test_threads_scoring_with_one_encoder_at_once_each_get_their_own_vectors():
    """A server keeps two batches in flight: rows replayed from the same graphs must not mix."""
    encoder = tiny_encoder("bert").cuda()
    device = torch.device("cuda")
    chunks = distinct_review_chunks()
    alone = [embed_on_gpu(encoder, [chunk], pad_token_id=0, device=device) for chunk in chunks]
    vectors = np.concatenate(alone)
    distances = np.abs(vectors[:, None] - vectors[None]).max(-1)
    np.fill_diagonal(distances, np.inf)
    assert distances.min() > 0.1  # any two reviews differ far beyond the tolerance below

    together = scored_from_threads(encoder, chunks, 3, device)

    for own, shared in zip(alone, together):  # summed in another order, a vector moves by bf16 rounding only
        np.testing.assert_allclose(shared, own, atol=2e-2, rtol=0)
    assert 1 <= len(scoring_lanes_for(encoder, device).lanes) <= 3  # a lane per call in flight at most


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="scoring on GPUs needs a CUDA GPU")
def test_each_batch_in_flight_has_a_lane_of_its_own_recorded_beforehand():
    """A server records the graphs of as many lanes as it has batches in flight, each on its own stream."""
    encoder = tiny_encoder("bert").cuda()
    device = torch.device("cuda")

    recorded = record_scoring_graphs(encoder, device, lanes=3)

    lanes = scoring_lanes_for(encoder, torch.device("cuda:0")).lanes  # "cuda" and "cuda:0": the same lanes
    assert len(lanes) == 3 and len({lane.stream.cuda_stream for lane in lanes}) == 3
    assert recorded == len(lanes[0].graphs.layouts) and all(lane.graphs.recorded == recorded for lane in lanes)
    chunks = [reviews_of(random_lengths(1 + index % 9, seed=index)) for index in range(30)]
    alone = [embed_on_gpu(encoder, [chunk], pad_token_id=0, device=device, replay_graphs=False) for chunk in chunks]
    together = scored_from_threads(encoder, chunks, 3, device)
    for own, shared in zip(alone, together):
        np.testing.assert_allclose(shared, own, atol=1e-2, rtol=1e-2)
    assert len(scoring_lanes_for(encoder, device).lanes) == 3  # no lane made on the way
    assert all(lane.graphs.recorded == recorded for lane in lanes)  # nor any graph recorded
    assert record_scoring_graphs(encoder, device, lanes=MAX_LANES + 2) == recorded
    assert len(scoring_lanes_for(encoder, device).lanes) == MAX_LANES  # each lane holds its graphs' memory: bounded


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="scoring on GPUs needs a CUDA GPU")
def test_batches_in_flight_sharing_one_stream_each_get_their_own_vectors():
    """serve --gpu-streams 1: batches in flight queue on one lane, replaying the same graphs one after another."""
    encoder = tiny_encoder("bert").cuda()
    device = torch.device("cuda")
    chunks = distinct_review_chunks()
    alone = [embed_on_gpu(encoder, [chunk], pad_token_id=0, device=device, replay_graphs=False) for chunk in chunks]
    recorded = record_scoring_graphs(encoder, device, lanes=1)

    (lane,) = scoring_lanes_for(encoder, device).lanes
    together = scored_from_threads(encoder, chunks, 4, device)
    for own, shared in zip(alone, together):
        np.testing.assert_allclose(shared, own, atol=2e-2, rtol=0)
    assert scoring_lanes_for(encoder, device).lanes == [lane] and lane.graphs.recorded == recorded  # nothing made on the way


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="scoring on GPUs needs a CUDA GPU")
def test_graphs_recorded_beforehand_score_as_eager_rows():
    encoder = tiny_encoder("bert").cuda()
    device = torch.device("cuda")

    recorded = record_scoring_graphs(encoder, device)

    (lane,) = scoring_lanes_for(encoder, device).lanes
    assert recorded == len(lane.graphs.layouts)
    chunks = [reviews_of(random_lengths(count, seed=count)) for count in (1, 5, 12, 40)]
    for chunk in chunks:
        replayed = embed_on_gpu(encoder, [chunk], pad_token_id=0, device=device)
        eager = embed_on_gpu(encoder, [chunk], pad_token_id=0, device=device, replay_graphs=False)
        np.testing.assert_allclose(replayed, eager, atol=1e-2, rtol=1e-2)
    assert lane.graphs.recorded == recorded  # nothing recorded on the way


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="scoring on GPUs needs a CUDA GPU")
def test_compiled_layers_are_recorded_into_graphs_and_score_as_before():
    from review_toolkit.accel.compilation import compile_for_scoring

    encoder = tiny_encoder("bert").cuda()
    device = torch.device("cuda")
    chunks = [reviews_of(random_lengths(count, seed=count)) for count in (1, 5, 12)]
    before = [embed_on_gpu(encoder, [chunk], pad_token_id=0, device=device, replay_graphs=False) for chunk in chunks]

    compile_for_scoring(encoder)
    recorded = record_scoring_graphs(encoder, device)

    (lane,) = scoring_lanes_for(encoder, device).lanes  # the lanes recorded before compiling are gone
    assert recorded == len(lane.graphs.layouts)  # compiled kernels recorded, none refused
    for chunk, uncompiled in zip(chunks, before):
        np.testing.assert_allclose(embed_on_gpu(encoder, [chunk], pad_token_id=0, device=device), uncompiled, atol=2e-2, rtol=2e-2)


def test_an_encoder_on_a_cpu_has_no_rows_to_queue_cheaply():
    """A CPU server scores its batches in worker threads: nothing is queued from the event loop."""
    assert not replays_one_graph(tiny_encoder("bert"), torch.device("cpu"), [12, 30])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="scoring on GPUs needs a CUDA GPU")
def test_only_small_rows_of_recorded_graphs_are_queued_cheaply():
    """What a server's event loop may queue itself: one row of a graph already recorded, never a
    recording, an eager row or several rows."""
    encoder = tiny_encoder("bert").cuda()
    device = torch.device("cuda")
    assert not replays_one_graph(encoder, device, [40, 12])  # nothing recorded yet

    record_scoring_graphs(encoder, device)

    assert replays_one_graph(encoder, device, [40, 12]) and replays_one_graph(encoder, device, [512] * 12)
    assert not replays_one_graph(encoder, device, [600])  # longer than a graph's review: eager
    assert not replays_one_graph(encoder, device, [500] * 40)  # 20,000 tokens: larger than every graph


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="scoring on GPUs needs a CUDA GPU")
def test_batches_queued_from_one_thread_and_waited_for_in_others_each_get_their_own_vectors():
    """A server's event loop queues each batch, a worker thread waits for the GPU, and the loop
    takes the vectors; two in flight on one lane."""
    from concurrent.futures import ThreadPoolExecutor

    encoder = tiny_encoder("bert").cuda()
    device = torch.device("cuda")
    chunks = distinct_review_chunks()
    alone = [embed_on_gpu(encoder, [chunk], pad_token_id=0, device=device, replay_graphs=False) for chunk in chunks]
    record_scoring_graphs(encoder, device, lanes=1)
    (lane,) = scoring_lanes_for(encoder, device).lanes

    with ThreadPoolExecutor(max_workers=2) as pool:
        queued, waits = [], []
        for chunk in chunks:
            if len(waits) >= 2:  # the batcher's two slots: a third batch waits for the first of them
                waits[-2].result()
            queued.append(queue_on_gpu(encoder, [chunk], pad_token_id=0, device=device))
            waits.append(pool.submit(queued[-1].wait))
        for wait in waits:
            wait.result()
        together = [vectors.result() for vectors in queued]  # in this thread, after the GPU's work

    for own, shared in zip(alone, together):
        np.testing.assert_allclose(shared, own, atol=2e-2, rtol=0)
    assert scoring_lanes_for(encoder, device).lanes == [lane]
    assert scoring_lanes_for(encoder, device)._calls[lane] == 0  # every queued call gave its lane back


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="scoring on GPUs needs a CUDA GPU")
def test_lanes_never_share_a_cuda_stream():
    """Two lanes on one stream would share its cuBLAS workspace, and write it at once when replayed side by side."""
    encoder = tiny_encoder("bert").cuda()
    lanes = scoring_lanes_for(encoder, torch.device("cuda"))
    lanes.ensure(1)
    for count in range(2, MAX_LANES + 1):
        for _ in range(31):  # torch's pool of 32 streams comes round to the last lane's
            torch.cuda.Stream()
        lanes.ensure(count)
    assert len({lane.stream.cuda_stream for lane in lanes.lanes}) == MAX_LANES


def test_the_server_offers_as_many_gpu_streams_as_an_encoder_has_lanes():
    """serve --gpu-streams is checked without importing torch, against its own copy of the bound."""
    from review_toolkit.serve.settings import MAX_GPU_STREAMS

    assert MAX_GPU_STREAMS == MAX_LANES
