"""Prometheus metrics of one server process, in a registry of its own.

A registry per app (not the process-wide default) lets several apps live in one process, as in
tests or when the app is embedded, without their counters colliding.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
BATCH_TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class ServeMetrics:
    """Requests, errors, queue and batches of the server; ``render()`` is the /metrics body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "review_toolkit_requests", "HTTP requests answered, by route and status code.", ["route", "status"], registry=registry
        )
        self.errors = Counter(
            "review_toolkit_errors", "Requests answered with an error, by route and kind of error.", ["route", "error_type"], registry=registry
        )
        self.request_latency = Histogram(
            "review_toolkit_request_latency_seconds", "Time from request to response, by route.", ["route"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.queue_depth = Gauge("review_toolkit_queue_depth", "Requests waiting for a batch.", registry=registry)
        self.requests_in_flight = Gauge(
            "review_toolkit_requests_in_flight", "Scoring requests queued or being scored.", registry=registry
        )
        self.batch_in_progress = Gauge("review_toolkit_batch_in_progress", "Batches being scored (at most --batches-in-flight).", registry=registry)
        self.queue_wait = Histogram(
            "review_toolkit_queue_wait_seconds", "Time a request waited before its batch started.",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.batch_reviews = Histogram(
            "review_toolkit_batch_size_reviews", "Reviews per scored batch.", buckets=BATCH_SIZE_BUCKETS, registry=registry
        )
        self.batch_requests = Histogram(
            "review_toolkit_batch_size_requests", "Requests per scored batch.", buckets=BATCH_SIZE_BUCKETS, registry=registry
        )
        self.batch_tokens = Histogram(
            "review_toolkit_batch_tokens", "Tokens per scored batch (after truncation).", buckets=BATCH_TOKEN_BUCKETS, registry=registry
        )
        self.batch_latency = Histogram(
            "review_toolkit_batch_latency_seconds", "Time to score one batch.", buckets=LATENCY_BUCKETS, registry=registry
        )
        self.batch_failures = Counter("review_toolkit_batch_failures", "Batches whose scoring raised.", registry=registry)
        self.reviews_scored = Counter("review_toolkit_reviews_scored", "Reviews scored.", registry=registry)
        self.model_ready = Gauge("review_toolkit_model_ready", "1 once the model is loaded and warmed up.", registry=registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
