"""The model process of ``serve --http-workers``: one model and one batcher behind a Unix socket.

HTTP processes parse, validate and answer requests; they forward each request's reviews here.
Requests from every HTTP process meet in this process's batcher, so batches are as large as in a
single server while JSON, HTTP and validation run on other cores: in one process they share the
interpreter with the model's kernel launches and, on a GPU, leave it idle between batches.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from review_toolkit.serve.batcher import REFUSAL_STATUS
from review_toolkit.serve.metrics import ServeMetrics
from review_toolkit.serve.settings import ServeSettings
from review_toolkit.serve.state import ModelState, library_versions
from review_toolkit.serve.wire import read_message, write_message

logger = logging.getLogger(__name__)


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


class Engine:
    """Answers ``score``, ``info`` and ``metrics`` messages from any number of connections."""

    def __init__(self, state: ModelState):
        self.state = state
        self._answering: set[asyncio.Task] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (message := await read_message(reader)) is not None:
                operation = message.get("op")
                if operation == "score":  # answered when its batch is scored; others go on meanwhile
                    task = asyncio.get_running_loop().create_task(self._score(message, writer))
                    self._answering.add(task)
                    task.add_done_callback(self._answering.discard)
                elif operation == "info":
                    write_message(writer, {"id": message.get("id"), **describe(self.state)})
                elif operation == "metrics":
                    write_message(writer, {"id": message.get("id"), "metrics": self.state.metrics.render().decode()})
                else:
                    write_message(writer, {"id": message.get("id"), "status": 400, "error": f"unknown operation {operation!r}"})
        except (ConnectionError, ValueError) as error:  # a broken peer ends its connection, never the engine
            logger.warning("An HTTP process's connection failed: %s", error)
        finally:
            writer.close()

    async def _score(self, message: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        answer: dict[str, Any] = {"id": message.get("id")}
        texts, token_ids = message["texts"], message.get("token_ids")
        if token_ids is not None and not _token_ids_fit(token_ids, len(texts), self.state.scorer.max_length):
            answer.update(status=400, error=f"token_ids must be {len(texts)} lists of at most {self.state.scorer.max_length} ids")
            write_message(writer, answer)
            return
        try:
            scored = await self.state.batcher.score(texts, token_ids)
            answer.update(p_fake=scored.p_fake.tolist(), raw_p_fake=scored.raw_p_fake.tolist())
        except tuple(REFUSAL_STATUS) as error:
            answer.update(status=REFUSAL_STATUS[type(error)], error=str(error))
        except Exception as error:  # noqa: BLE001 - the request fails, the engine goes on
            logger.exception("Scoring a forwarded request failed")
            answer.update(status=500, error=f"internal error: {type(error).__name__}")
        if not writer.is_closing():
            write_message(writer, answer)

    async def drain(self) -> None:
        """Answer every request received before the stop."""
        while self._answering:
            await asyncio.gather(*list(self._answering), return_exceptions=True)


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
    server = await asyncio.start_unix_server(engine.handle, path=str(socket_path))
    logger.info("Model process ready on %s", socket_path)
    try:
        await stop.wait()
    finally:
        server.close()
        await engine.drain()
        await state.close()
