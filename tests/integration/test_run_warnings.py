"""What a strategy's libraries warn while it runs is kept with the run, in order, instead
of reaching the parent's stderr (in Jupyter: pink boxes in whatever cell runs then)."""

from __future__ import annotations

from pathlib import Path

import pytest

import bigviz
from bigviz import report
from bigviz.report.notebook import results_table_html


def test_warnings_logging_and_stderr_of_a_run_become_its_notes(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from noisy_strategies import Noisy

    # GIVEN a strategy that warns through warnings, a library logger and fd 2
    r = bigviz.run(Noisy(), model="gpt:4MB", max_shard_size="2MB", work_dir=tmp_path)
    # THEN the run is fine and keeps the three lines, in order
    assert r.outcome == "ok", r.error
    warned = r.recording.meta.get("warnings")
    assert warned == ["FutureWarning: this loader is deprecated",
                      "a library logger warned", "a line written straight to fd 2"], warned
    # AND none of it reached this process's stderr
    assert "deprecated" not in capfd.readouterr().err
    # AND the notebook table and the HTML report's run details list them
    assert "a library logger warned" in results_table_html([r])
    assert 'class="bigviz-notes"' in results_table_html([r])
    page = report.to_html(r)
    assert "a line written straight to fd 2" in page
    # (not as an "environment" fact of the machine)
    assert page.count("a library logger warned") == 1


def test_accelerate_offload_warning_is_a_note_of_the_run(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("accelerate")
    r = bigviz.run("dispatch", model="gpt:8MB", max_shard_size="4MB", device_map="disk",
                   work_dir=tmp_path)
    assert r.outcome == "ok", r.error
    assert any("offloaded to the disk" in w for w in r.recording.meta.get("warnings", []))
    assert "offloaded" not in capfd.readouterr().err
