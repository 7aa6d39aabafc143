"""Count every response by route and status, and time it: ASGI middleware feeding ServeMetrics.

It wraps the whole app, so refusals made before a route runs (413 on the body size, 404, 422)
are counted like any other answer. Unknown paths share one label so that scanners probing random
URLs cannot grow the number of time series without bound.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from review_toolkit.serve.metrics import ServeMetrics

OTHER_ROUTE = "other"


class RequestMetrics:
    def __init__(self, app: Callable[..., Awaitable[None]], metrics: ServeMetrics, routes: set[str]):
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else OTHER_ROUTE
        status = 500  # unless a response starts
        started = time.perf_counter()

        async def observed_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.metrics.requests.labels(route=route, status=str(status)).inc()
            self.metrics.request_latency.labels(route=route).observe(time.perf_counter() - started)
