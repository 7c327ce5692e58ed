"""Reports of profiled cells (``%%bigviz``): each cell above its own start, none compared
with another, its code folded under it; and reports with several files (Markdown and its
PNGs, CSV and its siblings) that a full disk leaves all or nothing of.

The magics' side (real IPython, real torch allocations) is tests/integration/test_magics.py;
a real full tmpfs is tests/integration/test_report_disk.py.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

import pytest
from _fixtures import recording, sweep

from bigviz import ReportError, report
from bigviz.data.recording import Phase, Recording, Series
from bigviz.data.result import RunResult
from bigviz.tables.findings import (
    CELL_KEY,
    cell_meta,
    cell_of,
    cell_run,
    cell_sentence,
    key_finding,
)

MiB = 2**20


def _cell(name: str, start: int, grow: int, *, code: str, first_phase_at: float) -> Recording:
    """A cell's recording shaped like the magic's: RSS climbs by ``grow`` from ``start``
    before its one automatic phase, which starts late (a build, then a save)."""
    t = [i / 100 for i in range(101)]
    rss = [start + min(grow, int(grow * x / first_phase_at)) for x in t]
    anon = [v - 80 * MiB for v in rss]
    file = [80 * MiB + (2 * MiB if x >= first_phase_at else 0) for x in t]
    rec = Recording(name=name, duration=1.0, series={
        "ram.rss": Series("ram.rss", t, rss), "ram.anon": Series("ram.anon", t, anon),
        "ram.file": Series("ram.file", t, file)})
    rec.phases.append(Phase("torch.save model.pt", first_phase_at, 1.0, auto=True,
                            ram_start=start + grow, ram_end=start + grow,
                            ram_peak=start + grow + MiB, ram_peak_exact=True))
    rec.meta.update({"ram_peak": start + grow + MiB, "ram_peak_exact": True})
    rec.meta[CELL_KEY] = cell_meta(
        code=code, execution_count=7,
        start={"rss": start, "anon": start - 80 * MiB, "file": 80 * MiB},
        end={"rss": start + grow})
    return rec


BUILD = "model = build()\nmodel.save_pretrained('out')  # <b>&</b>\n"
LOAD = "model = AutoModel.from_pretrained('out')\n"


def _cells() -> list[RunResult]:
    return [cell_run(_cell("build + save_pretrained", 400 * MiB, 629 * MiB, code=BUILD,
                           first_phase_at=0.8)),
            cell_run(_cell("from_pretrained", 1100 * MiB, 5 * MiB, code=LOAD,
                           first_phase_at=0.1))]


def test_a_cells_growth_is_from_its_start_not_from_its_first_phase() -> None:
    rec = _cell("build", 400 * MiB, 629 * MiB, code=BUILD, first_phase_at=0.8)
    facts = cell_of(rec)
    assert facts is not None
    # the first phase starts after the growth: measured from there it would be 1 MiB
    assert facts.baseline == 400 * MiB and facts.growth == 630 * MiB and facts.peak_exact
    run = cell_run(rec)
    assert run.baseline == 400 * MiB and run.ram_peak == 630 * MiB
    # anonymous and file-backed above their own values at the start
    assert run.ram_anon_peak == 629 * MiB and run.ram_file_peak == 2 * MiB
    assert "RSS 400.0 MiB at the cell's start (its baseline)" in (cell_sentence(rec) or "")


def test_unrelated_cells_are_never_said_to_cut_each_others_peak() -> None:
    finding = key_finding(_cells()) or ""
    assert "cuts" not in finding
    assert finding.startswith("build + save_pretrained grew the most: +630.0 MiB above its "
                              "start (400.0 MiB RSS)")
    assert "not compared" in finding


@pytest.mark.parametrize("suffix", [".html", ".md"])
def test_a_cells_report_has_no_strategy_facts_and_folds_each_cells_code(
    suffix: str, tmp_path: Path
) -> None:
    text = report.write(_cells(), tmp_path / f"k{suffix}").read_text()
    assert "cuts peak RAM" not in text and "shard size" not in text.lower()
    assert "one file" not in text and "format —" not in text
    assert "after imports" not in text and "RSS just before the cell" in text.replace(
        "&#x27;", "'")
    folded = re.findall(r"<details[^>]*><summary>Code of (.*?)</summary>(.*?)</details>",
                        text, flags=re.S)
    assert [name.split(" In [")[0] for name, _ in folded] == [
        "build + save_pretrained", "from_pretrained"]
    assert "# &lt;b&gt;&amp;&lt;/b&gt;" in folded[0][1] and "<b>&</b>" not in text


def test_a_forged_cell_entry_reports_without_failing(tmp_path: Path) -> None:
    rec = recording(strategy="meta", seconds=0.2, name="forged")
    rec.meta[CELL_KEY] = {"code": 12, "execution_count": "x", "start": {"rss": "lots"},
                          "end": ["no"]}
    facts = cell_of(rec)
    # a start that is not a number falls back to the first sample; the code is unknown
    assert facts is not None and facts.code == "" and facts.execution_count is None
    assert facts.baseline == rec.series["ram.rss"].v[0]
    for suffix in (".html", ".md", ".json", ".csv"):
        report.write([cell_run(rec)], tmp_path / f"f{suffix}")
    assert "code was not recorded" in (tmp_path / "f.html").read_text()


# -- several files: all or none --------------------------------------------------------


class _FullAt:
    """``os.fdopen`` whose files named like ``marker`` raise ENOSPC on write: a disk
    that fills up exactly there."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.real = os.fdopen

    def __call__(self, fd: int, *args: Any, **kwargs: Any) -> Any:
        fh = self.real(fd, *args, **kwargs)
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else ""
        if self.marker not in os.path.basename(name):
            return fh
        marker = self.marker

        class Full:
            def __enter__(self) -> Full:
                return self

            def __exit__(self, *exc: object) -> None:
                fh.close()

            def write(self, data: bytes) -> int:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), marker)

        return Full()


@pytest.mark.parametrize(("suffix", "full_at"), [(".md", ".pr.md."), (".csv", ".pr.csv.")])
def test_a_full_disk_leaves_no_file_of_the_report_behind(
    suffix: str, full_at: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to tell which file is being written")
    s = sweep(("naive", "meta"), seconds=0.2)
    # GIVEN a folder with an unrelated file; the disk fills up at the report's main file,
    # written after its PNGs (or CSV siblings)
    (tmp_path / "notes.txt").write_text("keep me")
    monkeypatch.setattr(os, "fdopen", _FullAt(full_at))
    # WHEN the report is written THEN the error names the file and the reason ...
    with pytest.raises(ReportError, match=rf"pr\{suffix}.*No space left on device"):
        report.write(s, tmp_path / f"pr{suffix}")
    # ... and nothing of it is left: no PNG, no sibling, no temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    monkeypatch.undo()
    # AND with space it writes every file
    report.write(s, tmp_path / f"pr{suffix}")
    assert len(list(tmp_path.iterdir())) > 2


def test_a_cells_timeline_draws_its_start_as_the_baseline() -> None:
    from bigviz.report.notebook import timeline_figure

    rec = _cell("build", 400 * MiB, 629 * MiB, code=BUILD, first_phase_at=0.8)
    fig = timeline_figure(rec, cell_run(rec))
    keys = [t.get_text() for ax in fig.axes if ax.get_legend() is not None
            for t in ax.get_legend().get_texts()]
    assert "baseline (RSS at the cell's start)" in keys and "baseline (after imports)" not in keys
    # the baseline line sits at the cell's start (400 MiB), not at its first phase (1029 MiB)
    ax = fig.axes[0]
    div = 2**30 if "GiB" in ax.get_ylabel() else MiB
    flat = [float(ln.get_ydata()[0]) * div / MiB for ln in ax.get_lines()
            if len(set(ln.get_ydata())) == 1 and ln.get_linestyle() == "--"]
    assert any(abs(v - 400) < 1 for v in flat), flat
