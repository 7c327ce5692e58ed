"""A loop's repeated phases (step 1 … step 800) fold into one row: count and min / median /
max of their real peaks, expandable in the reports to every phase's exact peak."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import numpy as np
import pytest

import bigviz
from bigviz import report
from bigviz.data.recording import Phase, Recording, Series
from bigviz.data.result import RunResult
from bigviz.tables.phases import PhaseGroup, PhaseRow, family, grouped, phase_rows
from bigviz.units import format_size

MiB = 2**20


def many_steps(n: int = 800, seed: int = 0) -> Recording:
    """``init``, ``load`` and ``step 1 … step n`` inside it (each with a nested
    ``torch.load``), every step with its own peak."""
    rng = np.random.default_rng(seed)
    peaks = (400 * MiB + rng.integers(0, 300 * MiB, n)).tolist()
    phases = [Phase("init", 0.0, 1.0, ram_peak=350 * MiB, ram_peak_exact=True),
              Phase("load", 1.0, 1.0 + n * 0.01, ram_peak=max(peaks), ram_peak_exact=True)]
    for k in range(n):
        start = 1.0 + k * 0.01
        parent = len(phases)
        phases.append(Phase(f"step {k + 1}", start, start + 0.01, parent=1, depth=1,
                            ram_start=390 * MiB, ram_peak=peaks[k], ram_peak_exact=True))
        phases.append(Phase("torch.load", start, start + 0.005, parent=parent, depth=2,
                            auto=True, ram_peak=peaks[k] - MiB, ram_peak_exact=True))
    t = [i * 0.001 for i in range(int((1.0 + n * 0.01) * 1000))]
    rss = [380 * MiB + (i % 50) * 4096 for i in range(len(t))]
    return Recording(name="loop", duration=t[-1], phases=phases,
                     series={"ram.rss": Series("ram.rss", t, rss)})


def test_a_real_loops_phases_fold_with_their_real_peaks() -> None:
    # GIVEN a real recording of a loop whose steps allocate different amounts
    import torch

    with bigviz.record(interval_ms=1.0, instrument=False) as rec:
        with rec.phase("warm up"):
            keep = torch.ones(4 * MiB // 4)
        for k in range(7):
            with rec.phase(f"step {k + 1}"):
                block = torch.ones((k + 1) * 8 * MiB // 4)
                block += 1
                del block
    del keep
    rows = phase_rows(rec.recording)
    # WHEN the phase rows are grouped
    items = grouped(rows)
    # THEN the warm-up stays a row and the 7 steps are one group, whose statistics are the
    # statistics of the peaks the kernel measured for each step
    assert [type(x) for x in items] == [PhaseRow, PhaseGroup]
    g = items[1]
    assert isinstance(g, PhaseGroup)
    steps = [r for r in rows if r.name.startswith("step ")]
    peaks = [r.ram_peak for r in steps]
    assert None not in peaks and g.count == 7 and g.label == "step 1 … step 7"
    assert (g.ram_peak.min, g.ram_peak.median, g.ram_peak.max) == (
        min(peaks), statistics.median(peaks), max(peaks))  # type: ignore[type-var]
    assert g.how == ("exact" if all(r.ram_peak_exact for r in steps)
                     else "sampled" if not any(r.ram_peak_exact for r in steps)
                     else f"exact for {sum(r.ram_peak_exact for r in steps)} of 7")
    # the step that allocated most grew most
    growth = [r.ram_growth for r in steps]
    assert g.ram_growth.max == max(growth)  # type: ignore[type-var]


def test_800_steps_fold_into_one_group_with_their_nested_phases() -> None:
    rec = many_steps(800)
    rows = phase_rows(rec)
    items = grouped(rows)
    # init, load, then one group holding the 800 steps and their 800 nested torch.load
    assert [getattr(x, "name", None) for x in items[:2]] == ["init", "load"]
    assert len(items) == 3
    g = items[2]
    assert isinstance(g, PhaseGroup)
    assert g.count == 800 and len(g.rows) == 1600 and g.family == "step #"
    peaks = [p.ram_peak for p in rec.phases if p.name.startswith("step ")]
    assert g.ram_peak.max == max(peaks)  # type: ignore[type-var]
    assert g.ram_peak.min == min(peaks)  # type: ignore[type-var]
    assert g.ram_peak.median == statistics.median(peaks)  # type: ignore[type-var]
    assert g.duration.median == pytest.approx(0.01)
    assert [r.index for r in g.rows] == list(range(2, 1602))


def test_only_long_runs_of_one_family_under_one_parent_fold() -> None:
    def rec_of(*names: tuple[str, int | None, int]) -> Recording:
        return Recording(phases=[Phase(n, float(i), i + 1.0, parent=par, depth=d)
                                 for i, (n, par, d) in enumerate(names)])

    # four steps are too few; five fold
    four = rec_of(*[(f"step {k}", None, 0) for k in range(4)])
    assert all(isinstance(x, PhaseRow) for x in grouped(phase_rows(four)))
    five = rec_of(*[(f"step {k}", None, 0) for k in range(5)])
    assert [type(x) for x in grouped(phase_rows(five))] == [PhaseGroup]
    # different families, or the same names under different parents, stay rows
    mixed = rec_of(*[(f"{'load' if k % 2 else 'save'} {k}", None, 0) for k in range(8)])
    assert all(isinstance(x, PhaseRow) for x in grouped(phase_rows(mixed)))
    parents = rec_of(("a", None, 0), ("x 1", 0, 1), ("x 2", 0, 1), ("b", None, 0),
                     ("x 3", 3, 1), ("x 4", 3, 1), ("x 5", 3, 1))
    assert all(isinstance(x, PhaseRow) for x in grouped(phase_rows(parents)))
    assert family("shard 3/20") == "shard #/#"
    # the same name repeated (a loop calling torch.load) folds too
    same = rec_of(*[("torch.load", None, 0) for _ in range(6)])
    g = grouped(phase_rows(same))[0]
    assert isinstance(g, PhaseGroup) and g.label == "torch.load" and g.count == 6


def test_the_html_report_folds_800_steps_into_an_expandable_row(tmp_path: Path) -> None:
    # GIVEN a run with 800 repeated steps
    rec = many_steps(800)
    run = RunResult("sharded", "ok", baseline=380 * MiB, ram_peak=300 * MiB, recording=rec)
    out = report.write(run, tmp_path / "r.html")
    text = out.read_text()
    # THEN the phase table has one group row saying the count, max, min and median
    groups = re.findall(r'<tr class="group">(.*?)</tr>', text)
    assert len(groups) == 1 and "×800" in groups[0]
    steps = [p for p in rec.phases if p.name.startswith("step ")]
    peaks = [p.ram_peak or 0 for p in steps]
    assert f'data-v="{max(peaks)}">max {format_size(max(peaks))}' in groups[0]
    assert f"min {format_size(min(peaks))}" in groups[0]
    assert f"median {format_size(round(statistics.median(peaks)))}" in groups[0]
    # AND it expands on click (<details>) to all 800 steps, each with its exact peak
    members = re.search(r'<tr class="members">.*?<details>(.*?)</details>', text, re.S)
    assert members is not None
    inside = members.group(1)
    assert inside.count("<td>step ") == 800 and inside.count("torch.load") == 800
    for p in rec.phases[2:]:
        assert f'data-v="{p.ram_peak}"' in inside
    # and the main table has no row per step any more
    main = text.split('<tr class="members">')[0]
    assert re.search(r"<tr><td[^>]*>step \d+</td>", main) is None


def test_the_markdown_report_folds_them_too(tmp_path: Path) -> None:
    rec = many_steps(40)
    run = RunResult("sharded", "ok", baseline=380 * MiB, ram_peak=300 * MiB, recording=rec)
    text = report.write(run, tmp_path / "r.md").read_text()
    peaks = [p.ram_peak or 0 for p in rec.phases if p.name.startswith("step ")]
    row = next(line for line in text.splitlines() if "(×40)" in line)
    size = format_size
    assert (f"{size(min(peaks))} / {size(round(statistics.median(peaks)))} / "
            f"{size(max(peaks))}") in row
    assert "<details><summary>each of the 40 phases step 1 … step 40</summary>" in text
    assert sum(line.startswith("| &nbsp;&nbsp;torch.load") for line in text.splitlines()) == 40
