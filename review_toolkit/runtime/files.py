"""Writing outputs so that readers see all of a file (or folder) or none of it.

``atomic_file`` and ``staged_directory`` write beside the target under a
temporary name and rename at the end; on any error, Ctrl-C included, the
temporary is removed and the previous target, if any, is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from review_toolkit.runtime.os_errors import naming_path


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", *, encoding: str | None = "utf-8", newline: str | None = None) -> Iterator[IO]:
    """Open ``path``'s temporary twin for writing; rename it onto ``path`` when the block succeeds."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    kwargs = {} if "b" in mode else {"encoding": encoding, "newline": newline}
    try:
        with naming_path(path), open(temporary, mode, **kwargs) as handle:
            yield handle
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_file(path) as handle:
        handle.write(text)


@contextlib.contextmanager
def staged_directory(path: str | Path) -> Iterator[Path]:
    """Yield a fresh staging folder; it replaces ``path`` (a folder or nothing) when the block succeeds."""
    final = Path(path)
    if final.exists() and not final.is_dir():
        from review_toolkit.errors import ReviewToolkitError

        raise ReviewToolkitError(f"{final} exists and is not a directory; choose another output directory.")
    staging = final.with_name(f".{final.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        previous = None
        if final.exists():
            previous = final.with_name(f".{final.name}.{os.getpid()}.replaced")
            os.replace(final, previous)
        os.replace(staging, final)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
