"""Run one job in a forked worker and watch it: stream events, enforce the RAM budget,
and turn whatever happened (success, exception, OOM kill, crash, cancel) into data."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bigviz._errors import RunError
from bigviz.data.recording import Mark, Phase, Recording, Series
from bigviz.data.serde import from_plain
from bigviz.runner import forkserver
from bigviz.runner._worker import read_status, recv_messages
from bigviz.units import format_size

__all__ = ["Outcome", "Timeline", "execute", "vram_peaks"]

EventCallback = Callable[[dict[str, Any]], None]

#: how often the parent reads the worker's RSS for the budget watchdog
WATCH_INTERVAL_S = 0.005


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


class Timeline:
    """Rebuilds a Recording from a recorder's streamed events (used when no final result
    arrives): the single-process runner and the distributed launcher (one per rank)."""

    def __init__(self) -> None:
        self.series: dict[str, Series] = {}
        self.phases: dict[int, Phase] = {}
        self.open: list[int] = []
        self.marks: list[dict[str, Any]] = []

    def feed(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "samples":
            for name, (ts, vs) in ev.get("series", {}).items():
                s = self.series.setdefault(name, Series(name))
                s.t.extend(float(t) for t in ts)
                s.v.extend(int(v) for v in vs)
        elif kind == "phase_start":
            i = int(ev["index"])
            parent = ev.get("parent")
            depth = self.phases[parent].depth + 1 if parent in self.phases else 0
            self.phases[i] = Phase(str(ev["name"]), start=float(ev["t"]), parent=parent,
                                   depth=depth, detail=dict(ev.get("detail") or {}))
            self.open.append(i)
        elif kind == "phase_end":
            i = int(ev["index"])
            # a malformed event must not lose the rest of the run
            with contextlib.suppress(Exception):
                self.phases[i] = from_plain(Phase, ev["phase"])
            if i in self.open:
                self.open.remove(i)
        elif kind == "mark":
            self.marks.append(ev)

    def current(self) -> str | None:
        """The innermost open phase."""
        if self.open:
            return self.phases[self.open[-1]].name
        return None

    def last_started(self) -> str | None:
        """The phase started last (open or not)."""
        if not self.phases:
            return None
        return self.phases[max(self.phases)].name

    def recording(self, name: str, pid: int, interval_ms: float, end_t: float | None) -> Recording:
        """What was streamed so far, as a Recording marked ``meta["partial"]``."""
        phases = [self.phases[i] for i in sorted(self.phases)]
        marks = [Mark(str(m.get("name", "")), float(m.get("t", 0.0)),
                      dict(m.get("detail") or {})) for m in self.marks]
        duration = max([end_t or 0.0] + [s.t[-1] for s in self.series.values() if s.t])
        return Recording(name=name, pid=pid, interval_ms=interval_ms, series=self.series,
                         phases=phases, marks=marks, duration=duration,
                         meta={"partial": True})


def oom_kill_count() -> int | None:
    """The kernel's count of OOM kills since boot (``oom_kill`` in ``/proc/vmstat``; cgroup
    OOM kills count there too), or ``None`` where the kernel does not say."""
    try:
        with open("/proc/vmstat", encoding="ascii") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def sigkill_verdict(oom_kills_before: int | None, who: str, phase: str | None) -> tuple[str, str]:
    """Outcome and message for a process that died of SIGKILL.

    The kernel's OOM killer and a person's ``kill -9`` send the same signal; the OOM
    counter tells them apart, so a run is only called ``"oom"`` when the kernel says it
    killed something (or cannot say).
    """
    after = oom_kill_count()
    where = f" in phase {phase!r}"
    if oom_kills_before is None or after is None:
        return "oom", f"{who} killed by SIGKILL (most likely the kernel's OOM killer){where}"
    if after > oom_kills_before:
        return "oom", (f"{who} killed by the kernel's OOM killer{where} "
                       f"(/proc/vmstat oom_kill rose by {after - oom_kills_before})")
    return "crashed", (f"{who} killed by SIGKILL from outside{where}; not the OOM killer "
                       "(/proc/vmstat oom_kill did not change)")


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def execute(
    job: dict[str, Any],
    *,
    on_event: EventCallback | None = None,
    ram_budget: int | None = None,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
) -> Outcome:
    """Fork a worker for ``job`` and follow it to the end. Never raises for what the
    worker does; raises RunError only when no worker could be started."""
    server = forkserver.get_server()
    server.ensure()
    out = Outcome()
    out.t_spawn = time.monotonic()
    oom_before = oom_kill_count()
    run_id, pid, sock = server.spawn(job)
    out.pid = pid
    buf = bytearray()
    tl = Timeline()
    killed_for: str | None = None
    kill_msg: str | None = None
    eof = False
    exit_code: int | None = None
    last_watch = 0.0

    kill_phase: str | None = None

    def kill(reason: str, msg: str, phase: str | None = None) -> None:
        nonlocal killed_for, kill_msg, kill_phase
        if killed_for is None:
            killed_for, kill_msg, kill_phase = reason, msg, phase or tl.current()
            forkserver.kill(pid)

    def budget_msg(peak: int, phase: str | None) -> str:
        assert ram_budget is not None
        where = f" in phase {phase!r}" if phase else " before the first phase"
        return (f"would not fit in {format_size(ram_budget, binary=False)}: reached "
                f"{format_size(peak, binary=False)}{where}")

    try:
        while True:
            if not eof:
                if forkserver.readable(sock, WATCH_INTERVAL_S):
                    try:
                        data = sock.recv(1 << 20)
                    except OSError:
                        data = b""
                    if not data:
                        eof = True
                    else:
                        buf.extend(data)
                        for msg in recv_messages(buf):
                            kind = msg.get("type")
                            if kind == "baseline":
                                out.baseline = msg
                            elif kind == "result":
                                out.result = msg
                            elif kind == "prepared":
                                out.prepared = msg
                            elif kind == "error":
                                out.error = str(msg.get("message"))
                                out.traceback = msg.get("traceback")
                            else:
                                tl.feed(msg)
                                if kind == "phase_start" and out.t_first_phase is None:
                                    out.t_first_phase = time.monotonic()
                                if kind == "phase_end" and ram_budget is not None:
                                    peak = (msg.get("phase") or {}).get("ram_peak")
                                    if isinstance(peak, int) and peak > ram_budget:
                                        name = (msg.get("phase") or {}).get("name")
                                        kill("budget_exceeded", budget_msg(peak, name), name)
                            if on_event is not None and kind not in ("result", "prepared"):
                                try:
                                    on_event(msg)
                                except Exception as exc:  # the user's callback never kills a run
                                    if len(out.callback_errors) < 10:
                                        out.callback_errors.append(f"on_event: {exc!r}")
            else:
                time.sleep(WATCH_INTERVAL_S)
            now = time.monotonic()
            if exit_code is None:
                exit_code = server.poll_exit(run_id)
            if exit_code is None and now - last_watch >= WATCH_INTERVAL_S:
                last_watch = now
                st = read_status(pid)
                rss = st.get("VmRSS", 0)
                out.watch_peak = max(out.watch_peak, rss)
                if ram_budget is not None and rss > ram_budget:
                    kill("budget_exceeded", budget_msg(rss, tl.current()))
                if cancel is not None and cancel.is_set():
                    kill("cancelled", "cancelled while running" + (
                        f" phase {tl.current()!r}" if tl.current() else ""))
                if timeout is not None and now - out.t_spawn > timeout:
                    kill("error", f"timed out after {timeout:g} s" + (
                        f" in phase {tl.current()!r}" if tl.current() else ""))
            if exit_code is not None and eof:
                break
            # the worker is gone: whatever it sent is already buffered in the socket (a
            # leftover grandchild holding the socket open must not keep us waiting)
            if exit_code is not None and not eof and not forkserver.readable(sock, 0.5):
                eof = True
    finally:
        sock.close()
        if exit_code is None:  # we are unwinding on an error in the loop: leave nothing behind
            forkserver.kill(pid)
            exit_code = server.poll_exit(run_id, timeout=5.0)
    out.seconds = time.monotonic() - out.t_spawn
    out.exit_code = exit_code
    out.phase_reached = tl.current() or tl.last_started()
    name = str(job.get("label", ""))
    if out.result is not None:
        out.recording = Recording.from_dict(out.result["recording"])
        if out.recording.phases:
            out.phase_reached = _deepest_last(out.recording)
    else:
        out.recording = tl.recording(name, pid, float(job.get("interval_ms", 1.0)), None)
    out.recording.errors.extend(out.callback_errors)
    # -- the outcome -----------------------------------------------------------------
    if killed_for is not None:
        out.outcome, out.error = killed_for, kill_msg
        if kill_phase:  # where the limit was crossed, not where the signal landed
            out.phase_reached = kill_phase
    elif out.result is not None and out.result.get("error"):
        out.outcome, out.error = "error", str(out.result["error"])
    elif out.result is not None and out.result.get("verify"):
        out.outcome, out.error = "error", f"wrong weights: {out.result['verify']}"
    elif out.error is not None:
        out.outcome = "error"
    elif exit_code is not None and exit_code < 0:
        sig = _signal_name(exit_code)
        if -exit_code == signal.SIGKILL:
            verdict, out.error = sigkill_verdict(oom_before, "worker", out.phase_reached)
            out.outcome = "oom" if verdict == "oom" else "crashed"
        else:
            out.outcome = "crashed"
            out.error = f"worker died of {sig} in phase {out.phase_reached!r}"
    elif exit_code not in (0, None):
        out.outcome, out.error = "crashed", f"worker exited with code {exit_code}"
    elif out.result is None and out.prepared is None:
        out.outcome, out.error = "crashed", "worker exited without reporting a result"
    return out


def vram_peaks(phases: Iterable[Phase]) -> dict[str, int]:
    """Each device's largest VRAM peak over ``phases`` (nested ones too: in a killed run
    the enclosing phase never ended)."""
    out: dict[str, int] = {}
    for p in phases:
        for dev, v in p.vram_peak.items():
            out[dev] = max(out.get(dev, 0), int(v))
    return out


def _deepest_last(rec: Recording) -> str:
    """The phase the run reached: an unfinished phase (innermost), else the last started."""
    unfinished = [p for p in rec.phases if p.end is None or p.error]
    if unfinished:
        return max(unfinished, key=lambda p: (p.start, p.depth)).name
    top = [p for p in rec.phases if p.parent is None] or rec.phases
    return top[-1].name


def raise_if_failed(out: Outcome, what: str) -> None:
    """For internal jobs (preparing a checkpoint): a failure is an exception."""
    if out.outcome != "ok" or out.error:
        tb = out.traceback or ""
        raise RunError(f"{what} failed: {out.error or out.outcome}\n{tb}".rstrip())
