"""Which device each server process uses: one process per GPU when there are several."""

from __future__ import annotations

from review_toolkit.errors import ConfigError


def worker_devices(device: str | None, workers: int, cuda_devices: int) -> list[str | None]:
    """The device of each of ``workers`` processes.

    ``cuda`` (or no device on a machine with GPUs) spreads the processes over the GPUs, one each,
    wrapping around when there are more processes than GPUs; a list (``cuda:0,cuda:2``) is used in
    turn; ``cpu`` or a single ``cuda:i`` is shared by all. None means the toolkit's default (one process).
    """
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}.")
    names = [name.strip() for name in (device or "").split(",") if name.strip()]
    if len(names) > 1:
        return [names[index % len(names)] for index in range(workers)]
    single = names[0] if names else None
    if single == "cuda" or (single is None and workers > 1 and cuda_devices > 0):
        if cuda_devices == 0:
            raise ConfigError("--device cuda was given but no CUDA device is visible.")
        return [f"cuda:{index % cuda_devices}" for index in range(workers)]
    return [single] * workers
