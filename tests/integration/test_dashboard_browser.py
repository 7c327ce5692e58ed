"""The dashboard in a real browser: Voila serves notebook 02, Debian's Chromium drives it.

One session walks what a user does: move the shard slider and Run; look at the results
in an 850 px output (nothing cut off) and in JupyterLab Dark (the status text readable);
choose ``disk`` (the CPU-only strategies greyed out); type a custom map naming a module
the model lacks (refused before any worker starts); Run again and Cancel (the runs that
never started say "skipped"). Screenshots of each step are kept in ``test-artifacts/``.

Every request that does not go to 127.0.0.1 is aborted (Voila's template links a CDN
font), so the test also proves the dashboard needs no network. Never `playwright
install`: the browser is /usr/bin/chromium.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _browser import (
    ARTIFACTS,
    chromium,
    contrast,
    free_port,
    local_only,
    luminance,
    require_chromium,
    serve,
)

from bigviz.units import format_size

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.browser, pytest.mark.slow]

require_chromium()
pytest.importorskip("voila")
pytest.importorskip("playwright.sync_api")


@pytest.fixture
def voila(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    # Voila shuts its kernels down on SIGTERM
    with serve([sys.executable, "-m", "voila",
                str(ROOT / "notebooks" / "02_shard_size_sweep.ipynb"),
                "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1"],
               port, tmp_path / "voila.log", cwd=tmp_path):
        yield f"http://127.0.0.1:{port}/"


#: JupyterLab Dark's main colours, set on <body> as the theme does
DARK = {"--jp-ui-font-color1": "#fff", "--jp-ui-font-color2": "#ccc",
        "--jp-layout-color0": "#111", "--jp-layout-color1": "#1a1a1a",
        "--jp-error-color1": "#ff7070", "--jp-warn-color1": "#ffb74d"}


# the colour of an element's text and of the first non-transparent background behind it
_COLOURS_JS = """sel => {
  const el = document.querySelector(sel);
  let bg = 'rgba(0, 0, 0, 0)';
  for (let n = el; n; n = n.parentElement) {
    const c = getComputedStyle(n).backgroundColor;
    if (c && c !== 'transparent' && !c.startsWith('rgba(0, 0, 0, 0')) { bg = c; break; }
  }
  return [getComputedStyle(el).color, bg];
}"""

# every picture shown in the dashboard has loaded (none is a broken-image icon)
_BROKEN_IMAGES_JS = """() => [...document.querySelectorAll('.bigviz-dashboard img')]
  .filter(i => i.offsetParent !== null && !(i.complete && i.naturalWidth > 0))
  .map(i => i.className)"""


def test_slider_changes_shard_count_and_run_draws_the_peak_chart(voila: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    blocked: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 3000})
        page.route("**/*", local_only(blocked))
        try:
            # Voila streams the page while the notebook runs: wait for outputs, not "load"
            page.goto(voila, wait_until="commit", timeout=60_000)
            # GIVEN the notebook has finished executing (its dashboard run, then the magic
            # sweep): the dashboard's table plus the two tables of the later cells
            page.wait_for_function(
                "document.querySelectorAll('table.bigviz-results').length >= 3",
                timeout=180_000)
            shards = page.locator(".bigviz-shard-info .bigviz-shards")
            before_n = int(shards.get_attribute("data-n") or 0)
            before_size = int(shards.get_attribute("data-size") or 0)
            # WHEN the shard-size slider is moved down with the keyboard
            handle = page.locator(".bigviz-shard-slider .noUi-handle")
            handle.focus()
            for _ in range(20):  # 20 steps of 0.02 decades: 10 MB -> ~4 MB
                handle.press("ArrowLeft")
            # THEN the shown shard count follows (computed in the kernel, no run) once the
            # kernel has caught up with the slider's final position
            exponent = float(handle.get_attribute("aria-valuenow") or 0)
            expected = int(float(f"{10**exponent:.3g}"))
            assert expected < before_size
            page.wait_for_function(
                f"document.querySelector('.bigviz-shards').dataset.size == '{expected}'",
                timeout=30_000)
            after_size = int(shards.get_attribute("data-size") or 0)
            assert int(shards.get_attribute("data-n") or 0) > before_n
            label = format_size(after_size, binary=False, precision=0).replace(" ", "")
            # WHEN Run is clicked THEN the runs use the new size and the peak chart is drawn
            page.locator("button.bigviz-run").click()
            page.wait_for_function(
                "document.querySelector('.bigviz-status').innerText.includes('run ')",
                timeout=60_000)
            page.wait_for_function(
                "document.querySelector('.bigviz-table').innerText.includes("
                f"'naive · {label}')", timeout=150_000)
            peaks = page.locator("img.bigviz-peaks")
            peaks.wait_for(state="visible", timeout=30_000)
            assert peaks.evaluate("img => img.naturalWidth") > 400
            page.wait_for_function(  # the status line is the last thing updated
                "document.querySelector('.bigviz-status').innerText.includes('done: 4 runs')",
                timeout=30_000)
            rows = page.locator(".bigviz-table tr[data-strategy]")
            assert rows.count() == 4
            page.locator(".bigviz-dashboard").screenshot(path=str(ARTIFACTS / "dashboard.png"))
            _narrow_output_clips_nothing(page)
            _dark_theme_status_is_readable(page)
            _disk_greys_out_the_cpu_only_strategies(page)
            _bad_custom_map_is_refused_before_a_worker_starts(page)
            _run_then_cancel_says_skipped(page)
        except Exception:
            # keep what the page showed, for the person reading the failure
            page.screenshot(path=str(ARTIFACTS / "dashboard-failure.png"), full_page=True)
            raise
    # nothing but the CDN stylesheets Voila's template links was asked for elsewhere
    assert all("cdn.jsdelivr.net" in u for u in blocked), blocked


def _narrow_output_clips_nothing(page: Any) -> None:
    # GIVEN a window whose notebook output is ~850 px wide
    page.set_viewport_size({"width": 880, "height": 3000})
    page.wait_for_timeout(500)
    box = page.evaluate("""() => {
      const dash = document.querySelector('.bigviz-dashboard');
      const out = dash.closest('.jp-OutputArea-output') || dash.parentElement;
      const t = document.querySelector('.bigviz-table');
      const fmt = [...document.querySelectorAll('.bigviz-format button')];
      return {view: document.documentElement.clientWidth,
              out: out.getBoundingClientRect().right,
              outWidth: out.getBoundingClientRect().width,
              dash: dash.getBoundingClientRect().right,
              table: t.getBoundingClientRect().right,
              inner: t.querySelector('table').getBoundingClientRect().width,
              scroll: t.scrollWidth, client: t.clientWidth,
              overflow: getComputedStyle(t).overflowX,
              cutButtons: fmt.filter(b => b.scrollWidth > b.clientWidth + 1)
                             .map(b => b.innerText)};
    }""")
    page.locator(".bigviz-dashboard").screenshot(
        path=str(ARTIFACTS / "dashboard-850px.png"))
    # THEN neither the dashboard nor its results table reaches past the output's edge
    assert 830 <= box["outWidth"] <= 860, box
    assert box["dash"] <= box["out"] + 1 and box["table"] <= box["out"] + 1, box
    assert box["dash"] <= box["view"], box
    # AND a table wider than that scrolls inside its box rather than being cut off
    assert box["scroll"] <= box["client"] + 1 or box["overflow"] in ("auto", "scroll"), box
    assert box["inner"] <= box["scroll"] + 1, box  # all of it is reachable
    # AND the format toggle reads "safetensors", not "safetens…"
    assert box["cutButtons"] == [], box


def _dark_theme_status_is_readable(page: Any) -> None:
    # GIVEN JupyterLab Dark's colours (the theme sets these variables; its body uses them)
    page.evaluate("""vars => {
      for (const [k, v] of Object.entries(vars)) document.body.style.setProperty(k, v);
      document.body.style.background = 'var(--jp-layout-color0)';
    }""", DARK)
    # THEN the status line's text stands out from the near-black behind it
    fg, bg = page.evaluate(_COLOURS_JS, ".bigviz-status-text")
    assert luminance(bg) < 0.05, bg  # the dark background is really in place
    assert contrast(fg, bg) >= 4.5, (fg, bg)  # WCAG AA for body text
    page.locator(".bigviz-dashboard").screenshot(
        path=str(ARTIFACTS / "dashboard-dark.png"))
    page.evaluate("""vars => {
      for (const k of Object.keys(vars)) document.body.style.removeProperty(k);
      document.body.style.background = '';
    }""", DARK)


def _disk_greys_out_the_cpu_only_strategies(page: Any) -> None:
    # WHEN the device map "disk" is chosen
    page.select_option(".bigviz-device-map select", "disk")
    # THEN the default strategies are greyed out, each with a tooltip saying why
    page.wait_for_function(
        "document.querySelector('.bigviz-strategy-naive input').disabled", timeout=30_000)
    for name in ("naive", "sharded", "meta", "mmap"):
        box = page.locator(f".bigviz-strategy-{name}")
        assert box.locator("input").is_disabled()
        assert "CPU RAM only" in (box.locator("input").get_attribute("title") or "")
        assert "CPU RAM only" in (
            box.locator(".bigviz-strategy-name").get_attribute("title") or "")
    dispatch = page.locator(".bigviz-strategy-dispatch input")
    assert dispatch.is_enabled() and dispatch.is_checked()
    # AND the reason is said once for the four of them
    hint = page.locator(".bigviz-strategies-hint").inner_text()
    assert hint.count("CPU RAM only") == 1 and "naive, sharded, meta, mmap" in hint
    # no GPU on CI: cuda is not offered
    offered = page.locator(".bigviz-device-map option").all_inner_texts()
    assert "disk" in offered
    if not Path("/dev/nvidia0").exists():
        assert not [o for o in offered if o.startswith("cuda")], offered
    page.locator(".bigviz-dashboard").screenshot(
        path=str(ARTIFACTS / "dashboard-disk.png"))


def _bad_custom_map_is_refused_before_a_worker_starts(page: Any) -> None:
    rows_before = page.locator(".bigviz-run-row").all_inner_texts()
    # WHEN a custom map names a module the model does not have, and Run is clicked
    page.select_option(".bigviz-device-map select", "custom JSON")
    hint = page.locator(".bigviz-device-json-hint")
    hint.wait_for(state="visible", timeout=30_000)
    assert "lm_head" in hint.inner_text() and "embed" not in hint.inner_text()
    area = page.locator(".bigviz-device-json textarea")
    assert "transformer" in (area.get_attribute("placeholder") or "")
    area.fill('{"encoder.layers": "cpu"}')
    area.press("Tab")
    page.locator("button.bigviz-run").click()
    # THEN the status says why, listing the model's modules, in one untruncated line
    page.wait_for_function(
        "document.querySelector('.bigviz-status').innerText.includes('is not a module')",
        timeout=30_000)
    status = page.locator(".bigviz-status").inner_text()
    assert "'encoder.layers'" in status and "transformer, lm_head" in status, status
    assert "…" not in status
    # AND no worker started: no new progress rows, Run still enabled, Cancel not
    page.wait_for_timeout(1000)
    assert page.locator(".bigviz-run-row").all_inner_texts() == rows_before
    assert "starting" not in page.locator(".bigviz-status").inner_text()
    assert page.locator("button.bigviz-run").is_enabled()
    assert page.locator("button.bigviz-cancel").is_disabled()
    page.locator(".bigviz-dashboard").screenshot(
        path=str(ARTIFACTS / "dashboard-bad-map.png"))


def _run_then_cancel_says_skipped(page: Any) -> None:
    # GIVEN the cpu map again: the user's four strategies come back
    page.select_option(".bigviz-device-map select", "cpu")
    page.wait_for_function(
        "!document.querySelector('.bigviz-strategy-naive input').disabled "
        "&& document.querySelector('.bigviz-strategy-naive input').checked", timeout=30_000)
    # WHEN Run is clicked, and Cancel as soon as the first run is going
    page.locator("button.bigviz-run").click()
    page.wait_for_function(
        "document.querySelector('.bigviz-status').innerText.includes('run 1/')",
        timeout=60_000)
    # no broken-image icon while the live chart has nothing to show yet
    assert page.evaluate(_BROKEN_IMAGES_JS) == []
    page.locator("button.bigviz-cancel").click()
    page.wait_for_function(
        "!document.querySelector('button.bigviz-run').disabled", timeout=60_000)
    # THEN one run reads "cancelled" and every run after it "skipped": no empty row
    notes = page.locator(".bigviz-run-row .bigviz-note").all_inner_texts()
    page.locator(".bigviz-dashboard").screenshot(
        path=str(ARTIFACTS / "dashboard-cancelled.png"))
    assert len(notes) == 4, notes
    cancelled = [i for i, n in enumerate(notes) if n.startswith("cancelled")]
    assert len(cancelled) == 1, notes
    assert all(n.startswith("ok") for n in notes[:cancelled[0]]), notes
    assert all(n.startswith("skipped") for n in notes[cancelled[0] + 1:]), notes
    assert page.evaluate(_BROKEN_IMAGES_JS) == []
