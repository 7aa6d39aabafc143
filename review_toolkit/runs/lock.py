"""One training at a time per output directory: an operating-system lock beside it.

Two trainings writing the same ``--output-dir`` would share ``RUN.partial``: the second deletes
the first's files as it starts, and whichever commits last may seal a run that misses files the
other removed. :class:`DirectoryLock` holds an exclusive ``flock`` on ``.RUN.lock`` in the same
folder for as long as a training owns ``RUN`` and ``RUN.partial``; a second training is refused at
once, with the process that holds it.

The kernel releases a ``flock`` when its process ends, however it ends (``kill -9`` included), so
a lock file left behind by a dead process never blocks: the next training takes it over. The file
is removed on release; a process that opened it just before (and so locks a file no longer in
place) notices that the path now names another file and tries again.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from review_toolkit.errors import RunDirectoryError

LOCK_SUFFIX = ".lock"


def lock_path_for(directory: str | Path) -> Path:
    directory = Path(directory).expanduser()
    return directory.with_name(f".{directory.name}{LOCK_SUFFIX}")


class DirectoryLock:
    """An exclusive, non-blocking lock on ``directory`` (which need not exist yet)."""

    def __init__(self, directory: str | Path, *, purpose: str = "training"):
        self.directory = Path(directory).expanduser()
        self.path = lock_path_for(self.directory)
        self.purpose = purpose
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def acquire(self) -> "DirectoryLock":
        """Take the lock, or raise RunDirectoryError naming the process that holds it."""
        if self.held:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(descriptor)
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                raise RunDirectoryError(
                    f"{self.directory} is being written by another {self.purpose} ({self._holder()}). "
                    f"Wait for it to finish, or choose another --output-dir. (Lock file: {self.path}; "
                    "it is released when that process ends.)"
                ) from None
            if self._still_in_place(descriptor):
                break
            os.close(descriptor)  # released and removed by its holder meanwhile: lock the new one
        os.ftruncate(descriptor, 0)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(sys.argv[:3])}
        os.write(descriptor, (json.dumps(holder) + "\n").encode("utf-8"))
        self._descriptor = descriptor
        return self

    def release(self) -> None:
        """Give the lock up and remove its file (a no-op when not held)."""
        if self._descriptor is None:
            return
        descriptor, self._descriptor = self._descriptor, None
        try:
            if self._still_in_place(descriptor):
                self.path.unlink(missing_ok=True)  # while still locked: nobody else holds this file
        finally:
            os.close(descriptor)  # releases the flock

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a library caller that never released: do not keep the file
        try:
            self.release()
        except Exception:
            pass

    def _still_in_place(self, descriptor: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            return False

    def _holder(self) -> str:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
            return f"process {holder['pid']} on {holder['host']}, since {holder['since']}: {holder['command']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"
