"""The dashboard in a real browser: Voila serves notebook 02, Debian's Chromium drives it.

Every request that does not go to 127.0.0.1 is aborted (Voila's template links a CDN
font), so the test also proves the dashboard needs no network. Never `playwright
install`: the browser is /usr/bin/chromium.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bigviz.units import format_size

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium: `make browser-deps`); "
                "on CI this is a failure", allow_module_level=True)
pytest.importorskip("voila")
sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop Voila and whatever it started (kernels, their bigviz fork servers), by pid."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        family = []
    proc.terminate()  # Voila shuts its kernels down on SIGTERM
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    _gone, alive = psutil.wait_procs(family, timeout=10)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture
def voila(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path / "voila.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "voila", str(ROOT / "notebooks" / "02_shard_size_sweep.ipynb"),
         "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "voila.log").read_text()[-2000:]
            try:  # listening is enough: a GET of the page would start a kernel
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield url
    finally:
        _stop(proc)
        log.close()


def test_slider_changes_shard_count_and_run_draws_the_peak_chart(voila: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    blocked: list[str] = []

    def route(r: object) -> None:
        req = r.request  # type: ignore[attr-defined]
        if req.url.startswith("http://127.0.0.1:") or req.url.startswith("ws://127.0.0.1:"):
            r.continue_()  # type: ignore[attr-defined]
        else:
            blocked.append(req.url)
            r.abort()  # type: ignore[attr-defined]

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1100, "height": 3000})
        page.route("**/*", route)
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
        except Exception:
            # keep what the page showed, for the person reading the failure
            page.screenshot(path=str(ARTIFACTS / "dashboard-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    # nothing but the CDN stylesheets Voila's template links was asked for elsewhere
    assert all("cdn.jsdelivr.net" in u for u in blocked), blocked
