"""What a process holds now, read from Linux's ``/proc``: the status fields the budget
watchdog reads every few milliseconds, and the PSS/USS snapshot of ``smaps_rollup``.

Example:
    >>> sorted(snapshot())
    ['anon', 'file', 'pss', 'rss', 'shmem', 'uss']
"""

from __future__ import annotations

from collections.abc import Sequence

from bigviz.recorder.procfs import read_kib

__all__ = ["STATUS_FIELDS", "read_status", "snapshot", "snapshot_status"]

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
