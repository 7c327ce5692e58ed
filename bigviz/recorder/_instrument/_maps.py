"""How much of some files this process has mapped, and how much of that is resident.

A lazy load (safetensors ``safe_open``/``load_file``, ``torch.load(mmap=True)``,
Transformers 5 ``from_pretrained``) maps the checkpoint and reads nothing: the bytes
arrive as file-backed RSS (``RssFile``) when the weights are first used. The kernel
says per mapping how big it is and how much of it is in this process's page tables
(``Size`` and ``Rss`` in ``/proc/self/smaps``); summing those over the mappings of the
checkpoint's files tells "mapped" from "resident" for exactly those files.
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


def mapped_files(paths: Iterable[str], smaps: str = "/proc/self/smaps") -> MappedFiles:
    """``{path: (mapped, resident)}`` bytes for those of ``paths`` this process maps.

    Args:
        paths: real paths (see :func:`real_paths`).
        smaps: the file to read (tests pass a copy).

    Returns:
        Only the paths that are mapped; ``{}`` where ``/proc`` cannot be read.

    Example:
        >>> mapped_files(["/nonexistent"])
        {}
    """
    wanted = set(paths)
    if not wanted:
        return {}
    out: dict[str, list[int]] = {}
    current: list[int] | None = None
    try:
        with open(smaps, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                    # a mapping header: "start-end perms offset dev inode   path"
                    fields = line.split(None, 5)
                    path = fields[5].rstrip("\n") if len(fields) == 6 else ""
                    current = out.setdefault(path, [0, 0]) if path in wanted else None
                elif current is not None and line.startswith(("Size:", "Rss:")):
                    kib = int(line.split()[1]) * 1024
                    current[0 if line[0] == "S" else 1] += kib
    except (OSError, ValueError):
        return {}
    return {p: (v[0], v[1]) for p, v in out.items()}
