"""Exact peaks of a process tree's phases: VmHWM resets off the sampling thread, and the
rule that says when a phase's peak is exact.

Writing ``5`` to ``/proc/PID/clear_refs`` restarts the kernel's RSS high-water mark
(``VmHWM``), but it takes the target's mmap lock: while the target faults in memory under
that lock (a 300 MiB ``MADV_POPULATE_WRITE`` holds it for the whole spike) the write waits,
for hundreds of ms. So ``bigviz profile`` never resets on its sampling thread: at a
boundary it reads each process's ``VmHWM`` (reading ``/proc/PID/status`` never waits for
that lock) and a :class:`ResetWorker` thread resets it; every read is logged as an
:class:`HwmRead`.

A read covers the stretch since the previous reset of that process (by anyone: the
``bigviz profile`` tree sampler, or a bigviz recorder inside the process). A phase's
exact peak is the max of the reads that fall after its start boundary and up to its end
boundary (:func:`exact_peak`). It is exact only when every read and reset of that
stretch finished within :data:`GRACE_S` (5 ms) of the moment it was asked for, so at
most what the process can fault in within 5 ms (~15 MB at 3 GB/s) could slip between two
stretches; otherwise the phase keeps its sampled peak and says why.

Example:
    >>> log = [HwmRead(7, 1.0, 1.0, 100, 1.0001), HwmRead(7, 2.0, 2.0, 900, 2.0001),
    ...        HwmRead(7, 3.0, 3.0, 300, 3.0001)]
    >>> exact_peak(log, 7, log[0], log[2])
    (900, None)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bigviz.recorder.procfs import read_kib, reset_hwm

__all__ = ["GRACE_S", "HwmRead", "ResetWorker", "exact_peak", "lateness_why"]

#: a read or reset that finished later than this after it was asked for breaks exactness
GRACE_S = 0.005


@dataclass(frozen=True)
class HwmRead:
    """One read of a process's ``VmHWM`` (and the reset that followed it, if any).

    Attributes:
        pid: the process.
        t_request: when the boundary happened (a marker arrived, a phase opened).
        t_read: when ``VmHWM`` was read; the value covers the process's RSS since its
            previous reset, up to here.
        hwm: the value read (bytes).
        t_reset: when the reset that followed completed; ``None`` when there was none
            (a phase end in a recorder) or it failed.
        boundary: the tree sampler's boundary number (-1 for reads made elsewhere).

    Example:
        >>> HwmRead(1, 0.0, 0.0001, 4096, None).late
        0.0001
    """

    pid: int
    t_request: float
    t_read: float
    hwm: int
    t_reset: float | None
    boundary: int = -1

    @property
    def late(self) -> float:
        """Seconds from the request until the read (and its reset) finished."""
        return max(self.t_read, self.t_reset or 0.0) - self.t_request


def lateness_why(entry: HwmRead) -> str:
    """Why a read this late means the peak is sampled, in one sentence.

    Example:
        >>> lateness_why(HwmRead(1, 0.0, 0.0, 1, 0.3125))[:40]
        'resetting VmHWM of process 1 took 312.5 '
    """
    return (
        f"resetting VmHWM of process {entry.pid} took {entry.late * 1000:.1f} ms "
        f"(more than {GRACE_S * 1000:g} ms: writing /proc/{entry.pid}/clear_refs waits while "
        "the process holds its mmap lock, e.g. while it faults in memory); the peak is "
        "the maximum of the samples"
    )


def exact_peak(
    log: Sequence[HwmRead], pid: int, start: HwmRead | None, end: HwmRead | None
) -> tuple[int | None, str | None]:
    """The exact RSS peak of ``pid`` between two boundaries, or why there is none.

    Args:
        log: every read of the process's ``VmHWM``, by anyone, on one clock.
        pid: the process.
        start: the read (and reset) at the phase's start.
        end: the read at the phase's end.

    Returns:
        ``(peak, None)`` when exact; ``(None, reason)`` otherwise.

    Example:
        >>> late = HwmRead(7, 1.0, 1.0, 100, 1.3)
        >>> exact_peak([late, HwmRead(7, 2.0, 2.0, 9, None)], 7, late, None)[1]
        'the phase had not ended when process 7 was last read'
    """
    if start is None or start.t_reset is None:
        return None, f"process {pid}'s VmHWM was not reset at the phase start"
    if end is None:
        return None, f"the phase had not ended when process {pid} was last read"
    window = sorted(
        (e for e in log if e.pid == pid and start.t_read < e.t_read <= end.t_read),
        key=lambda e: e.t_read,
    )
    if not window:
        return None, f"process {pid}'s VmHWM was not read at the phase end"
    for e in (start, *window):
        if e.late > GRACE_S:
            return None, lateness_why(e)
    return max(e.hwm for e in window), None


class ResetWorker:
    """Reads and resets processes' ``VmHWM`` on its own thread (``bigviz-hwm``), so a
    reset that waits for a process's mmap lock never stalls the sampling.

    Args:
        clock: the caller's clock (seconds), used to stamp the reads.

    Example:
        >>> import os, time
        >>> w = ResetWorker(time.monotonic)
        >>> w.request(0, time.monotonic(), [os.getpid()], reset=False)
        >>> w.close()
        >>> [e.boundary for e in w.log]
        [0]
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.log: list[HwmRead] = []
        #: why resets stopped (permission refused); ``None`` while they work
        self.reason: str | None = None
        self._q: queue.SimpleQueue[tuple[int, float, int, float, int, bool] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="bigviz-hwm", daemon=True)
        self._thread.start()

    def request(self, boundary: int, t: float, pids: Sequence[int], *, reset: bool = True) -> None:
        """Read the ``VmHWM`` of each of ``pids`` now (reading ``status`` never waits for
        the mmap lock) for boundary ``boundary``, which happened at ``t``, and have the
        worker thread reset them; returns at once."""
        for pid in pids:
            hwm = read_kib(pid, ("VmHWM",)).get("VmHWM")
            if hwm is not None:  # else it exited
                self._q.put((boundary, t, pid, self.clock(), hwm, reset))

    def close(self, timeout: float = 10.0) -> None:
        """Finish the requests already made (waiting at most ``timeout`` s) and stop."""
        self._q.put(None)
        self._thread.join(timeout)

    def entries(self) -> list[HwmRead]:
        """A copy of the log so far."""
        with self._lock:
            return list(self.log)

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            boundary, t, pid, t_read, hwm, reset = item
            t_reset: float | None = None
            if reset and self.reason is None:
                try:
                    if reset_hwm(pid):
                        t_reset = self.clock()
                except OSError as exc:
                    self.reason = f"cannot reset VmHWM via /proc/{pid}/clear_refs: {exc}"
            with self._lock:
                self.log.append(HwmRead(pid, t, t_read, hwm, t_reset, boundary))
