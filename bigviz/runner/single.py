"""One job in a worker forked by the warm fork server, followed by the supervisor:
stream its events, enforce the RAM budget, and turn whatever happened (success,
exception, OOM kill, crash, cancel) into an :class:`Outcome`.

A run outlives its fork server: if the server dies under it (``kill -9``, the OOM
killer), the run's worker dies with it and the run is ``"crashed"`` with a note saying
so; the next run starts a new server. A server that dies before forking the worker is
replaced and the run started again, once. Killing a worker kills its process group:
what the run started (a ``sleep`` it spawned, a child it forked) goes with it.

Example:
    >>> # out = execute({"kind": "prepare", ...}); raise_if_failed(out, "saving")
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bigviz._errors import RunError
from bigviz.data.recording import Recording
from bigviz.runner import forkserver
from bigviz.runner.memory import snapshot_status
from bigviz.runner.supervisor import (
    EventCallback,
    Supervision,
    exit_verdict,
    oom_kill_count,
    supervise,
)

__all__ = ["ForkChild", "Outcome", "execute", "raise_if_failed"]


@dataclass
class Outcome:
    """What the parent saw of one worker."""

    outcome: str = "ok"
    error: str | None = None
    traceback: str | None = None
    exit_code: int | None = None
    pid: int = 0
    baseline: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    prepared: dict[str, Any] | None = None
    recording: Recording = field(default_factory=Recording)
    phase_reached: str | None = None
    watch_peak: int = 0
    t_spawn: float = 0.0
    t_first_phase: float | None = None
    seconds: float = 0.0
    callback_errors: list[str] = field(default_factory=list)


class ForkChild:
    """A worker of the fork server, seen through the supervisor's
    :class:`~bigviz.runner.supervisor.Child` interface.

    Example:
        >>> # child = ForkChild(forkserver.get_server(), job); ...; child.close()
    """

    def __init__(self, server: forkserver.ForkServer, job: dict[str, Any]) -> None:
        self._server = server
        self._run_id, self.pid, self._sock = server.spawn(job)
        self._open = True
        self._code: int | None = None
        #: ``"died"`` / ``"closed"`` once the fork server went away under this run
        self.server_gone: str | None = None

    def fileno(self) -> int | None:
        return self._sock.fileno() if self._open else None

    def read(self) -> bytes | None:
        if not self._open:
            return None
        if not forkserver.readable(self._sock, 0):
            return b""
        try:
            data = self._sock.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            self._open = False
            return None
        return data

    def poll(self) -> int | None:
        if self._code is None:
            self._code = self._server.poll_exit(self._run_id)
            if self._code is None and (gone := self._server.lost(self._run_id)):
                # no exit code will come: the worker died with its server (PDEATHSIG)
                self.server_gone = gone
                self._code = -signal.SIGKILL
        return self._code

    def kill(self) -> None:
        # the server reaps its children: never signal a pid it already reaped (reused);
        # the worker leads its own group, so what it started goes with it
        if self.poll() is None:
            forkserver.kill(self.pid)

    def memory(self) -> dict[str, int]:
        return snapshot_status(self.pid)

    def close(self) -> int | None:
        """Close the stream; make sure the worker is gone. Returns its exit code."""
        self._sock.close()
        self._open = False
        if self.poll() is None:
            forkserver.kill(self.pid)
            self._code = self._server.poll_exit(self._run_id, timeout=5.0)
        return self._code


def execute(
    job: dict[str, Any],
    *,
    on_event: EventCallback | None = None,
    ram_budget: int | None = None,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
) -> Outcome:
    """Fork a worker for ``job`` and follow it to the end. Never raises for what the
    worker does; raises RunError only when no worker could be started.

    Example:
        >>> # execute(job, ram_budget=8 << 30).outcome
    """
    if ram_budget is not None:  # the worker's sidecar checks every 1 ms sample against it
        job = {**job, "ram_budget": int(ram_budget)}
    server = forkserver.get_server()
    server.ensure()
    t_spawn = time.monotonic()
    oom_before = oom_kill_count()
    try:
        child = ForkChild(server, job)
    except forkserver.ForkServerDied:  # nothing of the run ran: once more, on a new server
        server.ensure()
        t_spawn = time.monotonic()
        child = ForkChild(server, job)
    try:
        seen = supervise([child], on_event=on_event, ram_budget=ram_budget, timeout=timeout,
                         cancel=cancel, t_start=t_spawn, oom_before=oom_before)
    finally:
        code = child.close()
    if child.server_gone is None:
        return _outcome(seen, job, code, child.pid)
    # no exit code came: judge by what the worker sent, then say what happened
    out = _outcome(seen, job, None, child.pid)
    restarted: str | None = None
    if child.server_gone == "died":  # a warm server again, as before it died
        try:
            server.ensure()
        except RunError as exc:
            restarted = f"could not be restarted: {exc}".splitlines()[0]
        else:
            restarted = "was restarted"
    note = server_gone_note(child.server_gone, oom_before, restarted)
    if out.outcome == "ok" and out.result is None:
        out.outcome = "crashed"
    if out.outcome == "crashed":
        out.error = note
        after = oom_kill_count()
        if (child.server_gone == "died" and oom_before is not None and after is not None
                and after > oom_before):
            # the OOM killer ended the server and its worker (under a cgroup limit it may
            # take both, one after the other): the run ran out of memory
            out.outcome = "oom"
    out.recording.errors.append(note)
    return out


def server_gone_note(why: str, oom_before: int | None, restarted: str | None = None) -> str:
    """What happened to a run whose fork server died (``why="died"``) or was closed
    under it; ``restarted`` says what became of the server after (``"was restarted"``).

    Example:
        >>> server_gone_note("closed", None).startswith("the bigviz fork server was closed")
        True
    """
    if why != "died":
        return ("the bigviz fork server was closed during this run (bigviz.close()); "
                "its worker was stopped with it")
    after = oom_kill_count()
    if oom_before is None or after is None:
        cause = "killed from outside or by the kernel's OOM killer: it holds torch"
    elif after > oom_before:
        cause = (f"the kernel's OOM killer killed {after - oom_before} process(es) "
                 "meanwhile: /proc/vmstat oom_kill rose")
    else:
        cause = "killed from outside; not the OOM killer: /proc/vmstat oom_kill did not change"
    return (f"the bigviz fork server died during this run ({cause}); the run's worker "
            f"died with it, and the fork server {restarted or 'restarts at the next run'}")


def _outcome(seen: Supervision, job: dict[str, Any], code: int | None, pid: int) -> Outcome:
    w = seen.watched[0]
    err = w.kept.get("error")
    out = Outcome(
        pid=pid, exit_code=code, baseline=w.kept.get("baseline") or {},
        result=w.kept.get("result"), prepared=w.kept.get("prepared"),
        error=None if err is None else str(err.get("message")),
        traceback=None if err is None else err.get("traceback"),
        watch_peak=w.rss_peak, t_spawn=seen.t_start, t_first_phase=w.t_first_phase,
        seconds=seen.seconds, callback_errors=seen.callback_errors,
    )
    out.phase_reached = w.timeline.current() or w.timeline.last_started()
    if out.result is not None:
        out.recording = Recording.from_dict(out.result["recording"])
        if out.recording.phases:
            out.phase_reached = _deepest_last(out.recording)
    else:
        out.recording = w.timeline.recording(str(job.get("label", "")), pid,
                                              float(job.get("interval_ms", 1.0)), None)
    out.recording.errors.extend(out.callback_errors)
    stop = seen.stop
    if stop is not None:
        out.outcome, out.error = stop.outcome, stop.error
        if stop.phase:  # where the limit was crossed, not where the signal landed
            out.phase_reached = stop.phase
    elif out.result is not None and out.result.get("error"):
        out.outcome, out.error = "error", str(out.result["error"])
    elif out.result is not None and out.result.get("verify"):
        out.outcome, out.error = "error", f"wrong weights: {out.result['verify']}"
    elif out.error is not None:
        out.outcome = "error"
    elif code is not None and code < 0:
        # SIGKILL: "oom" only when the kernel's OOM counter rose
        out.outcome, out.error = exit_verdict(code, "worker", out.phase_reached, seen.oom_before)
    elif code not in (0, None):
        out.outcome, out.error = "crashed", f"worker exited with code {code}"
    elif out.result is None and out.prepared is None:
        out.outcome, out.error = "crashed", "worker exited without reporting a result"
    return out


def _deepest_last(rec: Recording) -> str:
    """The phase the run reached: an unfinished phase (innermost), else the last started."""
    unfinished = [p for p in rec.phases if p.end is None or p.error]
    if unfinished:
        return max(unfinished, key=lambda p: (p.start, p.depth)).name
    top = [p for p in rec.phases if p.parent is None] or rec.phases
    return top[-1].name


def raise_if_failed(out: Outcome, what: str) -> None:
    """For internal jobs (preparing a checkpoint): a failure is an exception.

    Raises:
        RunError: naming ``what`` failed, and why.

    Example:
        >>> raise_if_failed(Outcome(), "saving")
    """
    if out.outcome != "ok" or out.error:
        tb = out.traceback or ""
        raise RunError(f"{what} failed: {out.error or out.outcome}\n{tb}".rstrip())

