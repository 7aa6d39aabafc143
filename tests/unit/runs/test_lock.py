"""The output directory's lock: exclusive between processes, named in the refusal, never stale."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from review_toolkit.errors import RunDirectoryError
from review_toolkit.runs.lock import DirectoryLock, lock_path_for


def hold_lock_in_another_process(directory: Path, *, then: str) -> subprocess.Popen:
    """A process that takes the lock on ``directory``, prints 'held', then runs ``then``."""
    code = textwrap.dedent(f"""
        import os, signal, sys, time
        from review_toolkit.runs.lock import DirectoryLock
        lock = DirectoryLock({str(directory)!r}).acquire()
        print("held", flush=True)
        {then}
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held", process.stderr.read()
    return process


def test_a_second_process_is_refused_with_the_holder_named(tmp_path):
    run = tmp_path / "run"
    holder = hold_lock_in_another_process(run, then="time.sleep(60)")
    try:
        with pytest.raises(RunDirectoryError) as refused:
            DirectoryLock(run).acquire()
        message = str(refused.value)
        assert f"{run} is being written by another training (process {holder.pid}" in message
        assert "choose another --output-dir" in message
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    run = tmp_path / "run"
    holder = hold_lock_in_another_process(run, then="os.kill(os.getpid(), signal.SIGKILL)")
    holder.wait()
    assert holder.returncode == -9
    assert lock_path_for(run).exists()  # kill -9 left the file; the kernel dropped the lock itself

    with DirectoryLock(run) as lock:
        assert lock.held
    assert not lock_path_for(run).exists()  # released and removed
    assert list(tmp_path.iterdir()) == []


def test_released_lock_can_be_taken_again_and_leaves_nothing(tmp_path):
    run = tmp_path / "deep" / "run"
    first = DirectoryLock(run).acquire()
    with pytest.raises(RunDirectoryError):
        DirectoryLock(run).acquire()  # exclusive between open files of one process too
    first.release()
    DirectoryLock(run).acquire().release()
    assert list((tmp_path / "deep").iterdir()) == []
