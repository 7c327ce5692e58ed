"""Reports: exact JSON round-trips, Markdown and CSV people can use, safe HTML, clear
errors with no partial files, and a diff that gates CI."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pytest
from _fixtures import recording, run_result, sweep

from bigviz import ConfigError, ReportError, report
from bigviz.data.recording import SCHEMA_VERSION, Recording
from bigviz.data.result import RunResult, Sweep
from bigviz.units import format_size

XSS = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def small() -> Sweep:
    return sweep(("naive", "sharded", "meta", "mmap"), seconds=0.4)


# -- JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["recording", "run", "sweep", "runs"])
def test_json_file_round_trip_is_byte_identical(kind: str, small: Sweep, tmp_path: Path) -> None:
    obj: object = {
        "recording": small.results[0].recording,
        "run": small.results[1],
        "sweep": small,
        "runs": small.results[:2],
    }[kind]
    first = report.write(obj, tmp_path / "a.json")  # type: ignore[arg-type]
    back = report.load(first)
    assert back == obj
    second = report.write(back, tmp_path / "b.json")
    assert first.read_bytes() == second.read_bytes()
    assert json.loads(first.read_text())["kind"] == kind


def test_files_saved_by_the_model_load_too(small: Sweep, tmp_path: Path) -> None:
    small.save(tmp_path / "s.json")
    small.results[0].recording.save(tmp_path / "r.json")
    assert report.load(tmp_path / "s.json") == small
    assert report.load(tmp_path / "r.json") == small.results[0].recording


def test_truncated_json_is_a_clear_error(small: Sweep, tmp_path: Path) -> None:
    path = report.write(small, tmp_path / "s.json")
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ReportError, match=r"s\.json.*truncated"):
        report.load(path)


def test_newer_or_unknown_schema_says_to_upgrade(small: Sweep, tmp_path: Path) -> None:
    data = json.loads(report.dumps(small))
    data["schema"] = SCHEMA_VERSION + 1
    (tmp_path / "new.json").write_text(json.dumps(data))
    newer = rf"new\.json.*schema version {SCHEMA_VERSION + 1}.*upgrade bigviz"
    with pytest.raises(ReportError, match=newer):
        report.load(tmp_path / "new.json")
    data["schema"] = SCHEMA_VERSION
    data["kind"] = "hologram"
    (tmp_path / "kind.json").write_text(json.dumps(data))
    with pytest.raises(ReportError, match="unknown report kind 'hologram'"):
        report.load(tmp_path / "kind.json")


def test_foreign_files_are_refused_with_the_reason(small: Sweep, tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text('{"name": "not ours", "rows": []}')
    with pytest.raises(ReportError, match="not a bigviz report"):
        report.load(tmp_path / "other.json")
    html_path = report.write(small.results[:1], tmp_path / "r.html")
    with pytest.raises(ReportError, match="HTML report; only JSON reports load back"):
        report.load(html_path)
    with pytest.raises(ReportError, match="no report at"):
        report.load(tmp_path / "missing.json")
    bad = json.loads(report.dumps(small))
    bad["results"][0]["ram_peak"] = "lots"
    (tmp_path / "field.json").write_text(json.dumps(bad))
    with pytest.raises(ReportError, match=r"field\.json.*ram_peak"):
        report.load(tmp_path / "field.json")


# -- writing: formats, failures, atomicity ---------------------------------------------


def test_unwritable_paths_raise_naming_the_path_and_leave_nothing(
    small: Sweep, tmp_path: Path
) -> None:
    # a folder that does not exist
    missing = tmp_path / "nope" / "out.html"
    with pytest.raises(ReportError, match=r"nope/out\.html.*does not exist"):
        report.write(small, missing)
    assert not missing.parent.exists()
    # a file where a folder should be
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReportError, match=r"file/out\.json"):
        report.write(small, tmp_path / "file" / "out.json")
    # a folder no one can create files in (even root cannot in /proc)
    with pytest.raises(ReportError, match=r"/proc/bigviz-out\.json"):
        report.write(small, "/proc/bigviz-out.json")
    # a folder in the way
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(ReportError, match="is a folder"):
        report.write(small, tmp_path / "dir.json")


def test_a_failed_write_keeps_the_old_file_and_no_temporary(
    small: Sweep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.json"
    target.write_text("old report")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ReportError, match=r"out\.json.*No space left on device"):
        report.write(small, target)
    assert target.read_text() == "old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_format_and_overwrite_options(small: Sweep, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown report format '\.txt'.*\.json, \.html"):
        report.write(small, tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()
    path = report.write(small, tmp_path / "out.txt", format="json")
    assert isinstance(report.load(path), Sweep)
    with pytest.raises(ReportError, match="already exists"):
        report.write(small, path, format="json", overwrite=False)
    with pytest.raises(ConfigError, match="cannot report a dict"):
        report.write({"a": 1}, tmp_path / "x.json")  # type: ignore[arg-type]


# -- key finding and Markdown ----------------------------------------------------------


def test_key_finding_compares_best_with_naive_from_the_data(small: Sweep) -> None:
    # GIVEN runs whose lowest peaks lie within noise of each other (< 5 % apart)
    naive = next(r for r in small.results if r.strategy == "naive")
    low = min(r.ram_peak or 0 for r in small.results)
    tied = [r for r in small.results if (r.ram_peak or 0) - low < 16 * 2**20
            or (r.ram_peak or 0) - low < 0.05 * (r.ram_peak or 0)]
    # THEN the tie goes to lower anonymous memory, then less time
    best = min(tied, key=lambda r: (r.ram_anon_peak, r.seconds))
    assert best.strategy != "naive" and naive.ram_peak and best.ram_peak
    pct = round((best.ram_peak - naive.ram_peak) / naive.ram_peak * 100)
    sentence = report.key_finding(small.results) or ""
    # AND it is compared with naive, from the data
    assert sentence.startswith(
        f"{best.strategy} cuts peak RAM from {format_size(naive.ram_peak)} (naive) to "
        f"{format_size(best.ram_peak)} (−{-pct}%)"
    )
    if (best.ram_file_peak or 0) > (best.ram_anon_peak or 0):
        assert sentence.endswith(f", of which {format_size(best.ram_file_peak)} is "
                                 "file-backed and reclaimable.")
    else:
        assert sentence.endswith(f"(−{-pct}%).")


def test_key_finding_without_naive_uses_the_worst_and_flags_file_backed() -> None:
    runs = [run_result("sharded", seconds=0.3), run_result("mmap", seconds=0.3)]
    # mmap's peak is mostly page cache; make it the cheapest to see the note
    runs[1].ram_peak = (runs[1].ram_peak or 0) // 4
    sentence = report.key_finding(runs) or ""
    assert sentence.startswith("mmap cuts peak RAM from ")
    assert "(sharded)" in sentence and "file-backed and reclaimable" in sentence


def test_markdown_has_finding_table_and_png_plots_beside_it(small: Sweep, tmp_path: Path) -> None:
    s = sweep(("naive", "meta"), seconds=0.3, phase_name=XSS)
    s.results[0].model = "gpt|<b>x</b>"
    md = report.write(s, tmp_path / "pr.md").read_text()
    assert (report.key_finding(s.results) or "x")[:20] in md
    assert "| run | peak RAM |" in md
    assert len(re.findall(r"^\| (naive|meta) ", md, flags=re.M)) == 2
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links and all("/" not in link for link in links)  # relative, beside the file
    for link in links:
        assert (tmp_path / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<b>" not in md and "<script>" not in md


# -- CSV -------------------------------------------------------------------------------


def test_csv_summary_phases_and_timeline_hold_the_numbers(small: Sweep, tmp_path: Path) -> None:
    small_runs = small.results[:2]
    report.write(small_runs, tmp_path / "out.csv")
    with open(tmp_path / "out.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["strategy"] for r in rows] == [r.strategy for r in small_runs]
    assert [int(r["ram_peak"]) for r in rows] == [r.ram_peak for r in small_runs]
    assert [int(r["predicted_ram_peak"]) for r in rows] == [
        r.predicted.ram_peak for r in small_runs if r.predicted
    ]
    with open(tmp_path / "out.timeline.csv", newline="") as fh:
        samples = list(csv.DictReader(fh))
    expected = sum(len(s.v) for r in small_runs for s in r.recording.series.values())
    assert len(samples) == expected
    first = small_runs[0].recording.series["ram.rss"]
    rss = [int(x["value"]) for x in samples if x["run"] == "1" and x["series"] == "ram.rss"]
    assert rss == first.v
    with open(tmp_path / "out.phases.csv", newline="") as fh:
        phases = list(csv.DictReader(fh))
    assert len(phases) == sum(len(r.recording.phases) for r in small_runs)


def test_csv_neutralises_spreadsheet_formulas(tmp_path: Path) -> None:
    run = run_result("meta", seconds=0.2)
    run.model = '=HYPERLINK("http://x")'
    report.write([run], tmp_path / "out.csv")
    with open(tmp_path / "out.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["model"].startswith("'=")


def test_a_bare_recording_reports_in_every_format(tmp_path: Path) -> None:
    rec = recording(strategy="mmap", seconds=0.3, name="my load")
    for suffix in (".json", ".html", ".md", ".csv"):
        report.write(rec, tmp_path / f"rec{suffix}")
    assert report.load(tmp_path / "rec.json") == rec
    assert "Peak RSS" in (tmp_path / "rec.md").read_text()
    with open(tmp_path / "rec.csv", newline="") as fh:
        assert [r["phase"] for r in csv.DictReader(fh)] == [p.name for p in rec.phases]


@pytest.mark.parametrize(
    "obj",
    [
        Sweep(),
        [
            RunResult("naive", "crashed", error="worker exited with code -11"),
            RunResult("meta", "oom"),
        ],
        Recording(name="nothing measured"),
    ],
    ids=["empty-sweep", "runs-that-never-started", "empty-recording"],
)
def test_degenerate_inputs_still_report_without_warnings(obj: object, tmp_path: Path) -> None:
    # warnings are errors in this suite: an empty legend or an empty axis would fail here
    for suffix in (".json", ".html", ".md", ".csv"):
        assert report.write(obj, tmp_path / f"x{suffix}").stat().st_size > 0  # type: ignore[arg-type]
    assert report.load(tmp_path / "x.json") == obj


# -- HTML (text-level; the browser test is in test_report_html.py) -----------------------


def test_html_escapes_user_strings_and_allows_only_its_own_script(tmp_path: Path) -> None:
    s = sweep(("naive", "meta"), seconds=0.3, phase_name=XSS)
    s.command = f"bigviz sweep --model '{XSS}'"
    s.results[0].error = '"><img src=x onerror=alert(2)>'
    page = report.write(s, tmp_path / "r.html").read_text()
    assert XSS not in page and "<img" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3  # table, SVG, command
    assert page.count("<script") == 1
    assert "default-src 'none'" in page
    # nothing that a browser would fetch: no src/href to a URL, no @import, no url()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "@import" not in page and not re.search(r"url\((?!#)", page)  # url(#clip) is local
    assert page.count("<svg") >= 2 + 2  # peaks, overlay, one timeline per run


# -- diff ------------------------------------------------------------------------------


def test_a_planted_10_percent_regression_is_caught_at_5_and_passes_at_20(tmp_path: Path) -> None:
    base = sweep(("naive", "meta"), seconds=0.3)
    new = sweep(("naive", "meta"), seconds=0.3, scale={"meta": 1.10})
    meta_b, meta_n = base.results[1], new.results[1]
    assert meta_b.ram_peak and meta_n.ram_peak
    assert meta_n.ram_peak / meta_b.ram_peak - 1 == pytest.approx(0.10, abs=0.01)

    caught = report.diff(base, new, threshold="5%")
    assert caught.exit_code == 1
    assert {(r.label, r.metric) for r in caught.regressions} == {
        ("meta", "ram_peak"),
        ("meta", "ram_anon_peak"),
    }
    assert "meta" in caught.to_text() and "REGRESSED" in caught.to_text()
    assert "+10%" in caught.to_markdown()

    passed = report.diff(base, new, threshold=0.20)
    assert passed.exit_code == 0 and passed.regressions == []

    # the same through files, as `bigviz diff base.json new.json --threshold 5%` calls it
    report.write(base, tmp_path / "base.json")
    report.write(new, tmp_path / "new.json")
    assert report.diff_files(tmp_path / "base.json", tmp_path / "new.json", "5%").exit_code == 1
    assert report.diff_files(tmp_path / "base.json", tmp_path / "new.json", "20%").exit_code == 0
    json.dumps(caught.to_dict())  # serialisable for --json


def test_diff_flags_runs_that_stop_finishing_and_lists_unmatched() -> None:
    base = sweep(("naive", "meta"), seconds=0.3)
    new = sweep(("naive", "meta", "mmap"), seconds=0.3, outcomes={"meta": "oom"})
    d = report.diff(base, new, threshold="50%")
    assert [r.metric for r in d.regressions] == ["outcome"]
    assert [rd.status for rd in d.runs] == ["matched", "matched", "added"]
    assert d.exit_code == 1


def test_diff_ignores_tiny_absolute_growth_and_noisy_time() -> None:
    base = run_result("meta", seconds=0.3)
    new = run_result("meta", seconds=0.3)
    new.ram_peak = (base.ram_peak or 0) + 500_000  # < 1 MiB
    new.seconds = base.seconds * 3
    assert report.diff(base, new, threshold=0.0).exit_code == 0
    assert report.diff(base, new, threshold=0.0, min_bytes=0).exit_code == 1


@pytest.mark.parametrize("bad", ["-5%", "five", "nan", "", True, None])
def test_bad_thresholds_are_config_errors(bad: object) -> None:
    with pytest.raises(ConfigError, match="threshold"):
        report.diff([], [], threshold=bad)  # type: ignore[arg-type]


def test_threshold_forms() -> None:
    assert report.parse_threshold("5%") == pytest.approx(0.05)
    assert report.parse_threshold(" 12.5 % ".replace(" %", "%")) == pytest.approx(0.125)
    assert report.parse_threshold("0.05") == 0.05
    assert report.parse_threshold(0) == 0.0


def test_diff_refuses_recordings_clearly(tmp_path: Path) -> None:
    report.write(Recording(name="r"), tmp_path / "r.json")
    report.write([run_result(seconds=0.2)], tmp_path / "s.json")
    with pytest.raises(ReportError, match=r"r\.json.*holds a Recording"):
        report.diff_files(tmp_path / "r.json", tmp_path / "s.json")
    assert isinstance(report.load(tmp_path / "s.json"), list)
    assert isinstance(report.load(tmp_path / "s.json")[0], RunResult)  # type: ignore[index]


# -- a real sweep ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_tiny_sweep_reports_in_every_format(tmp_path: Path) -> None:
    # GIVEN a real sweep: two strategies, each in its own worker process
    import bigviz
    import bigviz.runner

    try:
        s = bigviz.sweep(
            "gpt:8MB", strategies=["naive", "meta"], shard_sizes=["4MB"], work_dir=tmp_path / "w"
        )
    finally:
        bigviz.close()
    assert [r.outcome for r in s.results] == ["ok", "ok"]
    # WHEN it is written in every format
    for suffix in (".json", ".html", ".md", ".csv"):
        report.write(s, tmp_path / f"real{suffix}")
    # THEN the JSON is exact, the finding is computed from the measured peaks, and the
    # Markdown names both runs
    assert report.load(tmp_path / "real.json") == s
    naive, meta = s.results
    finding = report.key_finding(s.results) or ""
    gap = (naive.ram_peak or 0) - (meta.ram_peak or 0)
    if gap >= 16 * 2**20 and gap >= 0.05 * (naive.ram_peak or 0):
        assert finding.startswith(f"meta cuts peak RAM from {format_size(naive.ram_peak)}")
    else:  # an 8 MB model's copies are within noise (16 MiB): no cut is claimed
        assert finding.startswith("No strategy differs beyond noise: peak RAM ")
    md = (tmp_path / "real.md").read_text()
    assert "| naive |" in md and "| meta |" in md
    assert s.command in (tmp_path / "real.html").read_text().replace("&#x27;", "'")
