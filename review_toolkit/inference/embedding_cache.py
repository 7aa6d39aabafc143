"""The on-disk cache of frozen embeddings: one entry per text, verified on every read.

A frozen encoder's vector for a review depends only on the backbone, its checkpoint, the maximum
length and the review's (prepared) text, so that is the key: one SQLite file per (backbone,
checkpoint, maximum length) under ``CACHE/embeddings/``, one row per text, keyed by the text's
SHA-256. Any data set reuses what any other embedded: a slice of an embedded file, the same reviews
in another order, another head on the same data.

Why SQLite: a training writes thousands of entries at once and several processes may share a
cache. One transaction stores them all or none (a failed or killed write leaves no half-written
entry that a later read could trust), concurrent writers wait for each other, and reading 6,000
rows is a few indexed queries.

Nothing read is trusted: an entry whose size, element type or length differs from what the
encoder produces, or that holds NaN or infinity, is recomputed and replaced, with a warning
naming the file; a file that is not a cache of this kind (damaged, or written for another key)
is removed and rebuilt. The cache is an optimisation, never a reason to fail: when it cannot
be written (full disk, read-only, permissions) the training goes on with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Callable

import numpy as np

from review_toolkit.runtime import distributed

logger = logging.getLogger(__name__)

CACHE_ENVIRONMENT_VARIABLE = "REVIEW_TOOLKIT_CACHE"
STORE_FORMAT = "review_toolkit.embeddings/2"
DTYPE = "float32"
_QUERY_CHUNK = 900  # under SQLite's limit on parameters per statement
_BUSY_TIMEOUT_SECONDS = 120.0  # another process writing its entries


def default_cache_dir() -> Path:
    root = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "review_toolkit"


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).digest()


class EmbeddingStore:
    """The cached vectors of one encoder (backbone, checkpoint, maximum length)."""

    def __init__(self, cache_dir: str | Path | None, *, backbone: str, checkpoint: str, max_length: int):
        directory = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "embeddings"
        self.description = json.dumps(
            {"format": STORE_FORMAT, "backbone": backbone, "checkpoint": checkpoint, "max_length": max_length},
            sort_keys=True,
        )
        name = hashlib.sha256(self.description.encode("utf-8")).hexdigest()[:32]
        self.path = directory / f"{name}.sqlite"

    # reading --------------------------------------------------------------------------------

    def lookup(self, texts: Sequence[str], dimension: int | None) -> tuple[dict[int, np.ndarray], list[int]]:
        """(vectors found by position, positions to compute). Never raises: a bad cache is a miss."""
        if not self.path.is_file():
            return {}, list(range(len(texts)))
        keys = [text_key(text) for text in texts]
        try:
            rows = self._read(sorted(set(keys)))
        except _ForeignStore as reason:
            self._set_aside(str(reason))
            return {}, list(range(len(texts)))
        except sqlite3.OperationalError as error:  # locked for long, unreadable, a journal to roll back
            logger.warning("Cannot read the embedding cache %s now (%s); embedding without it.", self.path, error)
            return {}, list(range(len(texts)))
        except sqlite3.DatabaseError as error:  # not a database, or damaged
            self._set_aside(f"it cannot be read as a cache ({error})")
            return {}, list(range(len(texts)))
        except OSError as error:
            logger.warning("Cannot read the embedding cache %s (%s); embedding without it.", self.path, error.strerror or error)
            return {}, list(range(len(texts)))
        vectors, bad = self._verified(rows, dimension)
        if bad:
            logger.warning(
                "The embedding cache %s holds %d damaged entr%s (%s); they are embedded again and replaced.",
                self.path, len(bad), "y" if len(bad) == 1 else "ies", bad[0],
            )
        found = {i: vectors[key] for i, key in enumerate(keys) if key in vectors}
        return found, [i for i in range(len(texts)) if i not in found]

    def _read(self, keys: list[bytes]) -> dict[bytes, tuple[int, str, bytes]]:
        rows: dict[bytes, tuple[int, str, bytes]] = {}
        with self._connection(create=False) as connection:
            self._check_description(connection)
            for start in range(0, len(keys), _QUERY_CHUNK):
                chunk = keys[start : start + _QUERY_CHUNK]
                query = f"SELECT key, dim, dtype, vector FROM vectors WHERE key IN ({','.join('?' * len(chunk))})"
                for key, dim, dtype, blob in connection.execute(query, chunk):
                    rows[bytes(key)] = (dim, dtype, blob)
        return rows

    def _verified(
        self, rows: dict[bytes, tuple[int, str, bytes]], dimension: int | None
    ) -> tuple[dict[bytes, np.ndarray], list[str]]:
        if dimension is None and rows:  # the encoder did not say: the size most entries have
            sizes = [dim for dim, _, _ in rows.values() if isinstance(dim, int)]
            dimension = max(set(sizes), key=sizes.count) if sizes else None
        vectors: dict[bytes, np.ndarray] = {}
        bad: list[str] = []
        for key, (dim, dtype, blob) in rows.items():
            problem = _entry_problem(dim, dtype, blob, dimension)
            if problem is None:
                vector = np.frombuffer(blob, dtype=np.float32)
                if np.isfinite(vector).all():
                    vectors[key] = vector
                    continue
                problem = "holds NaN or infinity"
            bad.append(problem)
        return vectors, bad

    # writing --------------------------------------------------------------------------------

    def save(self, texts: Sequence[str], vectors: np.ndarray) -> bool:
        """Store ``vectors`` (one row per text) in one transaction; False, with a warning, when it cannot."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = {text_key(text): vector.tobytes() for text, vector in zip(texts, vectors) if np.isfinite(vector).all()}
        dimension = int(vectors.shape[1]) if vectors.ndim == 2 else 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connection(create=True) as connection:
                with connection:  # one transaction: every entry or none
                    self._check_description(connection)
                    connection.executemany(
                        "INSERT OR REPLACE INTO vectors (key, dim, dtype, vector) VALUES (?, ?, ?, ?)",
                        [(key, dimension, DTYPE, blob) for key, blob in rows.items()],
                    )
        except (OSError, sqlite3.Error, _ForeignStore) as error:
            cause = getattr(error, "strerror", None) or str(error)
            logger.warning(
                "Could not write the embedding cache %s (%s); training goes on, and the next run embeds these "
                "reviews again. Free some space, or choose another --cache-dir.", self.path, cause,
            )
            return False
        return True

    # plumbing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self, *, create: bool) -> Iterator[sqlite3.Connection]:
        if create:
            connection = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_SECONDS)
        else:  # read-only: a reader never creates or changes the file
            connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_SECONDS)
        try:
            if create:
                with connection:
                    connection.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                    connection.execute(
                        "CREATE TABLE IF NOT EXISTS vectors "
                        "(key BLOB PRIMARY KEY, dim INTEGER NOT NULL, dtype TEXT NOT NULL, vector BLOB NOT NULL)"
                    )
                    connection.execute(
                        "INSERT OR IGNORE INTO meta (name, value) VALUES ('description', ?)", (self.description,)
                    )
            yield connection
        finally:
            connection.close()

    def _check_description(self, connection: sqlite3.Connection) -> None:
        try:
            row = connection.execute("SELECT value FROM meta WHERE name = 'description'").fetchone()
        except sqlite3.OperationalError as error:  # no such table: not a store of this kind
            raise _ForeignStore(f"it is not an embedding cache of this version ({error})") from None
        if row is None or row[0] != self.description:
            raise _ForeignStore("it was written for another encoder, checkpoint or maximum length")

    def _set_aside(self, reason: str) -> None:
        logger.warning("The embedding cache %s is not usable: %s. It is rebuilt.", self.path, reason)
        with contextlib.suppress(OSError):
            self.path.unlink()


class _ForeignStore(Exception):
    """The file is not a store for this key."""


def _entry_problem(dim: object, dtype: object, blob: object, dimension: int | None) -> str | None:
    if dtype != DTYPE:
        return f"element type {dtype!r} instead of {DTYPE}"
    if not isinstance(blob, bytes) or not isinstance(dim, int) or len(blob) != dim * 4:
        return "its size does not match its shape"
    if dimension is not None and dim != dimension:
        return f"{dim} values where the encoder gives {dimension}"
    return None


def cached_embeddings(
    store: EmbeddingStore,
    texts: Sequence[str],
    compute: Callable[[list[str]], np.ndarray],
    *,
    dimension: int | None = None,
) -> tuple[np.ndarray, bool]:
    """Vectors for ``texts`` in order, embedding only those the cache lacks; (array, nothing embedded).

    ``compute(texts)`` returns one row per text. With several processes it is collective (each
    embeds a shard, all get every row): the cache is used when every process finds every text in
    it, otherwise all the texts are embedded again; the main process writes.
    """
    texts = list(texts)
    if not texts:
        return np.zeros((0, dimension or 0), dtype=np.float32), True
    found, missing = store.lookup(texts, dimension)
    if distributed.process_count() > 1:
        if distributed.all_true(not missing):
            return _assembled(found, len(texts)), True
        vectors = np.asarray(compute(texts), dtype=np.float32)
        if distributed.is_main_process():
            store.save(texts, vectors)
        return vectors, False
    if not missing:
        return _assembled(found, len(texts)), True
    computed = np.asarray(compute([texts[i] for i in missing]), dtype=np.float32)
    store.save([texts[i] for i in missing], computed)
    if not found:
        return computed, False
    result = np.empty((len(texts), computed.shape[1]), dtype=np.float32)
    for position, vector in found.items():
        result[position] = vector
    result[missing] = computed
    return result, False


def _assembled(found: dict[int, np.ndarray], count: int) -> np.ndarray:
    return np.stack([found[i] for i in range(count)]).astype(np.float32, copy=False)
