"""Refuse oversized request bodies before they are read whole.

A declared ``Content-Length`` over the limit is answered 413 at once, without reading the body;
a body streamed without one (chunked) is counted as it arrives and refused as soon as it passes
the limit, so a client cannot make the server buffer more than the limit.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from starlette.exceptions import HTTPException

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def too_large_message(limit: int) -> str:
    return f"request body is larger than this server's limit of {limit} bytes (--max-body-bytes); send fewer or shorter reviews per request"


class BodySizeLimit:
    """ASGI middleware: at most ``max_bytes`` of request body per request."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                declared_bytes = int(declared)
            except ValueError:
                await _send_error(send, 400, "Validation", "the Content-Length header is not a number")
                return
            if declared_bytes > self.max_bytes:
                await _send_error(send, 413, "Validation", too_large_message(self.max_bytes))
                return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI passes an HTTPException raised while reading the body through untouched.
                    raise HTTPException(413, too_large_message(self.max_bytes))
            return message

        await self.app(scope, counted_receive, send)


async def _send_error(send: Send, status: int, error_type: str, message: str) -> None:
    body = json.dumps({"error": message, "error_type": error_type}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
