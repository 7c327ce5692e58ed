"""The HTML report in a real headless Chromium: offline, no errors, readable, and safe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _browser import ARTIFACTS, Watch, module_browser, require_chromium  # noqa: F401 (browser)
from _fixtures import distributed_sweep, sweep

from bigviz import report

XSS = "<script>alert(1)</script>"

pytestmark = pytest.mark.browser

require_chromium()


@pytest.fixture(scope="module")
def page_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A sweep report with a GPU map, a failed run and hostile names everywhere."""
    s = sweep(
        ("naive", "sharded", "meta", "mmap"),
        device_maps=("cpu",),
        shard_sizes=(50_000_000, 500_000_000),
        outcomes={"sharded": "budget_exceeded"},
        seconds=0.5,
        phase_name=XSS,
    )
    s.command = f"bigviz sweep --model '{XSS}' --strategies naive,sharded,meta,mmap"
    s.meta["host"] = XSS
    path = tmp_path_factory.mktemp("html") / "report.html"
    report.write(s, path)
    return path, len(s.results)


def test_report_opens_offline_with_table_svgs_and_no_errors(
    browser: Any, page_file: tuple[Path, int]
) -> None:
    path, n_runs = page_file
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    watch = Watch(page)
    page.goto(path.as_uri())
    page.wait_for_load_state("load")

    assert watch.outside == []
    assert watch.errors == []
    assert page.locator("table.summary tbody tr").count() == n_runs
    # peaks + sweep curves + overlay + one timeline per run, each drawn (non-zero box)
    svgs = page.locator("figure svg")
    assert svgs.count() == 3 + n_runs
    box = svgs.first.bounding_box()
    assert box is not None and box["width"] > 600 and box["height"] > 200
    finding = page.locator("#finding").inner_text()
    assert "cuts peak RAM from" in finding
    # the page fits the window: no sideways scrolling of the whole report
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"))
    page.screenshot(path=str(ARTIFACTS / "report-full.png"), full_page=True)
    page.close()


def test_hostile_names_show_as_text_and_never_run(
    browser: Any, page_file: tuple[Path, int]
) -> None:
    path, _n = page_file
    page = browser.new_page()
    watch = Watch(page)
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    # in the phase tables, the SVG timelines, the environment and the command
    assert page.get_by_text(XSS, exact=True).count() >= 2
    assert XSS in page.locator("pre code").first.inner_text()
    svg_texts = page.locator("svg text").all_text_contents()
    assert any(XSS in t for t in svg_texts)
    assert page.locator("script").count() == 1  # ours only
    assert watch.dialogs == []
    assert watch.errors == []
    page.close()


def test_clicking_a_column_sorts_the_summary(browser: Any, page_file: tuple[Path, int]) -> None:
    path, _n = page_file
    page = browser.new_page()
    watch = Watch(page)
    page.goto(path.as_uri())
    header = page.locator("table.summary th", has_text="peak RAM")
    col = header.evaluate("th => th.cellIndex")

    def column() -> list[float]:
        return [
            float(v)
            for v in page.locator(f"table.summary tbody tr td:nth-child({col + 1})").evaluate_all(
                "tds => tds.map(td => td.getAttribute('data-v'))"
            )
        ]

    header.click()
    assert column() == sorted(column())
    header.click()
    assert column() == sorted(column(), reverse=True)
    assert watch.errors == []
    page.close()


@pytest.fixture(scope="module")
def ranks_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of the three distributed strategies on 2 ranks, one OOM-killed."""
    s = distributed_sweep(seconds=0.4, outcomes={"rank0-broadcast": "oom"}, phase_name=XSS)
    path = tmp_path_factory.mktemp("ranks") / "ranks.html"
    report.write(s, path)
    return path


def test_per_rank_lanes_render_in_the_browser(browser: Any, ranks_file: Path) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    watch = Watch(page)
    page.goto(ranks_file.as_uri())
    page.wait_for_load_state("load")
    assert watch.outside == [] and watch.errors == [] and watch.dialogs == []
    sections = page.locator("section.run")
    assert sections.count() == 3
    for i in range(3):
        section = sections.nth(i)
        lanes = section.locator("figure svg")
        assert lanes.count() == 1
        # every rank's lane is labelled and the figure is drawn at a readable size
        texts = lanes.first.locator("text").all_text_contents()
        assert "rank 0" in texts and "rank 1" in texts and any(t.startswith("node") for t in texts)
        box = lanes.first.bounding_box()
        assert box is not None and box["width"] > 600 and box["height"] > 400
        assert section.locator("table.ranks tbody tr").count() == 2
    # the failed rank's row says so; the hostile phase name (a shard, in the per-rank
    # phase tables) is plain text
    assert "failed" in sections.nth(1).locator("table.ranks").inner_text()
    assert sections.nth(0).get_by_text(XSS, exact=True).count() >= 1
    assert "cuts node RAM on 2 ranks" in page.locator("#finding").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    sections.nth(2).locator("figure").screenshot(path=str(ARTIFACTS / "report-ranks.png"))
    page.close()
