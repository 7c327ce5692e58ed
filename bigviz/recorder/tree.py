"""The process-tree sampler of ``bigviz profile``: the RAM of a command and all its children.

The command runs as a child of the ``bigviz`` process, whose ``bigviz-profile`` thread
samples the whole process tree (the command and every process it starts) from
``/proc/PID/status``: summed and per process, anonymous, file-backed and shmem apart, all
three from one read. The command's own threads and GIL are never touched.

Summing a tree without counting a page twice. A process that has exec'd a program counts
its RSS. A child forked *without* exec (``os.fork``, a ``multiprocessing`` fork worker)
shares its parent's pages copy-on-write, so its RSS would count them again: it counts
its private pages only (USS, from ``smaps_rollup``, read at a limited rate and carried
forward by its RSS changes). A ``vfork`` child (same memory as its parent, until it
execs) counts nothing. So a program that runs ``uname`` through a fork while it holds
1 GiB does not show 2 GiB. (Pages that two forked children share with each other but
not with an exec'd ancestor count in neither: rare, and below the truth, never above.)

Phases come from marker lines (:mod:`bigviz.recorder.markers`), kept in the same
:class:`~bigviz.recorder.phases.PhaseStack` as the in-process recorder's. A marker
phase's peak is the highest *summed* RSS of the tree sampled during the phase; when one
process alone ran through the phase it is that process's exact peak instead
(``ram_peak_exact``): at every marker a :class:`~bigviz.recorder.hwm.ResetWorker` reads
each process's ``VmHWM`` and resets it through ``/proc/PID/clear_refs``, off the sampling
thread (the reset can wait hundreds of ms for the process's mmap lock). A phase whose
resets were late keeps its sampled peak and says why (``Phase.ram_peak_why``); see
:mod:`bigviz.recorder.hwm`. The exact per-process peaks are in ``detail["exact_peaks"]``.

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
from bigviz.recorder.hwm import HwmRead, ResetWorker, exact_peak
from bigviz.recorder.markers import MarkerReader, parse_marker
from bigviz.recorder.phases import OpenPhase, PhaseStack
from bigviz.recorder.procfs import forked_without_exec, read_rss_hwm, read_uss, same_memory
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
    """One process of the tree: who it is, when it was seen, its own samples.

    ``counted`` says how it enters the tree's total: ``"rss"`` (it exec'd a program),
    ``"private"`` (forked without exec: its USS only) or ``"shared"`` (a vfork child,
    same memory as its parent: nothing).
    """

    pid: int
    ppid: int
    cmdline: str
    first_seen: float
    last_seen: float
    ram_peak: int = 0
    hwm_peak: int = 0
    excluded: bool = False
    counted: str = "rss"
    t: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    anon: list[int] = field(default_factory=list)
    file: list[int] = field(default_factory=list)
    shmem: list[int] = field(default_factory=list)
    # the last USS reading of a "private" process: (time, uss, rss then), and its cost
    uss_at: tuple[float, int, int] | None = None
    uss_cost: float = 0.0


class TreeSampler:
    """Samples a process tree and reads phase markers, on one ``bigviz-profile`` thread.

    Args:
        root: the command's pid; its descendants are found as they appear.
        interval_s: sampling interval in seconds.
        t0: the monotonic time the timeline counts from.
        marker_fd: the reading end of the marker FIFO, or ``None``.
        no_reset: processes whose ``VmHWM`` another recorder resets (and whose reads
            of it this sampler will not get).
        shared_log: processes whose in-process recorder's ``VmHWM`` reads will be
            merged in afterwards (:meth:`add_reads`): the sampler resets them too.
    """

    def __init__(
        self,
        root: int,
        *,
        interval_s: float,
        t0: float,
        marker_fd: int | None,
        no_reset: set[int] | None = None,
        shared_log: set[int] | None = None,
    ) -> None:
        self.root = root
        # processes whose high-water mark someone else resets (a bigviz recorder inside
        # them) without telling us what it read: resetting it too would break its peaks
        self.no_reset: set[int] = set(no_reset or ())
        self.shared_log: set[int] = set(shared_log or ())
        self.interval_s = interval_s
        self.t0 = t0
        self.marker_fd = marker_fd
        self.t: list[float] = []
        self.rss: list[int] = []
        self.anon: list[int] = []
        self.file: list[int] = []
        self.shmem: list[int] = []
        self.procs: dict[int, ProcInfo] = {}
        self.phases: list[Phase] = []
        self.marks: list[Mark] = []
        self.errors: list[str] = []
        #: every VmHWM read, the worker's and (after :meth:`add_reads`) other recorders'
        self.reads: list[HwmRead] = []
        # open marker phases (peaks are computed at the end from the reads)
        self._stack: PhaseStack[int] = PhaseStack()
        # per phase (by index): every process sampled while it was open, and the numbers
        # of the boundaries at its start and end
        self._pids: dict[int, set[int]] = {}
        self._bounds: dict[int, list[int]] = {}
        self._boundaries = 0
        self._ppids: dict[int, int] = {}
        self._tracked: set[int] = {root}
        self._markers = MarkerReader(marker_fd) if marker_fd is not None else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bigviz-profile", daemon=True)
        self._worker = ResetWorker(lambda: time.monotonic() - self.t0)
        self._last_refresh = -1.0
        self._last_cmdline = 0.0

    @property
    def hwm_reason(self) -> str | None:
        """Why ``VmHWM`` resets stopped (permission refused), or ``None``."""
        return self._worker.reason

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
            self._boundary(now)
        while (op := self._stack.innermost) is not None:
            self._stack.close(op)
            self._close(op, now, error="not ended before the command exited")
        self._worker.close()
        self.reads.extend(self._worker.entries())
        if self._worker.reason is not None:
            self.errors.append(f"marker phases' peaks are sampled only: {self._worker.reason}")

    def add_reads(self, reads: list[HwmRead]) -> None:
        """Merge the ``VmHWM`` reads a recorder inside a process made (on this clock)."""
        self.reads.extend(reads)
        self.reads.sort(key=lambda e: e.t_read)

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
    def _counting(self, info: ProcInfo) -> None:
        """How a process enters the total: re-checked until it has exec'd (for good)."""
        if info.counted == "rss" and info.t:
            return  # it exec'd (or is the root): a process never un-execs
        if info.pid == self.root or not forked_without_exec(info.pid):
            info.counted, info.uss_at = "rss", None
        elif info.ppid and same_memory(info.ppid, info.pid):
            info.counted = "shared"  # vfork: its parent's very pages
        else:
            info.counted = "private"

    def _private_now(self, info: ProcInfo, now: float, rss: int) -> int:
        """A forked child's own pages: its last USS, moved by its RSS since then (a
        new page it faults in is its own); USS re-read at a rate its cost allows."""
        at = info.uss_at
        if at is None or now - at[0] >= max(self.interval_s, 0.01, 50 * info.uss_cost):
            c0 = time.monotonic()
            uss = read_uss(info.pid)
            info.uss_cost = time.monotonic() - c0
            if uss is not None:
                info.uss_at = at = (now, uss, rss)
        if at is None:
            return 0  # not read yet: at the fork it owned nothing of its own
        return max(0, min(rss, at[1] + rss - at[2]))

    def _sample(self, now: float) -> None:
        total = anon = file_ = shmem = 0
        for pid in sorted(self._tracked):
            st = read_rss_hwm(pid)
            if st is None:
                continue
            a, f, sh, hwm = st
            rss = a + f + sh
            info = self.procs.get(pid)
            if info is None:
                info = ProcInfo(pid, self._ppids.get(pid, 0), _cmdline(pid), now, now)
                self.procs[pid] = info
            target = sidecar_target(info.cmdline)
            if target is not None:
                # bigviz's own sampler (auto-instrumentation), not the command's; the
                # recorder it serves resets its target's high-water mark itself
                info.excluded = True
                if target not in self.shared_log:
                    self.no_reset.add(target)
                continue
            self._counting(info)
            info.last_seen = now
            info.ram_peak = max(info.ram_peak, rss)
            info.hwm_peak = max(info.hwm_peak, hwm, rss)
            info.t.append(now)
            info.rss.append(rss)
            info.anon.append(a)
            info.file.append(f)
            info.shmem.append(sh)
            if info.counted == "rss":
                total, anon, file_, shmem = total + rss, anon + a, file_ + f, shmem + sh
            elif info.counted == "private" and rss > 0:
                own = self._private_now(info, now, rss)
                # its own pages, split like its RSS (integer parts that sum to ``own``)
                pa, pf = own * a // rss, own * f // rss
                total += own
                anon, file_, shmem = anon + pa, file_ + pf, shmem + own - pa - pf
        self.t.append(now)
        self.rss.append(total)
        self.anon.append(anon)
        self.file.append(file_)
        self.shmem.append(shmem)
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
            self._read_markers(now)
            self._sample(now)

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
        if m.kind == "start":
            b = self._boundary(now)
            detail = {"source": "marker", "scope": "process tree"}
            op = self._stack.open(self.phases, m.name, start=now, detail=detail)
            self._bounds[op.index] = [b]
            return
        if m.kind == "end":
            if not self._stack:
                self.errors.append(f"marker {m.line!r} ends a phase but none is open")
                return
            names = self._stack.names()
            if m.name and m.name not in names:
                self.errors.append(f"marker {m.line!r} ends {m.name!r}, which is not open {names}")
                return
            self._boundary(now)
            for op in self._stack.close_through(m.name):
                self._close(op, now, error=None)
            return
        self.errors.append(
            f"ignored marker line {m.line[:80]!r}; write 'BIGVIZ_PHASE start NAME', "
            "'BIGVIZ_PHASE end [NAME]' or 'BIGVIZ_MARK NAME'"
        )

    def _boundary(self, now: float) -> int:
        """Ask the reset worker to read each process's ``VmHWM`` and reset it (off this
        thread: a reset can wait for the process's mmap lock); returns the boundary's
        number, which the phases opening and closing here keep."""
        self._boundaries += 1
        pids = [
            pid
            for pid in sorted(self._tracked - self.no_reset)
            if (info := self.procs.get(pid)) is None or not info.excluded
        ]
        self._worker.request(self._boundaries, now, pids)
        return self._boundaries

    def _close(self, op: OpenPhase[int], now: float, *, error: str | None) -> None:
        # the peaks are filled in at the end (fill_phases), once the totals and the
        # VmHWM reads are final
        phase = self.phases[op.index]
        phase.end = now
        phase.error = error
        self._bounds.setdefault(op.index, []).append(self._boundaries)

    def drop(self, pid: int) -> None:
        """Take a process out of the totals (bigviz's own sampler, seen before its exec)."""
        info = self.procs.pop(pid, None)
        if info is None:
            return
        where = {t: i for i, t in enumerate(self.t)}
        for k, t in enumerate(info.t):
            i = where.get(t)
            if i is not None and info.counted == "rss":
                self.rss[i] -= info.rss[k]
                self.anon[i] -= info.anon[k]
                self.file[i] -= info.file[k]
                self.shmem[i] -= info.shmem[k]

    def _exact(self, index: int) -> tuple[dict[int, int], dict[int, str]]:
        """Each process's exact peak during phase ``index`` (and why not, per process)."""
        bounds = self._bounds.get(index, [])
        peaks: dict[int, int] = {}
        why: dict[int, str] = {}
        pids = self._pids.get(index, set())
        for pid in sorted(pids):
            own = [e for e in self.reads if e.pid == pid and e.boundary > 0]
            start = next((e for e in own if bounds and e.boundary == bounds[0]), None)
            end = next((e for e in own if len(bounds) > 1 and e.boundary == bounds[1]), None)
            if pid in self.no_reset:
                why[pid] = f"process {pid}'s VmHWM is reset by a recorder inside it"
                continue
            peak, reason = exact_peak(self.reads, pid, start, end)
            if peak is not None:
                peaks[pid] = peak
            elif reason is not None:
                why[pid] = reason
        return peaks, why

    def fill_phases(self) -> None:
        """Set the peaks of the marker phases, once the totals and reads are final (after
        :meth:`stop`, :meth:`drop` and :meth:`add_reads`): sampled from the tree totals,
        or exact when a single process ran through the phase and its ``VmHWM`` was read
        and reset on time (see :mod:`bigviz.recorder.hwm`)."""
        t = self.t
        for index, phase in enumerate(self.phases):
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
            peaks, why = self._exact(index)
            if peaks:
                phase.detail["exact_peaks"] = {str(pid): v for pid, v in sorted(peaks.items())}
            pids = self._pids.get(index, set())
            phase.ram_peak_exact = len(pids) == 1 and next(iter(pids)) in peaks
            if phase.ram_peak_exact:
                # the kernel's mark can only be above the samples; max() guards a process
                # that was sampled before it was tracked for the reset
                phase.ram_peak = max(peaks[next(iter(pids))], phase.ram_peak or 0)
                phase.ram_peak_why = None
            elif len(pids) > 1:
                phase.ram_peak_why = (
                    f"{len(pids)} processes ran during the phase: the tree's peak is the "
                    "maximum of the summed samples (each process's exact peak is in "
                    "detail['exact_peaks'] where it was measured)"
                )
            else:
                phase.ram_peak_why = next(iter(why.values()), None) or (
                    "no process was sampled during the phase"
                )
