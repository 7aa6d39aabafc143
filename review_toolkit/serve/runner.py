"""Run the app under uvicorn: one process, or several sharing one listening socket.

SIGTERM and SIGINT stop a server gracefully: it stops accepting connections, answers the
requests it holds (the batcher finishes what is queued), then exits with status 0. Several
processes (``--workers``) share a socket bound by a supervising process, which forwards the
signal to each and fails (status 1) if any of them does.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from review_toolkit.errors import ReviewToolkitError, RunDirectoryError
from review_toolkit.serve.settings import ServeSettings

logger = logging.getLogger("review_toolkit.serve")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _ignore_after_graceful_stop() -> None:
    """uvicorn re-raises the stop signal once it has shut down; a graceful stop is a success, not a kill."""
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, lambda *_: None)


def serve_in_this_process(
    run: Path,
    settings: ServeSettings,
    *,
    host: str,
    port: int,
    sockets: list[socket.socket] | None = None,
    log_level: str = "info",
    access_log: bool = False,
    shutdown_timeout: float = 30.0,
) -> None:
    """Serve until stopped; raise ReviewToolkitError if the run cannot be loaded.

    Alone, the server accepts connections while the model loads (``/health`` answers 503 until it
    is ready); on ``sockets`` shared with other processes it accepts none before it can score, so
    the kernel hands connections to the processes that are ready.
    """
    import uvicorn

    from review_toolkit.serve.application import build_app

    failures: list[BaseException] = []
    server: uvicorn.Server | None = None

    def stop_on_load_failure(error: BaseException) -> None:
        failures.append(error)
        if server is not None:
            server.should_exit = True

    app = build_app(run, settings, on_load_failure=stop_on_load_failure, load_before_serving=sockets is not None)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=int(shutdown_timeout),
        lifespan="on",
    )
    server = uvicorn.Server(config)
    _ignore_after_graceful_stop()
    server.run(sockets=sockets)
    if failures:
        error = failures[0]
        if isinstance(error, ReviewToolkitError):
            raise error
        first_line = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise RunDirectoryError(f"Cannot serve {run}: {type(error).__name__}: {first_line}")
    if not server.started:
        raise ReviewToolkitError(f"The server could not start on {host}:{port} (see the log above: is the port in use?).")


def _worker_main(run: str, settings: dict[str, Any], options: dict[str, Any], sock: socket.socket, threads: int | None) -> None:
    """One process of ``--workers N``: its own model on its own device, the shared socket."""
    _configure_logging(options.get("log_level", "info"))
    from review_toolkit.runtime.quiet import quiet_process

    quiet_process(progress=False)  # a spawned process starts with the libraries' defaults
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        serve_in_this_process(Path(run), ServeSettings(**settings), sockets=[sock], **options)
    except ReviewToolkitError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)


def serve_in_processes(
    run: Path,
    settings: ServeSettings,
    devices: list[str | None],
    *,
    host: str,
    port: int,
    threads: int | None = None,
    **options: Any,
) -> None:
    """Start one process per entry of ``devices`` on one socket; return once all stopped cleanly."""
    import uvicorn

    sock = uvicorn.Config("review_toolkit.serve:app", host=host, port=port).bind_socket()
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked process
    cpu_workers = sum(1 for device in devices if not (device or "cpu").startswith("cuda"))
    if threads is None and cpu_workers:  # processes sharing the cores should not each spin on all of them
        threads = max(1, (os.cpu_count() or 1) // cpu_workers)
    processes = []
    for device in devices:
        worker_settings = {**settings.as_dict(), "device": device}
        process = context.Process(
            target=_worker_main,
            args=(str(run), worker_settings, {"host": host, "port": port, **options}, sock, threads),
            name=f"review-toolkit-serve-{device or 'default'}",
        )
        process.start()
        processes.append(process)
    stopping = False

    def forward_stop(signal_number: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    previous = {stop_signal: signal.signal(stop_signal, forward_stop) for stop_signal in STOP_SIGNALS}
    try:
        failed: list[str] = []
        while any(process.is_alive() for process in processes):
            for index, process in enumerate(processes):
                process.join(timeout=0.2)
                if process.exitcode not in (None, 0) and f"{index}" not in failed:
                    failed.append(f"{index}")
                    if not stopping:
                        logger.error("Worker %d (%s) exited with status %s; stopping the others", index, devices[index], process.exitcode)
                        forward_stop(signal.SIGTERM, None)
        failed = [f"{index} ({devices[index] or 'default device'})" for index, process in enumerate(processes) if process.exitcode != 0]
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)
        sock.close()
    if failed:
        raise ReviewToolkitError(f"Server worker(s) {', '.join(failed)} failed; their messages are above.")
