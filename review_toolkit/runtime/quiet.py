"""Library chatter (hub notices, weight-loading bars, kernel lookups) kept out of the toolkit's output.

``quiet_process`` is for a command: it settles the libraries' logging for the whole process.
``quiet_call`` is for library calls such as ``train`` or ``load_run`` from a notebook or a
service: the same quiet for the duration of the call only, the caller's settings back afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

# Loggers of libraries that speak on every model load (bitsandbytes names the CUDA library it
# found; datasets and transformers report caches and weights).
_CHATTY_LOGGERS = ("transformers", "bitsandbytes", "datasets", "huggingface_hub", "accelerate", "peft")


def quiet_process(progress: bool = True) -> None:
    """Libraries at ERROR for this process; ``progress=False`` also hides transformers' bars."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers  # lazy: seconds to import, and only commands that run a model need it

    transformers.logging.set_verbosity_error()
    if not progress:  # no "Loading weights" / "Writing model shards" bars either
        transformers.utils.logging.disable_progress_bar()
    logging.getLogger("datasets").setLevel(logging.ERROR)
    if int(os.environ.get("RANK", "0")) > 0:  # another process of a multi-GPU launch: the main one speaks
        logging.getLogger("review_toolkit").setLevel(logging.ERROR)
        transformers.utils.logging.disable_progress_bar()


@contextlib.contextmanager
def quiet_call(*, progress: bool = False) -> Iterator[None]:
    """Library loggers at ERROR and, unless ``progress``, transformers' progress bars off, for a block."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    bars_were_on = None
    try:
        from transformers.utils import logging as transformers_logging

        bars_were_on = transformers_logging.is_progress_bar_enabled()
        if not progress:
            transformers_logging.disable_progress_bar()
    except ImportError:  # a featurizer-only environment without transformers
        pass
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if bars_were_on:
            from transformers.utils import logging as transformers_logging

            transformers_logging.enable_progress_bar()
