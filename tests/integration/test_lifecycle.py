"""Process lifecycle (issue 14 items 3-5), with real processes: a forked child never ends
its parent's recording, a dead sampler is an error, a killed fork server costs one run
and not the sweep (the CLI still writes its report), and nothing a run started outlives
it: not a `sleep` a worker spawned, not a child it forked, not a rank whose launcher was
killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import bigviz
import bigviz.strategies
from bigviz import RunError, cli
from bigviz.data.recording import Recording
from bigviz.data.result import Sweep
from bigviz.recorder.sidecar import __file__ as SIDECAR_FILE
from bigviz.runner import forkserver

MODEL = "gpt:10MB"
SHARD = "5MB"
REPO = Path(__file__).resolve().parents[2]


# -- helpers -----------------------------------------------------------------------------


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), ``None`` once
    it is gone or a zombie (a zombie runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _running(pid: int, started: int | None) -> bool:
    """Whether process ``pid`` that started at ``started`` still runs (a reused pid does not
    count)."""
    now = _start_time(pid)
    return now is not None and now == started


def _wait_gone(pids: dict[int, int | None], within: float) -> list[int]:
    """Poll until none of ``pids`` (pid -> start time) runs; return those still running."""
    deadline = time.monotonic() + within
    while True:
        left = [p for p, st in pids.items() if _running(p, st)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def _wait_file(path: Path, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _samples_in(rec: Any, name: str) -> int:
    ph = rec.phase(name)
    t = rec.series["ram.rss"].t
    return sum(1 for x in t if ph.start <= x <= ph.end)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lifecycle")
    (path / "LIFECYCLE").touch()  # where lifecycle_strategies writes its notes
    return path


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The lifecycle strategies under their names, for the command line, this test only."""
    import lifecycle_strategies as ls

    for cls in (ls.Lingers,):
        monkeypatch.setitem(bigviz.strategies._REGISTRY, cls.name, cls())
    yield


# -- item 3: a forked child and the recording ---------------------------------------------


def _record_with_a_forked_child(how: str) -> Any:
    """Record three phases; between the first and the others, fork a child that leaves
    the `with` blocks by ``how`` (``"exit"``: sys.exit(3), ``"raise"``: an exception)."""
    with bigviz.record(instrument=False) as rec:
        with rec.phase("before"):
            time.sleep(0.05)
        pid = os.fork()
        if pid == 0:
            with rec.phase("in the child"):
                rec.mark("child was here")
                if how == "exit":
                    sys.exit(3)
                raise RuntimeError("child failed")
        _, status = os.waitpid(pid, 0)
        rec.mark("child exited", code=os.waitstatus_to_exitcode(status))
        with rec.phase("after"):
            buf = bytearray(32 << 20)
            time.sleep(0.1)
            del buf
        with rec.phase("later"):
            time.sleep(0.05)
    return rec


@pytest.mark.parametrize("how", ["exit", "raise"])
def test_a_forked_child_leaving_the_block_does_not_end_the_parents_recording(how: str) -> None:
    # GIVEN a recording in which a forked child leaves through the `with` block
    me = os.getpid()
    try:
        rec = _record_with_a_forked_child(how)
    except SystemExit as exc:
        if os.getpid() != me:  # the child, after unwinding through the recorder
            os._exit(exc.code if isinstance(exc.code, int) else 1)
        raise
    except BaseException:
        if os.getpid() != me:
            os._exit(9)
        raise
    r = rec.recording
    # THEN the parent's sampler kept sampling: its later phases have samples
    assert _samples_in(r, "before") > 10
    assert _samples_in(r, "after") > 30
    assert _samples_in(r, "later") > 10
    assert r.phase("after").ram_peak_exact and r.phase("after").ram_growth > 30 << 20
    # AND the child's phase and mark did not enter the parent's recording
    assert [p.name for p in r.phases] == ["before", "after", "later"]
    assert [m.name for m in r.marks] == ["child exited"]
    assert r.marks[0].detail["code"] == (3 if how == "exit" else 9)
    assert r.errors == []
    assert r.meta.get("sidecar_exit") in (None, "stopped")


def test_a_killed_sampler_is_an_error_in_the_recording() -> None:
    with bigviz.record(instrument=False) as rec:
        with rec.phase("before"):
            time.sleep(0.05)
        sidecars = [
            c for c in psutil.Process().children()
            if SIDECAR_FILE in " ".join(c.cmdline()) and str(os.getpid()) in c.cmdline()
        ]
        assert len(sidecars) == 1
        sidecars[0].kill()
        # (not reaped here: the recorder is its parent and must see how it died)
        deadline = time.monotonic() + 5
        while sidecars[0].status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with rec.phase("after"):
            time.sleep(0.1)
    r = rec.recording
    assert len(r.errors) == 1, r.errors
    assert "sampler" in r.errors[0] and "SIGKILL" in r.errors[0]
    assert "no samples from it after" in r.errors[0]
    assert _samples_in(r, "after") == 0  # the error is why: the gap is explained
    assert r.phase("after").ram_peak_exact  # exact peaks do not need the sampler


def test_a_profiled_program_whose_forked_child_exits_keeps_its_profile(tmp_path: Path) -> None:
    # GIVEN a program run under the profile bootstrap that forks a child which exits
    prog = tmp_path / "prog.py"
    prog.write_text(textwrap.dedent("""
        import os, sys, time
        pid = os.fork()
        if pid == 0:
            sys.exit(5)
        os.waitpid(pid, 0)
        time.sleep(0.05)
        buf = bytearray(32 << 20)
        time.sleep(0.2)
    """))
    out = tmp_path / "out.json"
    env = {**os.environ, "BIGVIZ_PROFILE_OUT": str(out)}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "bigviz.recorder._bootstrap", str(prog)],
                          env=env, cwd=tmp_path, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    payload = json.loads(out.read_text())
    # THEN the profile is the program's own (not the child's, written as it exited)
    assert payload["t_enter"] > t0
    rec = Recording.from_dict(payload["recording"])
    assert rec.pid == payload["pid"]
    assert rec.errors == []
    # AND it was sampled to the end: the 32 MiB arrived after the child exited
    rss = rec.series["ram.rss"]
    assert rss.t[-1] > rec.duration - 0.05
    assert max(rss.v) - rss.v[0] > 30 << 20


# -- item 5: what a worker starts ends with it ------------------------------------------


def test_a_child_the_strategy_forks_that_exits_leaves_the_run_alone(work: Path) -> None:
    from lifecycle_strategies import ForkedChildExits

    r = bigviz.run(ForkedChildExits(), model=MODEL, max_shard_size=SHARD, work_dir=work)
    assert r.outcome == "ok", (r.error, r.checks.traceback)
    assert _wait_file(work / "lifecycle-forked.json", 1)["code"] == 3
    rec = r.recording
    assert rec.phase("fork").error is None
    assert rec.errors == []
    # the worker's sampler went on after its child exited: the load is on the timeline
    after = [t for t in rec.series["ram.rss"].t if t > rec.phase("fork").end]
    assert len(after) > 10
    assert next(p.name for p in rec.phases if p.parent is None) == "fork"


def test_a_timeout_kills_what_the_worker_started(work: Path) -> None:
    from lifecycle_strategies import SpawnsThenHangs

    r = bigviz.run(SpawnsThenHangs(), model=MODEL, max_shard_size=SHARD, work_dir=work,
                   timeout=2.0)
    assert r.outcome == "error" and r.error is not None and "timed out" in r.error
    note = _wait_file(work / "lifecycle-spawned.json", 1)
    sleep = note["sleep"]
    # the `sleep 1000` the worker started is gone with it (not reparented to init)
    assert _wait_gone({sleep: _start_time(sleep)}, within=2.0) == []
    assert not _running(note["worker"], _start_time(note["worker"]))


def test_what_a_finished_worker_left_behind_is_killed(work: Path) -> None:
    from lifecycle_strategies import LeavesAChild

    r = bigviz.run(LeavesAChild(), model=MODEL, max_shard_size=SHARD, work_dir=work)
    assert r.outcome == "ok", (r.error, r.checks.traceback)
    note = _wait_file(work / "lifecycle-left.json", 1)
    left = {p: _start_time(p) for p in (note["sleep"], note["forked"])}
    assert _wait_gone(left, within=2.0) == []


def _hanging_run(work: Path) -> tuple[Path, threading.Thread, dict[str, Any]]:
    """Start ``SpawnsThenHangs`` on a thread: the file its worker writes once it hangs,
    the thread, and the box its result lands in (``box["r"]``)."""
    from lifecycle_strategies import SpawnsThenHangs

    note_file = work / "lifecycle-spawned.json"
    note_file.unlink(missing_ok=True)
    box: dict[str, Any] = {}
    t = threading.Thread(target=lambda: box.update(r=bigviz.run(
        SpawnsThenHangs(), model=MODEL, max_shard_size=SHARD, work_dir=work, timeout=60)))
    t.start()
    return note_file, t, box


def test_closing_the_fork_server_mid_run_kills_the_run_and_what_it_started(
    work: Path,
) -> None:

    note_file, t, box = _hanging_run(work)
    try:
        note = _wait_file(note_file, 60)
        pids = {p: _start_time(p) for p in (note["sleep"], note["worker"])}
        bigviz.close()
    finally:
        t.join(30)
    assert not t.is_alive()
    r = box["r"]
    assert r.outcome == "crashed"
    assert r.error is not None and "fork server was closed during this run" in r.error
    assert _wait_gone(pids, within=2.0) == []
    assert forkserver.live_server_pids() == []


# -- item 4: a dead fork server ---------------------------------------------------------


def test_a_fork_server_killed_while_oom_kills_rise_is_an_out_of_memory_run(
    work: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a run that hangs, and the kernel's OOM-kill counter as the runner reads it
    # (under a cgroup limit the OOM killer may end the worker and then the fork server:
    # that race is not reproducible, so the counter is what the test sets)

    import bigviz.runner.single as single

    oom_kills = [7]
    monkeypatch.setattr(single, "oom_kill_count", lambda: oom_kills[0])
    note_file, t, box = _hanging_run(work)
    try:
        _wait_file(note_file, 60)
        # WHEN the OOM killer ends two processes, the fork server among them
        oom_kills[0] = 9
        os.kill(forkserver.live_server_pids()[0], signal.SIGKILL)
    finally:
        t.join(60)
    # THEN the run ran out of memory, and says the server went with it
    r = box["r"]
    assert r.outcome == "oom"
    assert r.error is not None and "fork server died during this run" in r.error
    assert "OOM killer killed 2 process(es)" in r.error


@pytest.mark.slow
def test_a_killed_fork_server_costs_one_run_and_the_cli_writes_the_report(
    work: Path, registered: None, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN a 3-run sweep on the command line whose 2nd run lingers
    note_file = work / "lifecycle-lingering.json"
    note_file.unlink(missing_ok=True)
    out = tmp_path / "sweep.json"
    seen: dict[str, Any] = {}

    def killer() -> None:
        # WHEN the fork server is killed with SIGKILL during run 2
        note = _wait_file(note_file, 120)
        pids = forkserver.live_server_pids()
        seen.update(note, pids=pids, worker_start=_start_time(note["worker"]))
        os.kill(pids[0], signal.SIGKILL)

    k = threading.Thread(target=killer)
    k.start()
    try:
        code = cli.main(["sweep", "--model", MODEL, "--strategies",
                         "meta,lifecycle-lingers,mmap", "--shard-sizes", SHARD,
                         "--work-dir", str(work), "--out", str(out)])
    finally:
        k.join(130)
    # the server killed was the one running the lingering run, found from the runner
    assert seen["pids"] == [seen["server"]]
    # THEN runs 1 and 3 are ok, run 2 is marked, and the report holds all three
    s = Sweep.from_json(out.read_text())
    assert [r.outcome for r in s.results] == ["ok", "crashed", "ok"]
    r2 = s.results[1]
    assert r2.error is not None
    assert "fork server died during this run" in r2.error and "was restarted" in r2.error
    assert r2.error in r2.recording.errors
    assert r2.phase_reached == "linger"
    assert code == 1  # a crashed run fails the command
    # AND run 2's worker died with the server, and a new server ran run 3
    assert not _running(seen["worker"], seen["worker_start"])
    assert forkserver.live_server_pids() not in ([], seen["pids"])
    assert "report written to" in capsys.readouterr().out


def test_an_error_that_stops_the_sweep_still_gets_the_finished_runs_written(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN a sweep whose second run cannot start at all (a stand-in for a fork server
    # that will not come back), after a real first run
    import bigviz.runner.plan as plan

    real = plan.run_planned
    calls: list[str] = []

    def second_fails(item: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(item.strategy.name)
        if len(calls) == 2:
            raise RunError("the bigviz fork server did not start within 120 s")
        return real(item, *args, **kwargs)

    monkeypatch.setattr(plan, "run_planned", second_fails)
    out = tmp_path / "sweep.json"
    code = cli.main(["sweep", "--model", MODEL, "--strategies", "meta,mmap,sharded",
                     "--shard-sizes", SHARD, "--work-dir", str(work), "--out", str(out)])
    # THEN the command fails with the one-line error, and the finished run is reported
    captured = capsys.readouterr()
    assert code == 1
    assert "error: the bigviz fork server did not start within 120 s" in captured.err
    assert "the sweep stopped after 1 run(s)" in captured.out
    s = Sweep.from_json(out.read_text())
    assert [(r.strategy, r.outcome) for r in s.results] == [("meta", "ok")]
    assert s.meta["stopped"] == "RunError: the bigviz fork server did not start within 120 s"
    assert calls == ["meta", "mmap"]  # nothing ran after the error


# -- item 5: ranks die with their launcher ----------------------------------------------

_LAUNCHER = """
import json, os, sys
import psutil
import bigviz
from bigviz.runner import forkserver, prepare_checkpoint

work, out = sys.argv[1], sys.argv[2]
prepare_checkpoint("gpt:200MB", max_shard_size="100MB", work_dir=work)
told = []

def on_event(ev):
    if ev.get("type") == "hello" and not told:
        kids = [p for p in psutil.Process().children()
                if "bigviz.runner.distributed" in " ".join(p.cmdline())]
        told.append(1)
        with open(out + ".tmp", "w") as f:
            json.dump({"ranks": [p.pid for p in kids],
                       "servers": forkserver.live_server_pids()}, f)
        os.replace(out + ".tmp", out)

bigviz.run("every-rank-loads", nproc=2, model="gpt:200MB", max_shard_size="100MB",
           work_dir=work, on_event=on_event)
print("the ranks finished before the launcher was killed")
"""


@pytest.mark.slow
def test_ranks_die_promptly_when_their_launcher_is_killed(work: Path, tmp_path: Path) -> None:
    # GIVEN a launcher whose two ranks are about to load
    out, log = tmp_path / "ranks.json", tmp_path / "launcher.log"
    with open(log, "wb") as logf:
        launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(work), str(out)],
                                    cwd=REPO, stdout=logf, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not out.exists():
            assert launcher.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the ranks never said hello"
            time.sleep(0.01)
        info = json.loads(out.read_text())
        ranks = {p: _start_time(p) for p in info["ranks"]}
        assert len(ranks) == 2 and all(ranks.values())
        # WHEN the launcher is killed with SIGKILL
        launcher.kill()
        t_kill = time.monotonic()
        launcher.wait(10)
        # THEN both ranks are gone within 2 s (they would load on for seconds)
        assert _wait_gone(ranks, within=2.0) == []
        assert time.monotonic() - t_kill < 2.5
        # AND the launcher's fork server saw its parent go and exited too
        servers = {p: _start_time(p) for p in info["servers"]}
        assert _wait_gone(servers, within=10.0) == []
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(10)
