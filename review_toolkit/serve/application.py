"""The FastAPI app: routes, error bodies and the model's life cycle, for one run.

``build_app(run)`` returns a plain ASGI app: ``review-toolkit serve`` runs it under uvicorn, and
it can be mounted in or served by anything that speaks ASGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from importlib import resources
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from review_toolkit import __version__
from review_toolkit.data.labels import LABEL_NAMES
from review_toolkit.serve.batcher import REFUSAL_STATUS, Overloaded
from review_toolkit.serve.instrumentation import RequestMetrics
from review_toolkit.serve.limits import BodySizeLimit
from review_toolkit.serve.metrics import ServeMetrics
from review_toolkit.serve.scorer import ScoredReviews
from review_toolkit.serve.schemas import (
    ErrorResponse,
    HealthResponse,
    LabelScore,
    PredictRequest,
    RunIdentity,
    ScoreRequest,
    ScoreResponse,
)
from review_toolkit.serve.settings import ServeSettings
from review_toolkit.serve.state import ModelState, RunSource

logger = logging.getLogger(__name__)

ROUTES = {"/", "/page.js", "/predict", "/score", "/health", "/info", "/metrics", "/docs", "/openapi.json"}
# TEI's names for kinds of error, so that its clients can tell them apart.
ERROR_TYPES = {400: "Validation", 404: "NotFound", 405: "Validation", 413: "Validation", 422: "Validation",
               429: "Overloaded", 500: "Backend", 503: "Unhealthy"}  # fmt: skip
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        413: "Too many reviews, or a body over the size limit.",
        422: "Malformed JSON, a wrong type, an empty list or a blank review; the message names the field.",
        429: "The queue is full; retry shortly.",
        500: "Scoring these reviews failed.",
        503: "The model is not loaded yet, failed to load, or the server is shutting down.",
    }.items()
}


class ApiError(Exception):
    """An answer other than 200, with TEI's error body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def build_app(
    run: RunSource,
    settings: ServeSettings | None = None,
    *,
    on_load_failure: Callable[[BaseException], None] | None = None,
    load_before_serving: bool = False,
    engines: list[str] | None = None,
    **options: Any,
) -> FastAPI:
    """The server's ASGI app for ``run``: a run directory, a loaded ``Classifier``, or a function returning one.

    ``options`` are ``ServeSettings`` fields (``max_batch_tokens=...``) for when no ``settings`` are
    given. The model loads in the background once the app starts (``/health`` says when it is
    ready), or, with ``load_before_serving``, before the app's start-up ends: then the server
    accepts no connection until it can score (processes sharing one socket, where a loading one
    would answer 503 to connections another could serve). ``on_load_failure`` is called with the
    error if the model cannot load (the command uses it to stop the server). With ``engines``
    (Unix socket paths of model processes, ``serve --http-workers``) this process loads no
    model: it forwards the reviews to the least busy of those processes.
    """
    settings = settings or ServeSettings.from_options(**options)
    metrics = ServeMetrics()
    if engines:
        from review_toolkit.serve.remote import RemoteModelState

        state: ModelState = RemoteModelState(run, engines, settings, metrics)
    else:
        state = ModelState(run, settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.get_running_loop().create_task(state.load(on_load_failure), name="review-toolkit-load")
        if load_before_serving:
            await loading
        try:
            yield
        finally:
            if not loading.done():
                loading.cancel()  # the thread finishes its load unobserved; nothing more starts
            await state.close()

    app = FastAPI(
        title="review_toolkit",
        version=__version__,
        description="Score product reviews as fake or real with a trained run. `/predict` speaks Text Embeddings "
        "Inference's sequence-classification API; `/score` gives P(fake) against the run's threshold.",
        lifespan=lifespan,
    )
    app.state.model = state
    app.state.settings = settings
    app.state.metrics = metrics
    _add_error_handlers(app, metrics)
    _add_routes(app, state, settings, metrics)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics, routes=ROUTES)  # outermost: sees every answer
    return app


def _error_response(status: int, message: str, metrics: ServeMetrics, route: str) -> JSONResponse:
    error_type = ERROR_TYPES.get(status, "Backend" if status >= 500 else "Validation")
    metrics.errors.labels(route=route if route in ROUTES else "other", error_type=error_type).inc()
    return JSONResponse({"error": message, "error_type": error_type}, status_code=status)


# What each field takes, for messages about a value of the wrong type.
EXPECTED_TYPES = {
    "inputs": "a review (string), a list of reviews, or the batch form [[review], [review], ...]",
    "reviews": "a list of reviews (strings)",
}


def _describe_validation(error: RequestValidationError) -> str:
    """One sentence per problem, each naming the field: 'inputs: review 2 is blank; ...'."""
    problems: dict[str, str] = {}
    for problem in error.errors():
        location = [part for part in problem.get("loc", ()) if part != "body"]
        if problem.get("type") == "json_invalid":
            reason = problem.get("ctx", {}).get("error", "parse error")
            problems.setdefault("body", f"not valid JSON ({reason} at character {location[0] if location else '?'})")
            continue
        # A value matching no member of a union has a tag per member in its location
        # (inputs.str, inputs.list[str].1): name the field and what it takes.
        tags = [index for index, part in enumerate(location) if isinstance(part, str) and ("[" in part or part == "str")]
        field = ".".join(str(part) for part in (location[: tags[0]] if tags else location)) or "body"
        kind = problem.get("type", "")
        if tags and field in EXPECTED_TYPES:
            message = f"expected {EXPECTED_TYPES[field]}"
        elif kind == "missing":
            message = "this field is required"
        elif kind == "extra_forbidden":
            message = "unknown field"
        elif kind.endswith("_type") and field in EXPECTED_TYPES:
            message = f"expected {EXPECTED_TYPES[field]}"
        else:
            message = problem.get("msg", "invalid").removeprefix("Value error, ")
        problems.setdefault(field, message)
    described = [f"{field}: {message}" for field, message in problems.items()]
    return "; ".join(described[:5]) + (f" (and {len(described) - 5} more)" if len(described) > 5 else "")


def _add_error_handlers(app: FastAPI, metrics: ServeMetrics) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return _error_response(error.status, str(error), metrics, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return _error_response(422, _describe_validation(error), metrics, request.url.path)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return _error_response(error.status_code, str(error.detail), metrics, request.url.path)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("Unexpected error answering %s", request.url.path)
        return _error_response(500, f"internal error: {type(error).__name__}", metrics, request.url.path)


def _page_file(name: str) -> str:
    return resources.files("review_toolkit.serve").joinpath("page", name).read_text(encoding="utf-8")


def _add_routes(app: FastAPI, state: ModelState, settings: ServeSettings, metrics: ServeMetrics) -> None:
    async def scored(texts: list[str]) -> ScoredReviews:
        if not state.ready:
            raise ApiError(503, _not_ready_message(state))
        if len(texts) > settings.max_inputs:
            raise ApiError(413, f"{len(texts)} reviews in one request; this server takes at most {settings.max_inputs} (--max-inputs)")
        try:
            return await state.batcher.score(texts)
        except tuple(REFUSAL_STATUS) as error:
            message = f"server busy: {error}" if isinstance(error, Overloaded) else str(error)
            raise ApiError(REFUSAL_STATUS[type(error)], message) from error

    fake, real = LABEL_NAMES[1], LABEL_NAMES[0]

    @app.post("/predict", response_model=list[LabelScore] | list[list[LabelScore]], responses=ERROR_RESPONSES, tags=["scoring"])
    async def predict(body: PredictRequest) -> Any:
        """Text Embeddings Inference's `/predict`: per review, `[{label, score}, ...]`, highest score first."""
        result = await scored(body.texts())
        scores = result.raw_p_fake if body.raw_scores else result.p_fake
        answers = []
        for p_fake in scores.tolist():
            pairs = [{"label": fake, "score": p_fake}, {"label": real, "score": 1.0 - p_fake}]
            answers.append(pairs if p_fake >= 0.5 else pairs[::-1])
        return answers[0] if body.is_single() else answers

    @app.post("/score", response_model=ScoreResponse, responses=ERROR_RESPONSES, tags=["scoring"])
    async def score(body: ScoreRequest) -> Any:
        """P(fake) of each review, the run's threshold and the verdict (`fake` when p_fake >= threshold)."""
        result = await scored(body.reviews)
        threshold = state.scorer.threshold
        labels = state.classifier.labels_for(result.p_fake)
        return {
            "run": _run_identity(state),
            "results": [
                {"label": label, "p_fake": p_fake, "threshold": threshold}
                for label, p_fake in zip(labels, result.p_fake.tolist())
            ],
        }

    @app.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}}, tags=["operations"])
    async def health() -> Any:
        """200 once the model is loaded and warmed up; 503 before, or if loading failed."""
        if state.ready:
            return {"status": "ready"}
        status, detail = ("failed", state.error) if state.error else ("loading", "the model is still loading")
        return JSONResponse({"status": status, "detail": detail}, status_code=503)

    @app.get("/info", tags=["operations"])
    async def info() -> Any:
        """The run being served: path, plugins and versions, threshold, training metrics; and the server's limits."""
        if not state.ready:
            raise ApiError(503, _not_ready_message(state))
        run_info = state.classifier.info or {}
        return {
            "run": _run_identity(state),
            "threshold": state.scorer.threshold,
            "max_length": state.scorer.max_length,
            "labels": list(LABEL_NAMES),
            "checkpoint": run_info.get("checkpoint"),
            "plugins": run_info.get("plugins"),
            "versions": {"trained_with_review_toolkit": run_info.get("toolkit_version"), **state.library_versions()},
            "calibration": run_info.get("calibration"),
            "scored_with": getattr(state.classifier, "scored_with", None),
            "metrics": state.training_metrics,
            "server": {"review_toolkit": __version__, **settings.as_dict()},
        }

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text format: requests by route and status, errors, queue depth, batch sizes, latencies."""
        return Response(await state.render_metrics(), media_type=metrics.content_type)

    page, script = _page_file("index.html"), _page_file("page.js")

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/page.js", include_in_schema=False)
    async def page_script() -> Response:
        return Response(script, media_type="text/javascript")


def _not_ready_message(state: ModelState) -> str:
    return f"the model failed to load: {state.error}" if state.error else "the model is still loading"


def _run_identity(state: ModelState) -> dict[str, Any]:
    info = getattr(state.classifier, "info", None) or {}
    path = state.run_path
    return RunIdentity(
        name=path.name if path else "(in memory)",
        path=str(path) if path else "",
        backbone=info.get("backbone"),
        method=info.get("method"),
        head=info.get("head"),
    ).model_dump()
