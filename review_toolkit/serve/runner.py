"""Run the app under uvicorn: one process, or several sharing one listening socket.

SIGTERM and SIGINT stop a server gracefully: it stops accepting connections, answers the
requests it holds (the batcher finishes what is queued), then exits with status 0. Several
processes (``--workers``) share a socket bound by a supervising process, which forwards the
signal to each and fails (status 1) if any of them does.

With ``--http-workers K`` the supervising process starts the model processes first (one per
device, each listening on a Unix socket in a private folder once its model is warmed up), then K
HTTP processes on the shared socket that forward reviews to them. A stop reaches the HTTP
processes first, so that they answer what they hold before the model processes drain and exit.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from review_toolkit.errors import ReviewToolkitError, RunDirectoryError
from review_toolkit.serve.settings import ServeSettings

logger = logging.getLogger("review_toolkit.serve")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: The GIL switch interval of a model process (``_engine_main``).
ENGINE_SWITCH_INTERVAL_S = 0.0005


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
    engines: list[str] | None = None,
) -> None:
    """Serve until stopped; raise ReviewToolkitError if the run cannot be loaded.

    Alone, the server accepts connections while the model loads (``/health`` answers 503 until it
    is ready); on ``sockets`` shared with other processes it accepts none before it can score, so
    the kernel hands connections to the processes that are ready. With ``engines`` it forwards
    the reviews to those model processes' sockets instead of loading the model.
    """
    import uvicorn

    from review_toolkit.serve.application import build_app

    failures: list[BaseException] = []
    server: uvicorn.Server | None = None

    def stop_on_load_failure(error: BaseException) -> None:
        failures.append(error)
        if server is not None:
            server.should_exit = True

    app = build_app(run, settings, on_load_failure=stop_on_load_failure, load_before_serving=sockets is not None, engines=engines)
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


def _stop_when_orphaned(interval_s: float = 1.0) -> None:
    """Stop this process gracefully once the supervising process is gone (killed with SIGKILL, say),
    rather than keep a port or a GPU held with nobody to stop it."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="review-toolkit-parent-watch", daemon=True).start()


def _start_process(log_level: str, threads: int | None) -> None:
    _stop_when_orphaned()
    _configure_logging(log_level)
    from review_toolkit.runtime.quiet import quiet_process

    quiet_process(progress=False)  # a spawned process starts with the libraries' defaults
    if threads:
        set_threads(threads)


def set_threads(threads: int) -> None:
    """This process's compute threads: torch's, and those of an ONNX Runtime session (a run scored
    with its ONNX export shares the cores as a torch one does)."""
    import torch

    from review_toolkit.inference.onnx_backend import set_session_threads

    torch.set_num_threads(threads)
    set_session_threads(threads)


def _worker_main(
    run: str, settings: dict[str, Any], options: dict[str, Any], sock: socket.socket, threads: int | None, engines: list[str] | None = None
) -> None:
    """An HTTP process on the shared socket: ``--workers N`` (its own model on its own device), or
    one of ``--http-workers K`` (forwarding to the model processes at ``engines``)."""
    _start_process(options.get("log_level", "info"), threads if not engines else None)
    try:
        serve_in_this_process(Path(run), ServeSettings(**settings), sockets=[sock], engines=engines, **options)
    except ReviewToolkitError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)


def _run_event_loop(main: Any) -> None:
    """Run the coroutine ``main`` on uvloop's event loop where it is installed (the ``serve`` extra
    has it, and uvicorn runs the HTTP processes on it), else on asyncio's: a model process's loop
    reads every request, wakes for every batch and answers every review."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def _engine_main(run: str, settings: dict[str, Any], socket_path: str, threads: int | None, log_level: str) -> None:
    """A model process of ``--http-workers``: load, listen on ``socket_path``, drain on SIGTERM."""
    import asyncio

    _start_process(log_level, threads)
    # The event loop answering the HTTP processes and the threads launching batches on the GPU share
    # this interpreter; a thread that wants the GIL asks its holder to let go only after this long
    # (5 ms by default), and a batch launched that late leaves the GPU idle (benchmarks/README.md).
    sys.setswitchinterval(ENGINE_SWITCH_INTERVAL_S)
    from review_toolkit.serve.engine import run_engine

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for stop_signal in STOP_SIGNALS:
            loop.add_signal_handler(stop_signal, stop.set)
        await run_engine(Path(run), ServeSettings(**settings), Path(socket_path), stop)

    try:
        _run_event_loop(main())
    except ReviewToolkitError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)
    except Exception as error:  # noqa: BLE001 - one line on stderr, as the command gives
        first_line = (str(error).strip() or type(error).__name__).splitlines()[0]
        print(f"Error: Cannot serve {run}: {type(error).__name__}: {first_line}", file=sys.stderr)
        sys.exit(1)


def serve_in_processes(
    run: Path,
    settings: ServeSettings,
    devices: list[str | None],
    *,
    host: str,
    port: int,
    threads: int | None = None,
    http_workers: int = 0,
    **options: Any,
) -> None:
    """One process per entry of ``devices``, on one socket (or, with ``http_workers``, behind that
    many HTTP processes on it); return once all stopped cleanly."""
    import uvicorn

    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked process
    cpu_workers = sum(1 for device in devices if not (device or "cpu").startswith("cuda"))
    if threads is None and cpu_workers:  # processes sharing the cores should not each spin on all of them
        threads = max(1, (os.cpu_count() or 1) // cpu_workers)
    supervisor = _Supervisor()
    sock: socket.socket | None = None
    folder = Path(tempfile.mkdtemp(prefix="review-toolkit-serve-")) if http_workers else None  # mode 0700: ours alone
    try:
        with supervisor.forwarding_stop_signals():
            if http_workers:
                paths = [str(folder / f"model-{index}.sock") for index in range(len(devices))]
                engines = [
                    context.Process(
                        target=_engine_main,
                        args=(str(run), {**settings.as_dict(), "device": device}, path, threads, options.get("log_level", "info")),
                        name=f"review-toolkit-model-{device or 'default'}",
                    )
                    for device, path in zip(devices, paths)
                ]
                supervisor.start(engines, [f"model process {index} ({device or 'default device'})" for index, device in enumerate(devices)])
                # The port is bound once every model is ready: until then, connections are refused
                # rather than answered 503, as with --workers.
                if supervisor.wait_until(lambda: all(Path(path).exists() for path in paths)):
                    sock = uvicorn.Config("review_toolkit.serve:app", host=host, port=port).bind_socket()
                    front = [
                        context.Process(
                            target=_worker_main,
                            args=(str(run), settings.as_dict(), {"host": host, "port": port, **options}, sock, None, paths),
                            name=f"review-toolkit-http-{index}",
                        )
                        for index in range(http_workers)
                    ]
                    supervisor.start(front, [f"HTTP process {index}" for index in range(http_workers)])
            else:
                sock = uvicorn.Config("review_toolkit.serve:app", host=host, port=port).bind_socket()
                workers = [
                    context.Process(
                        target=_worker_main,
                        args=(str(run), {**settings.as_dict(), "device": device}, {"host": host, "port": port, **options}, sock, threads),
                        name=f"review-toolkit-serve-{device or 'default'}",
                    )
                    for device in devices
                ]
                supervisor.start(workers, [f"worker {index} ({device or 'default device'})" for index, device in enumerate(devices)])
            supervisor.wait_until(lambda: False)
    finally:
        supervisor.stop_all()
        if sock is not None:
            sock.close()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    supervisor.raise_failures()


class _Supervisor:
    """Started processes in stages; a stop (signal or a failed process) ends the latest stage first."""

    def __init__(self) -> None:
        self.stages: list[list[tuple[multiprocessing.process.BaseProcess, str]]] = []
        self.stopping = False

    def start(self, processes: list[Any], names: list[str]) -> None:
        for process in processes:
            process.start()
        self.stages.append(list(zip(processes, names)))

    @contextlib.contextmanager
    def forwarding_stop_signals(self) -> Iterator[None]:
        def request_stop(_signal_number: int, _frame: Any) -> None:
            self.stopping = True

        previous = {stop_signal: signal.signal(stop_signal, request_stop) for stop_signal in STOP_SIGNALS}
        try:
            yield
        finally:
            for stop_signal, handler in previous.items():
                signal.signal(stop_signal, handler)

    def wait_until(self, condition: Callable[[], bool]) -> bool:
        """Poll until ``condition`` holds (True), or a stop is asked or a process ended (False)."""
        while not self.stopping:
            for stage in self.stages:
                for process, name in stage:
                    process.join(timeout=0.05)
                    if process.exitcode is not None:
                        if process.exitcode != 0:
                            logger.error("%s exited with status %s; stopping the others", name.capitalize(), process.exitcode)
                        return False
            if condition():
                return True
        return False

    def stop_all(self) -> None:
        for stage in reversed(self.stages):  # HTTP processes answer what they hold before models go
            for process, _ in stage:
                if process.is_alive():
                    os.kill(process.pid, signal.SIGTERM)
            for process, _ in stage:
                process.join()

    def raise_failures(self) -> None:
        failed = [name for stage in self.stages for process, name in stage if process.exitcode not in (0, None)]
        if failed:
            raise ReviewToolkitError(f"Server {', '.join(failed)} failed; their messages are above.")
