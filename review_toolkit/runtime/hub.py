"""Is the Hugging Face Hub reachable? Asked once per process, in a few seconds.

Without an answer, a missing checkpoint id costs minutes: every file request retries against a
hub that never answers before the library gives up. With ``HF_HUB_OFFLINE`` set, or when the
configured endpoint cannot be reached, loading uses the local cache only and fails at once.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

PROBE_SECONDS = 3.0


def offline_by_setting() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


@functools.lru_cache(maxsize=None)
def _endpoint_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            return True
    except OSError:
        return False


def hub_reachable() -> bool:
    """False when offline by setting, or when the hub's endpoint (``HF_ENDPOINT``) takes no connection."""
    if offline_by_setting():
        return False
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    if not endpoint.hostname:
        return False
    return _endpoint_answers(endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80))


def is_hub_id(name: str) -> bool:
    """``owner/name`` (or a legacy ``name`` such as ``bert-base-uncased``) that is no local path:
    what the Hub, and its cache, know a model by."""
    text = str(name)
    parts = text.split("/")
    return (
        1 <= len(parts) <= 2 and all(parts) and not any(part.startswith((".", "~")) for part in parts)
        and "\\" not in text and not Path(text).expanduser().exists()
    )


def portable_checkpoint_name(checkpoint: str, relative_to: str | Path) -> str:
    """How a run names the checkpoint it was built on, without this machine's absolute paths.

    A Hub id stays as it is. A local directory becomes a path relative to ``relative_to`` (a
    folder of the run), which still holds when the run and the checkpoint are moved together;
    an absolute path would name this machine's home or site-packages.
    """
    if is_hub_id(checkpoint):
        return str(checkpoint)
    target = Path(checkpoint).expanduser().absolute()
    return Path(os.path.relpath(target, Path(relative_to).expanduser().absolute())).as_posix()
