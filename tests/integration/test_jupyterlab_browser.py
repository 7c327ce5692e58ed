"""The magics in a real JupyterLab 4 (Dark theme), driven by Debian's Chromium.

A user opens a notebook, picks Run → Run All Cells, and reads what ``%%bigviz`` and
``%bigviz export`` show: the cell's interactive timeline (its script really runs in
JupyterLab, the static PNG fallback gives way to it), its phase table and summary in
readable colours on JupyterLab Dark, nothing cut off at the right in a 900 px window, and a
link to the exported report that opens the report from the server (``/files/…``), not a
``data:`` download. The kernel finds the Dark theme in the same settings file JupyterLab
reads, so the fallback figure is drawn dark too. Screenshots go to ``test-artifacts/``.

Nothing leaves the machine: the server binds 127.0.0.1 with news and update checks off, its
settings, config, data and runtime folders are temporary, and the browser aborts every
request that is not to 127.0.0.1. Never `playwright install`: the browser is
/usr/bin/chromium.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
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

pytestmark = [pytest.mark.browser, pytest.mark.slow]

require_chromium()
pytest.importorskip("jupyterlab")
pytest.importorskip("playwright.sync_api")

NOTEBOOK = "bigviz-lab.ipynb"
#: the profiled cell: a real 32 MiB tensor saved and loaded back (automatic phases)
PROFILED = ("%%bigviz --name tensor-cell\nimport torch\nx = torch.ones(2**23)\n"
            "torch.save(x, 'w.pt')\ny = torch.load('w.pt')\nint(y.sum())")
CELLS = ["%load_ext bigviz", PROFILED, "%bigviz export k"]


def _notebook(cells: list[str]) -> dict[str, Any]:
    return {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "cells": [{"cell_type": "code", "id": f"cell-{i}", "metadata": {},
                   "execution_count": None, "outputs": [], "source": src}
                  for i, src in enumerate(cells)],
    }


def _settings(folder: Path, plugin: str, values: dict[str, Any]) -> None:
    """One JupyterLab user setting file, as the settings editor writes it."""
    package, name = plugin.rsplit(":", 1)
    f = folder / package / f"{name}.jupyterlab-settings"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("{\n    // written by the test\n" + json.dumps(values, indent=4)[1:])


@dataclass
class Lab:
    url: str
    token: str
    root: Path


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    root = tmp_path / "root"
    root.mkdir()
    (root / NOTEBOOK).write_text(json.dumps(_notebook(CELLS)))
    settings = tmp_path / "settings"
    _settings(settings, "@jupyterlab/apputils-extension:themes", {"theme": "JupyterLab Dark"})
    # the notebook's kernel starts without a "Select Kernel" dialog
    _settings(settings, "@jupyterlab/notebook-extension:tracker",
              {"autoStartDefaultKernel": True})
    # no "would you like news?" toast over the notebook, no update check
    _settings(settings, "@jupyterlab/apputils-extension:notification",
              {"fetchNews": "false", "checkForUpdates": False})
    env = dict(os.environ)
    env.update({
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "BIGVIZ_PRESTART": "0",  # this test runs no sweep: no fork server on 2 busy cores
    })
    env.pop("JUPYTERLAB_DIR", None)
    port, token = free_port(), secrets.token_hex(16)
    # its kernels run in sessions of their own: it is stopped as a whole process group
    with serve([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip", "127.0.0.1",
                f"--port={port}", "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.extension_manager=readonly",
                *(["--allow-root"] if os.geteuid() == 0 else [])],
               port, tmp_path / "lab.log", cwd=root, env=env, group=True):
        yield Lab(f"http://127.0.0.1:{port}", token, root)


# each element's text colour and the first opaque background behind it
_COLOURS_JS = """els => els.map(el => {
  let bg = null;
  for (let n = el; n && !bg; n = n.parentElement) {
    const c = getComputedStyle(n).backgroundColor;
    if (c && c !== 'transparent' && !c.startsWith('rgba(0, 0, 0, 0')) bg = c;
  }
  return [el.className || el.tagName, getComputedStyle(el).color, bg];
})"""

# every output of the cell: what in it reaches past its right edge, whether the output
# scrolls sideways (overflow-x auto/scroll) and how far, and where its content ends
_CLIPPING_JS = """cell => [...cell.querySelectorAll('.jp-OutputArea-output')].map(out => {
  const box = out.getBoundingClientRect(), ox = getComputedStyle(out).overflowX;
  const shown = [...out.querySelectorAll('*')].filter(e => e.getClientRects().length);
  const past = shown.filter(e => e.getBoundingClientRect().right > box.right + 1)
    .map(e => e.tagName + '.' + (e.className.baseVal ?? e.className));
  const end = Math.max(0, ...shown.map(e => e.getBoundingClientRect().right - box.left));
  return {right: box.right, width: box.width, scroll: out.scrollWidth,
          client: out.clientWidth, overflow: ox, past: past, end: end};
})"""


# the status bar's kernel item once the notebook's kernel is connected and idle
# ("No Kernel | Initializing" before, "Python 3 (ipykernel) | Busy" while running)
_KERNEL_IDLE_JS = """() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]
  .some(e => /\\(ipykernel\\) \\| Idle$/.test(e.textContent.trim()))"""


def test_magics_in_jupyterlab_dark(lab: Lab) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    blocked: list[str] = []
    problems: list[str] = []

    def console(msg: Any) -> None:
        if msg.type in ("error", "warning") and "bigviz" in msg.text.lower():
            problems.append(f"{msg.type}: {msg.text}")

    with chromium() as browser:
        context = browser.new_context(viewport={"width": 900, "height": 1400})
        context.route("**/*", local_only(blocked))
        page = context.new_page()
        page.on("console", console)
        page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
        try:
            _run_all(page, lab)
            _timeline_is_interactive_and_output_readable(page)
            _export_link_opens_the_report(page, context, lab)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-failure.png"), full_page=True)
            raise
    assert problems == [], problems
    assert blocked == [], blocked


def _run_all(page: Any, lab: Lab) -> None:
    # GIVEN the notebook open in JupyterLab Dark, its kernel idle
    page.goto(f"{lab.url}/lab/tree/{NOTEBOOK}?token={lab.token}", timeout=60_000)
    page.wait_for_selector("body[data-jp-theme-name='JupyterLab Dark']", state="attached",
                           timeout=60_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_function(_KERNEL_IDLE_JS, timeout=60_000)
    # WHEN the user picks Run → Run All Cells
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    # THEN the export's link shows up under the last cell (all three ran)
    page.wait_for_selector(".jp-Cell .bigviz-report-link", timeout=90_000)
    page.wait_for_function(_KERNEL_IDLE_JS, timeout=30_000)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert errors.count() == 0, errors.all_inner_texts()


def _timeline_is_interactive_and_output_readable(page: Any) -> None:
    cell = page.locator(".jp-CodeCell", has=page.locator(".bigviz-itl-box"))
    assert cell.count() == 1
    # THEN the timeline's script ran in JupyterLab: the canvas view is shown, drawn over
    # the recording, and its static PNG fallback gave way to it
    view = cell.locator("div.bigviz-itl")
    view.wait_for(state="visible", timeout=15_000)
    assert view.get_attribute("data-ready") == "1"
    assert float(view.get_attribute("data-end") or 0) > 0
    assert cell.locator(".bigviz-itl-fallback").evaluate("e => getComputedStyle(e).display") \
        == "none"
    # the fallback, drawn by the kernel for the theme it found in JupyterLab's settings:
    # a dark figure (its first pixel row is the figure's background)
    dark_png = cell.locator(".bigviz-itl-fallback img").evaluate("""img => {
      const c = document.createElement('canvas'); c.width = 4; c.height = 4;
      const g = c.getContext('2d'); g.drawImage(img, 0, 0);
      const d = g.getImageData(2, 2, 1, 1).data; return (d[0] + d[1] + d[2]) / 3;
    }""")
    assert dark_png < 40, dark_png
    # hovering the plot gives the readout of a real sample
    canvas = cell.locator(".bigviz-itl-plot canvas[tabindex]")
    canvas.hover(position={"x": 300, "y": 150})
    cell.locator(".bigviz-itl-readout [data-key='rss']").wait_for(timeout=5_000)
    assert int(cell.locator(".bigviz-itl-readout [data-key='rss']").get_attribute(
        "data-bytes") or 0) > 0
    cell.screenshot(path=str(ARTIFACTS / "jupyterlab-dark-bigviz.png"))
    # AND its text is readable on JupyterLab Dark (WCAG AA, 4.5:1): the readout, the
    # cell's summary line and the phase table
    handles = [cell.locator(sel).first.element_handle()
               for sel in (".bigviz-itl-readout", ".bigviz-cell", "table.bigviz-phases td",
                           "table.bigviz-phases th")]
    for name, fg, bg in page.evaluate(_COLOURS_JS, handles):
        assert bg is not None and luminance(bg) < 0.05, (name, bg)  # really on Dark
        assert contrast(fg, bg) >= 4.5, (name, fg, bg)
    # AND in a 900 px window nothing of the output is cut off at the right: it fits, or
    # scrolls sideways within its own box
    boxes = cell.evaluate(_CLIPPING_JS)
    assert boxes, "no outputs"
    for box in boxes:
        assert box["right"] <= 900, box  # the output itself is inside the window
        if box["past"]:  # wider than the output: it must scroll to all of it
            assert box["overflow"] in ("auto", "scroll"), box
            assert box["end"] <= box["scroll"] + 1, box
    plot = cell.locator(".bigviz-itl-plot").evaluate(
        "e => [e.getBoundingClientRect().right, e.closest('.jp-OutputArea-output')"
        ".getBoundingClientRect().right]")
    assert plot[0] <= plot[1] + 1, plot  # the timeline fits without any scrolling


def _export_link_opens_the_report(page: Any, context: Any, lab: Lab) -> None:
    # THEN the export wrote one set under one name beside the notebook...
    assert sorted(p.name for p in lab.root.glob("k.*")) == ["k.html", "k.json", "k.md"]
    # ...and the kernel's links to it are relative, as the notebook keeps them (saved with
    # File → Save Notebook), not ~60 KB data: URLs
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^File$")).click()
    with page.expect_response(lambda r: r.request.method == "PUT"
                              and r.url.split("?")[0].endswith(f"/api/contents/{NOTEBOOK}"),
                              timeout=20_000) as saved:
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Save Notebook$")).click()
    assert saved.value.ok
    outputs = json.loads((lab.root / NOTEBOOK).read_text())["cells"][2]["outputs"]
    sent = "".join("".join(o.get("data", {}).get("text/html", "")) for o in outputs)
    hrefs = re.findall(r'class="bigviz-report-link" href="([^"]*)"', sent)
    assert hrefs == ["k.html", "k.json", "k.md"], sent[:500]
    # AND JupyterLab resolves the HTML one to the file on this server
    href = page.evaluate("""() => [...document.querySelectorAll('.jp-Cell .bigviz-report-link')]
      .find(a => a.textContent === 'k.html').href""")
    url = urllib.parse.urlsplit(href)
    assert url.netloc == urllib.parse.urlsplit(lab.url).netloc, href
    assert url.path.endswith("/files/k.html"), href
    # WHEN it is opened THEN the server gives the exported report, the cell's run in it
    report = context.new_page()
    try:
        response = report.goto(href, timeout=30_000)
        assert response is not None and response.ok, href
        assert response.headers.get("content-type", "").startswith("text/html")
        report.wait_for_selector("text=tensor-cell", timeout=15_000)
        assert "torch.load" in report.content()  # its phase table: the cell's own load
        report.screenshot(path=str(ARTIFACTS / "jupyterlab-export.png"))
    finally:
        report.close()
