import os

# Cheap key derivation and an isolated cache for every test (set before tuckbox is used).
os.environ["TUCKBOX_TEST_CHEAP_KDF"] = "1"

import sys
import threading
import time

import pytest

# the archiver raises the limit for deep trees; do it up front so hypothesis does not warn
sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))


@pytest.fixture(autouse=True)
def _environment_restored():
    """What a test sets in os.environ directly (a cache directory in its tmp_path, ...) ends with it: a later
    test would otherwise write its cache into a directory already deleted and so re-created and left behind."""
    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(autouse=True)
def _no_thread_left_behind():
    """A test (with its fixtures) ends every thread it started: one left running would, among other things,
    keep a later restore in this process from forking its workers (backends.fork.alone)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not left, f"threads left running after the test: {sorted(t.name for t in left)}"
