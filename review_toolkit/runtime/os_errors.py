"""Operating-system errors as one line the user can act on.

A full disk, a read-only mount, a missing permission or a path that runs through a regular file
surface deep inside libraries as ``OSError``. The CLI turns every one of them into
``Error: <cause>: <path>. <what to do>`` (see :func:`describe_os_error`), and the places that know
the path before any work starts check it up front (:func:`require_creatable_directory`), so the
common cases are refused before a model loads.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from review_toolkit.errors import FileSystemError

_ADVICE: dict[int, str] = {
    errno.ENOSPC: "Free some space on that disk, or write somewhere else.",
    errno.EDQUOT: "Your disk quota is used up: free some space, or write somewhere else.",
    errno.EROFS: "That file system is read-only: choose a location you can write to.",
    errno.EACCES: "Check the permissions of that path (and of the folders above it), or choose another one.",
    errno.EPERM: "The operating system does not allow this there: choose another location.",
    errno.ENOTDIR: "A part of that path is a file, not a folder: choose another path.",
    errno.EISDIR: "That path is a folder where a file is expected: give a file.",
    errno.ENOENT: "Check the path: it, or a folder above it, does not exist.",
    errno.EEXIST: "Something already exists there: remove it or choose another path.",
    errno.ELOOP: "That path runs through a loop of symbolic links: choose another path.",
    errno.ENAMETOOLONG: "Choose a shorter path.",
    errno.EMFILE: "Too many files are open: raise the limit (ulimit -n) or close other programs.",
    errno.EIO: "The device reported an input/output error: check the disk.",
    errno.EXDEV: "Keep the output on the same file system as its folder.",
}


def describe_os_error(error: OSError) -> str:
    """``<cause>: <path>. <what to do>`` for an OSError, e.g. a full disk while writing a run."""
    cause = error.strerror or type(error).__name__
    names = [os.fsdecode(name) for name in (error.filename, error.filename2) if name is not None]
    where = f": {' -> '.join(names)}" if names else ""
    advice = _ADVICE.get(error.errno or -1, "Check that path and try again.")
    if error.strerror is None and str(error):  # raised by hand with a message only
        cause = str(error).rstrip(".")
    return f"{cause}{where}. {advice}"


def as_file_system_error(error: OSError) -> FileSystemError:
    return FileSystemError(describe_os_error(error))


@contextmanager
def naming_path(path: str | Path) -> Iterator[None]:
    """Re-raise an OSError that names no file (a write to an open handle) as one that names ``path``."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise type(error)(error.errno, error.strerror, os.fspath(path)) from error


def require_creatable_directory(path: str | Path, option: str) -> None:
    """Refuse before any work starts when ``path`` (a directory to create or replace) cannot be.

    The nearest existing folder above it must be a folder the process may write to; ``option``
    (e.g. ``--output-dir``) is named in the message.
    """
    require_writable_location(path, option)


def require_writable_location(path: str | Path, option: str) -> None:
    """Refuse before any work starts when nothing can be created at ``path`` (a file or a folder).

    Folders above it that do not exist yet are fine (they are created); the nearest one that exists
    must be a folder in which a file can really be written.
    """
    target = Path(path).expanduser().absolute()
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        if ancestor.is_symlink():  # a dangling link: mkdir would fail on it
            break
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise FileSystemError(
            f"Cannot create {option} {path}: {ancestor} is a file, not a folder. Choose another {option}."
        )
    if not ancestor.exists():
        raise FileSystemError(f"Cannot create {option} {path}: {ancestor} is a broken symbolic link. Choose another {option}.")
    try:  # a real probe: access() says yes to root even where writes fail (/proc, some mounts)
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as error:
        permissions = ", or change that folder's permissions" if error.errno in (errno.EACCES, errno.EPERM) else ""
        raise FileSystemError(
            f"Cannot create {option} {path}: the folder {ancestor} is not writable ({error.strerror or error}). "
            f"Choose another {option}{permissions}."
        ) from None
