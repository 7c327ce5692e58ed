"""One supervisor for 1..N measured processes: stream their events, enforce the RAM
budget, the timeout and cancellation, stop the rest at the first failure, and say how
each one ended.

Used by the single-process runner (one worker forked by the fork server) and by the
distributed launcher (N ranks). It only sees processes through the small :class:`Child`
interface, so a scripted stand-in (:class:`bigviz.testing.FakeChild`) drives it in tests
without real processes or timing luck.

The budget is checked three ways. One worker's own sidecar sampler checks every 1 ms
sample against it and kills the worker at the first sample above (its kill report
carries the samples up to the kill, which the worker never streamed: they join the
kept timeline; see :mod:`bigviz.runner.kills`). The parent reads every child's
memory every :data:`WATCH_INTERVAL_S` (one child: its RSS; several: Σ anonymous +
shmem, plus the largest file-backed share, since the ranks of a node map the same
files) — for one worker whose sidecar is armed only as a backstop, after
:data:`BACKSTOP_S`. And every ``phase_end`` carries the phase's exact peak (``VmHWM``),
which a sample can miss. One worker's budget is its whole RSS (its baseline included).

A stop names the phase from the recording, once every event the child sent before it
died is read: the innermost phase open at the moment of the kill
(:func:`innermost_at`), not what the parent had read of the stream when it decided.

A SIGKILL is not evidence of OOM: :func:`sigkill_verdict` asks ``/proc/vmstat``.

Example:
    >>> from bigviz.testing import FakeChild, FakeClock
    >>> clock = FakeClock()
    >>> child = FakeChild(clock)
    >>> child.send_at(0.0, {"type": "phase_start", "index": 0, "name": "load", "t": 0.0})
    >>> child.exit_at(0.1, 0)
    >>> s = supervise([child], clock=clock, sleep=clock.advance)
    >>> (s.stop, s.watched[0].exit_code, s.watched[0].timeline.phase())
    (None, 0, 'load')
"""

from __future__ import annotations

import select
import signal
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bigviz.data.recording import Phase
from bigviz.runner.events import Timeline, recv_messages
from bigviz.runner.kills import merge_kill_report, read_kill_report
from bigviz.units import format_size

__all__ = [
    "BACKSTOP_S",
    "WATCH_INTERVAL_S",
    "Child",
    "EventCallback",
    "Stop",
    "Supervision",
    "Watched",
    "budget_meaning",
    "describe_exit",
    "exit_verdict",
    "innermost_at",
    "oom_kill_count",
    "sigkill_verdict",
    "signal_name",
    "supervise",
]

EventCallback = Callable[[dict[str, Any]], None]

#: how often the parent reads the children's memory for the budget
WATCH_INTERVAL_S = 0.005
#: with the worker's sidecar checking the budget every sample, the parent kills only
#: when the worker stayed over it this long (the sidecar failed to)
BACKSTOP_S = 0.25
#: once every child exited, how long to wait for more of its events before giving up (a
#: stray grandchild may hold the stream open)
_QUIET_S = 0.5
_DRAIN_S = 2.0
#: messages the supervisor keeps (the last of each type) instead of passing to the timeline
_KEPT = ("baseline", "hello", "result", "prepared", "error", "armed")
#: messages that are the parent's business, not the caller's ``on_event``
_PRIVATE = ("result", "prepared", "started", "written", "armed")


class Child(Protocol):
    """What the supervisor needs of one measured process."""

    pid: int

    def fileno(self) -> int | None:
        """The event stream's descriptor to wait on; ``None``: poll :meth:`read` instead."""

    def read(self) -> bytes | None:
        """The event bytes available now (``b""``: none yet); ``None`` at end of stream."""

    def poll(self) -> int | None:
        """The exit code once the process ended (negative: killed by that signal)."""

    def kill(self) -> None:
        """SIGKILL the process (and what it started)."""

    def memory(self) -> dict[str, int]:
        """``rss``, ``anon``, ``file``, ``shmem`` bytes now; ``{}`` once it is gone."""


@dataclass
class Watched:
    """The supervisor's view of one child: its events, timeline and how it ended."""

    child: Child
    rank: int
    buf: bytearray = field(default_factory=bytearray)
    timeline: Timeline = field(default_factory=Timeline)
    kept: dict[str, dict[str, Any]] = field(default_factory=dict)
    eof: bool = False
    exit_code: int | None = None
    t_exit: float | None = None
    t_first_phase: float | None = None
    rss_peak: int = 0
    #: the parent's readings (monotonic times, RSS; a reading equal to the one before is
    #: not kept: 16 B per change), for the peak inside phases
    watch_t: array[float] = field(default_factory=lambda: array("d"))
    watch_v: array[int] = field(default_factory=lambda: array("q"))
    over_since: float | None = None

    def budget_report(self) -> str | None:
        """Where the child's sidecar writes its budget kill report (``None``: not armed)."""
        path = self.kept.get("armed", {}).get("budget_report")
        return str(path) if path else None

    def t0(self) -> float | None:
        """The child's recorder start (monotonic), from its ``baseline`` message."""
        t0 = self.kept.get("baseline", {}).get("t0")
        return float(t0) if isinstance(t0, (int, float)) else None

    def phase(self) -> str | None:
        """The innermost open phase, else the last one started."""
        return self.timeline.phase()


@dataclass
class Stop:
    """Why the supervisor stopped the children itself: ``outcome`` (``"budget_exceeded"``,
    ``"cancelled"``, ``"error"`` for a timeout), the message, the child it blames and the
    phase where the limit was crossed."""

    outcome: str
    error: str
    culprit: Watched | None
    phase: str | None = None
    #: when the children were stopped (monotonic); the phase is named from the recording
    #: at that moment once the streams are drained
    t: float | None = None
    #: the message with ``{where}`` for the phase (``" in phase 'x'"``)
    template: str | None = None
    #: the measured peak at the stop (bytes of RSS), when the stop measured one
    peak: int | None = None


@dataclass
class Supervision:
    """What the supervisor saw, for the caller's verdict."""

    watched: list[Watched]
    stop: Stop | None
    t_start: float
    seconds: float
    oom_before: int | None
    callback_errors: list[str] = field(default_factory=list)

    def first_failed(self) -> Watched | None:
        """The child that failed first: the cause; the others failed because it left
        their collective (a signal beats an exit code at the same instant)."""
        failed = [w for w in self.watched if w.exit_code not in (None, 0)]
        if not failed:
            return None
        return min(failed, key=lambda w: (
            w.t_exit if w.t_exit is not None else float("inf"),
            0 if (w.exit_code or 0) < 0 else 1))


def supervise(
    children: Sequence[Child],
    *,
    on_event: EventCallback | None = None,
    ram_budget: int | None = None,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
    group: bool = False,
    t_start: float | None = None,
    oom_before: int | None = None,
    on_tick: Callable[[Sequence[Watched], float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Supervision:
    """Follow ``children`` until every one exited and its stream is drained.

    Args:
        children: the processes, in rank order.
        on_event: called with each streamed event (not ``result``/``prepared``); an
            exception in it is recorded, never kills a run.
        ram_budget: stop every child when their memory exceeds this many bytes.
        timeout: seconds from ``t_start`` after which every child is stopped.
        cancel: set it to stop every child.
        group: word messages for ranks of one job (``"the ranks reached …"``).
        t_start: when the run began (default: now).
        oom_before: ``oom_kill_count()`` before the children started.
        on_tick: called every round while nothing was stopped (the launcher's node PSS).
        clock, sleep: time, replaceable by a fake clock in tests.

    Returns:
        A :class:`Supervision`; no exception for anything the children do.

    Example:
        >>> # s = supervise([child], ram_budget=8 << 30, timeout=60.0)
    """
    sup = _Supervisor(children, on_event=on_event, budget=ram_budget, timeout=timeout,
                      cancel=cancel, group=group, clock=clock, sleep=sleep)
    start = clock() if t_start is None else t_start
    try:
        sup.loop(start, on_tick)
    finally:
        for w in sup.watched:  # unwinding on an error (or done): leave nothing running
            if w.exit_code is None:
                w.child.kill()
    if not group and len(sup.watched) == 1:
        sup.finish(sup.watched[0])
    return Supervision(sup.watched, sup.stop, start, clock() - start, oom_before,
                       sup.callback_errors)


class _Supervisor:
    def __init__(
        self, children: Sequence[Child], *, on_event: EventCallback | None,
        budget: int | None, timeout: float | None, cancel: threading.Event | None,
        group: bool, clock: Callable[[], float], sleep: Callable[[float], None],
    ) -> None:
        self.watched = [Watched(c, i) for i, c in enumerate(children)]
        self.on_event, self.budget, self.timeout, self.cancel = on_event, budget, timeout, cancel
        self.group, self.clock, self.sleep = group, clock, sleep
        self.stop: Stop | None = None
        self.callback_errors: list[str] = []

    # -- the loop -----------------------------------------------------------------
    def loop(self, t_start: float, on_tick: Callable[[Sequence[Watched], float], None] | None,
             ) -> None:
        last_watch = float("-inf")
        while True:
            for w in self._wait([w for w in self.watched if not w.eof], WATCH_INTERVAL_S):
                self._pump(w)
            now = self.clock()
            if on_tick is not None and self.stop is None:
                on_tick(self.watched, now)
            for w in self.watched:
                if w.exit_code is None:
                    code = w.child.poll()
                    if code is not None:
                        w.exit_code, w.t_exit = code, now
            alive = [w for w in self.watched if w.exit_code is None]
            if alive and any(w.exit_code not in (None, 0) for w in self.watched):
                for w in alive:  # the others would wait in a collective forever
                    w.child.kill()
            if not alive:
                if self._drained(now):
                    return
                continue
            if self.stop is None and now - last_watch >= WATCH_INTERVAL_S:
                last_watch = now
                self._watch(alive, now - t_start)
                if self.stop is not None:
                    for w in alive:
                        w.child.kill()

    def _drained(self, now: float) -> bool:
        """Every child exited: read what is left in the streams, briefly."""
        open_ = [w for w in self.watched if not w.eof]
        last_exit = max((w.t_exit or now for w in self.watched), default=now)
        if not open_ or now - last_exit > _DRAIN_S:
            return True
        ready = self._wait(open_, _QUIET_S)
        for w in ready:
            self._pump(w)
        return not ready

    def _wait(self, ws: Sequence[Watched], timeout: float) -> list[Watched]:
        """The children with something to read within ``timeout``; ``poll``, not
        ``select``: a notebook kernel may hold more than FD_SETSIZE descriptors."""
        by_fd = {fd: w for w in ws if (fd := w.child.fileno()) is not None}
        polled = [w for w in ws if w.child.fileno() is None]
        if not by_fd:
            self.sleep(timeout)
            return polled
        p = select.poll()
        for fd in by_fd:
            p.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        ready = [by_fd[fd] for fd, _ in p.poll(0 if polled else max(0, int(timeout * 1000)))]
        return ready + polled

    # -- events -------------------------------------------------------------------
    def _pump(self, w: Watched) -> None:
        data = w.child.read()
        if data is None:
            w.eof = True
        elif data:
            w.buf.extend(data)
        for msg in recv_messages(w.buf):
            self._handle(w, msg)

    def _handle(self, w: Watched, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind in _KEPT:
            w.kept[str(kind)] = msg
        else:
            w.timeline.feed(msg)
            if kind == "phase_start" and w.t_first_phase is None:
                w.t_first_phase = self.clock()
            if kind == "phase_end":
                self._exact_peak(w, msg.get("phase") or {})
        if self.on_event is not None and kind not in _PRIVATE:
            try:
                self.on_event(msg)
            except Exception as exc:  # the user's callback never kills a run
                if len(self.callback_errors) < 10:
                    self.callback_errors.append(f"on_event: {exc!r}")

    def _exact_peak(self, w: Watched, phase: dict[str, Any]) -> None:
        peak, name = phase.get("ram_peak"), phase.get("name")
        if self.budget is None or self.stop is not None:
            return
        if isinstance(peak, int) and peak > self.budget:
            what = f"rank {w.rank} alone reached" if self.group else "reached"
            self._halt(Stop("budget_exceeded", f"{self._over()}: {what} "
                            f"{format_size(peak, binary=False)}{_where(name)}", w, name,
                            peak=peak))

    # -- limits -------------------------------------------------------------------
    def _watch(self, alive: Sequence[Watched], elapsed: float) -> None:
        used, worst = self._memory(alive)
        now = self.clock()
        if self.budget is not None and used > self.budget and self._backstop(worst, now):
            if self.group:
                msg = (f"{self._over()}: the ranks reached {format_size(used, binary=False)} "
                       f"together (rank {worst.rank} in phase {worst.phase()!r})")
                self.stop = Stop("budget_exceeded", msg, worst)
            else:
                phase = worst.timeline.current()
                template = f"{self._over()}: reached {format_size(used, binary=False)}{{where}}"
                self.stop = Stop("budget_exceeded", template.format(where=_where(phase)),
                                 worst, phase, t=now, template=template, peak=used)
        elif self.cancel is not None and self.cancel.is_set():
            if self.group:
                self.stop = Stop("cancelled", "cancelled while running", None)
            else:
                phase = alive[0].timeline.current()
                template = "cancelled while running{where}"
                self.stop = Stop("cancelled", template.format(where=_where(phase)), alive[0],
                                 phase, t=now, template=template)
        elif self.timeout is not None and elapsed > self.timeout:
            if self.group:
                where = ", ".join(f"rank {w.rank} in {w.phase()!r}" for w in alive)
                # the rank that got least far is the one the others wait for
                laggard = min(alive, key=lambda w: (len(w.timeline.phases), w.rank))
                self.stop = Stop("error", f"timed out after {self.timeout:g} s ({where})",
                                 laggard)
            else:
                phase = alive[0].timeline.current()
                template = f"timed out after {self.timeout:g} s{{where}}"
                self.stop = Stop("error", template.format(where=_where(phase)), alive[0],
                                 phase, t=now, template=template)

    def _backstop(self, w: Watched, now: float) -> bool:
        """Whether the parent stops a child over the budget now: at once, unless the
        child's own sidecar checks every sample (then only if it stayed over for
        :data:`BACKSTOP_S`: the sidecar did not act)."""
        if self.group or not w.budget_report():
            return True
        if w.over_since is None:
            w.over_since = now
        return now - w.over_since >= BACKSTOP_S

    def _memory(self, alive: Sequence[Watched]) -> tuple[int, Watched]:
        """The children's memory together, and the child holding the most of it."""
        if len(alive) == 1:
            rss = alive[0].child.memory().get("rss", 0)
            alive[0].rss_peak = max(alive[0].rss_peak, rss)
            w = alive[0]
            if rss and (not w.watch_v or w.watch_v[-1] != rss):
                w.watch_t.append(self.clock())
                w.watch_v.append(rss)
            if self.budget is not None and rss <= self.budget:
                alive[0].over_since = None
            return rss, alive[0]
        total, files, worst, worst_v = 0, 0, alive[0], -1
        for w in alive:
            m = w.child.memory()
            w.rss_peak = max(w.rss_peak, m.get("rss", 0))
            own = m.get("anon", 0) + m.get("shmem", 0)
            total += own
            files = max(files, m.get("file", 0))  # the ranks map the same files
            if own > worst_v:
                worst, worst_v = w, own
        return total + files, worst

    def _over(self) -> str:
        assert self.budget is not None
        return (f"would not fit in {format_size(self.budget, binary=False)} "
                f"({budget_meaning(self.group)})")

    # -- after the end: one worker -------------------------------------------------
    def finish(self, w: Watched) -> None:
        """Once one worker's streams are drained: take its sidecar's kill report, name
        the phase of the stop from the recording, keep the parent's peak inside phases."""
        t0 = w.t0()
        report = read_kill_report(w.budget_report())
        if report is not None:
            if t0 is not None:
                merge_kill_report(w.timeline, report, t0)
            self.budget = report.budget
            template = (f"{self._over()}: reached {format_size(report.peak, binary=False)}"
                        "{where}")
            self.stop = Stop("budget_exceeded", template.format(where=""), w, None,
                             t=report.t, template=template, peak=report.peak)
            w.rss_peak = max(w.rss_peak, report.peak)
        stop = self.stop
        if stop is not None and stop.t is not None and stop.template is not None \
                and t0 is not None:
            phase = innermost_at(list(w.timeline.phases.values()), stop.t - t0)
            stop.phase = phase.name if phase is not None else None
            stop.error = stop.template.format(where=_where(stop.phase))
            if report is None:  # the parent's stop: mark when it landed (the sidecar's is)
                w.timeline.marks.append({"type": "mark", "name": _STOP_MARKS[stop.outcome],
                                         "t": stop.t - t0, "detail": {"by": "parent"}})
        if t0 is not None and w.timeline.phases:
            # every byte of the peak sits in a named phase: readings between phases (the
            # worker's checks after its recording) are not the run's
            spans = [(t0 + p.start, None if p.end is None else t0 + p.end)
                     for p in w.timeline.phases.values() if p.depth == 0]
            # a kept reading holds until the next one: it counts in a phase it overlaps
            ends = [*w.watch_t[1:], float("inf")][: len(w.watch_t)]
            inside = [v for t, t_next, v in zip(w.watch_t, ends, w.watch_v, strict=True)
                      if any(a <= t_next and (b is None or t <= b) for a, b in spans)]
            w.rss_peak = max(inside + ([stop.peak] if stop is not None and stop.peak else [0]))

    def _halt(self, stop: Stop) -> None:
        self.stop = stop
        for w in self.watched:
            if w.exit_code is None:
                w.child.kill()


#: the mark a stop leaves in the kept timeline, by outcome
_STOP_MARKS = {"budget_exceeded": "budget exceeded", "cancelled": "cancelled",
               "error": "timed out"}


def _where(phase: str | None) -> str:
    return f" in phase {phase!r}" if phase else " before the first phase"


def budget_meaning(group: bool = False) -> str:
    """What a RAM budget is compared with, in words (shown beside every budget).

    Example:
        >>> budget_meaning()
        'RSS of the whole worker, its baseline included'
    """
    if group:
        return "Σ anonymous + shmem of the ranks, plus the largest file-backed share"
    return "RSS of the whole worker, its baseline included"


def innermost_at(phases: Sequence[Phase], t: float) -> Phase | None:
    """The innermost phase open at ``t`` (seconds of the recording): of the phases that
    started by then and had not ended, the one started last (deepest on a tie).

    Example:
        >>> ps = [Phase("load", 0.0, 5.0), Phase("shard 1", 0.1, 0.2, depth=1),
        ...       Phase("shard 2", 0.3, None, depth=1)]
        >>> innermost_at(ps, 0.35).name, innermost_at(ps, 0.25).name
        ('shard 2', 'load')
    """
    open_ = [p for p in phases if p.start <= t and (p.end is None or p.end >= t)]
    return max(open_, key=lambda p: (p.start, p.depth), default=None)


# -- verdicts ------------------------------------------------------------------------


def oom_kill_count() -> int | None:
    """The kernel's count of OOM kills since boot (``oom_kill`` in ``/proc/vmstat``; cgroup
    OOM kills count there too), or ``None`` where the kernel does not say.

    Example:
        >>> isinstance(oom_kill_count(), (int, type(None)))
        True
    """
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

    Example:
        >>> sigkill_verdict(None, "worker", "load")[0]
        'oom'
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


def signal_name(code: int) -> str:
    """``-11`` → ``"SIGSEGV"`` (an exit code as ``os.waitstatus_to_exitcode`` gives it).

    Example:
        >>> signal_name(-9)
        'SIGKILL'
    """
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def describe_exit(code: int) -> str:
    """``"died of SIGSEGV"`` or ``"exited with code 3"``.

    Example:
        >>> describe_exit(3)
        'exited with code 3'
    """
    return f"died of {signal_name(code)}" if code < 0 else f"exited with code {code}"


def exit_verdict(code: int, who: str, phase: str | None, oom_before: int | None,
                 ) -> tuple[str, str]:
    """Outcome and message for a process that exited with ``code`` (not 0): ``"oom"``
    only when the kernel's OOM counter rose, else ``"crashed"``.

    Example:
        >>> exit_verdict(-11, "worker", "load", None)
        ('crashed', "worker died of SIGSEGV in phase 'load'")
    """
    if code == -signal.SIGKILL:
        return sigkill_verdict(oom_before, who, phase)
    return "crashed", f"{who} {describe_exit(code)} in phase {phase!r}"
