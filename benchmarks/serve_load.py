"""Load on `review-toolkit serve`: requests/s and latency for 1, 16 and 64 concurrent clients.

Each client posts one review at a time to /predict (TEI's API) and posts the next as soon as the
answer arrives; every level is bounded by a number of requests and a time limit. Beside it, the
same reviews are scored offline with ``Classifier.predict_proba`` in this process, on the same
machine, before the server starts (so the two never share the cores): the server's reviews/s at
64 clients is reported as a fraction of that offline throughput.

The load generator speaks HTTP/1.1 over asyncio streams with keep-alive connections: a full
HTTP client library costs more CPU per request than the server does, and on a small machine it
would be measuring itself. On larger machines the clients are spread over a few processes
(``--client-processes``), so that one interpreter's event loop does not cap a fast server.
Everything stays on 127.0.0.1.

    python benchmarks/serve_load.py --run runs/minilm-frozen-logreg --out benchmarks/results
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "fake_reviews.csv"
LEVELS = (1, 16, 64)


def cpu_name() -> str:
    path = Path("/proc/cpuinfo")
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Connection:
    """One keep-alive HTTP/1.1 connection posting JSON."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def client_share(port: int, texts: list[str], clients: int, requests: int, time_limit: float, start_at: float) -> dict:
    """``clients`` closed-loop clients, from wall-clock time ``start_at``, until ``requests``
    answers or ``time_limit`` seconds: their latencies, failures and the time they took."""
    bodies = [json.dumps({"inputs": text}).encode() for text in texts]
    latencies: list[float] = []
    failures = 0
    next_index = 0
    await asyncio.sleep(max(0.0, start_at - time.time()))
    deadline = time.perf_counter() + time_limit

    async def client() -> None:
        nonlocal next_index, failures
        connection = Connection(port)
        try:
            while next_index < requests and time.perf_counter() < deadline:
                body = bodies[next_index % len(bodies)]
                next_index += 1
                started = time.perf_counter()
                status, _ = await connection.post("/predict", body)
                latencies.append(time.perf_counter() - started)
                failures += status != 200
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return {"latencies": latencies, "failures": failures, "seconds": time.perf_counter() - started}


def client_process(port: int, texts: list[str], clients: int, requests: int, time_limit: float, start_at: float) -> dict:
    return run_async(client_share(port, texts, clients, requests, time_limit, start_at))


class ClientProcesses:
    """Processes a level's clients are spread over, started once (spawned, not forked: this process
    has used the GPU for the offline rate)."""

    def __init__(self, count: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.count = count
        self.pool = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"))

    def run(self, jobs: list[tuple]) -> list[dict]:
        return [future.result() for future in [self.pool.submit(client_process, *job) for job in jobs]]

    def close(self) -> None:
        self.pool.shutdown()


def run_level(port: int, texts: list[str], clients: int, requests: int, time_limit: float, processes: ClientProcesses | None = None) -> dict:
    """``clients`` closed-loop clients until ``requests`` answers or ``time_limit`` seconds, spread
    over ``processes`` (None: all in this process), each with its share of clients, requests and
    reviews, all starting at the same moment."""
    shares = min(clients, processes.count) if processes is not None else 1
    start_at = time.time() + (1.0 if shares > 1 else 0.0)
    jobs = [
        (port, texts[share::shares], clients // shares + (share < clients % shares), requests // shares + (share < requests % shares), time_limit, start_at)
        for share in range(shares)
    ]  # fmt: skip
    parts = processes.run(jobs) if shares > 1 else [client_process(*jobs[0])]
    latencies = [latency for part in parts for latency in part["latencies"]]
    failures = sum(part["failures"] for part in parts)
    elapsed = max(part["seconds"] for part in parts)
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "client_processes": shares,
        "requests": len(latencies),
        "failures": failures,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "p50_ms": round(1000 * ordered[len(ordered) // 2], 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
        "mean_ms": round(1000 * statistics.fmean(ordered), 2),
    }


def run_async(coroutine: Any) -> Any:
    """uvloop's event loop where it is installed: the load generator must cost less than the server."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def offline_throughput(classifier: Any, texts: list[str], batch_size: int, rounds: int) -> dict:
    """Best of ``rounds`` timings of predict_proba on ``texts`` (background load only slows a round)."""
    classifier.predict_proba(texts[:32], batch_size=batch_size)  # first-pass allocations
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        classifier.predict_proba(texts, batch_size=batch_size)
        timings.append(time.perf_counter() - started)
    best = min(timings)
    return {"reviews": len(texts), "batch_size": batch_size, "seconds": [round(t, 3) for t in timings], "reviews_per_s": round(len(texts) / best, 2)}


def call_latency(classifier: Any, texts: list[str], batch_size: int, sizes: tuple[int, ...] = (1, 8, 16, 32, 64), calls: int = 20) -> dict:
    """Median milliseconds of one predict_proba call on N reviews (token ids given, as the server does):
    the least time a batch of N can take in the server, whatever the HTTP side costs."""
    record = getattr(classifier, "record_scoring_graphs", None)
    if record is not None:
        record(1)  # as a server does before it reports ready: no timed call records a graph
    medians = {}
    for size in sizes:
        chunks = [texts[index * size : (index + 1) * size] for index in range(calls)]
        ids = [classifier.token_ids(chunk) for chunk in chunks]
        classifier.predict_proba(chunks[0], batch_size=batch_size, token_ids=ids[0])
        timings = []
        for chunk, chunk_ids in zip(chunks, ids):
            started = time.perf_counter()
            classifier.predict_proba(chunk, batch_size=batch_size, token_ids=chunk_ids)
            timings.append(time.perf_counter() - started)
        medians[str(size)] = round(1000 * statistics.median(timings), 2)
    return medians


def side_by_side(
    classifier: Any, texts: list[str], batch_size: int, size: int = 24, threads: tuple[int, ...] = (1, 2, 3, 4), calls: int = 60
) -> dict:
    """Reviews/s of predict_proba calls on ``size`` reviews each (token ids given), made from T threads
    at once: what a server's batches in flight can get from the device, whatever the HTTP side costs.
    On a GPU, the threads' calls on a stream each (side by side) and on one stream (one after another)."""
    from concurrent.futures import ThreadPoolExecutor

    chunks = [texts[index * size : (index + 1) * size] for index in range(calls)]
    ids = [classifier.token_ids(chunk) for chunk in chunks]
    record = getattr(classifier, "record_scoring_graphs", None)

    def score(pair: tuple[list[str], list[list[int]]]) -> Any:
        return classifier.predict_proba(pair[0], batch_size=batch_size, token_ids=pair[1])

    def rates(streams_for) -> dict[str, float]:
        measured = {}
        for count in threads:
            if record is not None:
                record(streams_for(count))  # as a server does for its --gpu-streams
            with ThreadPoolExecutor(max_workers=count) as pool:
                list(pool.map(score, zip(chunks, ids)))  # first pass: each thread's allocations
                started = time.perf_counter()
                list(pool.map(score, zip(chunks, ids)))
                measured[str(count)] = round(size * calls / (time.perf_counter() - started), 1)
        return measured

    result = {"reviews_per_call": size, "reviews_per_s_by_threads": rates(lambda count: count)}
    if record is not None and record(1):  # scoring replays graphs: a GPU
        result["reviews_per_s_by_threads_one_stream"] = rates(lambda count: 1)
    return result


def wait_ready(port: int, process: subprocess.Popen, limit_s: float = 600) -> None:
    import urllib.request

    deadline = time.time() + limit_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit("the server did not become ready")


def metric_values(port: int) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and not line.startswith("#")}


def batch_summary(before: dict[str, float], after: dict[str, float]) -> dict:
    """Batches the server formed between two scrapes: how many, their mean size, time and queue wait."""
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("review_toolkit_batch_size_reviews_count")
    waits = delta("review_toolkit_queue_wait_seconds_count")
    return {
        "batches": int(batches),
        "mean_reviews_per_batch": round(delta("review_toolkit_batch_size_reviews_sum") / batches, 2) if batches else None,
        "mean_batch_ms": round(1000 * delta("review_toolkit_batch_latency_seconds_sum") / batches, 2) if batches else None,
        "mean_queue_wait_ms": round(1000 * delta("review_toolkit_queue_wait_seconds_sum") / waits, 2) if waits else None,
    }


def markdown(result: dict) -> str:
    offline = result["offline"]["reviews_per_s"]
    lines = [
        f"# Serving load: `review-toolkit serve` on {result['run_description']}",
        "",
        f"Machine: {result['machine']['description']}; torch {result['machine']['torch']}, {result['machine']['torch_threads']} torch threads.",
        f"Load average before / after: {result['machine']['load_average_before']} / {result['machine']['load_average_after']} "
        "(the machine is shared; a busy machine slows both the server and the offline baseline).",
        f"Reviews: {result['data']}, posted one per request to /predict by closed-loop clients "
        f"(in {result['client_processes']} load-generating process(es)).",
        f"Server settings: {result['server_options']}.",
        "",
        f"Offline `predict_proba` on the {result['offline']['reviews']} reviews of the 64-client level "
        f"(batch size {result['offline']['batch_size']}, best of {len(result['offline']['seconds'])}): **{offline:.1f} reviews/s**.",
        "",
        "One `predict_proba` call on N reviews (token ids given, median of 20), ms: "
        + ", ".join(f"{size}: {ms}" for size, ms in result["call_latency_ms"].items()) + ".",
        "",
        f"Calls on {result['side_by_side']['reviews_per_call']} reviews each, from T threads at once, reviews/s: "
        + ", ".join(f"{count}: {rate:,.0f}" for count, rate in result["side_by_side"]["reviews_per_s_by_threads"].items())
        + (
            "; all on one CUDA stream: "
            + ", ".join(f"{count}: {rate:,.0f}" for count, rate in result["side_by_side"]["reviews_per_s_by_threads_one_stream"].items())
            if "reviews_per_s_by_threads_one_stream" in result["side_by_side"] else ""
        ) + ".",
        "",
        "| clients | requests | failures | requests/s | p50 ms | p99 ms | vs offline | batches | reviews/batch | ms/batch | queue wait ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in result["levels"]:
        batches = level["server_batches"]
        lines.append(
            f"| {level['clients']} | {level['requests']} | {level['failures']} | {level['requests_per_s']:.1f} | "
            f"{level['p50_ms']:.1f} | {level['p99_ms']:.1f} | {level['requests_per_s'] / offline:.0%} | {batches['batches']} | "
            f"{batches['mean_reviews_per_batch']} | {batches['mean_batch_ms']} | {batches['mean_queue_wait_ms']} |"
        )
    targets = result["targets"]
    lines += [
        "",
        f"Targets: 64 clients at >= 80% of offline throughput: **{targets['throughput_64_vs_offline']:.0%}** "
        f"({'met' if targets['throughput_met'] else 'missed'}); single-review p50 with no other load "
        f"< {targets['p50_target_ms']} ms: **{targets['p50_single_ms']:.1f} ms** ({'met' if targets['latency_met'] else 'missed'}).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="Run directory to serve (default: train the default run into a temporary folder).")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="CSV with a text column.")
    parser.add_argument("--requests", type=int, nargs=3, default=(200, 800, 1600), metavar=("C1", "C16", "C64"), help="Requests per level.")
    parser.add_argument("--time-limit", type=float, default=180.0, help="Seconds at most per level.")
    parser.add_argument("--offline-rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="predict_proba batch size, offline and in the server.")
    parser.add_argument("--threads", type=int, help="Torch threads, offline and in the server (default: torch's own).")
    parser.add_argument("--workers", type=int, help="Server processes sharing the socket (serve --workers; on a CPU each gets cores / workers threads).")
    parser.add_argument("--compile", action="store_true", help="Compiled encoder layers (GPUs), offline and in the server alike.")
    parser.add_argument("--max-wait-ms", type=float, help="The server's --max-wait-ms (default: serve's own).")
    parser.add_argument("--batches-in-flight", type=int, help="Batches the server scores at once (serve --batches-in-flight).")
    parser.add_argument("--gpu-streams", type=int, help="CUDA streams the server's batches compute on (serve --gpu-streams).")
    parser.add_argument("--http-workers", type=int, help="HTTP processes forwarding to the model processes (serve --http-workers).")
    parser.add_argument(
        "--client-processes", type=int, default=max(1, min(4, (os.cpu_count() or 1) // 4)),
        help="Processes the clients are spread over (default: one per 4 CPUs, at most 4), so that the load generator "
        "is not what limits a fast server; on small machines they would take cores from it.",
    )
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--name", default="serve_load_cpu")
    parser.add_argument("--machine", default="2-core CPU", help="How the results name this machine.")
    parser.add_argument("--device", default="cpu", help="Where the server and the offline baseline score: cpu or cuda.")
    parser.add_argument("--run-description", default="a frozen MiniLM + logistic regression run", help="How the results name the run.")
    arguments = parser.parse_args()

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    texts = pd.read_csv(arguments.data)["text"].astype(str).tolist()  # quoted fields hold newlines: pandas parses them
    rng = np.random.default_rng(0)
    texts = [texts[i] for i in rng.permutation(len(texts))]
    if arguments.run:
        run = Path(arguments.run)
    else:
        run = Path(tempfile.mkdtemp(prefix="serve-load-")) / "minilm-frozen-logreg"
        subprocess.run([sys.executable, "-m", "review_toolkit", "train", "--quiet", "--output-dir", str(run)], check=True)

    load_before = [round(value, 2) for value in os.getloadavg()]
    import torch

    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    largest = arguments.requests[2]
    from review_toolkit.runs.loader import load_run

    classifier = load_run(run, device=arguments.device)
    if arguments.compile:
        classifier.compile_encoder()
    offline = offline_throughput(classifier, texts[:largest], arguments.batch_size, arguments.offline_rounds)
    print(f"offline predict_proba: {offline['reviews_per_s']} reviews/s", flush=True)
    latency = call_latency(classifier, texts, arguments.batch_size)
    print(f"one predict_proba call, ms by reviews: {latency}", flush=True)
    together = side_by_side(classifier, texts, arguments.batch_size, threads=(1, 2) if arguments.device == "cpu" else (1, 2, 3, 4))
    print(f"calls side by side: {together}", flush=True)
    del classifier  # the server loads its own

    port = free_port()
    server_options = ["--max-concurrent-requests", "256", "--device", arguments.device]
    if arguments.max_wait_ms is not None:
        server_options += ["--max-wait-ms", str(arguments.max_wait_ms)]
    if arguments.threads:
        server_options += ["--threads", str(arguments.threads)]
    if arguments.workers:
        server_options += ["--workers", str(arguments.workers)]
    if arguments.http_workers:
        server_options += ["--http-workers", str(arguments.http_workers)]
    if arguments.batches_in_flight:
        server_options += ["--batches-in-flight", str(arguments.batches_in_flight)]
    if arguments.gpu_streams:
        server_options += ["--gpu-streams", str(arguments.gpu_streams)]
    if arguments.compile:
        server_options += ["--compile"]
    process = subprocess.Popen(
        [sys.executable, "-m", "review_toolkit", "serve", "--run", str(run), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *server_options],
    )  # fmt: skip
    clients = ClientProcesses(arguments.client_processes) if arguments.client_processes > 1 else None
    try:
        wait_ready(port, process)
        run_level(port, texts[-50:], 1, 50, 60)  # warm the server's code paths, not measured
        if clients is not None:  # start the client processes before anything is measured
            run_level(port, texts[-200:], 64, 200, 60, clients)
        levels = []
        for level_clients, requests in zip(LEVELS, arguments.requests):
            before = metric_values(port)
            level = run_level(port, texts[:requests], level_clients, requests, arguments.time_limit, clients)
            level["server_batches"] = batch_summary(before, metric_values(port))
            print(json.dumps(level), flush=True)
            levels.append(level)
    finally:
        if clients is not None:
            clients.close()
        process.terminate()
        process.wait(timeout=120)
    load_after = [round(value, 2) for value in os.getloadavg()]
    by_clients = {level["clients"]: level for level in levels}
    ratio = by_clients[64]["requests_per_s"] / offline["reviews_per_s"]
    result = {
        "machine": {
            "description": f"{arguments.machine} ({cpu_name()}, {os.cpu_count()} logical CPUs)",
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "run": str(run),
        "run_description": arguments.run_description,
        "data": f"{Path(arguments.data).name} (shuffled, seed 0)",
        "server_options": " ".join(server_options),
        "client_processes": arguments.client_processes,
        "offline": offline,
        "levels": levels,
        "call_latency_ms": latency,
        "side_by_side": together,
        "targets": {
            "throughput_64_vs_offline": round(ratio, 3),
            "throughput_met": ratio >= 0.8,
            "p50_single_ms": by_clients[1]["p50_ms"],
            "p50_target_ms": (target := 50 if arguments.device == "cpu" else 15),
            "latency_met": by_clients[1]["p50_ms"] < target,
        },
    }
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{arguments.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{arguments.name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
