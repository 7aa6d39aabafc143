"""A run directory's checksum manifest, and loading a run without ever unpickling it.

Why a manifest: a run is copied between machines, unpacked from archives and shared. A truncated
copy or an edited file would otherwise surface as an obscure safetensors or JSON error, or, worse,
load and score differently without a word. ``manifest.json`` records the SHA-256 and size of every
file of the run, written by :class:`~review_toolkit.runs.layout.RunWriter` as the last step before the
run is renamed into place; :func:`verify_run_directory` checks it before ``load_run`` reads anything.

What it covers: every file except ``checkpoints/`` (Trainer's state for ``--resume-from``; it is
large, rewritten by resuming, and never read by ``load_run``) and ``manifest.json`` itself. A file
that is missing, changed, truncated or not listed fails the check, and the error names each one.

What it does not do: a manifest proves a run is unchanged since it was written, not who wrote it.
A run made elsewhere brings its own manifest, so safety cannot rest on it. That is why, in
addition, no file that looks like a pickle (by name or by content) is ever loaded from a run,
listed or not, and :func:`refuse_unpickling` makes ``torch.load`` / ``pickle.load`` of a file
inside the run directory fail for as long as ``load_run`` runs: every artifact is safetensors,
JSON, YAML or text, which load as data and execute nothing.

``allow_unverified=True`` is the explicit opt-in for a run whose manifest does not match (or is
absent, e.g. a run assembled by hand): the mismatches are logged as a warning instead of refusing,
files that look like pickles are skipped (never opened), safetensors files are checked to be whole
before they are read, and the pickle guard stays on. It loosens integrity, never code execution.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pickle
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from review_toolkit.errors import RunDirectoryError

logger = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_FILE",
    "UNCOVERED_DIRECTORIES",
    "IntegrityProblem",
    "compute_manifest",
    "write_manifest",
    "check_run_integrity",
    "verify_run_directory",
    "looks_like_pickle",
    "refuse_unpickling",
]

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "review_toolkit.runs.manifest/1"
UNCOVERED_DIRECTORIES: tuple[str, ...] = ("checkpoints",)
# Suffixes of files that are pickles (or zip archives of them) in the PyTorch / scikit-learn world.
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt", ".joblib", ".dill"})
_CHUNK = 1 << 20
_MAX_SAFETENSORS_HEADER = 100 * 2**20

OPT_IN_HINT = (
    "To load it anyway, at your own risk, pass allow_unverified=True to load_run "
    "(--allow-unverified on commands that offer it): even then only safetensors, JSON and text "
    "files are read, never a pickle."
)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _entries(run: Path) -> Iterator[tuple[str, Path]]:
    """(relative POSIX path, path) of everything the manifest covers, without following links."""
    for root, directories, files in os.walk(run, followlinks=False):
        root_path = Path(root)
        if root_path == run:
            directories[:] = [d for d in directories if d not in UNCOVERED_DIRECTORIES]
        directories.sort()
        # Links to directories are listed by os.walk as directories but not entered: report them.
        for name in sorted(files + [d for d in directories if (root_path / d).is_symlink()]):
            path = root_path / name
            relative = path.relative_to(run).as_posix()
            if relative == MANIFEST_FILE or (relative in UNCOVERED_DIRECTORIES and path.is_symlink()):
                continue
            yield relative, path


def compute_manifest(run: str | Path) -> dict[str, Any]:
    """The manifest of ``run`` as it is now (see the module docstring for what is covered)."""
    run = Path(run)
    files = {}
    for relative, path in _entries(run):
        if path.is_symlink() or not path.is_file():
            raise RunDirectoryError(f"{path} is not a regular file; a run directory holds only files.")
        files[relative] = {"sha256": sha256_of(path), "bytes": path.stat().st_size}
    return {
        "format": MANIFEST_FORMAT,
        "algorithm": "sha256",
        "not_covered": [f"{name}/" for name in UNCOVERED_DIRECTORIES],
        "files": files,
    }


def write_manifest(run: str | Path) -> Path:
    """Write (or rewrite) ``manifest.json`` for ``run``.

    Called by RunWriter before the rename into place. Code that adds a file to a finished run on
    purpose must call it again, or the next load refuses the run.
    """
    run = Path(run)
    target = run / MANIFEST_FILE
    staged = run / f".{MANIFEST_FILE}.{os.getpid()}.tmp"
    staged.write_text(json.dumps(compute_manifest(run), indent=2) + "\n", encoding="utf-8")
    os.replace(staged, target)
    return target


# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntegrityProblem:
    """One file of a run that does not match the manifest (or the manifest itself)."""

    path: str  # relative to the run, POSIX style
    problem: str  # what is wrong, for messages
    pickle: bool = False  # the file looks like a pickle

    def describe(self) -> str:
        text = f"{self.path}: {self.problem}"
        if self.pickle:
            text += " (it looks like a pickle: loading one can run arbitrary code)"
        return text


def looks_like_pickle(path: Path) -> bool:
    """By name (.pkl, .bin, .pt, ...) or content (pickle protocol 2+ header, PyTorch zip archive)."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith(".pkl") for name in archive.namelist())
        except (zipfile.BadZipFile, OSError, ValueError):
            return False
    return False


def _safe_relative(name: Any) -> bool:
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return False
    parts = PurePosixPath(name).parts
    return not PurePosixPath(name).is_absolute() and ".." not in parts and parts[0] not in UNCOVERED_DIRECTORIES


def _read_manifest(run: Path) -> tuple[dict[str, dict[str, Any]] | None, list[IntegrityProblem]]:
    path = run / MANIFEST_FILE
    if not path.is_file():
        return None, [
            IntegrityProblem(
                MANIFEST_FILE,
                "missing, so the files cannot be checked (every training writes one as its last step; "
                "a run without it was written by an older version, assembled by hand, or copied incompletely)",
            )
        ]
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or manifest.get("algorithm") != "sha256":
            raise ValueError(f"unknown format {manifest.get('format')!r}")
        if not isinstance(files, dict) or not all(
            _safe_relative(name)
            and isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("bytes"), int)
            for name, entry in files.items()
        ):
            raise ValueError("malformed file list")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
        return None, [IntegrityProblem(MANIFEST_FILE, f"unreadable or not a review_toolkit manifest ({error})")]
    return files, []


def check_run_integrity(run: str | Path) -> list[IntegrityProblem]:
    """Every way ``run`` differs from its manifest, plus every file in it that looks like a pickle.

    Empty when the run is exactly what training wrote. Reads every covered file once.
    """
    run = Path(run)
    listed, problems = _read_manifest(run)
    present = dict(_entries(run))
    for relative, entry in (listed or {}).items():
        path = run / relative
        if relative not in present:
            problems.append(IntegrityProblem(relative, "missing"))
            continue
        if path.is_symlink() or not path.is_file():
            problems.append(IntegrityProblem(relative, "replaced by a link or a directory"))
            continue
        size = path.stat().st_size
        if size != entry["bytes"]:
            kind = "truncated" if size < entry["bytes"] else "changed"
            problems.append(
                IntegrityProblem(relative, f"{kind} ({size} bytes, {entry['bytes']} when written)", looks_like_pickle(path))
            )
        elif sha256_of(path) != entry["sha256"]:
            problems.append(IntegrityProblem(relative, "changed (its SHA-256 differs)", looks_like_pickle(path)))
        elif looks_like_pickle(path):
            problems.append(IntegrityProblem(relative, "listed in the manifest, but runs never hold pickles", True))
    for relative, path in present.items():
        if listed is not None and relative in listed:
            continue
        if path.is_symlink() or not path.is_file():
            problems.append(IntegrityProblem(relative, "a link or special file, which runs never hold"))
        elif listed is None:
            if looks_like_pickle(path):
                problems.append(IntegrityProblem(relative, "present", True))
        else:
            problems.append(IntegrityProblem(relative, "not part of the run (absent from the manifest)", looks_like_pickle(path)))
    return problems


def _format_problems(problems: list[IntegrityProblem]) -> str:
    shown = [f"  - {problem.describe()}" for problem in problems[:20]]
    if len(problems) > 20:
        shown.append(f"  - and {len(problems) - 20} more")
    return "\n".join(shown)


def verify_run_directory(run: str | Path, *, allow_unverified: bool = False) -> list[IntegrityProblem]:
    """Refuse a run that differs from its manifest or holds a pickle; return the problems tolerated.

    With ``allow_unverified`` the problems are logged instead, and the safetensors files are
    checked to be complete so that a damaged one is named rather than failing deep in a loader.
    """
    run = Path(run)
    problems = check_run_integrity(run)
    if problems and not allow_unverified:
        names = ", ".join(problem.path for problem in problems[:5]) + (" ..." if len(problems) > 5 else "")
        raise RunDirectoryError(
            f"Refusing to load {run}: it is not the run that training wrote ({names}).\n"
            f"{_format_problems(problems)}\n"
            "It was changed, truncated or copied incompletely after training. Copy it again from where it "
            f"was trained, or train it again. {OPT_IN_HINT}"
        )
    if problems:
        logger.warning(
            "Loading %s although it does not match its manifest (allow_unverified=True):\n%s\n"
            "Files that look like pickles are not read.",
            run,
            _format_problems(problems),
        )
        for relative, path in _entries(run):
            if path.suffix == ".safetensors" and path.is_file() and not path.is_symlink():
                _check_safetensors(path, relative)
    return problems


def _check_safetensors(path: Path, relative: str) -> None:
    """Raise RunDirectoryError unless ``path`` is a complete safetensors file (header and data)."""
    reason = safetensors_problem(path)
    if reason is not None:
        pickled = " It looks like a pickle, which is never loaded." if looks_like_pickle(path) else ""
        raise RunDirectoryError(f"Cannot load {path}: {relative} is not a valid safetensors file ({reason}).{pickled}")


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file (header and data), or None when it is one."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                return "shorter than a safetensors header"
            length = int.from_bytes(prefix, "little")
            if length > min(size - 8, _MAX_SAFETENSORS_HEADER):
                return "its header length is impossible"
            try:
                header = json.loads(handle.read(length))
            except (UnicodeDecodeError, ValueError):
                return "its header is not JSON"
    except OSError as error:
        return f"cannot be read: {error.strerror or error}"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    try:
        end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError):
        return "its header lists no tensor offsets"
    if not isinstance(end, int) or 8 + length + end != size:
        return f"{size} bytes where its header describes {8 + length + end if isinstance(end, int) else '?'}; truncated?"
    return None


# --------------------------------------------------------------------------------------------
# No unpickling while a run loads
# --------------------------------------------------------------------------------------------

_guard_lock = threading.Lock()
_guarded_roots: list[Path] = []  # one entry per active refuse_unpickling block
_originals: dict[str, Any] = {}


def _inside_guarded_run(target: Any) -> Path | None:
    if isinstance(target, (str, os.PathLike)):
        name = target
    else:
        name = getattr(target, "name", None)  # an open file
        if not isinstance(name, (str, os.PathLike)):
            return None
    try:
        resolved = Path(os.fspath(name)).resolve()
    except (OSError, ValueError, TypeError):
        return None
    for root in list(_guarded_roots):
        if resolved == root or root in resolved.parents:
            return resolved
    return None


def _refusing(loader_name: str, original: Any) -> Any:
    @functools.wraps(original)
    def guarded(file: Any, *args: Any, **kwargs: Any) -> Any:
        path = _inside_guarded_run(file)
        if path is not None:
            raise RunDirectoryError(
                f"Refused to unpickle {path} ({loader_name}): loading a run never unpickles, because a "
                "pickle can run arbitrary code. Run artifacts are safetensors, JSON and text files only."
            )
        return original(file, *args, **kwargs)

    guarded.__review_toolkit_guard__ = True  # type: ignore[attr-defined]
    return guarded


@contextmanager
def refuse_unpickling(run: str | Path) -> Iterator[None]:
    """While the block runs, ``torch.load`` and ``pickle.load`` of any file inside ``run`` raise.

    Nothing in ``load_run`` calls them on purpose; this makes sure a plugin, PEFT or transformers
    falling back to a ``.bin`` file cannot either. Other files load as usual. Thread-safe and
    re-entrant: the wrappers are installed while at least one block is active.
    """
    import torch

    root = Path(run).resolve()
    with _guard_lock:
        if not _guarded_roots:
            _originals["torch.load"] = torch.load
            _originals["pickle.load"] = pickle.load
            torch.load = _refusing("torch.load", torch.load)
            pickle.load = _refusing("pickle.load", pickle.load)
        _guarded_roots.append(root)
    try:
        yield
    finally:
        with _guard_lock:
            _guarded_roots.remove(root)
            if not _guarded_roots:
                torch.load = _originals.pop("torch.load")
                pickle.load = _originals.pop("pickle.load")
