"""Mapped vs resident bytes of a checkpoint's files (lazy loads say so): read from
/proc/self/maps + /proc/self/pagemap, checked against what /proc/self/smaps prints for
the same mappings (issue 17: smaps walks every mapping's page tables, ~23 ms after a 1 GB
load, added to every load the recorder watched)."""

from __future__ import annotations

import mmap
import os
import sys
from pathlib import Path

import pytest

from bigviz.recorder._instrument._maps import mapped_files, real_paths

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")

MiB = 2**20


def _smaps_of(path: str) -> tuple[int, int]:
    """(Size, Rss) summed over the mappings of ``path``, parsed from smaps here."""
    size = rss = 0
    current = False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split(" ", 1)[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):
                current = line.rstrip("\n").endswith(" " + path)
            elif current and line.startswith("Size:"):
                size += int(line.split()[1]) * 1024
            elif current and line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
    return size, rss


def test_mapped_and_resident_equal_smaps_for_two_mappings_partly_touched(
    tmp_path: Path,
) -> None:
    # GIVEN a 48 MiB file mapped twice (whole, and 16 MiB from an offset), 8 + 3 MiB touched
    path = tmp_path / "model.safetensors"
    path.write_bytes(os.urandom(MiB) * 48)
    real = os.path.realpath(path)
    with open(path, "rb") as fh:
        whole = mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)
        part = mmap.mmap(fh.fileno(), 16 * MiB, prot=mmap.PROT_READ, offset=8 * MiB)
    try:
        total = sum(whole[i] for i in range(0, 8 * MiB, 4096))
        total += sum(part[i] for i in range(0, 3 * MiB, 4096))
        # WHEN mapped_files reads them
        got = mapped_files(real_paths([str(path)]))
        # THEN it says what smaps says for the same mappings, to the byte
        assert got == {real: _smaps_of(real)}
        mapped, resident = got[real]
        assert mapped == 64 * MiB
        assert 11 * MiB <= resident <= mapped  # read-ahead may map in more than touched
    finally:
        whole.close()
        part.close()
    assert total >= 0


def test_a_file_read_but_not_mapped_is_not_listed(tmp_path: Path) -> None:
    # GIVEN a file read with pread (a safetensors backend="pread" load maps nothing)
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\1" * MiB)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert len(os.pread(fd, MiB, 0)) == MiB
        # THEN there is nothing to say about it
        assert mapped_files(real_paths([str(path)])) == {}
    finally:
        os.close(fd)
    assert mapped_files([]) == {}


def test_unreadable_proc_files_give_nothing(tmp_path: Path) -> None:
    path = tmp_path / "w"
    path.write_bytes(b"\1" * 4096)
    assert mapped_files([str(path)], maps=str(tmp_path / "no-such-maps")) == {}
