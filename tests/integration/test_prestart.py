"""Issue 17 item 4: the fork server starts early, in the background, exactly once.

Real processes: ``prestart`` racing real ``spawn``/``ensure`` calls from other threads
ends with one server, and ``import bigviz`` alone starts none."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from bigviz.runner import forkserver

REPO = Path(__file__).resolve().parents[2]


def _servers() -> set[int]:
    """The fork server processes this test process started (its children running
    ``bigviz.runner._server``)."""
    out: set[int] = set()
    for child in psutil.Process().children():
        try:
            if "bigviz.runner._server" in " ".join(child.cmdline()):
                out.add(child.pid)
        except psutil.Error:
            continue
    return out


@pytest.mark.slow
def test_prestart_racing_runs_starts_exactly_one_server() -> None:
    forkserver.close()
    assert not _servers()
    seen: set[int] = set()
    stop = threading.Event()

    def watch() -> None:  # every server process that exists at any moment of the race
        while not stop.is_set():
            seen.update(_servers())
            time.sleep(0.005)

    pids: list[int | None] = []
    errors: list[BaseException] = []

    def run_one() -> None:
        try:
            srv = forkserver.get_server()
            run_id, _pid, sock = srv.spawn({"kind": "noop"})  # fails in the worker: fine
            sock.close()
            srv.poll_exit(run_id, timeout=30)
            pids.append(srv.pid)
        except BaseException as exc:
            errors.append(exc)

    def ensure_one() -> None:
        try:
            srv = forkserver.get_server()
            srv.ensure()
            pids.append(srv.pid)
        except BaseException as exc:
            errors.append(exc)

    def prestart_one() -> None:
        try:
            assert forkserver.prestart()
        except BaseException as exc:
            errors.append(exc)

    watcher = threading.Thread(target=watch, name="test-watch")
    watcher.start()
    try:
        t0 = time.monotonic()
        assert forkserver.prestart()  # returns at once: the imports run in the server
        assert time.monotonic() - t0 < 1.0
        assert len(_servers()) == 1
        others = [threading.Thread(target=f, name=f"test-{i}") for i, f in
                  enumerate([prestart_one, run_one, ensure_one, prestart_one, run_one,
                             ensure_one])]
        for t in others:
            t.start()
        for t in others:
            t.join(120)
    finally:
        stop.set()
        watcher.join()
    assert not errors, errors
    assert not forkserver.get_server()._starting  # the start in flight was awaited
    live = forkserver.live_server_pids()
    assert len(live) == 1
    assert seen == set(live) == _servers()  # never a second server, not even briefly
    assert set(pids) == set(live) and len(pids) == 4 and len(seen) == 1
    forkserver.close()
    assert not _servers()


def test_prestart_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    forkserver.close()
    monkeypatch.setenv(forkserver.PRESTART_ENV, "0")
    assert forkserver.prestart() is False
    assert not _servers() and forkserver.live_server_pids() == []


def test_prestart_preloads_modules_in_the_server(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # a module whose import leaves a trace: the pid of the process that imported it
    (tmp_path / "bigviz_probe_mod.py").write_text(
        "import os, pathlib\n"
        f"pathlib.Path({str(tmp_path / 'imported-by')!r}).write_text(str(os.getpid()))\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # the server inherits the parent's path
    forkserver.close()
    assert forkserver.prestart(["bigviz_probe_mod"])
    srv = forkserver.get_server()
    srv.ensure()
    assert srv.pid is not None
    trace = tmp_path / "imported-by"
    deadline = time.monotonic() + 30
    while not trace.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert trace.read_text() == str(srv.pid)  # imported once, in the server, before any run
    assert "bigviz_probe_mod" not in sys.modules  # not in this process
    forkserver.close()


def test_import_bigviz_alone_starts_no_fork_server() -> None:
    code = textwrap.dedent("""
        import time, psutil
        import bigviz, bigviz.runner
        time.sleep(1.0)  # a background start would have begun by now
        from bigviz.runner import forkserver
        kids = psutil.Process().children(recursive=True)
        assert forkserver._SERVER is None, "a fork server handle was made"
        assert not kids, [k.cmdline() for k in kids]
        print("none")
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "none"


@pytest.mark.slow
def test_load_ext_starts_the_server_in_the_background() -> None:
    pytest.importorskip("IPython")
    code = textwrap.dedent("""
        import time
        from IPython.testing.globalipapp import start_ipython
        from bigviz.runner import forkserver
        ip = start_ipython()
        t0 = time.monotonic()
        ip.run_line_magic("load_ext", "bigviz")
        took = time.monotonic() - t0
        assert took < 1.0, f"%load_ext blocked for {took:.2f} s"
        assert len(forkserver.live_server_pids()) == 1  # started, not waited for
        srv = forkserver.get_server()
        srv.ensure()
        assert forkserver.live_server_pids() == [srv.pid]
        forkserver.close()
        print("started")
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("started")


def test_opening_a_dashboard_prestarts_with_its_strategies_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ipywidgets")
    import bigviz.strategies as registry
    from bigviz.widgets import Dashboard

    asked: list[list[str]] = []
    real = forkserver.prestart

    def spy(modules: list[str] | tuple[str, ...] = ()) -> bool:
        asked.append(list(modules))
        return real(modules)

    monkeypatch.setattr(forkserver, "prestart", spy)
    forkserver.close()
    dash = Dashboard("gpt:10MB", shard_size="5MB", strategies=["meta", "transformers"],
                     work_dir=tmp_path)
    # the server is starting (a real process), with what the ticked strategies import
    assert len(forkserver.live_server_pids()) == 1
    assert asked and set(registry.get("transformers").preload) <= set(asked[-1])
    # the page-cache toggle reaches the sweep's keywords
    assert dash.settings()["cache"] == ["as-is"]
    dash.cache_w.value = "cold"
    assert dash.settings()["cache"] == ["cold"]
    forkserver.get_server().ensure()
    forkserver.close()
