"""Distributed runs: per-rank lanes, node totals that count shared pages once, a per-rank
table, the key finding between distributed strategies, and exact round-trips of ranks."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from _fixtures import distributed_result, distributed_sweep, run_result

from bigviz import ConfigError, plots, report
from bigviz.data.recording import Recording, Series
from bigviz.data.result import RunResult, Sweep
from bigviz.tables.labels import short_labels
from bigviz.tables.ranks import contributions, rank_rows
from bigviz.units import format_size


def _texts(ax: object) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in ax.findobj(Text)]  # type: ignore[attr-defined]


def _div(label: str) -> int:
    return 2**30 if "GiB" in label else 2**20


def _lanes_and_node(fig: object) -> tuple[list[object], object]:
    axes = fig.axes  # type: ignore[attr-defined]
    lanes = [ax for ax in axes if str(ax.get_gid() or "").startswith("rank-")]
    node = next(ax for ax in axes if ax.get_gid() == "node")
    return lanes, node


# -- plots -----------------------------------------------------------------------------


def test_timeline_of_a_distributed_run_has_one_lane_per_rank_on_one_scale() -> None:
    # GIVEN a 3-rank run whose ranks start at different times
    run = distributed_result("every-rank-loads", nproc=3, seconds=0.6)
    # WHEN its timeline is drawn (timeline hands distributed runs to ranks())
    fig = plots.timeline(run)
    lanes, _node = _lanes_and_node(fig)
    # THEN there is a lane per rank, in rank order, all on the same RAM scale, each
    # naming its own phases at its own times
    assert [ax.get_gid() for ax in lanes] == ["rank-0", "rank-1", "rank-2"]  # type: ignore[attr-defined]
    assert len({ax.get_ylim() for ax in lanes}) == 1  # type: ignore[attr-defined]
    for ax, lane in zip(lanes, run.recording.ranks, strict=True):
        assert ax.get_ylabel() == f"rank {lane.rank}"  # type: ignore[attr-defined]
        load = lane.phase("load")
        named = [
            t
            for t in ax.texts  # type: ignore[attr-defined]
            if t.get_text() == "load"
        ]
        assert named and named[0].get_position()[0] == pytest.approx((load.start + load.end) / 2)
    # and the scale is big enough for the highest rank's RSS
    top = max(max(lane.series["ram.rss"].v) for lane in run.recording.ranks)
    unit = next(t for t in _texts(fig) if t.startswith("RAM per rank ("))
    assert lanes[0].get_ylim()[1] * _div(unit) >= top  # type: ignore[attr-defined]


def test_node_panel_draws_node_pss_solid_and_the_rss_sum_dashed_at_their_values() -> None:
    # GIVEN shared-mmap on 2 ranks: both map the same file, so Σ RSS counts it twice
    run = distributed_result("shared-mmap", nproc=2, seconds=0.6)
    fig = plots.timeline(run)
    _lanes, node = _lanes_and_node(fig)
    div = _div(node.get_ylabel())  # type: ignore[attr-defined]
    lines = {str(ln.get_label()): ln for ln in node.get_lines()}  # type: ignore[attr-defined]
    pss = next(ln for lab, ln in lines.items() if lab.startswith("node PSS (Σ"))
    rss = next(ln for lab, ln in lines.items() if lab.startswith("Σ RSS"))
    # THEN each line peaks at its series' peak, PSS solid, the RSS sum dashed
    assert round(np.max(pss.get_ydata()) * div) == max(run.recording.series["node.pss"].v)
    assert round(np.max(rss.get_ydata()) * div) == max(run.recording.series["node.rss"].v)
    assert pss.get_linestyle() == "-" and rss.get_linestyle() == "--"
    # and the gap between them is the file counted once per extra rank (≈ model size)
    gap = max(run.recording.series["node.rss"].v) - max(run.recording.series["node.pss"].v)
    assert gap == pytest.approx(run.model_bytes, rel=0.05)


def test_a_failed_rank_is_flagged_in_its_own_lane_only() -> None:
    run = distributed_result("every-rank-loads", nproc=3, outcome="oom", seconds=0.5)
    lanes, _node = _lanes_and_node(plots.timeline(run))
    flagged = [any("OOM-killed" in t for t in _texts(ax)) for ax in lanes]
    assert flagged == [False, True, False]
    assert run.phase_reached and any(run.phase_reached in t for t in _texts(lanes[1]))


def test_many_ranks_show_rank_0_the_failed_rank_and_the_highest_peaks() -> None:
    run = distributed_result("rank0-broadcast", nproc=10, outcome="oom", seconds=0.3)
    fig = plots.ranks(run, max_lanes=4)
    lanes, _node = _lanes_and_node(fig)
    gids = [ax.get_gid() for ax in lanes]  # type: ignore[attr-defined]
    assert len(gids) == 4 and gids[0] == "rank-0" and "rank-1" in gids
    assert any("showing 4 of 10 ranks" in t for t in _texts(fig))


def test_without_sampled_node_pss_the_exact_snapshot_is_drawn() -> None:
    # GIVEN a run where smaps_rollup was too slow to sample (real runs do this): the node
    # PSS series is empty, only the runner's snapshot at 'loaded' exists
    run = distributed_result("shared-mmap", seconds=0.5)
    run.recording.series["node.pss"] = Series("node.pss")
    # WHEN drawn
    _lanes, node = _lanes_and_node(plots.timeline(run))
    # THEN the node panel shows the snapshot at Σ (baseline + loaded PSS) and says why no line
    div = _div(node.get_ylabel())  # type: ignore[attr-defined]
    snap = next(
        ln
        for ln in node.get_lines()  # type: ignore[attr-defined]
        if str(ln.get_label()).startswith("node PSS snapshot")
    )
    expected = sum(
        c.loaded["pss"] + c.baseline["pss"]
        for c in run.checks.ranks
    )
    assert round(float(snap.get_ydata()[0]) * div) == expected
    assert any("no sampled node PSS" in t for t in _texts(node))


def test_ranks_refuses_a_single_process_run() -> None:
    with pytest.raises(ConfigError, match="use timeline"):
        plots.ranks(run_result("meta", seconds=0.2))
    with pytest.raises(ConfigError, match="max_lanes"):
        plots.ranks(distributed_result(seconds=0.2), max_lanes=0)


def test_peaks_stacks_each_ranks_pss_share_to_the_node_peak() -> None:
    s = distributed_sweep(seconds=0.5)
    fig = plots.peaks(s)
    ax = fig.axes[0]
    div = _div(ax.get_ylabel())
    assert ax.get_ylabel().startswith("node RAM above baseline")
    for i, run in enumerate(s.results):
        ranks, shares, source = contributions(run)
        assert source and ranks == [0, 1]
        bars = [p for p in ax.patches if str(p.get_gid() or "").startswith(f"pss-{i}-rank-")]
        # THEN one segment per rank, stacked, adding up to the run's node PSS peak
        assert len(bars) == 2
        top = max(b.get_y() + b.get_height() for b in bars)
        assert top * div == pytest.approx(run.ram_peak, abs=1)
        assert sum(shares) == run.ram_peak


# -- the numbers in reports --------------------------------------------------------------


def test_per_rank_rows_hold_each_ranks_figures_above_its_baseline() -> None:
    run = distributed_result("shared-mmap", nproc=2, seconds=0.5)
    rows = rank_rows(run)
    assert [r.rank for r in rows] == [0, 1]
    for row, lane in zip(rows, run.recording.ranks, strict=True):
        base = lane.marks[0].detail
        assert row.file == max(lane.series["ram.file"].v) - base["file"]
        assert row.anon == max(lane.series["ram.anon"].v) - base["anon"]
        # shared file pages: each rank's PSS holds half of them, its RSS all of them
        assert row.pss is not None and row.file is not None
        assert row.pss == pytest.approx(row.file / 2, rel=0.05)
        assert row.phase_reached == "loaded" and row.status == "ok"
    # and the same rows come out of a bare merged Recording (no runner checks)
    bare = rank_rows(run.recording)
    assert [(r.anon, r.file) for r in bare] == [(r.anon, r.file) for r in rows]


def test_key_finding_compares_node_ram_with_every_rank_loads() -> None:
    s = distributed_sweep(("every-rank-loads", "rank0-broadcast"), seconds=0.5)
    erl, r0b = s.results
    sentence = report.key_finding(s.results) or ""
    pct = round(((r0b.ram_peak or 0) - (erl.ram_peak or 0)) / (erl.ram_peak or 1) * 100)
    assert sentence == (
        f"rank0-broadcast cuts node RAM on 2 ranks from {format_size(erl.ram_peak)} "
        f"(every-rank-loads) to {format_size(r0b.ram_peak)} (−{-pct}%)."
    )


def test_key_finding_says_when_summing_rss_would_overstate_node_ram() -> None:
    s = distributed_sweep(seconds=0.5)
    sentence = report.key_finding(s.results) or ""
    assert sentence.startswith("shared-mmap cuts node RAM on 2 ranks from ")
    mmap = s.results[2]
    claimed = mmap.checks.node.rss_peak_sum
    assert f"summing the ranks' RSS would claim {format_size(claimed)}" in sentence


def test_key_finding_compares_runs_on_the_same_number_of_ranks() -> None:
    # GIVEN the strategies on 2 and on 4 ranks: the 4-rank shared-mmap is far below the
    # 2-rank every-rank-loads too, but that is not a fair comparison
    s = distributed_sweep(("every-rank-loads", "shared-mmap"), nprocs=(2, 4), seconds=0.4)
    erl4 = next(r for r in s.results if r.strategy == "every-rank-loads" and r.params["nproc"] == 4)
    sentence = report.key_finding(s.results) or ""
    assert sentence.startswith(
        f"shared-mmap cuts node RAM on 4 ranks from {format_size(erl4.ram_peak)} "
        "(every-rank-loads) to "
    )
    assert short_labels(s.results)[0] == "every-rank-loads · 2 ranks"


def test_diff_matches_runs_with_their_own_rank_count() -> None:
    base = distributed_sweep(("every-rank-loads",), nprocs=(2, 4), seconds=0.3)
    new = distributed_sweep(("every-rank-loads",), nprocs=(2, 4), seconds=0.3)
    # a 10% regression on 4 ranks only
    new.results[1].ram_peak = int((new.results[1].ram_peak or 0) * 1.10)
    d = report.diff(base, new, threshold="5%")
    assert [rd.status for rd in d.runs] == ["matched", "matched"]
    assert [r.label for r in d.regressions] == ["every-rank-loads · 4 ranks"]


# -- report files ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["run", "sweep", "recording"])
def test_json_round_trip_of_nested_ranks_is_exact(kind: str, tmp_path: Path) -> None:
    s = distributed_sweep(seconds=0.3, outcomes={"rank0-broadcast": "oom"})
    obj: Recording | RunResult | Sweep = {
        "run": s.results[1],
        "sweep": s,
        "recording": s.results[0].recording,
    }[kind]
    first = report.write(obj, tmp_path / "a.json")
    back = report.load(first)
    assert back == obj
    second = report.write(back, tmp_path / "b.json")
    assert first.read_bytes() == second.read_bytes()
    rec = (
        back.recording
        if isinstance(back, RunResult)
        else (back.results[0].recording if isinstance(back, Sweep) else back)
    )
    assert isinstance(rec, Recording)
    assert [lane.rank for lane in rec.ranks] == [0, 1]
    assert all(isinstance(lane, Recording) for lane in rec.ranks)


def test_html_shows_lanes_and_a_per_rank_table_for_each_run(tmp_path: Path) -> None:
    s = distributed_sweep(seconds=0.2, outcomes={"rank0-broadcast": "oom"})
    page = report.write(s, tmp_path / "d.html").read_text()
    # one lanes figure per run, one per-rank table per run with a row per rank
    assert page.count("<figcaption>Per-rank lanes and node total</figcaption>") == 3
    assert page.count('<table class="sortable ranks">') == 3
    assert len(re.findall(r'<tr data-rank="\d+">', page)) == 3 * 2
    assert "sum of the ranks&#x27; PSS" in page or "sum of the ranks' PSS" in page
    assert "failed: process killed" in page and "stopped" in page
    assert page.count("<details><summary>Phases of rank 1</summary>") == 3


def test_markdown_has_lanes_pngs_and_per_rank_tables(tmp_path: Path) -> None:
    s = distributed_sweep(("every-rank-loads", "shared-mmap"), seconds=0.2)
    md = report.write(s, tmp_path / "pr.md").read_text()
    assert md.count("| rank | peak RSS |") == 2
    for i in (1, 2):
        assert f"(pr.ranks-{i}.png)" in md
        assert (tmp_path / f"pr.ranks-{i}.png").read_bytes()[:4] == b"\x89PNG"
    mmap = rank_rows(s.results[1])
    assert f"| 1 | {format_size(mmap[1].ram_peak)} |" in md


def test_csv_timeline_and_phases_carry_the_rank(tmp_path: Path) -> None:
    run = distributed_result("rank0-broadcast", nproc=3, seconds=0.3)
    report.write([run], tmp_path / "d.csv")
    with open(tmp_path / "d.timeline.csv", newline="") as fh:
        samples = list(csv.DictReader(fh))
    rec = run.recording
    expected = sum(len(s.v) for s in rec.series.values()) + sum(
        len(s.v) for lane in rec.ranks for s in lane.series.values()
    )
    assert len(samples) == expected
    rank1 = [int(x["value"]) for x in samples if x["rank"] == "1" and x["series"] == "ram.anon"]
    assert rank1 == rec.ranks[1].series["ram.anon"].v
    node = [int(x["value"]) for x in samples if x["series"] == "node.pss"]
    assert node == rec.series["node.pss"].v
    assert {x["rank"] for x in samples if x["series"].startswith("node.")} == {""}
    with open(tmp_path / "d.phases.csv", newline="") as fh:
        phases = list(csv.DictReader(fh))
    assert [(p["rank"], p["phase"]) for p in phases] == [
        (str(lane.rank), p.name) for lane in rec.ranks for p in lane.phases
    ]
    with open(tmp_path / "d.csv", newline="") as fh:
        assert next(csv.DictReader(fh))["nproc"] == "3"


def test_a_bare_distributed_recording_reports_in_every_format(tmp_path: Path) -> None:
    rec = distributed_result("shared-mmap", seconds=0.3).recording
    for suffix in (".json", ".html", ".md", ".csv"):
        assert report.write(rec, tmp_path / f"r{suffix}").stat().st_size > 0
    assert "| rank | peak RSS |" in (tmp_path / "r.md").read_text()
    assert report.load(tmp_path / "r.json") == rec


# -- a real distributed run ---------------------------------------------------------------


@pytest.mark.slow
def test_a_real_two_rank_run_reports_with_lanes(tmp_path: Path) -> None:
    # GIVEN a real 2-rank shared-mmap load (torch.distributed, gloo)
    from bigviz.runner.launcher import run_distributed

    run = run_distributed(
        "shared-mmap",
        nproc=2,
        model="gpt:16MB",
        max_shard_size="8MB",
        work_dir=tmp_path / "w",
        timeout=120,
    )
    assert run.outcome == "ok", run.error
    # WHEN it is drawn and reported
    lanes, _node = _lanes_and_node(plots.timeline(run))
    page = report.write(run, tmp_path / "real.html").read_text()
    report.write(run, tmp_path / "real.json")
    # THEN both ranks have a lane and a table row, and the JSON is exact
    assert [ax.get_gid() for ax in lanes] == ["rank-0", "rank-1"]  # type: ignore[attr-defined]
    assert len(re.findall(r'<tr data-rank="\d+">', page)) == 2
    assert report.load(tmp_path / "real.json") == run
    rows = rank_rows(run)
    assert all(r.file is not None and r.pss is not None for r in rows)
