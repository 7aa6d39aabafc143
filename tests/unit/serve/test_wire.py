"""Frames between HTTP processes and model processes, decoded however the stream splits them."""

from __future__ import annotations

import struct

import pytest

from review_toolkit.serve.wire import MAX_MESSAGE_BYTES, FrameReader, FrameTooLarge, encode, messages_in

MESSAGES = [
    {"id": 0, "op": "score", "texts": ["Great product.", "Broke after a day."], "token_ids": [[101, 2307, 102], [101, 102]]},
    {"id": 1, "op": "info"},
    [{"id": 2, "p_fake": [0.25], "raw_p_fake": [0.5]}, {"id": 3, "status": 429, "error": "retry shortly"}],
]


@pytest.mark.parametrize("piece", [1, 3, 7, 64, 10_000])
def test_frames_split_anywhere_are_decoded_whole_and_in_order(piece: int) -> None:
    stream = b"".join(encode(message) for message in MESSAGES)
    reader = FrameReader()
    decoded = []
    for start in range(0, len(stream), piece):
        decoded += reader.feed(stream[start : start + piece])
    assert decoded == MESSAGES
    assert reader.feed(b"") == []


def test_floats_survive_the_round_trip_exactly() -> None:
    scores = [0.1 + 0.2, 1 / 3, 2.0**-40, 0.9999999999999999]
    assert FrameReader().feed(encode({"id": 5, "p_fake": scores})) == [{"id": 5, "p_fake": scores}]


def test_a_frame_holds_one_message_or_the_answers_of_one_batch() -> None:
    assert messages_in(MESSAGES[1]) == [MESSAGES[1]]
    assert [message["id"] for message in messages_in(MESSAGES[2])] == [2, 3]


def test_a_frame_announced_over_the_limit_is_refused_before_it_is_read() -> None:
    with pytest.raises(FrameTooLarge, match="over the"):
        FrameReader().feed(struct.pack(">I", MAX_MESSAGE_BYTES + 1) + b"{")


def test_a_frame_that_is_not_json_is_refused() -> None:
    with pytest.raises(ValueError):
        FrameReader().feed(struct.pack(">I", 5) + b"{oops")
