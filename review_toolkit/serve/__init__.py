"""HTTP serving of a trained run: ``review-toolkit serve --run RUN`` or ``app(run)`` in any ASGI server.

Importing this package is cheap; FastAPI, uvicorn and torch load only when an app is built or the
command runs (``pip install "review_toolkit[serve]"`` brings them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from review_toolkit.serve.settings import ServeSettings

__all__ = ["app"]


def app(run: Any, settings: "ServeSettings | None" = None, **options: Any) -> "FastAPI":
    """The ASGI app serving ``run``: a run directory, a loaded ``Classifier`` or a function returning one.

    ``options`` are server settings (``max_batch_tokens``, ``max_wait_ms``, ``max_concurrent_requests``,
    ``max_inputs``, ``max_body_bytes``, ``device``...; see ``ServeSettings``). For example, with uvicorn::

        import uvicorn
        from review_toolkit.serve import app
        uvicorn.run(app("runs/minilm-frozen-logreg", max_inputs=32), host="127.0.0.1", port=8080)
    """
    from review_toolkit.serve.application import build_app

    return build_app(run, settings, **options)
