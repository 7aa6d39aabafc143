"""Python's cyclic garbage collector around a command's start-up.

Importing torch and transformers and loading a model create hundreds of thousands of objects that
live as long as the process. While they are created, the collector walks the whole heap again each
time it has grown by a quarter, and once more at interpreter exit: on a small CPU, a large share of
a one-review ``predict --text`` (benchmarks/README.md, "Start-up without the garbage collector").
Command-line processes therefore load with the collector paused and then move everything loaded out
of its reach with ``gc.freeze()``, as long-running Python servers do. Library callers' processes
are left alone: only the command line uses this module.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def long_lived_objects() -> Iterator[None]:
    """Create what lives as long as the process (imports, the loaded model) without collections.

    Afterwards those objects are frozen: later collections, the exit's included, skip them, and
    the collector runs as before on everything created after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.collect()  # once: what loading left as garbage is freed, not frozen for good
        gc.freeze()
        if was_enabled:
            gc.enable()
