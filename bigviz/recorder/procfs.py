"""The one reader of Linux's ``/proc`` memory figures that bigviz uses everywhere.

Everything that reads a process's RAM from ``/proc`` goes through here: the recorder's
:class:`~bigviz.recorder.sources.ProcSource` (exact peaks), the runner and the
distributed launcher (``/proc/PID/status`` and ``smaps_rollup`` snapshots) and
``bigviz profile`` (the process-tree sampler).

* :func:`read_kib` — ``Name:   123 kB`` fields of ``status``, ``smaps_rollup``,
  ``/proc/meminfo`` …, in bytes;
* :func:`read_statm` — resident and shared bytes from ``/proc/PID/statm``;
* :func:`read_rss_hwm` — ``RssAnon``, ``RssFile``, ``RssShmem`` and ``VmHWM`` from one
  read of ``/proc/PID/status`` (:func:`parse_rss_split` parses the first three);
* :func:`read_uss`, :func:`forked_without_exec`, :func:`same_memory` — what summing a
  process tree needs to count a page once;
* :func:`reset_hwm` — restart the kernel's RSS high-water mark (``VmHWM``) by writing
  ``5`` to ``/proc/PID/clear_refs``.

* :func:`parse_kib` — the one parser of the ``kB`` format. Its code is written in
  :mod:`bigviz.recorder.sidecar`: the sidecar sampler runs as ``python -I -S
  path/sidecar.py`` (no ``site``, no package, so it can import nothing from bigviz), and
  this module is its public home for the rest of bigviz.

Only the standard library is used. On a system without ``/proc`` (not Linux) the readers
give ``{}`` / ``None``.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Sequence

from bigviz.recorder.sidecar import parse_kib, parse_rss_split

__all__ = [
    "PAGE_SIZE",
    "forked_without_exec",
    "parse_kib",
    "parse_rss_split",
    "parse_statm",
    "read_kib",
    "read_rss_hwm",
    "read_statm",
    "read_uss",
    "reset_hwm",
    "same_memory",
]

#: bytes per page, the unit of ``/proc/PID/statm`` (``os.sysconf`` is missing on Windows)
PAGE_SIZE: int = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _status_path(source: int | str) -> str:
    # a pid (or "self") names that process's status file; anything with a "/" is a path
    if isinstance(source, str) and "/" in source:
        return source
    return f"/proc/{source}/status"


def read_kib(source: int | str, names: Sequence[str]) -> dict[str, int]:
    """The ``Name:   123 kB`` fields ``names`` of a ``/proc`` file, in bytes.

    Args:
        source: a pid (or ``"self"``) for its ``/proc/PID/status``, or the path of any
            file in that format (``"/proc/123/smaps_rollup"``, ``"/proc/meminfo"``).
        names: the fields wanted, e.g. ``("VmHWM",)``.

    Returns:
        ``{name: bytes}`` for the fields the file has; fields it lacks (a zombie's
        ``status`` has no ``Vm*`` lines) are left out, and a file that cannot be read
        or parsed (the process is gone, not Linux) gives ``{}``.

    Example:
        >>> sorted(read_kib("self", ("VmRSS", "VmHWM")))  # doctest: +SKIP
        ['VmHWM', 'VmRSS']
    """
    try:
        with open(_status_path(source), "rb") as fh:
            values = parse_kib(fh.read(), tuple(n.encode() for n in names))
    except (OSError, ValueError, IndexError):
        return {}
    return {n: v for n, v in zip(names, values, strict=True) if v >= 0}


def parse_statm(raw: bytes | str, page: int = PAGE_SIZE) -> tuple[int, int]:
    """``(resident, shared)`` bytes from the text of ``/proc/PID/statm``.

    ``shared`` is file-backed plus shmem resident pages (``RssFile + RssShmem``), so
    ``resident - shared`` is the anonymous memory.

    Raises:
        ValueError, IndexError: ``raw`` is not in statm's format.

    Example:
        >>> parse_statm(b"100 20 5 1 0 30 0", page=4096)
        (81920, 20480)
    """
    parts = raw.split()
    return int(parts[1]) * page, int(parts[2]) * page


def read_statm(pid: int | str) -> tuple[int, int] | None:
    """``(resident, shared)`` bytes of a process now, from ``/proc/PID/statm``.

    Args:
        pid: the process (or ``"self"``).

    Returns:
        See :func:`parse_statm`; ``None`` when it cannot be read (the process is gone,
        not Linux).

    Example:
        >>> rss, shared = read_statm("self")  # doctest: +SKIP
    """
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return parse_statm(fh.read())
    except (OSError, ValueError, IndexError):
        return None


def reset_hwm(pid: int | str) -> bool:
    """Restart the kernel's RSS high-water mark (``VmHWM``) of a process at its current
    RSS, by writing ``5`` to ``/proc/PID/clear_refs``.

    Args:
        pid: the process (or ``"self"``).

    Returns:
        True when it was reset; False when the process is gone (or there is no
        ``/proc``, as on a system that is not Linux).

    Raises:
        OSError: the kernel refused (``PermissionError`` for another user's process,
            ``EROFS`` in a container with a read-only ``/proc`` …); the exception says
            why, for the caller's "peaks are sampled only" message.

    Example:
        >>> reset_hwm("self")  # doctest: +SKIP
        True
    """
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return True


def read_rss_hwm(pid: int | str) -> tuple[int, int, int, int] | None:
    """``(RssAnon, RssFile, RssShmem, VmHWM)`` bytes from one read of ``/proc/PID/status``.

    Returns:
        ``None`` when the process is gone or a zombie (no ``Rss*`` lines).

    Example:
        >>> anon, file_, shmem, hwm = read_rss_hwm("self")  # doctest: +SKIP
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            raw = fh.read()
        anon, file_, shmem = parse_rss_split(raw)
        i = raw.find(b"VmHWM:")
        hwm = int(raw[i + 6 : raw.find(b"kB", i)]) * 1024 if i >= 0 else 0
    except (OSError, ValueError):
        return None
    return anon, file_, shmem, hwm


def read_uss(pid: int | str) -> int | None:
    """A process's private resident bytes (USS: ``Private_Clean + Private_Dirty`` of
    ``smaps_rollup``), or ``None`` when it cannot be read. Walks the page tables: ms
    per GiB mapped, so callers limit the rate.

    Example:
        >>> read_uss("self") > 0  # doctest: +SKIP
        True
    """
    got = read_kib(f"/proc/{pid}/smaps_rollup", ("Private_Clean", "Private_Dirty"))
    if len(got) != 2:
        return None
    return got["Private_Clean"] + got["Private_Dirty"]


#: ``PF_FORKNOEXEC`` in ``/proc/PID/stat``'s flags: forked and has not exec'd since
_PF_FORKNOEXEC = 0x40


def forked_without_exec(pid: int | str) -> bool:
    """True for a process forked from another that has not exec'd a program since (it
    shares its parent's pages copy-on-write); False for others and for a gone one.

    Example:
        >>> forked_without_exec("self")  # doctest: +SKIP
        False
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return bool(int(stat[stat.rindex(b")") + 2 :].split()[6]) & _PF_FORKNOEXEC)
    except (OSError, ValueError, IndexError):
        return False


#: ``kcmp`` system call numbers (``KCMP_VM`` asks: same memory map?)
_SYS_KCMP = {"x86_64": 312, "aarch64": 272, "arm64": 272}
_KCMP_VM = 1
_libc: ctypes.CDLL | None = None


def same_memory(pid_a: int, pid_b: int) -> bool:
    """True when two processes share one memory map (a ``vfork`` child before its exec,
    or threads), by the ``kcmp(KCMP_VM)`` system call; False when they do not, or when
    the kernel cannot say (no ``kcmp``: then a vfork child, which lives for microseconds
    before its exec, may be counted once more for as long).

    Example:
        >>> same_memory(os.getpid(), os.getpid())  # doctest: +SKIP
        True
    """
    global _libc
    number = _SYS_KCMP.get(platform.machine())
    if number is None:
        return False
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        return int(_libc.syscall(number, pid_a, pid_b, _KCMP_VM, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
