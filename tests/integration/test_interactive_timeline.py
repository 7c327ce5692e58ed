"""The interactive timeline in a real headless Chromium: zoom, pan, a hover readout that
shows the recorded sample, in a written report and in notebook-style output; no error, no
request, and a hostile phase name stays text."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from _browser import ARTIFACTS, Watch, module_browser, require_chromium  # noqa: F401 (browser)

from bigviz import report
from bigviz.data.recording import Recording
from bigviz.recorder import record
from bigviz.report.notebook import interactive_timeline

XSS = "<img src=x onerror=alert(1)>"

pytestmark = pytest.mark.browser

require_chromium()


@pytest.fixture(scope="module")
def recording() -> Recording:
    """A real recording around torch allocations, one phase named like an XSS attack."""
    import torch

    with record(interval_ms=1.0, name="interactive") as rec:
        with rec.phase("allocate"):
            a = torch.ones(16_000_000)  # 64 MB
            with rec.phase(XSS):
                b = torch.ones(24_000_000)  # 96 MB more
                b.add_(1)
                time.sleep(0.25)
            del b
        with rec.phase("release"):
            del a
            time.sleep(0.1)
    return rec.recording


def _view(page: Any, selector: str = "div.bigviz-itl") -> dict[str, Any]:
    """The view's visible time range and plot geometry, as the script left them."""
    info: dict[str, Any] = page.eval_on_selector(selector, """v => ({
        start: +v.dataset.start, end: +v.dataset.end,
        left: +v.dataset.plotLeft, width: +v.dataset.plotWidth,
        box: v.querySelector('canvas[tabindex]').getBoundingClientRect().toJSON()})""")
    return info


def _nearest(rec: Recording, key: str, t: float) -> int:
    s = rec.series[key]
    i = min(range(len(s.t)), key=lambda k: abs(s.t[k] - t))
    return s.v[i]


def test_hover_zoom_and_pan_in_the_written_report(
    browser: Any, recording: Recording, tmp_path: Path
) -> None:
    # GIVEN a report of a real recording, opened offline
    path = report.write(recording, tmp_path / "report.html")
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    watch = Watch(page, allow=("file://", "http://127.0.0.1"))
    page.goto(path.as_uri())
    page.wait_for_selector("div.bigviz-itl[data-ready]", state="visible")
    # the static SVG gave way to the view (it is the fallback without JavaScript)
    assert not page.locator(".bigviz-itl-fallback svg").is_visible()
    v = _view(page)
    assert v["width"] > 600

    # WHEN the pointer rests in the middle of the phase named like an attack
    phase = recording.phase(XSS)
    assert phase.end is not None
    mid = (phase.start + phase.end) / 2
    x = v["box"]["x"] + v["left"] + (mid - v["start"]) / (v["end"] - v["start"]) * v["width"]
    y = v["box"]["y"] + 200
    page.mouse.move(x, y)
    # THEN the readout names that phase, as text
    readout = page.locator(".bigviz-itl-readout")
    assert readout.locator(".bigviz-itl-phase").inner_text() == XSS
    # AND shows the recorded sample at the readout's time, to the byte
    t_shown = float(readout.locator(".bigviz-itl-t").get_attribute("data-t") or "nan")
    assert phase.start <= t_shown <= phase.end
    interval = (v["end"] - v["start"]) / v["width"]  # one pixel: the sample is that close
    assert abs(t_shown - mid) <= max(interval, 0.01)
    for key in ("rss", "anon", "file"):
        span = readout.locator(f"[data-key={key}]")
        expected = _nearest(recording, f"ram.{key}", t_shown)
        assert int(span.get_attribute("data-bytes") or -1) == expected
        # the text rounds the same bytes in the unit that fits ("RSS 95.4 MiB", "1.3 GiB"
        # when this process already holds models): equal to the last digit shown
        number, unit = span.inner_text().split()[-2:]
        factor = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]
        digits = len(number.partition(".")[2])
        assert abs(float(number) - expected / factor) <= 0.5 * 10**-digits + 1e-9
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("div.bigviz-itl").screenshot(path=str(ARTIFACTS / "interactive-hover.png"))

    # WHEN the wheel zooms in at the pointer
    before = v["end"] - v["start"]
    page.mouse.wheel(0, -600)
    page.wait_for_function(f"+document.querySelector('div.bigviz-itl').dataset.end - "
                           f"+document.querySelector('div.bigviz-itl').dataset.start < {before}")
    z = _view(page)
    # THEN the visible range shrank around the pointer, which still reads the same phase
    assert z["end"] - z["start"] < before * 0.7
    assert z["start"] <= mid <= z["end"]
    assert readout.locator(".bigviz-itl-phase").inner_text() == XSS
    page.locator("div.bigviz-itl").screenshot(path=str(ARTIFACTS / "interactive-zoomed.png"))

    # WHEN dragged to the left, THEN the same span shows later times
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 200, y, steps=4)
    page.mouse.up()
    p = _view(page)
    assert p["start"] > z["start"]
    assert p["end"] - p["start"] == pytest.approx(z["end"] - z["start"], rel=1e-6)
    # AND a double-click shows the whole recording again
    page.mouse.dblclick(x, y)
    r = _view(page)
    assert (r["start"], r["end"]) == pytest.approx((v["start"], v["end"]))

    # nothing ran that should not have, nothing was fetched, nothing failed
    assert watch.dialogs == [] and watch.errors == [] and watch.outside == []
    assert page.locator("img").count() == 0
    page.close()


def test_two_notebook_views_on_one_page_work_apart_and_follow_a_dark_theme(
    browser: Any, recording: Recording
) -> None:
    # GIVEN two outputs of interactive_timeline() in one page, under JupyterLab Dark's
    # variables (the static PNG inside each as the fallback)
    one, two = interactive_timeline(recording), interactive_timeline(recording)
    page = browser.new_page(viewport={"width": 900, "height": 1100})
    watch = Watch(page, allow=("file://", "http://127.0.0.1"))
    page.set_content(
        "<html><body style='--jp-ui-font-color1:#e8e8e8;--jp-layout-color0:#111;"
        "background:#111'>"
        f"<div class=out>{one._repr_html_()}</div><div class=out>{two._repr_html_()}</div>"
        "</body></html>"
    )
    page.wait_for_function("document.querySelectorAll('div.bigviz-itl[data-ready]').length == 2")
    ids = page.eval_on_selector_all("div.bigviz-itl", "vs => vs.map(v => v.id)")
    assert len(set(ids)) == 2
    # the fallback PNGs are hidden once the views draw
    assert page.locator("img").count() == 2 and not page.locator("img").first.is_visible()
    # text follows the theme's colour: light on the dark background
    color = page.eval_on_selector("div.bigviz-itl", "v => getComputedStyle(v).color")
    assert color == "rgb(232, 232, 232)"

    # WHEN the second view is zoomed
    second = f"#{ids[1]}"
    v1, v2 = _view(page, f"#{ids[0]}"), _view(page, second)
    box = v2["box"]
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 150)
    page.mouse.wheel(0, -400)
    page.wait_for_function(f"+document.querySelector('{second}').dataset.end < {v2['end']}")
    # THEN only the second one changed, and its readout is its own
    assert _view(page, f"#{ids[0]}")["end"] == v1["end"]
    assert page.locator(f"{second} [data-key=rss]").count() == 1
    assert page.locator(f"#{ids[0]} [data-key=rss]").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "interactive-dark.png"))
    assert watch.dialogs == [] and watch.errors == [] and watch.outside == []
    page.close()
