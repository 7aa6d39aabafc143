"""Messages between HTTP processes and model processes: length-prefixed JSON over a Unix socket.

JSON rather than pickle: a model process decodes what it receives without executing any of it,
and floats survive the round trip exactly (Python writes the shortest repr that reads back equal).
A frame holds one message, or a list of them: a model process answers all the requests of one
connection that a batch scored in one frame, one write and one read instead of one per request.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

_LENGTH = struct.Struct(">I")
# A message holds at most --max-inputs reviews of a body already bounded by --max-body-bytes.
MAX_MESSAGE_BYTES = 256 * 2**20


class FrameTooLarge(ConnectionError):
    """A peer announced a frame over ``MAX_MESSAGE_BYTES``: the connection is not to be trusted."""


def encode(frame: dict[str, Any] | list[dict[str, Any]]) -> bytes:
    payload = json.dumps(frame, separators=(",", ":"), default=str).encode()
    return _LENGTH.pack(len(payload)) + payload


def messages_in(frame: Any) -> list[dict[str, Any]]:
    """The messages a decoded frame holds."""
    return frame if isinstance(frame, list) else [frame]


def _checked_length(header: bytes) -> int:
    (length,) = _LENGTH.unpack(header)
    if length > MAX_MESSAGE_BYTES:
        raise FrameTooLarge(f"a message of {length} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")
    return length


class FrameReader:
    """Decodes frames from the bytes of a stream as they arrive, in pieces of any size."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """The frames ``data`` completes, decoded; raises ``FrameTooLarge``, or ``ValueError`` on a
        frame that is not JSON."""
        self._buffer += data
        frames = []
        start = 0
        while len(self._buffer) - start >= _LENGTH.size:
            length = _checked_length(self._buffer[start : start + _LENGTH.size])
            end = start + _LENGTH.size + length
            if len(self._buffer) < end:
                break
            frames.append(json.loads(self._buffer[start + _LENGTH.size : end]))
            start = end
        del self._buffer[:start]
        return frames


async def read_message(reader: asyncio.StreamReader) -> Any:
    """The next frame, decoded, or None once the other side closed the connection."""
    try:
        length = _checked_length(await reader.readexactly(_LENGTH.size))
        return json.loads(await reader.readexactly(length))
    except asyncio.IncompleteReadError:
        return None


def write_message(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(encode(message))
