"""A Markdown report on a real disk that fills up: no PNG of it is left behind
(issue 14 item 17). A small tmpfs is mounted where the machine allows it (root); the
forced-ENOSPC variant that runs everywhere is tests/unit/test_report_cells.py."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _fixtures import sweep

from bigviz import ReportError, report
from bigviz.report._markdown import render

PAGE = 4096


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "disk"
    target.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(target)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _pages(n: int) -> int:
    return -(-n // PAGE) * PAGE


def test_a_markdown_report_that_fills_the_disk_leaves_no_png(small_disk: Path) -> None:
    s = sweep(("naive", "sharded", "meta"), seconds=0.3)
    out = small_disk / "pr.md"
    text, images = render(s, out)
    assert images, "the report has PNGs beside it"
    # GIVEN a disk with room for the PNGs and not one page more: the Markdown itself,
    # written last before, does not fit
    need = sum(_pages(len(data)) for _p, data in images)
    filler = small_disk / "filler"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * (_free(small_disk) - need))
    assert _free(small_disk) == need
    # WHEN the report is written THEN it fails naming the disk as full ...
    with pytest.raises(ReportError, match=r"No space left on device.*has space"):
        report.write(s, out)
    # ... and leaves nothing of itself: no PNG, no Markdown, no temporary file
    assert sorted(os.listdir(small_disk)) == ["filler"]
    assert _free(small_disk) == need
    # AND once there is room the same report writes all its files
    filler.unlink()
    report.write(s, out)
    assert sorted(os.listdir(small_disk)) == sorted([out.name, *(p.name for p, _ in images)])
    assert len(text) > 0 and out.read_text().startswith("### bigviz")
