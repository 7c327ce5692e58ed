"""Cold and warm page cache: dropping and reading a checkpoint's files, measured with
``mincore`` and ``/proc/self/io`` (which nobody here wrote)."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from bigviz.runner import pagecache

SIZE = 24 << 20

pytestmark = pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/PID/io")


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "model-00001-of-00001.safetensors"
    path.write_bytes(os.urandom(SIZE))
    return path


def _fs_caches(path: Path) -> bool:
    """tmpfs and friends cannot drop pages: the test needs a disk-backed filesystem."""
    pagecache.drop([path])
    cached, _ = pagecache.cached_bytes([path])
    return cached is not None and cached < SIZE // 2


def test_cold_drops_pages_and_the_next_read_comes_from_storage(data_file: Path) -> None:
    if not _fs_caches(data_file):
        pytest.skip(f"{data_file.parent} keeps its pages (tmpfs?): cannot go cold")
    state = pagecache.prepare([data_file.parent], "cold")
    assert state.asked == "cold" and state.total == SIZE
    assert state.cached_fraction is not None and state.cached_fraction < 0.05
    assert state.describe().startswith("cold (")

    before = pagecache.read_bytes()
    assert before is not None
    with open(data_file, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        touched = sum(m[i] for i in range(0, SIZE, mmap.PAGESIZE))  # faults every page
        m.close()
    assert touched >= 0
    got = pagecache.read_bytes()
    assert got is not None and got - before >= 0.9 * SIZE  # mmap faults count as reads


def test_warm_reads_everything_in_and_the_next_read_is_free(data_file: Path) -> None:
    pagecache.drop([data_file])
    state = pagecache.prepare([data_file], "warm")
    assert state.cached == SIZE and state.describe() == "warm (100% cached)"
    before = pagecache.read_bytes()
    assert before is not None
    assert len(data_file.read_bytes()) == SIZE
    got = pagecache.read_bytes()
    assert got is not None and got - before < 0.05 * SIZE


def test_as_is_measures_without_touching(data_file: Path) -> None:
    pagecache.drop([data_file])
    cold = pagecache.prepare([data_file], "as-is")
    pagecache.warm([data_file])
    warm = pagecache.prepare([data_file], "as-is")
    assert warm.cached == SIZE
    assert cold.cached is not None and cold.cached < warm.cached
    assert warm.describe() == "100% cached"


def test_unknown_mode_is_named() -> None:
    with pytest.raises(ValueError,
                       match="cache 'lukewarm' is not understood: use one of as-is, cold, warm"):
        pagecache.prepare([], "lukewarm")


def test_empty_and_missing_files_count_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    assert pagecache.cached_bytes([tmp_path / "empty", tmp_path / "missing"]) == (0, 0)
    assert pagecache.CacheState("cold", 0, 0).cached_fraction is None
