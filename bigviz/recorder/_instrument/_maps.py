"""How much of some files this process has mapped, and how much of that is resident.

A lazy load (safetensors ``safe_open``/``load_file``, ``torch.load(mmap=True)``,
Transformers 5 ``from_pretrained``) maps the checkpoint and reads nothing: the bytes
arrive as file-backed RSS (``RssFile``) when the weights are first used. The kernel
says per mapping how big it is and how much of it is in this process's page tables
(``/proc/self/maps`` for where, ``/proc/self/pagemap`` for which pages are present: the
``Size`` and ``Rss`` that ``smaps`` would print for those mappings alone); summing those
over the mappings of the checkpoint's files tells "mapped" from "resident" for exactly
those files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["MappedFiles", "mapped_files", "real_paths"]

#: (mapped bytes, resident bytes) per real path
MappedFiles = dict[str, tuple[int, int]]


def real_paths(paths: Iterable[str]) -> set[str]:
    """The paths as ``/proc/PID/maps`` names them (symlinks resolved: a hub cache's
    ``snapshots/`` files are links to ``blobs/``)."""
    out = set()
    for p in paths:
        try:
            out.add(os.path.realpath(p))
        except (OSError, ValueError):
            continue
    return out


def _ranges(paths: set[str], maps: str) -> dict[str, list[tuple[int, int]]]:
    """``{path: [(start, end), ...]}`` of the mappings of ``paths`` listed in ``maps`` (a
    ``/proc/PID/maps`` file: one line per mapping, no page-table walk, so cheap whatever
    the process holds)."""
    out: dict[str, list[tuple[int, int]]] = {}
    with open(maps, encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split(None, 5)
            if len(fields) == 6:
                path = fields[5].rstrip("\n")
                if path in paths:
                    lo, _, hi = fields[0].partition("-")
                    out.setdefault(path, []).append((int(lo, 16), int(hi, 16)))
    return out


#: bytes >= 0x80 -> 1, others -> 0: the top byte of a pagemap entry holds bit 63, "present"
_PRESENT = bytes(1 if b & 0x80 else 0 for b in range(256))


def _present_bytes(pagemap: int, lo: int, hi: int, page: int) -> int:
    """Bytes of ``[lo, hi)`` present in the page tables, from ``/proc/PID/pagemap`` (8
    bytes per page; bit 63 says present). Reading it walks only this range."""
    n = 0
    step = 1 << 17  # pages per read: 1 MiB of entries
    first, last = lo // page, hi // page
    for at in range(first, last, step):
        count = min(step, last - at)
        data = os.pread(pagemap, 8 * count, 8 * at)
        n += data[7::8].translate(_PRESENT).count(1)
    return n * page


def mapped_files(
    paths: Iterable[str], maps: str = "/proc/self/maps", pagemap: str = "/proc/self/pagemap"
) -> MappedFiles:
    """``{path: (mapped, resident)}`` bytes for those of ``paths`` this process maps.

    ``maps`` says where each file is mapped (cheap); ``pagemap`` says which of those pages
    are in the process's page tables (the ``Rss`` of ``/proc/PID/smaps`` for just those
    mappings). ``smaps`` itself would walk the page tables of every mapping: ~23 ms after a
    1 GB load into anonymous memory, which would be added to every load the recorder
    watches (issue 17).

    Args:
        paths: real paths (see :func:`real_paths`).
        maps: the ``maps`` file to read (tests pass a copy).
        pagemap: the matching ``pagemap`` file.

    Returns:
        Only the paths that are mapped; ``{}`` where ``/proc`` cannot be read.

    Example:
        >>> mapped_files(["/nonexistent"])
        {}
    """
    wanted = set(paths)
    if not wanted:
        return {}
    try:
        ranges = _ranges(wanted, maps)
        if not ranges:
            return {}
        page = os.sysconf("SC_PAGE_SIZE")
        fd = os.open(pagemap, os.O_RDONLY)
        try:
            return {
                p: (
                    sum(hi - lo for lo, hi in spans),
                    sum(_present_bytes(fd, lo, hi, page) for lo, hi in spans),
                )
                for p, spans in ranges.items()
            }
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return {}
