"""One row model per table: every front end shows the same cells, "agrees with the
prediction" is the runner's verdict alone, one output-path check, one JSON layout."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import pytest
from _fixtures import distributed_result, recording, run_result, sweep

from bigviz import ConfigError, ReportError, report, tables
from bigviz.commands.report import check_out
from bigviz.commands.sweep import summary_table
from bigviz.data.recording import Recording
from bigviz.data.result import PredictionCheck, RunResult, Sweep
from bigviz.report.notebook import phase_table_html, results_table_html
from bigviz.units import format_size

# -- the run table ----------------------------------------------------------------------


def test_every_front_end_shows_the_cells_of_one_run_row(tmp_path: Path) -> None:
    # GIVEN a sweep over two shard sizes (so the short labels name the shard size)
    s = sweep(("naive", "meta"), shard_sizes=(50_000_000, 200_000_000))
    rows = tables.run_rows(s.results)
    # WHEN it is written as CSV, Markdown, notebook HTML and the terminal table
    report.write(s, tmp_path / "s.csv")
    with (tmp_path / "s.csv").open() as fh:
        csv_rows = list(csv.DictReader(fh))
    md = report.write(s, tmp_path / "s.md").read_text()
    nb = results_table_html(s.results)
    term = summary_table(s.results)
    # THEN each shows the row's label and peak, the same in every format
    for row, line in zip(rows, csv_rows, strict=True):
        assert line["label"] == row.label and int(line["ram_peak"]) == row.ram_peak
        assert f"| {row.label} | {format_size(row.ram_peak)} |" in md
        assert row.full_label in nb and row.full_label in term
    assert [r.label for r in rows] == tables.short_labels(s.results)
    assert rows[0].label == "naive · 50MB"


def test_agreement_with_the_prediction_is_the_runners_verdict_only(tmp_path: Path) -> None:
    # GIVEN one run far above its prediction with no verdict, one with a "disagrees" verdict
    # and one within its prediction that the runner nevertheless judged to agree
    far = dataclasses.replace(run_result("naive"), ram_peak=10 * 2**30)
    judged = dataclasses.replace(run_result("meta"))
    judged.checks = dataclasses.replace(
        judged.checks, prediction=PredictionCheck(agrees=False, measured=1, predicted=2)
    )
    ok = dataclasses.replace(run_result("mmap"))
    ok.checks = dataclasses.replace(
        ok.checks, prediction=PredictionCheck(agrees=True, measured=3, predicted=1)
    )
    runs = [far, judged, ok]
    # WHEN the rows are built
    rows = tables.run_rows(runs)
    # THEN only the runner's "disagrees" is flagged: no ±25 % rule of the report's own
    assert [r.off_prediction for r in rows] == [False, True, False]
    assert [r.agrees for r in rows] == [None, False, True]
    assert rows[0].vs_predicted is not None and rows[0].vs_predicted > 1.25
    # AND the HTML report marks exactly that one cell
    page = report.to_html(runs)
    assert len(re.findall(r'class="num off"', page)) == 1
    # AND the notebook and terminal tables say the same
    assert results_table_html(runs).count("<b>NO</b>") == 1
    agrees = [line.split()[-2] for line in summary_table(runs).splitlines()[2:]]
    assert agrees[1:] == ["NO", "yes"]


# -- the phase table --------------------------------------------------------------------


def test_phase_rows_feed_the_html_markdown_csv_and_notebook_tables(tmp_path: Path) -> None:
    # GIVEN a recording with nested phases
    rec = recording(strategy="sharded", model_bytes=50 * 2**20, shards=3)
    rows = tables.phase_rows(rec)
    assert [r.name for r in rows] == [p.name for p in rec.phases]
    # WHEN it is written in every format
    md = report.write(rec, tmp_path / "r.md").read_text()
    report.write(rec, tmp_path / "r.csv")
    with (tmp_path / "r.csv").open() as fh:
        csv_rows = list(csv.DictReader(fh))
    nb = phase_table_html(rec)
    page = report.to_html(rec)
    # THEN each lists every phase with its peak and how it was measured
    assert [c["phase"] for c in csv_rows] == [r.name for r in rows]
    for row in rows:
        assert f'data-phase="{row.name}"' in nb
        assert f"{format_size(row.ram_peak)} | {format_size(row.ram_growth)} | {row.how} |" in md
        assert format_size(row.ram_peak) in page


def test_distributed_phases_are_listed_per_rank() -> None:
    # GIVEN a distributed run with two ranks
    run = distributed_result("shared-mmap", nproc=2)
    # WHEN its phase rows are taken lane by lane
    per_rank = [
        row for rank, lane in tables.lanes(run.recording)
        for row in tables.phase_rows(lane, rank=rank)
    ]  # fmt: skip
    # THEN every rank's own phases are there, tagged with the rank
    assert {r.rank for r in per_rank} == {0, 1}
    assert tables.lanes(Recording(name="x")) == [(None, Recording(name="x"))]


# -- one output-path check --------------------------------------------------------------


@pytest.mark.parametrize("name", ["r.json", "r.html", "r.htm", "r.md", "r.markdown", "r.csv"])
def test_one_output_path_check_takes_every_report_suffix(name: str, tmp_path: Path) -> None:
    assert report.check_output_path(tmp_path / name) == tmp_path / name
    assert check_out(str(tmp_path / name)) == tmp_path / name


def test_output_path_check_refuses_what_write_would_refuse(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown report format '\.pdf'"):
        report.check_output_path(tmp_path / "r.pdf")
    with pytest.raises(ReportError, match="does not exist; create it first"):
        report.check_output_path(tmp_path / "nope" / "r.html")
    (tmp_path / "d.html").mkdir()
    with pytest.raises(ReportError, match="is a folder"):
        report.check_output_path(tmp_path / "d.html")
    (tmp_path / "old.json").write_text("{}")
    with pytest.raises(ReportError, match="already exists"):
        report.check_output_path(tmp_path / "old.json", overwrite=False)
    # the CLI's check is the same one, as a usage error naming the option
    with pytest.raises(ConfigError, match=r"^--md: cannot write report .*nope"):
        check_out(str(tmp_path / "nope" / "r.md"), flag="--md")


# -- one JSON layout --------------------------------------------------------------------


def test_save_and_report_write_produce_the_same_document(tmp_path: Path) -> None:
    # GIVEN a sweep and one of its recordings
    s = sweep(("naive", "meta"))
    rec = s.results[0].recording
    for obj, kind in ((rec, "recording"), (s, "sweep")):
        # WHEN saved by the model and written as a JSON report
        saved = obj.save(tmp_path / f"{kind}-saved.json")
        written = report.write(obj, tmp_path / f"{kind}-report.json")
        # THEN the two files are the same bytes, with the kind in front
        assert saved.read_bytes() == written.read_bytes()
        assert json.loads(saved.read_text())["kind"] == kind
        # AND both readers load it
        assert report.load(saved) == obj
    assert Recording.from_json((tmp_path / "recording-report.json").read_text()) == rec
    assert Sweep.from_json((tmp_path / "sweep-report.json").read_text()) == s


def test_schema_1_files_without_a_kind_still_load(tmp_path: Path) -> None:
    # GIVEN files in the layout Recording.save and Sweep.save wrote before (no "kind")
    s = sweep(("naive",))
    (tmp_path / "s.json").write_text(s.to_json())
    (tmp_path / "r.json").write_text(s.results[0].recording.to_json())
    (tmp_path / "run.json").write_text(s.results[0].to_json())
    # WHEN loaded THEN they come back whole
    assert report.load(tmp_path / "s.json") == s
    assert report.load(tmp_path / "r.json") == s.results[0].recording
    assert report.load(tmp_path / "run.json") == s.results[0]


# -- the package ------------------------------------------------------------------------


def test_tables_all_lists_its_public_names() -> None:
    public = {n for n in vars(tables) if not n.startswith("_") and n != "annotations"}
    modules = {"findings", "labels", "phases", "ranks", "runs"}
    assert set(tables.__all__) == public - modules


def test_findings_and_labels_read_the_runs() -> None:
    runs = [RunResult("naive", "ok", ram_peak=2 * 2**30), RunResult("meta", "oom")]
    assert tables.failures(runs) == ["meta: OOM-killed"]
    assert tables.key_finding(runs) == "naive peaked at 2.0 GiB of RAM above its baseline."
    assert report.key_finding is tables.key_finding
    assert tables.outcome_text("budget_exceeded") == "RAM budget exceeded"


def test_run_rows_show_the_fixed_cost_and_the_budget_with_its_meaning() -> None:
    # GIVEN a run with its worker's fixed cost measured and a RAM budget, and one without
    r = RunResult("meta", "ok", baseline=200 * 2**20, ram_peak=190 * 2**20,
                  fixed_cost={"total": 60 * 2**20, "private": 59 * 2**20,
                              "page_tables": 2**20, "after_fork": 50 * 2**20},
                  params={"ram_budget": 400_000_000})
    bare = RunResult("naive", "ok")
    row, plain = tables.run_rows([r, bare])
    # THEN the row carries the total beside the growth, in words that say what it is
    assert row.fixed_cost == 60 * 2**20
    assert row.fixed_cost_text == "+60.0 MiB private + page tables"
    assert row.ram_budget == 400_000_000
    assert row.budget_text == "400.0 MB of RSS, baseline included"
    # and a run without them says so
    assert (plain.fixed_cost, plain.fixed_cost_text, plain.budget_text) == (None, "—", "")
