"""The process-tree sampler of ``bigviz profile``: the RAM of a command and all its children.

The command runs as a child of the ``bigviz`` process, whose ``bigviz-profile`` thread
samples the whole process tree (the command and every process it starts) from ``/proc``:
summed and per process, anonymous and file-backed apart. The command's own threads and
GIL are never touched.

Phases come from marker lines (:mod:`bigviz.recorder.markers`), kept in the same
:class:`~bigviz.recorder.phases.PhaseStack` as the in-process recorder's. A marker
phase's peak is the highest *summed* RSS of the tree sampled during the phase; when one
process alone ran through the phase it is that process's exact peak instead
(``ram_peak_exact``): at every marker each process's ``VmHWM`` is folded into the open
phases and reset through ``/proc/PID/clear_refs``, as the recorder does in one process.
The exact per-process peaks are in ``detail["exact_peaks"]``.

Example:
    >>> import os, time
    >>> s = TreeSampler(os.getpid(), interval_s=0.01, t0=time.monotonic(), marker_fd=None)
    >>> s.start(); time.sleep(0.05); s.stop()
    >>> s.procs[os.getpid()].ram_peak > 0
    True
"""

from __future__ import annotations

import bisect
import os
import select
import threading
import time
from dataclasses import dataclass, field

from bigviz.data.recording import Mark, Phase
from bigviz.recorder.markers import MarkerReader, parse_marker
from bigviz.recorder.phases import OpenPhase, PhaseStack
from bigviz.recorder.procfs import read_kib, read_statm, reset_hwm
from bigviz.recorder.sources import sidecar_target

__all__ = ["ProcInfo", "TreeSampler"]


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def _ppid(pid: int) -> int | None:
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # the command name may hold spaces and parentheses: parse after the last ')'
    try:
        return int(stat[stat.rindex(")") + 2 :].split()[1])
    except (ValueError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    raw = _read(f"/proc/{pid}/cmdline")
    return " ".join(a for a in (raw or "").split("\0") if a)


@dataclass
class ProcInfo:
    """One process of the tree: who it is, when it was seen, its own samples."""

    pid: int
    ppid: int
    cmdline: str
    first_seen: float
    last_seen: float
    ram_peak: int = 0
    excluded: bool = False
    t: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    anon: list[int] = field(default_factory=list)
    file: list[int] = field(default_factory=list)


class TreeSampler:
    """Samples a process tree and reads phase markers, on one ``bigviz-profile`` thread.

    Args:
        root: the command's pid; its descendants are found as they appear.
        interval_s: sampling interval in seconds.
        t0: the monotonic time the timeline counts from.
        marker_fd: the reading end of the marker FIFO, or ``None``.
        no_reset: processes whose ``VmHWM`` another recorder resets.
    """

    def __init__(
        self,
        root: int,
        *,
        interval_s: float,
        t0: float,
        marker_fd: int | None,
        no_reset: set[int] | None = None,
    ) -> None:
        self.root = root
        # processes whose high-water mark someone else resets (a bigviz recorder inside
        # them): resetting it too would break their exact peaks
        self.no_reset: set[int] = set(no_reset or ())
        self.hwm_reason: str | None = None
        self.interval_s = interval_s
        self.t0 = t0
        self.marker_fd = marker_fd
        self.t: list[float] = []
        self.rss: list[int] = []
        self.anon: list[int] = []
        self.file: list[int] = []
        self.procs: dict[int, ProcInfo] = {}
        self.phases: list[Phase] = []
        self.marks: list[Mark] = []
        self.errors: list[str] = []
        # open marker phases; their peaks are per-process high-water marks (pid -> bytes)
        self._stack: PhaseStack[int] = PhaseStack()
        # per open phase (by index): every process sampled while it was open
        self._pids: dict[int, set[int]] = {}
        self._ppids: dict[int, int] = {}
        self._tracked: set[int] = {root}
        self._markers = MarkerReader(marker_fd) if marker_fd is not None else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bigviz-profile", daemon=True)
        self._last_refresh = -1.0
        self._last_cmdline = 0.0

    # lifecycle
    def start(self) -> None:
        """Start sampling on the ``bigviz-profile`` thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling, read the last markers and close the phases left open."""
        self._stop.set()
        self._thread.join()
        now = time.monotonic() - self.t0
        self._read_markers(now)  # lines written just before the command exited
        if self._stack:
            self._boundary()
        while (op := self._stack.innermost) is not None:
            self._stack.close(op)
            self._close(op, now, error="not ended before the command exited")

    # tree
    def _refresh_tree(self) -> None:
        try:
            listed = {int(n) for n in os.listdir("/proc") if n.isdigit()}
        except OSError:
            return
        for pid in list(self._ppids):
            if pid not in listed:
                del self._ppids[pid]
        for pid in listed - self._ppids.keys():
            ppid = _ppid(pid)
            if ppid is not None:
                self._ppids[pid] = ppid
        children: dict[int, list[int]] = {}
        for pid, ppid in self._ppids.items():
            children.setdefault(ppid, []).append(pid)
        todo = [self.root]
        found: set[int] = set()
        while todo:
            pid = todo.pop()
            if pid in found:
                continue
            found.add(pid)
            todo.extend(children.get(pid, ()))
        # keep following a process that was ours even after it is re-parented (orphaned)
        self._tracked = {p for p in self._tracked if p in listed} | (found & listed)
        now = time.monotonic()
        if now - self._last_cmdline >= 0.05:
            # a fork is followed by exec: name each process after what it runs now
            self._last_cmdline = now
            for pid in self._tracked:
                info = self.procs.get(pid)
                if info is not None:
                    info.cmdline = _cmdline(pid) or info.cmdline

    # sampling
    def _sample(self, now: float) -> None:
        total = anon = shared = 0
        for pid in sorted(self._tracked):
            m = read_statm(pid)  # (resident, shared): shared = file-backed + shmem
            if m is None:
                continue
            rss, shr = m
            info = self.procs.get(pid)
            if info is None:
                info = ProcInfo(pid, self._ppids.get(pid, 0), _cmdline(pid), now, now)
                self.procs[pid] = info
            if rss == 0 and not info.cmdline:
                continue  # a zombie: nothing resident any more
            target = sidecar_target(info.cmdline)
            if target is not None:
                # bigviz's own sampler (auto-instrumentation), not the command's; the
                # recorder it serves resets its target's high-water mark itself
                info.excluded = True
                self.no_reset.add(target)
                continue
            info.last_seen = now
            info.ram_peak = max(info.ram_peak, rss)
            info.t.append(now)
            info.rss.append(rss)
            info.anon.append(rss - shr)
            info.file.append(shr)
            total += rss
            anon += rss - shr
            shared += shr
        self.t.append(now)
        self.rss.append(total)
        self.anon.append(anon)
        self.file.append(shared)
        if self._stack:
            seen = {p for p in self._tracked if p in self.procs and not self.procs[p].excluded}
            for op in self._stack:
                self._pids.setdefault(op.index, set()).update(seen)

    def _loop(self) -> None:
        refresh_every = max(self.interval_s, 0.005)
        next_tick = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic() - self.t0
            if now - self._last_refresh >= refresh_every:
                self._refresh_tree()
                self._last_refresh = now
            self._sample(now)
            next_tick += self.interval_s
            delay = next_tick - time.monotonic()
            if delay < 0:  # fell behind: skip ticks rather than burst
                next_tick = time.monotonic()
                delay = 0.0
            self._wait(delay)
        now = time.monotonic() - self.t0
        self._sample(now)

    def _wait(self, delay: float) -> None:
        """Sleep until the next tick, waking at once when a marker arrives: the marker is
        stamped on arrival and a sample taken then, so a phase boundary has a sample at it
        (not up to one interval late, when the next phase may already be allocating)."""
        if self.marker_fd is None:
            self._stop.wait(delay)
            return
        try:
            ready, _, _ = select.select([self.marker_fd], [], [], delay)
        except (OSError, ValueError):
            self._stop.wait(delay)
            return
        if ready:
            now = time.monotonic() - self.t0
            self._sample(now)
            self._read_markers(now)

    # markers
    def _read_markers(self, now: float) -> None:
        if self._markers is None:
            return
        for line in self._markers.lines():
            self._handle(line, now)

    def _handle(self, line: str, now: float) -> None:
        m = parse_marker(line)
        if m is None:
            return
        if m.kind == "mark":
            self.marks.append(Mark(m.name, now, {"source": "marker"}))
            return
        if m.kind == "start" or (m.kind == "end" and self._stack):
            self._boundary()
        if m.kind == "start":
            detail = {"source": "marker", "scope": "process tree"}
            self._stack.open(self.phases, m.name, start=now, detail=detail)
            return
        if m.kind == "end":
            if not self._stack:
                self.errors.append(f"marker {m.line!r} ends a phase but none is open")
                return
            names = self._stack.names()
            if m.name and m.name not in names:
                self.errors.append(f"marker {m.line!r} ends {m.name!r}, which is not open {names}")
                return
            for op in self._stack.close_through(m.name):
                self._close(op, now, error=None)
            return
        self.errors.append(
            f"ignored marker line {m.line[:80]!r}; write 'BIGVIZ_PHASE start NAME', "
            "'BIGVIZ_PHASE end [NAME]' or 'BIGVIZ_MARK NAME'"
        )

    def _boundary(self) -> None:
        """Exact per-process peaks, as the recorder does for one process: fold each
        process's high-water mark (``VmHWM``) into every open phase, then reset it by
        writing ``5`` to ``/proc/PID/clear_refs``, so the next stretch starts afresh."""
        if self.hwm_reason is not None:
            return
        for pid in sorted(self._tracked - self.no_reset):
            info = self.procs.get(pid)
            if info is None or info.excluded:
                continue
            hwm = read_kib(pid, ("VmHWM",)).get("VmHWM")
            if hwm is None:
                continue  # it just exited
            self._stack.fold({pid: hwm})
            try:
                if not reset_hwm(pid):
                    continue  # it exited since
            except OSError as exc:
                self.hwm_reason = f"cannot reset VmHWM via /proc/{pid}/clear_refs: {exc}"
                self.errors.append(f"marker phases' peaks are sampled only: {self.hwm_reason}")
                self._stack.clear_peaks()
                return

    def _close(self, op: OpenPhase[int], now: float, *, error: str | None) -> None:
        # sampled peaks are filled in at the end (fill_phases), once the totals
        # are final; the exact high-water marks are known now
        phase = self.phases[op.index]
        phase.end = now
        phase.error = error
        if op.peaks:
            phase.detail["exact_peaks"] = {str(pid): v for pid, v in sorted(op.peaks.items())}
        # one process all along, and its mark was kept: the tree's peak is exact
        pids = self._pids.pop(op.index, set())
        if len(pids) == 1 and next(iter(pids)) in op.peaks:
            phase.detail["exact_peak"] = op.peaks[next(iter(pids))]

    def drop(self, pid: int) -> None:
        """Take a process out of the totals (bigviz's own sampler, seen before its exec)."""
        info = self.procs.pop(pid, None)
        if info is None:
            return
        where = {t: i for i, t in enumerate(self.t)}
        for k, t in enumerate(info.t):
            i = where.get(t)
            if i is not None:
                self.rss[i] -= info.rss[k]
                self.anon[i] -= info.anon[k]
                self.file[i] -= info.file[k]

    def fill_phases(self) -> None:
        """Set the peaks of the marker phases, once the totals are final (after
        :meth:`stop` and :meth:`drop`): sampled from the tree totals, or exact when a
        single process ran through the phase (see :meth:`_boundary`)."""
        t = self.t
        for phase in self.phases:
            end = phase.end if phase.end is not None else (t[-1] if t else phase.start)
            # the sample times only grow: bisect, not a scan of the whole run per phase
            # (seconds for a long run sampled every 2 ms)
            lo, hi = bisect.bisect_left(t, phase.start), bisect.bisect_right(t, end)
            last_before = bisect.bisect_right(t, phase.start) - 1
            if hi <= lo and t:
                # shorter than one interval: the nearest sample
                lo = max(last_before, 0)
                hi = lo + 1
            if hi > lo:
                phase.ram_peak = max(self.rss[lo:hi])
                phase.ram_anon_peak = max(self.anon[lo:hi])
                phase.ram_file_peak = max(self.file[lo:hi])
                phase.ram_end = self.rss[hi - 1]
            if last_before >= 0:
                phase.ram_start = self.rss[last_before]
            exact = phase.detail.pop("exact_peak", None)
            phase.ram_peak_exact = isinstance(exact, int)
            if isinstance(exact, int):
                # the kernel's mark can only be above the samples; max() guards a process
                # that was sampled before it was tracked for the reset
                phase.ram_peak = max(exact, phase.ram_peak or 0)
