"""Issue 17 item 2: cold and warm page cache, with real runs of a real checkpoint.

A cold run starts with its files dropped from the page cache and reads them from storage
(``/proc/PID/io`` of the worker); a warm one finds them cached and reads next to nothing.
Each run says which it was, and the report shows it beside the read throughput."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bigviz
from bigviz._errors import ConfigError
from bigviz.cli import main
from bigviz.data.result import RunResult, Sweep
from bigviz.report import to_html
from bigviz.runner import pagecache

MODEL, SHARD = "gpt:40MB", "20MB"

pytestmark = pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/PID/io")


def _can_go_cold(folder: Path) -> bool:
    """tmpfs and friends keep their pages whatever bigviz asks: cold cannot be tested."""
    probe = folder / "probe.bin"
    probe.write_bytes(b"\1" * (4 << 20))
    state = pagecache.prepare([probe], "cold")
    probe.unlink()
    return state.cached_fraction is not None and state.cached_fraction < 0.5


def _read(r: RunResult) -> int:
    """Bytes the run's top-level phases read from storage, as the worker measured them."""
    got = [p.detail["read_bytes"] for p in r.recording.phases if p.parent is None]
    assert got and all(isinstance(n, int) for n in got), r.recording.phases
    return sum(got)


@pytest.mark.slow
def test_cli_sweep_cold_then_warm_reports_state_and_reads(tmp_path: Path) -> None:
    if not _can_go_cold(tmp_path):
        pytest.skip(f"{tmp_path} keeps its pages (tmpfs?): a run cannot go cold there")
    out_json, out_md = tmp_path / "s.json", tmp_path / "s.md"
    code = main(["sweep", "--model", MODEL, "--strategies", "naive", "--shard-sizes", SHARD,
                 "--cache", "cold,warm", "--work-dir", str(tmp_path / "w"),
                 "--out", str(out_md), "--json", str(out_json)])
    assert code == 0
    sweep = Sweep.from_dict(json.loads(out_json.read_text()))
    cold, warm = sweep.results
    assert (cold.outcome, warm.outcome) == ("ok", "ok")
    size = cold.model_bytes
    assert size > 30e6
    # cold: the files were dropped before the load, and the load read them all from disk
    cnote, wnote = cold.params["cache"], warm.params["cache"]
    assert cnote["asked"] == "cold" and cnote["total"] >= size
    assert cnote["fraction"] is not None and cnote["fraction"] <= 0.05
    assert _read(cold) >= 0.9 * size
    # warm: every page was in the cache, and the load read (almost) nothing
    assert wnote["asked"] == "warm" and wnote["fraction"] == 1.0
    assert wnote["text"] == "warm (100% cached)"
    assert _read(warm) <= 0.02 * size
    # each top-level phase says its rate; the phases that read carry a positive one
    assert any((p.detail.get("read_gbps") or 0) > 0 for p in cold.recording.phases)
    # the labels tell the two apart, and the report shows the state and the GB/s
    assert cold.label.endswith("cold") and warm.label.endswith("warm")
    md = out_md.read_text()
    assert cnote["text"] in md and "warm (100% cached)" in md
    assert "GB/s" in md
    assert "| naive · cold |" in md and "| naive · warm |" in md  # the rows tell them apart
    html = to_html(sweep)
    assert "<th>page cache</th>" in html and cnote["text"] in html


@pytest.mark.slow
def test_run_as_is_measures_the_cache_it_found(tmp_path: Path) -> None:
    # GIVEN a checkpoint a previous run just loaded (so its pages are cached)
    warm = bigviz.run("naive", model=MODEL, max_shard_size=SHARD, work_dir=tmp_path,
                      cache="warm")
    # WHEN the next run leaves the cache as it is
    again = bigviz.run("naive", model=MODEL, max_shard_size=SHARD, work_dir=tmp_path)
    # THEN it still says what it found: warm, measured, with no label change
    assert warm.ok and again.ok
    note = again.params["cache"]
    assert note["asked"] == "as-is" and note["fraction"] == 1.0
    assert note["text"] == "100% cached"
    assert "cold" not in again.label and "warm" not in again.label
    assert _read(again) <= 0.02 * again.model_bytes


def test_cli_refuses_an_unknown_cache_state_in_one_line(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sweep", "--model", MODEL, "--cache", "cold,lukewarm"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "lukewarm" in err and "--cache" in err and "cold" in err and "warm" in err


def test_api_refuses_bad_cache_values_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lukewarm"):
        bigviz.sweep(MODEL, strategies=["naive"], cache=["lukewarm"], work_dir=tmp_path)
    with pytest.raises(ConfigError, match="one state"):
        bigviz.run("naive", model=MODEL, cache=["cold", "warm"],  # type: ignore[arg-type]
                   work_dir=tmp_path)
    with pytest.raises(ConfigError, match="nproc"):
        bigviz.sweep(MODEL, strategies=["every-rank-loads"], cache="cold", nproc=2,
                     work_dir=tmp_path)
    assert not (tmp_path / "checkpoints").exists()  # nothing was saved
