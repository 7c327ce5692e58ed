"""The page cache of a checkpoint's files: how much of them is cached, dropping them
(a cold run) or reading them in (a warm run), and the bytes a process read from storage.

The first load on a node is cold: its files come from the disk. Every later bigviz run of
the same checkpoint finds them in the page cache, and a load is then several times faster
(here 2.74 GB/s warm against 1.11 GB/s cold for a 1.5 GB checkpoint). A run therefore says
which one it was: :func:`prepare` puts the files in the state asked for and measures what
it got with ``mincore(2)``, and :func:`read_bytes` (``/proc/PID/io``) tells how much a
phase really read from storage.

No root is needed: ``posix_fadvise(POSIX_FADV_DONTNEED)`` drops the clean pages of any file
the process can open (dirty pages are written first with ``fsync``); pages another process
has mapped and locked stay, and the measured fraction says so.

Example:
    >>> # state = prepare(["model-00001-of-00002.safetensors", ...], "cold")
    >>> # state.cached_fraction  # 0.0 on a quiet machine
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import mmap
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["CACHE_STATES", "CacheState", "cached_bytes", "drop", "prepare", "read_bytes", "warm"]

#: what ``cache=`` accepts: ``"cold"`` drops the files' pages before the run, ``"warm"``
#: reads them in, ``"as-is"`` leaves the page cache alone (and still measures it)
CACHE_STATES: tuple[str, ...] = ("as-is", "cold", "warm")

CacheMode = Literal["as-is", "cold", "warm"]

_CHUNK = 8 << 20


@dataclass(frozen=True)
class CacheState:
    """The page-cache state of a run's files just before its first phase.

    ``asked`` is the mode requested; ``cached`` / ``total`` are bytes of the files found
    in the page cache by ``mincore`` after preparing them (``cached`` is ``None`` where
    the platform cannot tell).
    """

    asked: str
    cached: int | None
    total: int

    @property
    def cached_fraction(self) -> float | None:
        """``cached / total``, or ``None`` when unknown or the files are empty."""
        if self.cached is None or self.total <= 0:
            return None
        return self.cached / self.total

    def describe(self) -> str:
        """One phrase for tables and notes: ``"cold (0% cached)"``, ``"warm (100% cached)"``.

        Example:
            >>> CacheState("cold", 0, 100).describe()
            'cold (0% cached)'
        """
        frac = self.cached_fraction
        if frac is None:
            return self.asked if self.asked != "as-is" else "cache not measured"
        pct = f"{frac * 100:.0f}% cached"
        if self.asked == "as-is":
            return pct
        return f"{self.asked} ({pct})"


def _files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            out.extend(sorted(f for f in path.rglob("*") if f.is_file()))
        elif path.is_file():
            out.append(path)
    return out


def drop(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Drop the files' pages from the page cache (``fsync`` first: only clean pages go).

    Example:
        >>> # drop(["/ckpt/model.safetensors"])
    """
    for path in _files(paths):
        fd = os.open(path, os.O_RDONLY)
        try:
            with contextlib.suppress(OSError):  # read-only filesystems: pages are clean
                os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Read every byte of the files once, so a run finds them in the page cache.

    Example:
        >>> # warm(["/ckpt/model.safetensors"])
    """
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    for path in _files(paths):
        with open(path, "rb", buffering=0) as f:
            while f.readinto(view):
                pass


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    lib.mmap.restype = ctypes.c_void_p
    lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                         ctypes.c_int, ctypes.c_long]
    lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    return lib


def _cached_in(lib: ctypes.CDLL, path: Path) -> int | None:
    size = path.stat().st_size
    if size == 0:
        return 0
    page = mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        # a mapping only to ask mincore; it never touches the pages (no read, no fault)
        addr = lib.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            n_pages = (size + page - 1) // page
            vec = ctypes.create_string_buffer(n_pages)
            if lib.mincore(addr, size, vec) != 0:
                return None
            resident = sum(b & 1 for b in vec.raw)
        finally:
            lib.munmap(addr, size)
    finally:
        os.close(fd)
    return min(resident * page, size)


def cached_bytes(paths: Iterable[str | os.PathLike[str]]) -> tuple[int | None, int]:
    """Bytes of the files in the page cache (``mincore``) and their total size.

    ``None`` for the first where the platform has no ``mincore``.

    Example:
        >>> # cached_bytes(["/ckpt"])  # (1_500_000_000, 1_500_000_000) after a load
    """
    files = _files(paths)
    total = sum(f.stat().st_size for f in files)
    lib = _libc()
    if lib is None:
        return None, total
    cached = 0
    for f in files:
        n = _cached_in(lib, f)
        if n is None:
            return None, total
        cached += n
    return cached, total


def prepare(paths: Iterable[str | os.PathLike[str]], mode: str) -> CacheState:
    """Put the files in the page-cache state ``mode`` asks for and measure what it got.

    Raises:
        ValueError: ``mode`` is not one of :data:`CACHE_STATES`.

    Example:
        >>> # prepare(["/ckpt"], "cold").describe()  # 'cold (0% cached)'
    """
    if mode not in CACHE_STATES:
        raise ValueError(f"cache {mode!r} is not understood: use one of {', '.join(CACHE_STATES)}")
    files = _files(paths)
    if mode == "cold":
        drop(files)
    elif mode == "warm":
        warm(files)
    cached, total = cached_bytes(files)
    return CacheState(mode, cached, total)


def read_bytes(pid: int | str = "self") -> int | None:
    """Bytes the process has read from storage so far (``read_bytes`` of ``/proc/PID/io``:
    page-cache misses, mmap faults included); ``None`` where the file is missing.

    Example:
        >>> isinstance(read_bytes(), (int, type(None)))
        True
    """
    try:
        with open(f"/proc/{pid}/io", "rb") as f:
            for line in f:
                if line.startswith(b"read_bytes:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
