"""``review-toolkit serve``: the HTTP server for one run.

This module imports only click and the toolkit's light modules, so that registering the command
keeps ``review-toolkit --help`` fast; FastAPI, uvicorn and torch load when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from review_toolkit.cli.group import backend_option
from review_toolkit.serve.settings import MAX_GPU_STREAMS, ServeSettings

_DEFAULTS = ServeSettings()


def _missing_dependencies() -> list[str]:
    from importlib.util import find_spec

    return [name for name, module in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("prometheus-client", "prometheus_client")) if find_spec(module) is None]


@click.command()
@click.option("--run", "run_dir", required=True, help="Run directory written by 'train'.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--max-batch-tokens", type=click.IntRange(min=1), default=_DEFAULTS.max_batch_tokens, show_default=True, help="Tokens scored together in one batch.")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=_DEFAULTS.max_wait_ms, show_default=True, help="Longest a batch waits for more requests after its oldest (while another is scored; it closes sooner when the model is about to be free for it) or after the newest (while the model is idle and the clients it answered are not all back).")
@click.option("--batches-in-flight", type=click.IntRange(min=1), help="Batches scored at once (default: 2 on a GPU, which computes one while the last is answered; 1 on a CPU).")
@click.option("--gpu-streams", type=click.IntRange(1, MAX_GPU_STREAMS), default=_DEFAULTS.gpu_streams, show_default=True, help="CUDA streams the batches in flight compute on: on streams of their own the GPU computes them side by side, on one, one after another.")
@click.option("--max-concurrent-requests", type=click.IntRange(min=1), default=_DEFAULTS.max_concurrent_requests, show_default=True, help="Requests queued or being scored; more are refused with 429.")
@click.option("--max-inputs", type=click.IntRange(min=1), default=_DEFAULTS.max_inputs, show_default=True, help="Reviews per request; more are refused with 413.")
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=_DEFAULTS.max_body_bytes, show_default=True, help="Largest request body; larger ones are refused with 413.")
@click.option("--device", help="cpu, cuda or cuda:i; a comma-separated list gives one per worker (default: a GPU if there is one, one per worker).")
@backend_option()
@click.option("--threads", type=click.IntRange(min=1), help="Compute threads per process, torch's or ONNX Runtime's (default: theirs; with --workers N on CPUs: the cores shared out).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Server processes, each with its own model (on GPUs: one per GPU).")
@click.option("--http-workers", type=click.IntRange(min=0), default=0, show_default=True, help="HTTP processes that parse requests and forward the reviews to the model processes (--workers of them), which batch every request together; 0: each process answers HTTP itself. Use it on GPUs, where one process cannot parse requests as fast as the GPU scores them.")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True, help="Seconds to finish in-flight requests after SIGTERM.")
@click.option("--compile", is_flag=True, default=None, help="Compile the encoder's layers before reporting ready (GPUs only): faster batches after 10-30 s of compiling.")
@click.option("--allow-unverified", is_flag=True, help="Serve a run that does not match its manifest (still never unpickles).")
@click.option("--access-log", is_flag=True, help="Log every request.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
def serve(
    run_dir: str,
    host: str,
    port: int,
    device: str | None,
    workers: int,
    http_workers: int,
    threads: int | None,
    shutdown_timeout: float,
    allow_unverified: bool,
    access_log: bool,
    log_level: str,
    **limits: int | float,
) -> None:
    """Serve a run over HTTP: /predict (Text Embeddings Inference API), /score, /health, /info, /metrics, a web page at /.

    The run is verified against its manifest before the server starts. SIGTERM stops the server
    gracefully: requests already received are answered, then it exits with status 0.
    """
    missing = _missing_dependencies()
    if missing:
        raise click.ClickException(
            f"Serving needs {', '.join(missing)}: pip install \"review_toolkit[serve]\"."
        )
    from review_toolkit.runtime.quiet import quiet_process
    from review_toolkit.runs.manifest import verify_run_directory
    from review_toolkit.runs.layout import require_run_directory

    quiet_process(progress=False)
    run = Path(require_run_directory(run_dir))
    verify_run_directory(run, allow_unverified=allow_unverified)  # a tampered run stops here, named
    settings = ServeSettings.from_options(allow_unverified=allow_unverified, **limits)

    from review_toolkit.serve import runner

    runner._configure_logging(log_level)
    options = {"log_level": log_level, "access_log": access_log, "shutdown_timeout": shutdown_timeout}
    if workers == 1 and not http_workers and (device is None or "," not in device):
        if threads:
            runner.set_threads(threads)
        runner.serve_in_this_process(run, ServeSettings(**{**settings.as_dict(), "device": device}), host=host, port=port, **options)
        return
    import torch

    from review_toolkit.serve.devices import worker_devices

    devices = worker_devices(device, workers, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    runner.serve_in_processes(run, settings, devices, host=host, port=port, threads=threads, http_workers=http_workers, **options)
