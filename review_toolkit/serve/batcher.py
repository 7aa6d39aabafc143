"""Dynamic batching: concurrent requests share forward passes, each gets back only its own scores.

Requests wait in a bounded queue. One worker task takes everything queued, up to a token budget,
sorts the batch by length (so little padding is computed) and scores it in a scoring thread, so
the event loop keeps accepting and answering requests meanwhile. Each request is answered (its
``Reply``) with the slice of the batch's scores that belongs to its reviews. If scoring a batch of
several requests raises, every request is scored again on its own: one bad request fails alone.

When the batch closes:

- if no batch is being scored, once as many requests have arrived since the last batch was scored
  as it answered, divided among the batches in flight, or none for ``max_wait_s`` (a request
  arriving at a scorer idle for longer is scored at once). With one batch at a time, the clients
  that post again as soon as they have their answer join this batch rather than the one after it,
  with which they would otherwise keep alternating; with two, half of them make this batch and the
  rest the next, behind it (waiting for all of them would gather every client into each batch
  again, and leave the GPU idle while they come back);
- otherwise just before the scorer is expected to be free for it (``pacing.ServiceTimes`` learns
  how long batches take), so that it takes every request that arrives until then, and never later
  than ``max_wait_s`` after its oldest request arrived.

Up to ``batches_in_flight`` batches are scored at once, each in its own thread. On a GPU, two keep
it busy: while one batch's results travel back and are answered, the next one's work is already
queued on the device (``accel.gpu_scoring`` lets one thread at a time queue work). Where queuing a
batch's GPU work costs a graph's replay (``ReviewScorer.queue``), the event loop queues it as it
hands the batch over, a thread only waits for the GPU, and the loop applies the head to the
vectors (``_finish``): each hand-over between a thread and the loop, which holds the interpreter
most of the time, costs the batch's clients a wait. They queue on one CUDA stream unless
``gpu_streams`` says more (``ServeSettings``): computed side by side, each batch finishes later,
and so do the next requests of its clients. On a CPU one batch already uses every core, so one at
a time is the default there (``ReviewScorer``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from review_toolkit.serve.metrics import ServeMetrics
from review_toolkit.serve.pacing import ServiceTimes
from review_toolkit.serve.scorer import ReviewScorer, ScoredReviews

if TYPE_CHECKING:
    from review_toolkit.accel.gpu_scoring import QueuedWork

logger = logging.getLogger(__name__)


class Overloaded(Exception):
    """The queue is full: the client should retry later (HTTP 429)."""


class ShuttingDown(Exception):
    """The server is stopping and takes no new work (HTTP 503)."""


class ScoringFailed(Exception):
    """Scoring this request's reviews raised (HTTP 500); the message says why."""


# The HTTP status each refusal is answered with (and travels as between processes).
REFUSAL_STATUS: dict[type[Exception], int] = {Overloaded: 429, ShuttingDown: 503, ScoringFailed: 500}

#: How long before the scorer is expected to be free a batch closes: the time to hand it to the
#: scorer (its inputs prepared and its work queued on the GPU) and, as the service times end when
#: a batch's scores are back, the time those take to come back (benchmarks/README.md, "Serving load").
HAND_OVER_S = 0.001
#: The longest the event loop may spend applying a batch's head and calibration (``_finish``).
FINISH_ON_LOOP_S = 0.001


class Reply(Protocol):
    """Where a request's scores go: an ``asyncio.Future``, or anything answering as one does. The
    model process of ``--http-workers`` writes them straight into its connection's next message
    (``engine``), with no task or future per request."""

    def done(self) -> bool: ...  # True once answered, or once nobody waits for the answer any more
    def set_result(self, result: "ScoredReviews", /) -> Any: ...
    def set_exception(self, exception: BaseException, /) -> Any: ...


@dataclass
class _Request:
    texts: list[str]
    tokens: int
    token_ids: list[list[int]] | None  # computed once, when counted; None: scored from the texts
    reply: Reply
    settled: Callable[["_Request"], None]  # called once, when it no longer counts as pending
    queued_at: float = field(default_factory=time.perf_counter)
    counted: bool = True

    def answer(self, scored: ScoredReviews) -> None:
        if not self.reply.done():
            self.reply.set_result(scored)
        self.settle()

    def fail(self, error: BaseException) -> None:
        if not self.reply.done():
            self.reply.set_exception(error)
        self.settle()

    def settle(self) -> None:
        if self.counted:
            self.counted = False
            self.settled(self)


def _describe(error: BaseException) -> str:
    first_line = (str(error).strip() or type(error).__name__).splitlines()[0]
    return f"{type(error).__name__}: {first_line}"


def _scoring_failed(error: BaseException) -> ScoringFailed:
    """What a request whose scoring raised ``error`` is answered with (500, saying why)."""
    return ScoringFailed(f"scoring failed: {_describe(error)}")


class DynamicBatcher:
    """Queue + one worker; ``await score(texts)`` from any request handler."""

    def __init__(
        self,
        scorer: ReviewScorer,
        *,
        max_batch_tokens: int,
        max_wait_s: float,
        max_pending_requests: int,
        batches_in_flight: int = 1,
        metrics: ServeMetrics | None = None,
    ):
        if batches_in_flight < 1:
            raise ValueError(f"batches_in_flight must be at least 1, not {batches_in_flight}")
        self.scorer = scorer
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self.max_pending_requests = max_pending_requests
        self.batches_in_flight = batches_in_flight
        self.metrics = metrics or ServeMetrics()
        self._waiting: deque[_Request] = deque()
        self._waiting_tokens = 0
        # An arrival wakes the batcher only once the waiting requests hold this many tokens: while
        # a batch forms behind one being scored, its closing time does not depend on arrivals, and
        # waking it for each would cost the event loop a task step per request.
        self._wake_at_tokens = 0
        self._pending = 0  # queued or being scored
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._scoring: set[asyncio.Task] = set()  # batches being scored
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        self.service_times = ServiceTimes()
        self._in_progress = 0  # batches handed to the scorer and not yet scored
        self._free_at = 0.0  # when the scorer is expected to have scored all of them
        self._last_done = 0.0  # when the scorer last finished a batch
        self._last_answered = 0  # requests that batch answered
        self._finish_on_loop = True

    @property
    def pending(self) -> int:
        return self._pending

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=self.batches_in_flight, thread_name_prefix="review-toolkit-scoring")
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="review-toolkit-batcher")

    async def score(self, texts: list[str], token_ids: list[list[int]] | None = None) -> ScoredReviews:
        """The scores of ``texts`` (in order), once a batch holding them has been scored;
        ``token_ids``: theirs, as the scorer's ``tokenize`` gives them, if already computed."""
        future = asyncio.get_running_loop().create_future()
        request = self.submit(texts, token_ids, future)
        try:
            return await future
        finally:
            request.settle()  # a cancelled wait no longer counts as pending

    def submit(self, texts: list[str], token_ids: list[list[int]] | None, reply: Reply) -> _Request:
        """Queue ``texts`` for a batch; their scores (or why they failed) go to ``reply``. Raises
        ``ShuttingDown`` or ``Overloaded`` at once instead of queuing."""
        if self._closing or self._worker is None:
            raise ShuttingDown("the server is shutting down")
        if self._pending >= self.max_pending_requests:
            raise Overloaded(f"{self._pending} requests are already queued or being scored (the limit); retry shortly")
        if token_ids is None:
            counts, token_ids = self.scorer.tokenize(texts)
        else:
            counts = [len(ids) for ids in token_ids]
        request = _Request(texts, sum(counts), token_ids, reply, self._settled)
        self._pending += 1
        self.metrics.requests_in_flight.set(self._pending)
        self._waiting.append(request)
        self._waiting_tokens += request.tokens
        self.metrics.queue_depth.set(len(self._waiting))
        if self._waiting_tokens >= self._wake_at_tokens:
            self._arrived.set()
        return request

    def _settled(self, request: _Request) -> None:
        self._pending -= 1
        self.metrics.requests_in_flight.set(self._pending)

    async def close(self) -> None:
        """Refuse new work, finish what is queued, then stop the worker."""
        self._closing = True
        while self._worker is not None and (self._waiting or self._pending):
            if self._worker.done():
                break
            await asyncio.sleep(0.01)
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        if self._scoring:
            await asyncio.gather(*self._scoring, return_exceptions=True)
        for request in self._waiting:
            request.fail(ShuttingDown("the server stopped before scoring this request"))
        self._waiting.clear()
        self._waiting_tokens = 0
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def _work(self) -> None:
        slots = asyncio.Semaphore(self.batches_in_flight)
        loop = asyncio.get_running_loop()
        while True:
            await slots.acquire()
            try:
                batch = await self._next_batch()
            except BaseException:
                slots.release()
                raise
            if not batch:
                slots.release()
                continue
            tokens = sum(request.tokens for request in batch)
            handed_over = time.perf_counter()
            # The scorer takes batches in turn: this one starts when those before it are done.
            self._free_at = max(handed_over, self._free_at) + self.service_times.predict(tokens)
            self._in_progress += 1
            task = loop.create_task(self._score_batch_in_slot(batch, tokens, handed_over, slots))
            self._scoring.add(task)
            task.add_done_callback(self._scoring.discard)

    async def _score_batch_in_slot(self, batch: list[_Request], tokens: int, handed_over: float, slots: asyncio.Semaphore) -> None:
        try:
            await self._score_batch(batch, tokens)
        except Exception as error:  # the batcher must outlive any batch, or its requests would hang
            logger.exception("Batch handling failed")
            for request in batch:
                request.fail(_scoring_failed(error))
        finally:
            done = time.perf_counter()
            started = max(handed_over, self._last_done)  # the scorer was busy with the batch before until then
            if done > started:
                self.service_times.observe(tokens, done - started)
            self._last_done = max(self._last_done, done)
            self._last_answered = len(batch)
            self._in_progress -= 1
            if not self._in_progress:
                self._free_at = done
            slots.release()
            self._arrived.set()  # a batch being formed may close now

    async def _next_batch(self) -> list[_Request]:
        forming_since = time.perf_counter()
        while not self._waiting:
            await self._wait_for_arrivals(0)
        batch: list[_Request] = []
        tokens = 0
        while True:
            while self._waiting:
                request = self._waiting[0]
                if request.reply.done():  # its client went away
                    self._take_waiting().settle()
                    continue
                if batch and tokens + request.tokens > self.max_batch_tokens:
                    return self._taken(batch)
                batch.append(self._take_waiting())
                tokens += request.tokens
            if not batch:  # every request queued had gone away
                return batch
            if tokens >= self.max_batch_tokens:
                return self._taken(batch)
            if not self._in_progress:
                # The clients the last batch answered come back one after another: wait for them
                # (their share of this batch, see above) while each arrives within max_wait of the
                # one before, the first within max_wait of this wait's start (after their answers
                # were sent, in a server of one process).
                returned = [request.queued_at for request in batch if request.queued_at >= self._last_done]
                since = max(forming_since, self._last_done)
                late = bool(returned) and returned[0] - since > self.max_wait_s
                if len(returned) >= -(-self._last_answered // self.batches_in_flight) or late:
                    return self._taken(batch)
                close_at = max([since, *returned]) + self.max_wait_s
                wake_at_tokens = 0  # each arrival counts
            else:
                # Counted from the oldest request's arrival: requests that queued while every batch
                # slot was busy have waited for company already.
                close_at = min(batch[0].queued_at + self.max_wait_s, self._free_at - HAND_OVER_S)
                wake_at_tokens = self.max_batch_tokens - tokens  # only a full batch closes it earlier
            remaining = close_at - time.perf_counter()
            if remaining <= 0 or not await self._wait_for_arrivals(wake_at_tokens, remaining):
                return self._taken(batch)

    async def _wait_for_arrivals(self, tokens: int, timeout: float | None = None) -> bool:
        """Wait until requests holding ``tokens`` tokens are waiting (0: any request), or a batch
        was scored; False if ``timeout`` seconds passed first."""
        self._wake_at_tokens = tokens
        self._arrived.clear()
        try:
            if timeout is None:
                await self._arrived.wait()
            else:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self._wake_at_tokens = 0

    def _take_waiting(self) -> _Request:
        request = self._waiting.popleft()
        self._waiting_tokens -= request.tokens
        return request

    def _taken(self, batch: list[_Request]) -> list[_Request]:
        self.metrics.queue_depth.set(len(self._waiting))
        return batch

    async def _score_batch(self, batch: list[_Request], tokens: int) -> None:
        batch.sort(key=lambda request: request.tokens / len(request.texts))
        started = time.perf_counter()
        for request in batch:
            self.metrics.queue_wait.observe(started - request.queued_at)
        texts = [text for request in batch for text in request.texts]
        token_ids = None
        if all(request.token_ids is not None for request in batch):
            token_ids = [ids for request in batch for ids in request.token_ids]
        self.metrics.batch_requests.observe(len(batch))
        self.metrics.batch_reviews.observe(len(texts))
        self.metrics.batch_tokens.observe(tokens)
        try:
            scored = await self._run_scorer(texts, token_ids)
        except Exception as error:
            self.metrics.batch_failures.inc()
            if len(batch) == 1:
                logger.exception("Scoring a request of %d reviews failed", len(texts))
                batch[0].fail(_scoring_failed(error))
                return
            logger.warning("Scoring a batch of %d requests failed (%s); scoring each on its own", len(batch), _describe(error))
            for request in batch:
                await self._score_alone(request)
            return
        finally:
            self.metrics.batch_latency.observe(time.perf_counter() - started)
        start = 0
        for request in batch:
            stop = start + len(request.texts)
            request.answer(scored.slice(start, stop))
            start = stop

    async def _score_alone(self, request: _Request) -> None:
        if request.reply.done():
            request.settle()
            return
        try:
            scored = await self._run_scorer(request.texts, request.token_ids)
        except Exception as error:
            logger.exception("Scoring a request of %d reviews failed", len(request.texts))
            request.fail(_scoring_failed(error))
            return
        request.answer(scored)

    async def _run_scorer(self, texts: list[str], token_ids: list[list[int]] | None) -> ScoredReviews:
        self.metrics.batch_in_progress.inc()
        try:
            loop = asyncio.get_running_loop()
            # Queued on the GPU from here where that is cheap (ReviewScorer.queue), the GPU waited for in a thread.
            queued = self.scorer.queue(texts, token_ids)
            if queued is None:
                scored = await loop.run_in_executor(self._executor, functools.partial(self.scorer.score, texts, token_ids))
            else:
                await loop.run_in_executor(self._executor, queued.wait)
                scored = self._finish(queued) if self._finish_on_loop else await loop.run_in_executor(self._executor, queued.result)
        finally:
            self.metrics.batch_in_progress.dec()
        self.metrics.reviews_scored.inc(len(texts))
        return scored

    def _finish(self, queued: QueuedWork) -> ScoredReviews:
        """The head and calibration on a batch's vectors, here on the event loop: a thread taking
        over from the loop that holds the interpreter waits for it, and the batch's clients wait
        too. A finish that holds the loop longer than ``FINISH_ON_LOOP_S`` (a costly head) moves
        the later ones to the scoring threads."""
        started = time.perf_counter()
        try:
            return queued.result()
        finally:
            took = time.perf_counter() - started
            if took > FINISH_ON_LOOP_S:
                self._finish_on_loop = False
                logger.info("Finishing a batch took the event loop %.1f ms: scoring threads finish them from now on", took * 1e3)
