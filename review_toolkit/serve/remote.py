"""The HTTP side of ``serve --http-workers``: the app's model state, backed by model processes.

An HTTP process loads no model. It connects to every model process's Unix socket, learns the
run's threshold, description and tokenizer from the first, and forwards each request's reviews,
with their token ids where it can compute them (after the GPU's work, tokenizing was the model
process's largest cost per review), to the model process with the fewest of its requests
outstanding. Refusals come back with the status the batcher gave them (429, 503, 500); a model
process that goes away fails its outstanding requests with 503, and the supervising process
stops the server.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import numpy as np

from review_toolkit.data.labels import LABEL_NAMES
from review_toolkit.inference.token_ids import TokenIdEncoder, token_ids_from_portable
from review_toolkit.serve.batcher import REFUSAL_STATUS, Overloaded, ScoringFailed, ShuttingDown
from review_toolkit.serve.metrics import ServeMetrics
from review_toolkit.serve.scorer import ScoredReviews
from review_toolkit.serve.settings import ServeSettings
from review_toolkit.serve.wire import messages_in, read_message, write_message

REFUSALS = {status: refusal for refusal, status in REFUSAL_STATUS.items()}
# Families only an HTTP process counts; the model processes' queue, batch and scoring families
# are added to them, summed over the model processes, on every scrape.
HTTP_FAMILIES = {"review_toolkit_requests", "review_toolkit_errors", "review_toolkit_request_latency_seconds"}


class EngineGone(ConnectionError):
    """The model process closed its socket (it stopped or failed)."""


class EngineConnection:
    """One connection to a model process; calls are matched to answers by id."""

    def __init__(self, path: str):
        self.path = path
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task | None = None

    @property
    def outstanding(self) -> int:
        return len(self._waiting)

    @property
    def open(self) -> bool:
        return self._reading is not None and not self._reading.done()

    async def connect(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(self.path)
        self._reading = asyncio.get_running_loop().create_task(self._read(reader), name=f"review-toolkit-engine {self.path}")

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        if not self.open:
            raise EngineGone(f"the model process behind {self.path} is gone")
        identifier = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        self._waiting[identifier] = answer
        write_message(self._writer, {**message, "id": identifier})
        try:
            return await answer
        finally:
            self._waiting.pop(identifier, None)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while (frame := await read_message(reader)) is not None:
                for message in messages_in(frame):  # the answers of one batch come in one frame
                    answer = self._waiting.get(message.get("id"))
                    if answer is not None and not answer.done():
                        answer.set_result(message)
        finally:
            for answer in self._waiting.values():
                if not answer.done():
                    answer.set_exception(EngineGone(f"the model process behind {self.path} stopped"))

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reading is not None:
            await asyncio.gather(self._reading, return_exceptions=True)


class RemoteBatcher:
    """``await score(texts)`` as with DynamicBatcher; the batching happens in the model processes."""

    def __init__(
        self, engines: list[EngineConnection], *, max_pending_requests: int, token_ids: TokenIdEncoder | None = None
    ):
        self.engines = engines
        self.max_pending_requests = max_pending_requests
        self.token_ids = token_ids  # tokenizes here, sparing the model process the work
        self._pending = 0
        self._closing = False

    @property
    def pending(self) -> int:
        return self._pending

    async def score(self, texts: list[str]) -> ScoredReviews:
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        if self._pending >= self.max_pending_requests:
            raise Overloaded(f"{self._pending} requests are already queued or being scored (the limit); retry shortly")
        engines = [engine for engine in self.engines if engine.open]
        if not engines:
            raise ShuttingDown("no model process is running")
        engine = min(engines, key=lambda candidate: candidate.outstanding)
        message: dict[str, Any] = {"op": "score", "texts": texts}
        if self.token_ids is not None:
            message["token_ids"] = self.token_ids(texts)
        self._pending += 1
        try:
            answer = await engine.call(message)
        except EngineGone as error:
            raise ShuttingDown(str(error)) from error
        finally:
            self._pending -= 1
        if "status" in answer:
            raise REFUSALS.get(answer["status"], ScoringFailed)(answer.get("error", "the model process refused the request"))
        return ScoredReviews(np.asarray(answer["p_fake"], dtype=np.float64), np.asarray(answer["raw_p_fake"], dtype=np.float64))

    async def close(self) -> None:
        """Refuse new work and wait for the answers still outstanding."""
        self._closing = True
        while self._pending and any(engine.open for engine in self.engines):
            await asyncio.sleep(0.01)
        await asyncio.gather(*(engine.close() for engine in self.engines))


class RemoteScorer:
    def __init__(self, description: dict[str, Any]):
        self.threshold = float(description["threshold"])
        self.max_length = int(description["max_length"])


class RemoteClassifier:
    """What the routes ask of a classifier, from a model process's description of its own."""

    def __init__(self, description: dict[str, Any]):
        self.info = description.get("info") or {}
        self.scored_with = description.get("scored_with")
        self.threshold = float(description["threshold"])

    def labels_for(self, p_fake: np.ndarray) -> list[str]:
        return [LABEL_NAMES[int(p >= self.threshold)] for p in p_fake]


class RemoteModelState:
    """ModelState's interface (ready, batcher, scorer, classifier, metrics) over model processes."""

    def __init__(self, run: Any, engines: list[str], settings: ServeSettings, metrics: ServeMetrics):
        self.settings = settings
        self.metrics = metrics
        self.run_path = Path(run) if isinstance(run, (str, Path)) else None
        self.connections = [EngineConnection(path) for path in engines]
        self.batcher: RemoteBatcher | None = None
        self.scorer: RemoteScorer | None = None
        self.classifier: RemoteClassifier | None = None
        self._error: str | None = None
        self.training_metrics: dict[str, Any] | None = None
        self._versions: dict[str, str] = {}

    @property
    def ready(self) -> bool:
        return self.batcher is not None and any(connection.open for connection in self.connections)

    @property
    def error(self) -> str | None:
        """Why this process cannot score (``/health`` says it), or None."""
        if self._error is None and self.batcher is not None and not self.ready:
            return "the model process stopped"
        return self._error

    async def load(self, on_failure: Any = None) -> None:
        try:
            for connection in self.connections:
                await connection.connect()
            description = await self.connections[0].call({"op": "info"})
        except (OSError, EngineGone) as error:
            self._error = f"cannot reach the model process: {error}"
            if on_failure is not None:
                on_failure(ConnectionError(self._error))
            return
        self.scorer, self.classifier = RemoteScorer(description), RemoteClassifier(description)
        self.training_metrics = description.get("training_metrics")
        self._versions = description.get("versions") or {}
        if description.get("run_path"):
            self.run_path = Path(description["run_path"])
        portable = description.get("token_ids")
        self.batcher = RemoteBatcher(
            self.connections, max_pending_requests=self.settings.max_concurrent_requests,
            token_ids=token_ids_from_portable(portable) if portable else None,
        )

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()

    def library_versions(self) -> dict[str, str]:
        return self._versions

    async def render_metrics(self) -> bytes:
        """This process's request families, and the model processes' other families summed."""
        texts = []
        for connection in self.connections:
            try:
                texts.append((await connection.call({"op": "metrics"}))["metrics"])
            except EngineGone:
                continue
        return merged_metrics(self.metrics, texts)


def merged_metrics(own: ServeMetrics, engine_texts: list[str]) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    totals: dict[str, dict[tuple, float]] = {}
    for text in engine_texts:
        for family in text_string_to_metric_families(text):
            if family.name in HTTP_FAMILIES:
                continue
            families.setdefault(family.name, family)
            samples = totals.setdefault(family.name, {})
            for sample in family.samples:
                if sample.name.endswith("_created"):  # a creation time: summing it means nothing
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                samples[key] = samples.get(key, 0.0) + sample.value

    class Collector:
        def collect(self) -> Any:
            for family in own.registry.collect():
                if family.name in HTTP_FAMILIES:
                    yield family
            for name, family in families.items():
                merged = Metric(name, family.documentation, family.type)
                for (sample_name, labels), value in totals[name].items():
                    merged.add_sample(sample_name, dict(labels), value)
                yield merged

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return generate_latest(registry)
