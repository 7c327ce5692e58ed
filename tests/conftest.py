"""Shared fixtures. The autouse ``no_leftovers`` fixture fails any test that leaves a
bigviz thread or a child process running (the tqdm habit, STYLE.md)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
import threading
import time
from collections.abc import Iterator

import psutil
import pytest


def _kept_pids() -> set[int]:
    """Processes bigviz keeps alive on purpose across calls (the warm fork server)."""
    mod = sys.modules.get("bigviz.runner.forkserver")
    fn = getattr(mod, "live_server_pids", None) if mod else None
    return set(fn()) if fn else set()


def _bigviz_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("bigviz")}


def _children() -> set[int]:
    try:
        kids = psutil.Process(os.getpid()).children(recursive=True)
    except psutil.Error:
        return set()
    alive = set()
    for k in kids:
        try:
            if k.status() != psutil.STATUS_ZOMBIE:
                alive.add(k.pid)
        except psutil.Error:
            pass
    return alive


# Tests that measure this process's own memory (the recorder in-process, %%bigviz cells,
# the truth checks) run first, while the process holds only torch: later tests import
# Transformers and load models in-process, which leaves hundreds of MiB resident (library
# pages, heap glibc keeps) that would blur a growth or an absolute bound.
_MEMORY_FIRST = ("test_record_", "test_truth", "test_magics", "test_checksum", "test_widgets",
                 "test_strategies")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: 0 if item.path.name.startswith(_MEMORY_FIRST) else 1)


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


@pytest.fixture(autouse=True)
def fresh_heap() -> Iterator[None]:
    """Give freed heap memory back to the OS after each test.

    Tests in this process load models; glibc keeps what they free (and raises its mmap
    threshold), so a later test's allocation would reuse pages that are already resident
    and show no growth. ``malloc_trim`` returns them, as a fresh process would start.
    """
    yield
    gc.collect()
    _LIBC.malloc_trim(0)


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    threads_before = _bigviz_threads()
    children_before = _children()
    yield
    deadline = time.monotonic() + 5.0
    while True:
        threads = _bigviz_threads() - threads_before
        kids = _children() - children_before - _kept_pids()
        if not threads and not kids:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    desc = [f"thread {t.name}" for t in threads]
    for pid in kids:
        try:
            desc.append(f"process {pid}: {' '.join(psutil.Process(pid).cmdline())[:120]}")
        except psutil.Error:
            desc.append(f"process {pid}")
    pytest.fail("test left running: " + "; ".join(desc))
