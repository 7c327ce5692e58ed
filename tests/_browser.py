"""Debian's Chromium under playwright, for the tests that open bigviz's pages in a browser.

Never ``playwright install``: the browser is /usr/bin/chromium. A browser test module
calls :func:`require_chromium` at import (a skip without it, a failure on CI) and opens
:func:`chromium`, or shares one among its tests: the fixture ``browser``, which it gets
by importing :func:`module_browser`.
Pages must stay on this machine: :class:`Watch` and :func:`local_only` record and abort
any other request. Servers the tests start (Voila, JupyterLab) bind 127.0.0.1 on a
:func:`free_port`, under :func:`serve`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

CHROMIUM = "/usr/bin/chromium"
#: screenshots of what the browser tests saw, kept for whoever reads a failure
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
#: headless, no GPU, nothing fetched in the background (updates, components)
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run"]
#: what a page served by a test's own server may request
LOCAL = ("http://127.0.0.1:", "ws://127.0.0.1:")


def require_chromium() -> None:
    """Skip the calling module without /usr/bin/chromium, except on CI (there it fails)."""
    if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
        pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium: `make browser-deps`); "
                    "on CI this is a failure", allow_module_level=True)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (a playwright ``Browser``), closed on the way out."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module", name="browser")
def module_browser() -> Iterator[Any]:
    """The fixture ``browser``: one headless Chromium for all the tests of a module that
    imports it (``from _browser import module_browser``)."""
    with chromium() as b:
        yield b


class Watch:
    """What a self-contained, safe page must not do: request anything but ``allow``, log
    an error, or open a dialog (each dismissed and recorded)."""

    def __init__(self, page: Any, allow: tuple[str, ...] = ("file://",)) -> None:
        self.allow = allow
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("dialog", self._dialog)
        page.route("**/*", self._route)

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(self.allow):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def local_only(blocked: list[str]) -> Callable[[Any], None]:
    """A route handler that lets requests to 127.0.0.1 (HTTP and websockets) through and
    aborts every other one, its URL appended to ``blocked``."""

    def route(r: Any) -> None:
        url = r.request.url
        if url.startswith(LOCAL):
            r.continue_()
        else:
            blocked.append(url)
            r.abort()

    return route


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(argv: list[str], port: int, log: Path, *, cwd: Path,
          env: dict[str, str] | None = None, group: bool = False) -> Iterator[None]:
    """Run a server (``argv``, output to ``log``) while the block runs: enter once it
    listens on ``port``, and on the way out stop it and all it started, by pid.

    Args:
        group: start it in a session of its own and signal that whole process group
            (JupyterLab, whose kernels run in sessions of their own too).
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=group)
        try:
            _wait_listening(proc, port, log)
            yield
        finally:
            _stop(proc, group=group)


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path,
                    timeout: float = 60.0) -> None:
    """Return once ``proc`` listens on ``port``; fail with its log's end if it exits first.

    Listening is enough: a GET of a notebook page would start a kernel.
    """
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _stop(proc: subprocess.Popen[bytes], *, group: bool) -> None:
    """Stop a server and whatever it started (kernels, their bigviz fork servers), by pid:
    SIGTERM (to its process group with ``group``), on which it shuts its kernels down; then
    SIGKILL to whatever of its family is left."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        family = []
    if group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(timeout=5)
    _gone, alive = psutil.wait_procs(family, timeout=10)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=5)


def _rgba(css: str) -> tuple[float, float, float, float]:
    """A computed ``rgb(r, g, b)`` / ``rgba(r, g, b, a)`` colour as numbers."""
    parts = [float(x) for x in css[css.index("(") + 1:css.index(")")].split(",")]
    return parts[0], parts[1], parts[2], parts[3] if len(parts) > 3 else 1.0


def luminance(css: str, over: str | None = None) -> float:
    """WCAG relative luminance of a computed colour (blended onto ``over`` when it is
    translucent, as JupyterLab Dark's text is: white at 87 %)."""
    r, g, b, a = _rgba(css)
    if a < 1 and over is not None:
        br, bg_, bb, _ = _rgba(over)
        r, g, b = (a * r + (1 - a) * br, a * g + (1 - a) * bg_, a * b + (1 - a) * bb)
    lin = [(c / 255) / 12.92 if c / 255 <= 0.03928 else ((c / 255 + 0.055) / 1.055) ** 2.4
           for c in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(fg: str, bg: str) -> float:
    """WCAG contrast ratio of text colour ``fg`` on the opaque background ``bg``."""
    hi, lo = sorted((luminance(fg, bg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)
