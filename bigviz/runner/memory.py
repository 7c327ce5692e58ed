"""What a process holds now, read from Linux's ``/proc``: the status fields the budget
watchdog reads every few milliseconds, the PSS/USS snapshot of ``smaps_rollup``, what a
worker costs the machine before its first phase (:func:`process_cost`), and arming the
sidecar's 1 ms budget check (:func:`arm_budget`).

Example:
    >>> sorted(snapshot())
    ['anon', 'file', 'pss', 'rss', 'shmem', 'uss']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bigviz.recorder.procfs import read_kib
from bigviz.recorder.sidecar import BUDGET_ENV

__all__ = [
    "STATUS_FIELDS",
    "arm_budget",
    "fixed_cost",
    "process_cost",
    "read_status",
    "snapshot",
    "snapshot_status",
]

#: the ``/proc/PID/status`` fields :func:`read_status` returns by default
STATUS_FIELDS: tuple[str, ...] = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


def read_status(pid: int | str = "self", names: Sequence[str] = STATUS_FIELDS) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, VmHWM (or the fields ``names``) of a process in bytes,
    from ``/proc/PID/status``; ``{}`` where it cannot be read.

    Example:
        >>> read_status()["VmRSS"] > 0
        True
    """
    return read_kib(pid, names)


def snapshot_status(pid: int | str) -> dict[str, int]:
    """RSS split of a process (``rss``, ``anon``, ``file``, ``shmem``) from
    ``/proc/PID/status`` only (cheap: no page-table walk); ``{}`` where it cannot be read.

    Example:
        >>> sorted(snapshot_status("self"))
        ['anon', 'file', 'rss', 'shmem']
    """
    st = read_status(pid, ("VmRSS", "RssAnon", "RssFile", "RssShmem"))
    if not st:
        return {}
    return {"rss": st.get("VmRSS", 0), "anon": st.get("RssAnon", 0),
            "file": st.get("RssFile", 0), "shmem": st.get("RssShmem", 0)}


def snapshot(pid: int | str = "self") -> dict[str, int]:
    """RSS, anonymous, file-backed, shmem, PSS and USS of a process, in bytes, now.

    Example:
        >>> snapshot()["pss"] > 0
        True
    """
    out = {"rss": 0, "anon": 0, "file": 0, "shmem": 0, "pss": 0, "uss": 0}
    st = snapshot_status(pid)
    if st:  # else not Linux, or the process is gone: zeros say "not measured"
        out.update(st)
        sm = read_kib(f"/proc/{pid}/smaps_rollup", ("Pss", "Private_Clean", "Private_Dirty"))
        out.update(pss=sm.get("Pss", 0),
                   uss=sm.get("Private_Clean", 0) + sm.get("Private_Dirty", 0))
    return out


def process_cost(pid: int | str = "self") -> dict[str, int]:
    """What a process costs the machine now, beyond the pages it shares: ``private``
    (USS: ``Private_Clean + Private_Dirty`` of ``smaps_rollup``: pages no other process
    maps, so a forked worker's copied-on-write pages of the fork server and all it
    allocated or imported since the fork), ``page_tables`` (``VmPTE``: kernel memory, in
    no RSS), and ``rss``; ``{}`` where ``/proc`` cannot be read.

    Example:
        >>> c = process_cost()
        >>> c["private"] > 0 and c["page_tables"] > 0
        True
    """
    st = read_kib(pid, ("VmRSS", "VmPTE"))
    sm = read_kib(f"/proc/{pid}/smaps_rollup", ("Private_Clean", "Private_Dirty"))
    if not st or not sm:
        return {}
    return {"private": sm.get("Private_Clean", 0) + sm.get("Private_Dirty", 0),
            "page_tables": st.get("VmPTE", 0), "rss": st.get("VmRSS", 0)}


def fixed_cost(at_start: dict[str, int], at_baseline: dict[str, int]) -> dict[str, int]:
    """A worker's fixed cost to the machine, from :func:`process_cost` at the start of
    its job and at its baseline: ``total`` = ``private`` + ``page_tables`` at the
    baseline (what the machine holds for this worker before its first phase, beside the
    fork server it shares the rest with), and ``after_fork``, the private bytes that
    appeared between the two readings (imports and warm-up in the worker); ``{}`` when a
    reading is missing.

    Example:
        >>> fixed_cost({"private": 1, "page_tables": 1, "rss": 5},
        ...            {"private": 8, "page_tables": 2, "rss": 9})["total"]
        10
    """
    if not at_start or not at_baseline:
        return {}
    return {"total": at_baseline["private"] + at_baseline["page_tables"],
            "private": at_baseline["private"], "page_tables": at_baseline["page_tables"],
            "after_fork": max(0, at_baseline["private"] - at_start["private"])}


def arm_budget(budget: int | None, folder: Path) -> str | None:
    """Have the next sidecar this process starts kill it at its first 1 ms sample above
    ``budget`` bytes of RSS (see :mod:`bigviz.recorder.sidecar`); returns the path of the
    kill report it would write (``None``: no budget, nothing armed). Call
    ``arm_budget(None, ...)`` after the recorder started, so no later sidecar (a child's)
    inherits the budget.

    Example:
        >>> arm_budget(None, Path("."))
    """
    if budget is None:
        os.environ.pop(BUDGET_ENV, None)
        return None
    path = folder / f".budget-kill-{os.getpid()}"
    path.unlink(missing_ok=True)
    os.environ[BUDGET_ENV] = f"{int(budget)}:{path}"
    return str(path)
