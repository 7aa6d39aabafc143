"""The model behind one app: loaded in the background at start-up, warmed, then ready.

The server accepts connections while the model loads, so a load balancer or an orchestrator's
readiness probe sees ``/health`` answer 503 until the first scores could be computed, and 200
after; scoring routes answer 503 until then as well.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Callable, Union

from review_toolkit.serve.batcher import DynamicBatcher
from review_toolkit.serve.metrics import ServeMetrics
from review_toolkit.serve.scorer import ReviewScorer
from review_toolkit.serve.settings import ServeSettings

logger = logging.getLogger(__name__)

# Scored once before the server reports ready (ReviewScorer.warm_up): the first forward pass
# allocates and initialises what later ones reuse, and no client should pay for that.
WARM_UP_REVIEWS = [
    "Great product, works exactly as described.",
    "Terrible quality. It broke after two days and the seller never answered my messages about a refund.",
]

RunSource = Union[str, Path, Any, Callable[[], Any]]  # run directory, loaded Classifier, or a loader


class ModelState:
    """Loads the classifier, builds the scorer and the batcher, and says whether they are ready."""

    def __init__(self, source: RunSource, settings: ServeSettings, metrics: ServeMetrics):
        self.settings = settings
        self.metrics = metrics
        self.run_path: Path | None = None
        self.classifier: Any = None
        self.batcher: DynamicBatcher | None = None
        self.scorer: ReviewScorer | None = None
        self.error: str | None = None
        self.training_metrics: dict[str, Any] | None = None
        self._load = self._loader_for(source)

    def _loader_for(self, source: RunSource) -> Callable[[], Any]:
        if isinstance(source, (str, Path)):
            self.run_path = Path(source)

            def load_run_directory() -> Any:
                from review_toolkit.runs.loader import load_run

                classifier = load_run(
                    source, device=self.settings.device, allow_unverified=self.settings.allow_unverified,
                    backend=self.settings.backend,
                )
                if self.settings.compile:
                    classifier.compile_encoder()
                return classifier

            return load_run_directory
        if hasattr(source, "predict_proba"):
            return lambda: source
        if callable(source):
            return source
        raise TypeError(f"serve needs a run directory, a Classifier or a function returning one, not {type(source).__name__}")

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    async def load(self, on_failure: Callable[[BaseException], None] | None = None) -> None:
        """Load, warm up and start batching; on failure record why (``/health`` says it) and report it."""
        try:
            classifier = await asyncio.to_thread(self._load)
            scorer = ReviewScorer(classifier, batch_size=self.settings.predict_batch_size)
            batches_in_flight = self.settings.batches_in_flight or scorer.batches_in_flight
            await asyncio.to_thread(scorer.warm_up, WARM_UP_REVIEWS, self.settings.gpu_streams)
            batcher = DynamicBatcher(
                scorer,
                max_batch_tokens=self.settings.max_batch_tokens,
                max_wait_s=self.settings.max_wait_ms / 1000,
                max_pending_requests=self.settings.max_concurrent_requests,
                batches_in_flight=batches_in_flight,
                metrics=self.metrics,
            )
            batcher.start()
        except Exception as error:
            self.error = str(error).strip() or type(error).__name__
            logger.error("The model could not be loaded: %s", self.error)
            if on_failure is not None:
                on_failure(error)
            return
        self.classifier, self.scorer, self.batcher = classifier, scorer, batcher
        if self.run_path is None and getattr(classifier, "info", {}).get("run_dir"):
            self.run_path = Path(classifier.info["run_dir"])
        self.training_metrics = _training_metrics(self.run_path)
        self.metrics.model_ready.set(1)
        logger.info("Model ready: %s", self.run_path or type(classifier).__name__)

    async def close(self) -> None:
        self.metrics.model_ready.set(0)
        if self.batcher is not None:
            await self.batcher.close()

    async def render_metrics(self) -> bytes:
        return self.metrics.render()

    def library_versions(self) -> dict[str, str]:
        return library_versions()


def library_versions() -> dict[str, str]:
    """Versions of what scores in this process (they can differ from those of training)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("review_toolkit", "torch", "transformers", "scikit-learn", "fastapi", "uvicorn"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions


def _training_metrics(run: Path | None) -> dict[str, Any] | None:
    """The test-split metrics training wrote beside the run (metrics.json), when there is a run."""
    from review_toolkit.runs.layout import METRICS_FILE, read_json

    if run is None or not (run / METRICS_FILE).is_file():
        return None
    return read_json(run / METRICS_FILE)
