"""The model process of ``serve --http-workers``: one model and one batcher behind a Unix socket.

HTTP processes parse, validate and answer requests; they forward each request's reviews here.
Requests from every HTTP process meet in this process's batcher, so batches are as large as in a
single server while JSON, HTTP and validation run on other cores: in one process they share the
interpreter with the model's kernel launches and, on a GPU, leave it idle between batches.

This process's event loop is the one place every request passes through, so it does as little
per request as it can: each connection is an ``asyncio.Protocol`` that decodes the frames it
receives as they arrive and hands each request to the batcher with a ``Reply`` of its own (no task
or future per request), and the answers one batch gives a connection leave in one frame.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from review_toolkit.serve.batcher import REFUSAL_STATUS
from review_toolkit.serve.metrics import ServeMetrics
from review_toolkit.serve.scorer import ScoredReviews
from review_toolkit.serve.settings import ServeSettings
from review_toolkit.serve.state import ModelState, library_versions
from review_toolkit.serve.wire import FrameReader, encode, messages_in

logger = logging.getLogger(__name__)

#: Polls of 10 ms for the HTTP processes to read the last answers, at a stop: an HTTP process that
#: reads nothing for 10 s is not waited for.
DRAIN_STEPS = 1000


def describe(state: ModelState) -> dict[str, Any]:
    """What an HTTP process needs to answer /info and to label scores, without the model."""
    classifier = state.classifier
    return {
        "run_path": str(state.run_path) if state.run_path else None,
        "info": getattr(classifier, "info", None) or {},
        "scored_with": getattr(classifier, "scored_with", None),
        "threshold": state.scorer.threshold,
        "max_length": state.scorer.max_length,
        "token_ids": state.scorer.portable_token_ids(),  # HTTP processes tokenize with it, if they can
        "training_metrics": state.training_metrics,
        "versions": library_versions(),
    }


class EngineConnection(asyncio.Protocol):
    """One HTTP process's connection: its messages in, their answers out."""

    def __init__(self, engine: "Engine"):
        self.engine = engine
        self.frames = FrameReader()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._outbox: list[dict[str, Any]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.engine.connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.frames.feed(data)
        except (ConnectionError, ValueError) as error:  # a broken peer ends its connection, never the engine
            logger.warning("An HTTP process's connection failed: %s", error)
            self.transport.close()
            return
        for frame in frames:
            for message in messages_in(frame):
                self.engine.receive(message, self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.engine.connections.discard(self)

    def send(self, message: dict[str, Any]) -> None:
        """Send ``message`` with the others sent before the event loop's next turn, in one frame."""
        if self.closed:
            return
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(message)

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, []
        if not self.closed and not self.transport.is_closing():
            self.transport.write(encode(outbox[0] if len(outbox) == 1 else outbox))


class _Reply:
    """Where a forwarded request's scores go: its connection's next frame (``batcher.Reply``)."""

    __slots__ = ("connection", "identifier", "answered")

    def __init__(self, connection: EngineConnection, identifier: Any):
        self.connection, self.identifier = connection, identifier
        self.answered = False

    def done(self) -> bool:
        return self.answered or self.connection.closed

    def set_result(self, scored: ScoredReviews) -> None:
        self.answer(p_fake=scored.p_fake.tolist(), raw_p_fake=scored.raw_p_fake.tolist())

    def set_exception(self, error: BaseException) -> None:
        if type(error) in REFUSAL_STATUS:
            self.answer(status=REFUSAL_STATUS[type(error)], error=str(error))
        else:
            logger.error("Scoring a forwarded request failed", exc_info=error)
            self.answer(status=500, error=f"internal error: {type(error).__name__}")

    def answer(self, **answer: Any) -> None:
        self.answered = True
        self.connection.send({"id": self.identifier, **answer})


class Engine:
    """Answers ``score``, ``info`` and ``metrics`` messages from any number of connections."""

    def __init__(self, state: ModelState):
        self.state = state
        self.connections: set[EngineConnection] = set()

    def connection(self) -> EngineConnection:
        """A protocol for one more connection (``loop.create_unix_server``'s factory)."""
        return EngineConnection(self)

    def receive(self, message: Any, connection: EngineConnection) -> None:
        if not isinstance(message, dict):
            connection.send({"status": 400, "error": f"a message is a JSON object, not {type(message).__name__}"})
            return
        identifier, operation = message.get("id"), message.get("op")
        if operation == "score":  # answered when its batch is scored; others go on meanwhile
            self._score(message, _Reply(connection, identifier))
        elif operation == "info":
            connection.send({"id": identifier, **describe(self.state)})
        elif operation == "metrics":
            connection.send({"id": identifier, "metrics": self.state.metrics.render().decode()})
        else:
            connection.send({"id": identifier, "status": 400, "error": f"unknown operation {operation!r}"})

    def _score(self, message: dict[str, Any], reply: _Reply) -> None:
        texts, token_ids = message.get("texts"), message.get("token_ids")
        if not _texts_fit(texts):
            reply.answer(status=400, error="texts must be a list of strings")
        elif token_ids is not None and not _token_ids_fit(token_ids, len(texts), self.state.scorer.max_length):
            reply.answer(status=400, error=f"token_ids must be {len(texts)} lists of at most {self.state.scorer.max_length} ids")
        else:
            try:
                self.state.batcher.submit(texts, token_ids, reply)
            except Exception as error:  # noqa: BLE001 - refused (429, 503) or failed (500): it fails alone
                reply.set_exception(error)

    async def drain(self) -> None:
        """Answer every request received before the stop (the batcher refuses later ones)."""
        await self.state.close()  # scores what is queued, then stops the batcher
        await asyncio.sleep(0)  # the last answers are written at the loop's next turn
        for _ in range(DRAIN_STEPS):  # and sent once the HTTP processes have read them
            if not any(connection.transport.get_write_buffer_size() for connection in list(self.connections)):
                break
            await asyncio.sleep(0.01)


def _texts_fit(texts: Any) -> bool:
    return isinstance(texts, list) and all(isinstance(text, str) for text in texts)


def _token_ids_fit(token_ids: Any, reviews: int, max_length: int) -> bool:
    return (
        isinstance(token_ids, list) and len(token_ids) == reviews
        and all(isinstance(row, list) and len(row) <= max_length for row in token_ids)
    )


async def run_engine(run: Path, settings: ServeSettings, socket_path: Path, stop: asyncio.Event) -> None:
    """Load the model, then listen on ``socket_path`` until ``stop`` is set; raise if loading fails.

    The socket exists only once the model is loaded and warmed up: its appearance is the signal
    that this process is ready.
    """
    state = ModelState(run, settings, ServeMetrics())
    failures: list[BaseException] = []
    await state.load(failures.append)
    if failures:
        raise failures[0]
    engine = Engine(state)
    server = await asyncio.get_running_loop().create_unix_server(engine.connection, path=str(socket_path))
    logger.info("Model process ready on %s", socket_path)
    try:
        await stop.wait()
    finally:
        server.close()
        await engine.drain()
