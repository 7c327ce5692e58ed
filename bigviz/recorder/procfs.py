"""The one reader of Linux's ``/proc`` memory figures that bigviz uses everywhere.

Everything that reads a process's RAM from ``/proc`` goes through here: the recorder's
:class:`~bigviz.recorder.sources.ProcSource` (exact peaks), the runner and the
distributed launcher (``/proc/PID/status`` and ``smaps_rollup`` snapshots) and
``bigviz profile`` (the process-tree sampler).

* :func:`read_kib` — ``Name:   123 kB`` fields of ``status``, ``smaps_rollup``,
  ``/proc/meminfo`` …, in bytes;
* :func:`read_statm` — resident and shared bytes from ``/proc/PID/statm``;
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

import os
from collections.abc import Sequence

from bigviz.recorder.sidecar import parse_kib

__all__ = ["PAGE_SIZE", "parse_kib", "parse_statm", "read_kib", "read_statm", "reset_hwm"]

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
