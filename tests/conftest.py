"""Shared fixtures. The autouse ``no_leftovers`` fixture fails any test that leaves a
bigviz thread or a child process running (the tqdm habit, STYLE.md)."""

from __future__ import annotations

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
