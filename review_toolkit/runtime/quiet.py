"""Library chatter (hub notices, weight-loading bars, kernel lookups) kept out of the toolkit's output.

``quiet_process`` is for a command: it settles the libraries' logging for the whole process.
``quiet_call`` is for library calls such as ``train`` or ``load_run`` from a notebook or a
service: the same quiet for the duration of the call only, the caller's settings back afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

# Loggers of libraries that speak on every model load (bitsandbytes names the CUDA library it
# found; datasets and transformers report caches and weights).
_CHATTY_LOGGERS = ("transformers", "bitsandbytes", "datasets", "huggingface_hub", "accelerate", "peft")


def quiet_process(progress: bool = True) -> None:
    """Libraries at ERROR for this process; ``progress=False`` also hides transformers' bars."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    other_process = int(os.environ.get("RANK", "0")) > 0  # another process of a multi-GPU launch: the main one speaks
    logging.getLogger("datasets").setLevel(logging.ERROR)
    if other_process:
        logging.getLogger("review_toolkit").setLevel(logging.ERROR)
    if "transformers" not in sys.modules:
        # transformers reads these once, when imported: a command that never imports it (scoring
        # with an ONNX export) is spared seconds of importing it just to quiet it.
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"
        if not progress or other_process:  # no "Loading weights" / "Writing model shards" bars either
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
            if "huggingface_hub" in sys.modules:
                from huggingface_hub.utils import disable_progress_bars

                disable_progress_bars()
        return
    import transformers

    transformers.logging.set_verbosity_error()
    if not progress or other_process:
        transformers.utils.logging.disable_progress_bar()


@contextlib.contextmanager
def quiet_call(*, progress: bool = False) -> Iterator[None]:
    """Library loggers at ERROR and, unless ``progress``, transformers' progress bars off, for a block."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    bars_were_on = None
    if "transformers" not in sys.modules:  # set for its import, should the block import it
        try:
            yield from _quiet_import(progress)
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
        return
    from transformers.utils import logging as transformers_logging

    bars_were_on = transformers_logging.is_progress_bar_enabled()
    if not progress:
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if bars_were_on:
            transformers_logging.enable_progress_bar()


def _quiet_import(progress: bool) -> Iterator[None]:
    """Quiet for a block before transformers is imported: its verbosity at import comes from the
    environment. Its progress bars cannot be set that way without outliving the block, so code
    that imports transformers inside the block quiets them itself with a nested ``quiet_call``."""
    saved = os.environ.get("TRANSFORMERS_VERBOSITY")
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TRANSFORMERS_VERBOSITY", None)
        else:
            os.environ["TRANSFORMERS_VERBOSITY"] = saved
