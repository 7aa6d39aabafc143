"""Start-up without collections: the collector comes back, and what loading threw away is freed."""

from __future__ import annotations

import gc
import weakref

import pytest

from review_toolkit.runtime.startup import long_lived_objects


class Node:
    pass


@pytest.fixture(autouse=True)
def unfrozen():
    yield
    gc.unfreeze()


def test_the_collector_pauses_while_loading_and_runs_again_after():
    assert gc.isenabled()
    with long_lived_objects():
        assert not gc.isenabled()
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0  # what was loaded is out of later collections' reach


def test_garbage_cycles_made_while_loading_are_freed_not_frozen():
    with long_lived_objects():
        kept, dropped = Node(), Node()
        kept.self = kept
        dropped.self = dropped  # a cycle: only the collector can free it
        dropped_ref = weakref.ref(dropped)
        del dropped
        assert dropped_ref() is not None  # the collector is paused
    assert dropped_ref() is None
    assert kept.self is kept


def test_a_failed_load_still_gives_the_collector_back():
    with pytest.raises(RuntimeError), long_lived_objects():
        raise RuntimeError("the run could not be loaded")
    assert gc.isenabled()


def test_a_caller_that_had_paused_the_collector_keeps_it_paused():
    gc.disable()
    try:
        with long_lived_objects():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
