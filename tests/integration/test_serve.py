"""`review-toolkit serve` against a real frozen MiniLM + logistic regression run.

Servers are real: uvicorn on a free 127.0.0.1 port, in a thread of this process (so that a test can
hold the model's scoring still with a gate) or as the `review-toolkit serve` command in a
subprocess (signals, start-up checks). Every score is compared with `Classifier.predict_proba` on
the same review. Nothing here asserts on wall-clock time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from review_toolkit.config import TrainConfig  # noqa: E402
from review_toolkit.runs.loader import load_run
from review_toolkit.train.pipeline import train  # noqa: E402
from review_toolkit.serve import app as serve_app  # noqa: E402
from review_toolkit.serve.devices import worker_devices  # noqa: E402
from conftest import free_port  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
REVIEWS = [
    "Great product, works exactly as described. Would buy again.",
    "Terrible. Broke after one day and support never answered my emails.",
    "I love this! Best purchase ever!!! Five stars, highly recommend to everyone.",
    "The zipper is a bit stiff but the bag holds everything I need for a weekend trip.",
]
WAIT_STEPS = 1200  # polls of 0.05 s: a bound on every wait, never an assertion on time


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, minilm_path: str, small_reviews: Path) -> Path:
    root = tmp_path_factory.mktemp("serve")
    config = TrainConfig(
        backbone="minilm", model=minilm_path, method="frozen", head="logreg", data=str(small_reviews),
        seed=5, output_dir=str(root / "minilm-frozen-logreg"), cache_dir=str(root / "cache"),
    )  # fmt: skip
    return Path(train(config, progress=False).run_dir)


@pytest.fixture(scope="module")
def classifier(run_dir: Path) -> Any:
    return load_run(run_dir, device="cpu")


def wait_until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(WAIT_STEPS):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


class ThreadServer:
    """uvicorn serving an app in a thread of the test process, on a free 127.0.0.1 port."""

    def __init__(self, app: Any):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ThreadServer":
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), "the server to listen")
        assert self.server.started, "the server did not start"
        return self

    def wait_ready(self) -> "ThreadServer":
        wait_until(lambda: httpx.get(f"{self.url}/health").status_code == 200, "the model to be ready")
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


class GatedClassifier:
    """The real classifier, whose scoring a test can hold (``gate``) or make fail (reviews holding POISON)."""

    def __init__(self, classifier: Any):
        self._classifier = classifier
        self.gate = threading.Event()
        self.gate.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._classifier, name)

    def predict_proba(self, texts: list[str], **options: Any) -> np.ndarray:
        if any("POISON" in text for text in texts):
            raise RuntimeError("this review cannot be scored")
        assert self.gate.wait(timeout=120), "the test never opened the gate"
        return self._classifier.predict_proba(texts, **options)


def metric(url: str, name: str) -> float:
    """The value of an unlabelled series (or the sum over a histogram's _count) at /metrics."""
    text = httpx.get(f"{url}/metrics").text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{")]
    assert values, f"{name} not in /metrics"
    return sum(values)


@pytest.fixture(scope="module")
def server(classifier: Any) -> Iterator[ThreadServer]:
    app = serve_app(classifier, max_inputs=8, max_body_bytes=8192, max_wait_ms=5)
    with ThreadServer(app) as running:
        yield running.wait_ready()


@contextlib.contextmanager
def gated_server(classifier: Any, **settings: Any) -> Iterator[tuple[ThreadServer, GatedClassifier]]:
    model = GatedClassifier(classifier)
    with ThreadServer(serve_app(model, **settings)) as running:
        running.wait_ready()
        try:
            yield running, model
        finally:
            model.gate.set()


@pytest.fixture
def gated(classifier: Any) -> Iterator[tuple[ThreadServer, GatedClassifier]]:
    with gated_server(classifier, max_concurrent_requests=3, max_inputs=8) as running_and_model:
        yield running_and_model


def expected_p_fake(classifier: Any, texts: list[str], **options: Any) -> np.ndarray:
    """Each review scored on its own offline: the reference every served score must match."""
    return np.array([classifier.predict_proba([text], **options)[0] for text in texts])


# ------------------------------------------------------------------------------ routes


def test_health_info_metrics_and_docs(server: ThreadServer, classifier: Any, run_dir: Path) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ready", "detail": None}
    info = httpx.get(f"{server.url}/info").json()
    assert info["run"]["backbone"] == "minilm" and info["run"]["method"] == "frozen" and info["run"]["head"] == "logreg"
    assert info["threshold"] == pytest.approx(classifier.threshold) and info["max_length"] == classifier.max_length
    assert {plugin["name"] for plugin in info["plugins"]} == {"minilm", "frozen", "logreg"}
    assert info["run"]["name"] == "(in memory)" and info["metrics"] is None  # a Classifier does not know its run
    assert info["versions"]["torch"] and info["server"]["max_inputs"] == 8
    metrics = httpx.get(f"{server.url}/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    httpx.post(f"{server.url}/score", json={"reviews": []})  # one error, so that the errors series exists
    exposed = httpx.get(f"{server.url}/metrics").text
    for name in ("review_toolkit_requests_total", "review_toolkit_queue_depth", "review_toolkit_batch_size_reviews_bucket",
                 "review_toolkit_request_latency_seconds_bucket", "review_toolkit_errors_total"):  # fmt: skip
        assert name in exposed, name
    assert 'route="/health",status="200"' in exposed and 'route="/score",status="422"' in exposed
    docs = httpx.get(f"{server.url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert {"/predict", "/score", "/health", "/info", "/metrics"} <= set(httpx.get(f"{server.url}/openapi.json").json()["paths"])


def test_a_run_directory_is_served_and_described(run_dir: Path, classifier: Any) -> None:
    with ThreadServer(serve_app(str(run_dir), device="cpu")) as running:
        running.wait_ready()
        answer = httpx.post(f"{running.url}/score", json={"reviews": REVIEWS[:1]}).json()
        info = httpx.get(f"{running.url}/info").json()
    assert info["run"]["path"] == str(run_dir) and info["checkpoint"]
    assert info["metrics"]["f1_macro"] == json.loads((run_dir / "metrics.json").read_text())["f1_macro"]
    assert answer["run"]["name"] == run_dir.name and answer["run"]["path"] == str(run_dir)
    assert answer["results"][0]["p_fake"] == pytest.approx(classifier.predict_proba(REVIEWS[:1])[0], abs=1e-6)


def test_predict_speaks_text_embeddings_inference(server: ThreadServer, classifier: Any) -> None:
    single = httpx.post(f"{server.url}/predict", json={"inputs": REVIEWS[0]})
    assert single.status_code == 200
    predictions = single.json()
    assert [set(item) for item in predictions] == [{"label", "score"}, {"label", "score"}]
    assert {item["label"] for item in predictions} == {"fake", "real"}
    assert predictions[0]["score"] >= predictions[1]["score"]  # highest first, as TEI answers
    scores = {item["label"]: item["score"] for item in predictions}
    assert scores["fake"] == pytest.approx(classifier.predict_proba([REVIEWS[0]])[0], abs=1e-6)
    assert scores["fake"] + scores["real"] == pytest.approx(1.0)

    expected = expected_p_fake(classifier, REVIEWS)
    for inputs in (REVIEWS, [[review] for review in REVIEWS]):  # a list, and TEI's batch form
        batch = httpx.post(f"{server.url}/predict", json={"inputs": inputs, "truncate": True}).json()
        assert len(batch) == len(REVIEWS) and all(len(predictions) == 2 for predictions in batch)
        fake = [next(item["score"] for item in predictions if item["label"] == "fake") for predictions in batch]
        np.testing.assert_allclose(fake, expected, atol=1e-6)

    raw = httpx.post(f"{server.url}/predict", json={"inputs": REVIEWS, "raw_scores": True}).json()
    raw_fake = [next(item["score"] for item in predictions if item["label"] == "fake") for predictions in raw]
    np.testing.assert_allclose(raw_fake, expected_p_fake(classifier, REVIEWS, calibrated=False), atol=1e-6)


def test_score_gives_p_fake_against_the_runs_threshold(server: ThreadServer, classifier: Any) -> None:
    answer = httpx.post(f"{server.url}/score", json={"reviews": REVIEWS})
    assert answer.status_code == 200
    body = answer.json()
    assert body["run"]["backbone"] == "minilm"
    expected = expected_p_fake(classifier, REVIEWS)
    np.testing.assert_allclose([result["p_fake"] for result in body["results"]], expected, atol=1e-6)
    assert [result["label"] for result in body["results"]] == classifier.labels_for(expected)
    assert [result["threshold"] for result in body["results"]] == [pytest.approx(classifier.threshold)] * len(REVIEWS)


def test_long_reviews_are_truncated_as_in_training(server: ThreadServer, classifier: Any) -> None:
    long_review = " ".join([REVIEWS[1]] * 60)  # far more tokens than the run keeps (max_length)
    assert len(classifier.tokenizer(long_review)["input_ids"]) > 2 * classifier.max_length
    answer = httpx.post(f"{server.url}/score", json={"reviews": [long_review]})
    assert answer.status_code == 200
    assert answer.json()["results"][0]["p_fake"] == pytest.approx(classifier.predict_proba([long_review])[0], abs=1e-6)


def test_the_page_is_served_offline(server: ThreadServer) -> None:
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<script src="page.js">' in page.text and "http" not in re.sub(r"<!doctype[^>]*>", "", page.text.lower())
    script = httpx.get(f"{server.url}/page.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/predict", b'{"inputs": ', "body"),
        ("/predict", b"[1, 2]", "body"),
        ("/predict", b'{"inputs": 5}', "inputs"),
        ("/predict", b'{"inputs": ["fine", 3]}', "inputs"),
        ("/predict", b'{"inputs": []}', "inputs"),
        ("/predict", b'{"inputs": "   "}', "inputs"),
        ("/predict", b'{"inputs": ["fine", "\\n\\t"]}', "inputs"),
        ("/predict", b'{"inputs": [["a", "b"]]}', "inputs"),
        ("/predict", b'{"inputs": "fine", "raw_scores": "maybe"}', "raw_scores"),
        ("/predict", b'{"text": "fine"}', "inputs"),
        ("/score", b'{"reviews": "not a list"}', "reviews"),
        ("/score", b'{"reviews": []}', "reviews"),
        ("/score", b'{"reviews": [""]}', "reviews"),
    ],
)
def test_malformed_requests_get_422_naming_the_field(server: ThreadServer, route: str, body: bytes, field: str) -> None:
    answer = httpx.post(f"{server.url}{route}", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    error = answer.json()
    assert error["error_type"] == "Validation" and error["error"].startswith(f"{field}:"), error
    assert httpx.post(f"{server.url}/score", json={"reviews": REVIEWS[:1]}).status_code == 200  # still serving


def test_too_many_reviews_or_too_large_a_body_get_413(server: ThreadServer) -> None:
    too_many = httpx.post(f"{server.url}/predict", json={"inputs": ["a review"] * 9})
    assert too_many.status_code == 413 and "at most 8" in too_many.json()["error"]

    large = json.dumps({"reviews": ["x" * 10_000]}).encode()
    declared = httpx.post(f"{server.url}/score", content=large, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and "8192 bytes" in declared.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for start in range(0, len(large), 1024):
            yield large[start : start + 1024]

    streamed = httpx.post(f"{server.url}/score", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "8192 bytes" in streamed.json()["error"]
    assert httpx.post(f"{server.url}/score", json={"reviews": REVIEWS[:1]}).status_code == 200
    assert 'route="/score",status="413"' in httpx.get(f"{server.url}/metrics").text


def test_a_full_queue_answers_429_not_a_longer_queue(gated: tuple[ThreadServer, GatedClassifier]) -> None:
    running, model = gated
    model.gate.clear()
    with httpx.Client(base_url=running.url, timeout=120) as client:
        held = [threading.Thread(target=lambda: client.post("/score", json={"reviews": REVIEWS[:1]})) for _ in range(3)]
        for thread in held:
            thread.start()
        wait_until(lambda: metric(running.url, "review_toolkit_requests_in_flight") == 3, "three requests in flight")
        refused = client.post("/score", json={"reviews": REVIEWS[:1]})
        assert refused.status_code == 429 and refused.json()["error_type"] == "Overloaded"
        model.gate.set()
        for thread in held:
            thread.join(timeout=120)
        assert client.post("/score", json={"reviews": REVIEWS[:1]}).status_code == 200


def test_a_failing_request_fails_alone_with_500(gated: tuple[ThreadServer, GatedClassifier], classifier: Any) -> None:
    running, model = gated
    model.gate.clear()
    answers: dict[str, httpx.Response] = {}

    def post(name: str, reviews: list[str]) -> None:
        answers[name] = httpx.post(f"{running.url}/score", json={"reviews": reviews}, timeout=120)

    first = threading.Thread(target=post, args=("first", REVIEWS[:1]))
    first.start()  # holds the scorer, so that the next two are queued into one batch
    wait_until(lambda: metric(running.url, "review_toolkit_batch_in_progress") == 1, "the first batch to start")
    others = [threading.Thread(target=post, args=("good", REVIEWS[1:3])), threading.Thread(target=post, args=("bad", ["POISON pill"]))]
    for thread in others:
        thread.start()
    wait_until(lambda: metric(running.url, "review_toolkit_queue_depth") == 2, "two requests queued")
    model.gate.set()
    for thread in [first, *others]:
        thread.join(timeout=120)
    assert answers["bad"].status_code == 500
    assert "RuntimeError: this review cannot be scored" in answers["bad"].json()["error"]
    assert answers["good"].status_code == 200 and answers["first"].status_code == 200
    np.testing.assert_allclose(
        [result["p_fake"] for result in answers["good"].json()["results"]], expected_p_fake(classifier, REVIEWS[1:3]), atol=1e-6
    )
    assert metric(running.url, "review_toolkit_batch_failures_total") >= 1
    assert httpx.post(f"{running.url}/score", json={"reviews": REVIEWS[:1]}).status_code == 200


def test_health_is_503_until_the_model_is_loaded(classifier: Any) -> None:
    loaded = threading.Event()

    def slow_loader() -> Any:
        assert loaded.wait(timeout=120)
        return classifier

    with ThreadServer(serve_app(slow_loader)) as running:
        health = httpx.get(f"{running.url}/health")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        refused = httpx.post(f"{running.url}/predict", json={"inputs": REVIEWS[0]})
        assert refused.status_code == 503 and refused.json()["error_type"] == "Unhealthy"
        loaded.set()
        running.wait_ready()
        assert httpx.post(f"{running.url}/predict", json={"inputs": REVIEWS[0]}).status_code == 200


# ------------------------------------------------------------------------------ batching


def test_concurrent_clients_get_their_own_scores(classifier: Any, fifty_reviews: list[str]) -> None:
    """Clients queued together share batches; each gets exactly its reviews' scores back."""
    requests = [fifty_reviews[index : index + 1 + index % 3] for index in range(0, 48, 4)]  # 12 requests, 1-3 reviews
    with gated_server(classifier, max_concurrent_requests=len(requests) + 1) as (running, model):
        check_concurrent_clients(running, model, classifier, requests)


def check_concurrent_clients(running: ThreadServer, model: GatedClassifier, classifier: Any, requests: list[list[str]]) -> None:
    model.gate.clear()
    blocker = threading.Thread(target=lambda: httpx.post(f"{running.url}/score", json={"reviews": ["hold"]}, timeout=120))
    blocker.start()
    wait_until(lambda: metric(running.url, "review_toolkit_batch_in_progress") == 1, "the blocking batch")

    async def clients() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=running.url, timeout=120) as client:
            pending = [asyncio.ensure_future(client.post("/score", json={"reviews": reviews})) for reviews in requests]
            for _ in range(WAIT_STEPS):
                if metric(running.url, "review_toolkit_queue_depth") == len(requests):
                    break
                await asyncio.sleep(0.05)
            model.gate.set()
            return await asyncio.gather(*pending)

    answers = asyncio.run(clients())
    blocker.join(timeout=120)
    for reviews, answer in zip(requests, answers):
        assert answer.status_code == 200
        np.testing.assert_allclose([r["p_fake"] for r in answer.json()["results"]], expected_p_fake(classifier, reviews), atol=1e-6)
    text = httpx.get(f"{running.url}/metrics").text
    single_request_batches = float(re.search(r'review_toolkit_batch_size_requests_bucket\{le="1.0"\} (\S+)', text).group(1))
    all_batches = float(re.search(r"review_toolkit_batch_size_requests_count (\S+)", text).group(1))
    assert all_batches > single_request_batches  # some batch held several requests


def test_batches_in_flight_are_scored_side_by_side_each_answered_its_own(classifier: Any) -> None:
    """--batches-in-flight 2 (a GPU's default): a second batch starts while the first is scored,
    a third waits for one of them; every client gets its own review's score."""
    with gated_server(classifier, batches_in_flight=2, max_wait_ms=0) as (running, model):
        model.gate.clear()
        answers: dict[int, httpx.Response] = {}

        def post(index: int) -> None:
            answers[index] = httpx.post(f"{running.url}/score", json={"reviews": [REVIEWS[index]]}, timeout=120)

        posts = [threading.Thread(target=post, args=(index,)) for index in range(3)]
        posts[0].start()
        wait_until(lambda: metric(running.url, "review_toolkit_batch_in_progress") == 1, "the first batch")
        posts[1].start()
        wait_until(lambda: metric(running.url, "review_toolkit_batch_in_progress") == 2, "a second batch beside it")
        posts[2].start()
        wait_until(lambda: metric(running.url, "review_toolkit_queue_depth") == 1, "the third request queued")
        assert metric(running.url, "review_toolkit_batch_in_progress") == 2
        model.gate.set()
        for thread in posts:
            thread.join(timeout=120)
    for index in range(3):
        assert answers[index].status_code == 200
        np.testing.assert_allclose(answers[index].json()["results"][0]["p_fake"], expected_p_fake(classifier, [REVIEWS[index]])[0], atol=1e-6)


def test_a_lone_request_is_scored_at_once_not_after_max_wait(classifier: Any) -> None:
    """With nothing being scored, waiting for company would only leave the model idle."""
    with gated_server(classifier, batches_in_flight=2, max_wait_ms=600_000) as (running, _):
        answer = httpx.post(f"{running.url}/score", json={"reviews": [REVIEWS[0]]}, timeout=120)
    assert answer.status_code == 200
    np.testing.assert_allclose(answer.json()["results"][0]["p_fake"], expected_p_fake(classifier, [REVIEWS[0]])[0], atol=1e-6)


def test_requests_arriving_while_a_batch_is_scored_share_the_next_batch_with_its_returning_client(classifier: Any) -> None:
    """The batch being formed closes when the scorer is about to be free for it: here not while the
    batch before it is scored (the server has learnt that batches take ten minutes), so every request
    arriving meanwhile is in it; and once that batch is scored, not before the client it answered has
    posted again, so that the two groups of clients do not keep alternating between batches."""
    with gated_server(classifier, batches_in_flight=2, max_wait_ms=600_000) as (running, model):
        running.app.state.model.batcher.service_times.observe(1, 600.0)
        model.gate.clear()
        answers: dict[int, list[httpx.Response]] = {index: [] for index in range(4)}

        def post(index: int, times: int = 1) -> None:
            for _ in range(times):
                answers[index].append(httpx.post(f"{running.url}/score", json={"reviews": [REVIEWS[index]]}, timeout=120))

        posts = [threading.Thread(target=post, args=(0, 2))] + [threading.Thread(target=post, args=(index,)) for index in range(1, 4)]
        posts[0].start()
        wait_until(lambda: metric(running.url, "review_toolkit_batch_in_progress") == 1, "the first batch")
        for thread in posts[1:]:
            thread.start()
        wait_until(lambda: metric(running.url, "review_toolkit_requests_in_flight") == 4, "three more requests")
        assert metric(running.url, "review_toolkit_batch_in_progress") == 1  # the second batch is still open
        model.gate.set()
        for thread in posts:
            thread.join(timeout=120)
        assert metric(running.url, "review_toolkit_batch_size_requests_count") == 2
        assert metric(running.url, "review_toolkit_batch_size_requests_sum") == 5
    assert [len(answers[index]) for index in range(4)] == [2, 1, 1, 1]
    for index in range(4):
        for answer in answers[index]:
            assert answer.status_code == 200
            np.testing.assert_allclose(answer.json()["results"][0]["p_fake"], expected_p_fake(classifier, [REVIEWS[index]])[0], atol=1e-6)


@pytest.mark.parametrize("batches_in_flight, returning_clients", [(1, 4), (2, 2)])
def test_an_idle_scorer_waits_for_its_share_of_the_clients_the_last_batch_answered(
    classifier: Any, batches_in_flight: int, returning_clients: int
) -> None:
    """After a batch of four, the clients it answered post again one by one. Scoring one batch at a
    time (a CPU's), the next batch waits for all four; with two in flight (a GPU's), for two: the
    other two then make the batch behind it, instead of every client being gathered into each
    batch again while the GPU waits for them."""
    from review_toolkit.serve.batcher import DynamicBatcher
    from review_toolkit.serve.scorer import ReviewScorer

    async def clients_the_next_batch_waited_for() -> int:
        batcher = DynamicBatcher(
            ReviewScorer(classifier), max_batch_tokens=8192, max_wait_s=600.0, max_pending_requests=64,
            batches_in_flight=batches_in_flight,
        )  # fmt: skip
        batcher.start()
        sample = batcher.metrics.registry.get_sample_value
        await asyncio.gather(*(batcher.score([review]) for review in REVIEWS))
        assert sample("review_toolkit_batch_size_requests_sum") == len(REVIEWS)  # one batch of four
        returned = []
        for review in REVIEWS:
            returned.append(asyncio.ensure_future(batcher.score([review])))
            await asyncio.sleep(0.2)  # the batcher's turn to close a batch, or to wait on
            if sample("review_toolkit_batch_size_requests_count") == 2:
                break
        scored = await asyncio.wait_for(asyncio.gather(*returned), timeout=120)
        await batcher.close()
        np.testing.assert_allclose([s.p_fake[0] for s in scored], expected_p_fake(classifier, REVIEWS[: len(scored)]), atol=1e-6)
        return len(returned)

    assert asyncio.run(clients_the_next_batch_waited_for()) == returning_clients


# ------------------------------------------------------------------------------ the command


def wait_for_health(process: subprocess.Popen, url: str, what: str) -> None:
    """Wait until the command's server answers /health with 200; fail at once if the command exits."""

    def ready() -> bool:
        assert process.poll() is None, process.communicate()[1][-3000:]
        try:
            return httpx.get(f"{url}/health", timeout=300).status_code == 200
        except httpx.TransportError:  # the port is not bound yet
            return False

    wait_until(ready, what)


def spawned_processes(process: subprocess.Popen) -> list[str]:
    """The pids of the processes the command started, in the order it started them (Linux: /proc),
    leaving out multiprocessing's resource tracker."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    return [pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def start_command(run: Path, port: int, *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "review_toolkit", "serve", "--run", str(run), "--host", "127.0.0.1", "--port", str(port), *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip


def test_sigterm_answers_the_request_in_flight_then_exits_0(run_dir: Path, classifier: Any, fifty_reviews: list[str]) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_command(run_dir, port, "--max-inputs", "64", "--device", "cpu", "--shutdown-timeout", "600")
    try:
        wait_for_health(process, url, "the command's server to be ready")
        reviews = [" ".join(fifty_reviews[index : index + 8]) for index in range(40)]  # long: max_length tokens each
        answer: list[httpx.Response] = []
        request = threading.Thread(target=lambda: answer.append(httpx.post(f"{url}/score", json={"reviews": reviews}, timeout=600)))
        request.start()
        wait_until(lambda: metric(url, "review_toolkit_batch_in_progress") == 1, "the batch to start")
        process.send_signal(signal.SIGTERM)
        request.join(timeout=600)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    assert answer and answer[0].status_code == 200
    np.testing.assert_allclose([r["p_fake"] for r in answer[0].json()["results"]], classifier.predict_proba(reviews), atol=1e-6)


def test_a_tampered_run_refuses_to_start_with_one_error_line(run_dir: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(run_dir, tampered)
    with open(tampered / "head.json", "a", encoding="utf-8") as handle:
        handle.write(" ")
    process = start_command(tampered, free_port())
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1
    assert "Traceback" not in stderr
    error_lines = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and "head.json" in error_lines[0], stderr


def test_the_cli_stays_light() -> None:
    """Registering `serve` must not load FastAPI, uvicorn or torch for `review-toolkit --help`."""
    probe = "import sys, review_toolkit.cli; print(sorted(m for m in ('fastapi', 'uvicorn', 'torch') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    help_text = subprocess.run([sys.executable, "-m", "review_toolkit", "serve", "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "--max-batch-tokens" in help_text.stdout and "--workers" in help_text.stdout


def test_workers_on_one_socket_answer_only_once_they_can_score(run_dir: Path, classifier: Any, fifty_reviews: list[str]) -> None:
    """Processes sharing the socket take no connection while their model loads (no 503 from a
    loading worker when another could score), and SIGTERM stops them all cleanly."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_command(run_dir, port, "--workers", "2", "--device", "cpu")
    health: list[int] = []
    try:
        def answered() -> bool:
            assert process.poll() is None, process.communicate()[1][-3000:]
            try:
                health.append(httpx.get(f"{url}/health", timeout=300).status_code)
            except httpx.TransportError:  # the socket is not bound yet
                return False
            return True

        wait_until(answered, "a worker to answer")
        # A new connection each: the kernel hands them to whichever worker accepts first.
        answers = [httpx.post(f"{url}/score", json={"reviews": [review]}, timeout=300) for review in fifty_reviews[:30]]
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert health == [200], "a worker answered before its model was ready"
    assert [answer.status_code for answer in answers] == [200] * 30
    np.testing.assert_allclose(
        [answer.json()["results"][0]["p_fake"] for answer in answers], classifier.predict_proba(fifty_reviews[:30]), atol=1e-6
    )
    assert process.returncode == 0, stderr[-3000:]


def test_http_workers_forward_to_one_model_process_and_stop_cleanly(run_dir: Path, classifier: Any, fifty_reviews: list[str]) -> None:
    """--http-workers: HTTP processes answer every endpoint without a model of their own; the model
    process scores every request (its batches show at /metrics); SIGTERM ends them all with 0."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_command(run_dir, port, "--http-workers", "2", "--device", "cpu", "--max-inputs", "8")
    try:
        wait_for_health(process, url, "the HTTP processes to answer")  # bound only once the model process is ready
        reviews = fifty_reviews[:20]
        with httpx.Client(base_url=url, timeout=300) as client:
            answers = [client.post("/score", json={"reviews": [review]}) for review in reviews]
            predicted = client.post("/predict", json={"inputs": REVIEWS[:2]})
            too_many = client.post("/score", json={"reviews": REVIEWS * 3})
            malformed = client.post("/score", json={"reviews": "one review"})
            info = client.get("/info").json()
            scraped = client.get("/metrics").text  # one keep-alive connection: the process that answered the above
        batches = metric(url, "review_toolkit_batch_size_reviews_count")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert [answer.status_code for answer in answers] == [200] * 20
    np.testing.assert_allclose([answer.json()["results"][0]["p_fake"] for answer in answers], classifier.predict_proba(reviews), atol=1e-6)
    assert [answer.json()["results"][0]["label"] for answer in answers] == classifier.labels_for(classifier.predict_proba(reviews))
    expected = classifier.predict_proba(REVIEWS[:2])
    assert [max(pairs, key=lambda pair: pair["score"])["label"] for pairs in predicted.json()] == [
        "fake" if p >= 0.5 else "real" for p in expected
    ]
    assert too_many.status_code == 413 and malformed.status_code == 422 and "reviews" in malformed.json()["error"]
    assert info["run"]["name"] == run_dir.name and info["threshold"] == classifier.threshold
    assert info["metrics"] is not None and info["versions"]["torch"]  # described by the model process
    assert batches >= 2  # the model process's batches, summed into the HTTP process's /metrics
    assert 'review_toolkit_requests_total{route="/score",status="200"} 20.0' in scraped  # its own request counters
    assert process.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr


def test_a_model_process_answers_each_request_once_and_a_batchs_answers_in_one_frame(classifier: Any, tmp_path: Path) -> None:
    """The model process of --http-workers over its real Unix socket: requests written in one go
    share a batch, each gets its own scores back, the batch's answers travel in one frame, and
    malformed messages get a 400 without disturbing the rest."""
    from review_toolkit.serve.engine import Engine
    from review_toolkit.serve.metrics import ServeMetrics
    from review_toolkit.serve.settings import ServeSettings
    from review_toolkit.serve.state import ModelState
    from review_toolkit.serve.wire import FrameReader, encode, messages_in

    messages = [{"id": index, "op": "score", "texts": [review]} for index, review in enumerate(REVIEWS)]
    messages += [{"id": "odd", "op": "score", "texts": "one review"}, {"id": "unknown", "op": "train"}]

    async def exchange() -> tuple[list[Any], float | None]:
        state = ModelState(classifier, ServeSettings(device="cpu"), ServeMetrics())
        await state.load()
        engine = Engine(state)
        path = str(tmp_path / "engine.sock")
        server = await asyncio.get_running_loop().create_unix_server(engine.connection, path=path)
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"".join(encode(message) for message in messages))
        frames, decoder = [], FrameReader()
        while sum(len(messages_in(frame)) for frame in frames) < len(messages):
            data = await asyncio.wait_for(reader.read(2**16), timeout=120)
            assert data, "the model process closed the connection"
            frames += decoder.feed(data)
        batches = state.metrics.registry.get_sample_value("review_toolkit_batch_size_requests_count")
        writer.close()
        server.close()
        await engine.drain()
        return frames, batches

    frames, batches = asyncio.run(exchange())
    answers = {message["id"]: message for frame in frames for message in messages_in(frame)}
    assert sorted(answers, key=str) == sorted([*range(len(REVIEWS)), "odd", "unknown"], key=str)  # each once
    np.testing.assert_allclose([answers[index]["p_fake"][0] for index in range(len(REVIEWS))], expected_p_fake(classifier, REVIEWS), atol=1e-6)
    assert answers["odd"]["status"] == 400 and "texts" in answers["odd"]["error"]
    assert answers["unknown"]["status"] == 400 and "train" in answers["unknown"]["error"]
    scored_frames = [frame for frame in frames if any("p_fake" in message for message in messages_in(frame))]
    assert len(scored_frames) == batches  # one frame per batch for this connection


def test_http_workers_stop_with_the_error_when_the_model_process_cannot_load(run_dir: Path) -> None:
    process = start_command(run_dir, free_port(), "--http-workers", "1", "--device", "cpu", "--backend", "onnx")
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1
    assert "Traceback" not in stderr
    error_lines = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert error_lines and "onnx" in error_lines[0].lower() and "model process 0" in error_lines[-1], stderr


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the model process through /proc")
def test_http_workers_stop_with_an_error_when_the_model_process_dies(run_dir: Path) -> None:
    """A killed model process takes the server down with a message naming it, not a hung port."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_command(run_dir, port, "--http-workers", "1", "--device", "cpu")
    try:
        wait_for_health(process, url, "the HTTP process to answer")
        model_process = int(spawned_processes(process)[0])  # started first; the HTTP process only once the model was ready
        os.kill(model_process, signal.SIGKILL)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    assert "Traceback" not in stderr
    assert "Model process 0 (cpu) exited with status -9" in stderr, stderr[-3000:]
    assert [line for line in stderr.splitlines() if line.startswith("Error:")] == [
        "Error: Server model process 0 (cpu) failed; their messages are above."
    ], stderr[-3000:]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the server's processes through /proc")
def test_processes_of_a_killed_server_stop_instead_of_holding_the_port(run_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_command(run_dir, port, "--http-workers", "1", "--device", "cpu")
    try:
        wait_for_health(process, url, "the HTTP process to answer")
        spawned = spawned_processes(process)
        assert len(spawned) == 2  # the model process and the HTTP process
        process.kill()  # the supervisor alone: no chance to stop its children
        process.communicate(timeout=60)

        def gone(pid: str) -> bool:
            try:
                return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] == "Z"  # exited, not yet reaped
            except FileNotFoundError:
                return True

        wait_until(lambda: all(gone(pid) for pid in spawned), "the orphaned processes to stop")
    finally:
        if process.poll() is None:
            process.kill()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=5)


def test_workers_spread_over_gpus_one_each() -> None:
    assert worker_devices(None, 1, 0) == [None]
    assert worker_devices(None, 3, 2) == ["cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices("cuda", 2, 4) == ["cuda:0", "cuda:1"]
    assert worker_devices("cpu", 2, 4) == ["cpu", "cpu"]
    assert worker_devices("cuda:0,cuda:2", 3, 4) == ["cuda:0", "cuda:2", "cuda:0"]


# ------------------------------------------------------------------------------ the page in a browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file():
        pytest.skip("needs Chromium at /usr/bin/chromium (apt-get install -y chromium)")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def test_the_page_scores_a_typed_review(browser: Any, server: ThreadServer, classifier: Any) -> None:
    page = browser.new_page()
    page.goto(f"{server.url}/")
    page.wait_for_selector("#run:has-text('threshold')")
    page.fill("#reviews", REVIEWS[1])
    page.click("#submit")
    page.wait_for_selector("tr.result")
    expected = classifier.predict_proba([REVIEWS[1]])[0]
    assert page.inner_text("tr.result td.verdict") == classifier.labels_for([expected])[0]
    assert float(page.inner_text("tr.result td.p-fake")) == pytest.approx(expected, abs=1e-3)
    assert page.inner_text("#status").startswith("Done: 1 review,")
    page.close()


def test_the_page_scores_a_csv_file_parsed_in_the_browser(browser: Any, server: ThreadServer, classifier: Any, tmp_path: Path) -> None:
    reviews = REVIEWS + ['Quoted, with a comma and a "quote"\nand a second line.'] * 6  # 10: two requests of max_inputs 8
    import pandas as pd

    csv_path = tmp_path / "reviews.csv"
    pd.DataFrame({"id": range(len(reviews)), "text": reviews}).to_csv(csv_path, index=False)
    page = browser.new_page()
    page.goto(f"{server.url}/")
    page.wait_for_selector("#run:has-text('threshold')")
    page.set_input_files("#file", str(csv_path))
    page.wait_for_selector("#status:has-text('10 reviews read')")
    page.click("#submit")
    page.wait_for_selector("#status:has-text('Done')")
    shown = page.eval_on_selector_all("tr.result td.p-fake", "cells => cells.map(cell => Number(cell.textContent))")
    np.testing.assert_allclose(shown, classifier.predict_proba(reviews), atol=1e-3)
    assert page.eval_on_selector_all("tr.result td.review", "cells => cells.map(cell => cell.textContent)") == reviews
    page.close()
