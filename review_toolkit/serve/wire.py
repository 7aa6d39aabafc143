"""Messages between HTTP processes and model processes: length-prefixed JSON over a Unix socket.

JSON rather than pickle: a model process decodes what it receives without executing any of it,
and floats survive the round trip exactly (Python writes the shortest repr that reads back equal).
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

_LENGTH = struct.Struct(">I")
# A message holds at most --max-inputs reviews of a body already bounded by --max-body-bytes.
MAX_MESSAGE_BYTES = 256 * 2**20


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None once the other side closed the connection."""
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        if length > MAX_MESSAGE_BYTES:
            raise ConnectionError(f"a message of {length} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")
        return json.loads(await reader.readexactly(length))
    except asyncio.IncompleteReadError:
        return None


def write_message(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    payload = json.dumps(message, separators=(",", ":"), default=str).encode()
    writer.write(_LENGTH.pack(len(payload)) + payload)
