"""Library calls stay quiet unless asked: no weight-loading bars, hub notices or kernel lookups.

The CLI configures logging for a whole process; a library user calling ``train`` or ``load_run``
from a notebook or a service gets the same quiet, for the duration of the call only, and their
own logging settings back afterwards.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

# Loggers of libraries that speak on every model load (bitsandbytes names the CUDA library it
# found; datasets and transformers report caches and weights).
_CHATTY_LOGGERS = ("transformers", "bitsandbytes", "datasets", "huggingface_hub", "accelerate", "peft")


@contextlib.contextmanager
def quiet_libraries(*, progress: bool = False) -> Iterator[None]:
    """Library loggers at ERROR and, unless ``progress``, transformers' progress bars off."""
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
