"""The embedding cache: keyed by text, verified on read, never half-written, never fatal.

``compute`` here stands for the encoder: a deterministic function of each text, which counts the
texts it is asked for, so each test can tell what was embedded again.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import sqlite3

import numpy as np
import pytest

from review_toolkit.inference.embedding_cache import EmbeddingStore, cached_embeddings

DIMENSION = 8


def vector_of(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).standard_normal(DIMENSION).astype(np.float32)


class Encoder:
    def __init__(self):
        self.embedded: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.embedded += texts
        return np.stack([vector_of(text) for text in texts])


def store_in(directory, **key) -> EmbeddingStore:
    return EmbeddingStore(directory, **{"backbone": "bert", "checkpoint": "/models/tiny", "max_length": 32, **key})


def texts(n: int, prefix: str = "review") -> list[str]:
    return [f"{prefix} {i}" for i in range(n)]


def embed(store: EmbeddingStore, items: list[str], encoder: Encoder | None = None):
    encoder = encoder or Encoder()
    vectors, cached = cached_embeddings(store, items, encoder, dimension=DIMENSION)
    np.testing.assert_array_equal(vectors, np.stack([vector_of(t) for t in items]))
    return encoder.embedded, cached


def rows(store: EmbeddingStore, query: str, parameters=()) -> None:
    with contextlib.closing(sqlite3.connect(store.path)) as connection, connection:
        connection.execute(query, parameters)


def test_any_file_reuses_what_any_other_embedded(tmp_path):
    store = store_in(tmp_path)
    assert embed(store, texts(100)) == (texts(100), False)
    # A slice, reordered, with duplicates: nothing to embed.
    again = texts(100)[60:10:-3] + ["review 5", "review 5"]
    assert embed(store, again) == ([], True)
    # Half new: only the new half is embedded, and the run did embed something.
    mixed = texts(100)[:50] + texts(50, "new")
    assert embed(store, mixed) == (texts(50, "new"), False)
    # Another maximum length is another encoder: nothing shared.
    assert embed(store_in(tmp_path, max_length=64), texts(3)) == (texts(3), False)


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("UPDATE vectors SET dtype = 'float64'", "element type 'float64'"),
        ("UPDATE vectors SET dim = 7", "its size does not match its shape"),
        ("UPDATE vectors SET vector = zeroblob(12), dim = 3", "3 values where the encoder gives 8"),
        ("UPDATE vectors SET vector = ?", "holds NaN or infinity"),
    ],
)
def test_damaged_entries_are_embedded_again_and_replaced(tmp_path, caplog, damage, problem):
    store = store_in(tmp_path)
    embed(store, texts(5))
    nan_vector = np.full(DIMENSION, np.nan, dtype=np.float32).tobytes()
    rows(store, damage + " WHERE rowid IN (2, 4)", (nan_vector,) if "?" in damage else ())

    assert embed(store, texts(5)) == (["review 1", "review 3"], False)
    assert f"The embedding cache {store.path} holds 2 damaged entries ({problem}" in caplog.text
    caplog.clear()
    assert embed(store, texts(5)) == ([], True)  # replaced: clean from now on
    assert caplog.text == ""


def test_a_file_that_is_not_a_cache_is_rebuilt(tmp_path, caplog):
    store = store_in(tmp_path)
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(b"\x80\x04K\x01. planted bytes, not a database" * 10)
    assert embed(store, texts(4)) == (texts(4), False)
    assert f"The embedding cache {store.path} is not usable" in caplog.text
    assert embed(store, texts(4)) == ([], True)


def test_a_cache_written_for_another_key_is_not_trusted(tmp_path, caplog):
    store = store_in(tmp_path)
    embed(store, texts(3))
    rows(store, "UPDATE meta SET value = 'someone else'")
    assert embed(store, texts(3)) == (texts(3), False)
    assert "written for another encoder" in caplog.text


def test_a_cache_that_cannot_be_written_is_a_warning(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file where the cache folder would go", encoding="utf-8")
    store = store_in(blocker / "cache")
    assert embed(store, texts(3)) == (texts(3), False)  # the vectors, all the same
    assert f"Could not write the embedding cache {store.path}" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


class FullDisk(EmbeddingStore):
    """A store whose file cannot grow: SQLite's own "database or disk is full", as on a full disk."""

    @contextlib.contextmanager
    def _connection(self, *, create: bool):
        with super()._connection(create=create) as connection:
            pages = connection.execute("PRAGMA page_count").fetchone()[0]
            connection.execute(f"PRAGMA max_page_count = {pages}")
            yield connection


def test_a_write_that_fails_midway_stores_nothing_and_leaves_no_partial_file(tmp_path, caplog):
    store = store_in(tmp_path)
    embed(store, texts(2))
    before = sorted(p.name for p in store.path.parent.iterdir())
    full = FullDisk(tmp_path, backbone="bert", checkpoint="/models/tiny", max_length=32)

    assert embed(full, texts(2) + texts(500, "late")) == (texts(500, "late"), False)  # vectors all the same
    assert f"Could not write the embedding cache {store.path} (database or disk is full)" in caplog.text
    found, missing = store.lookup(texts(2) + texts(500, "late"), DIMENSION)
    assert sorted(found) == [0, 1] and len(missing) == 500  # all of the write or none of it
    assert sorted(p.name for p in store.path.parent.iterdir()) == before  # no journal, no partial


def write_part(directory: str, part: int) -> None:
    store = EmbeddingStore(directory, backbone="bert", checkpoint="/models/tiny", max_length=32)
    for batch in range(10):
        items = [f"process {part} review {batch * 300 + i}" for i in range(300)]
        if not store.save(items, np.full((300, DIMENSION), part, dtype=np.float32)):
            raise SystemExit(1)


def test_several_processes_write_one_store(tmp_path):
    context = multiprocessing.get_context("fork")  # two real processes, without importing torch again
    writers = [context.Process(target=write_part, args=(str(tmp_path), part)) for part in (1, 2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert [writer.exitcode for writer in writers] == [0, 0]
    store = store_in(tmp_path)
    everything = [f"process {part} review {i}" for part in (1, 2) for i in range(3000)]
    found, missing = store.lookup(everything, DIMENSION)
    assert missing == [] and {float(found[i][0]) for i in (0, 5999)} == {1.0, 2.0}
