"""The sidecar sampler: a tiny process that reads ``/proc/PID/...`` of the target.

It reads ``/proc/PID/statm`` every tick (resident and file+shmem pages: RSS and anon exact)
and ``/proc/PID/status`` (the file-backed / shmem split) only when file+shmem moved since
its last reading, or at least every ``STATUS_MS`` (an argument; 100 ms from ``ProcSource``).
``statm`` costs the kernel ~1/6 of ``status`` (no signal masks, CPU lists...): on a busy
machine every microsecond the sidecar runs is taken from the measured process, 1,000
times a second (issue 17; ``benchmarks/recorder_overhead.py`` has the figures).

It runs as ``python -I -S path/to/sidecar.py ARGS`` so that it imports nothing but the
standard library (no ``site``, no bigviz package, never torch): it starts in ~10 ms and
never takes the target's GIL, so a workload that holds the GIL for seconds (one big
``bytes(n)`` or ``torch.ones``) is still sampled at the requested rate.

Protocol. stdout is a pipe of fixed-size little-endian records ``<B7xdqqq`` (40 bytes):
kind, monotonic time (``CLOCK_MONOTONIC`` is system-wide on Linux, so the parent can
subtract its own t0), three integers. Kinds are the ``K_*`` constants below. An ``ERROR``
record with ``a = n`` is followed by ``n`` ``TEXT`` records carrying 24 bytes of UTF-8 each.
stdin is the control pipe: any byte or EOF means "stop" (flush, say ``BYE`` and exit).

Samples. A ``K_STATUS`` record per tick holds anon, file, shmem (bytes). Anon and the sum
are exact at every tick (``statm``). The split of file+shmem comes from the last
``status`` reading, which is re-read whenever statm's file+shmem differs from that
reading's, so the split is that of the same instant unless file pages fell and shmem
pages rose by the same count between two readings (then it is at most ``STATUS_MS`` old).

Scheduling. With ``BIGVIZ_SIDECAR_SCHED=batch`` or ``idle`` in its environment the
sidecar runs under ``SCHED_BATCH`` / ``SCHED_IDLE`` (default ``normal``: the usual
policy). ``idle`` never takes a CPU from a runnable process, so on a machine whose every
core is busy it misses most ticks: ``benchmarks/recorder_overhead.py --sched`` measures both.

CPU placement. By default (``BIGVIZ_SIDECAR_CPU=away``) the sidecar keeps off the CPU the
target's main thread runs on: every :data:`PLACE_EVERY` seconds it reads that CPU from
``/proc/PID/stat`` (field 39) and, when it moved, pins itself to the other CPUs it may use
(``sched_setaffinity``; nothing changes on a one-CPU machine or when the target runs on a
CPU the sidecar may not use). Each wake-up then preempts whatever else runs there instead
of the target: with one busy-loop process beside a load on 2 cores, the load's involuntary
context switches go from ~550 to ~20 per 0.7 s and its slowdown from 1.12x to ~1.01x
(``benchmarks/recorder_overhead.py --hog 1``). ``any``: leave placement to the kernel.

RAM budget. With ``BIGVIZ_SIDECAR_BUDGET=BYTES:PATH`` in its environment, the sidecar checks
every sample's RSS (anon + file + shmem, the process's whole resident set) against
``BYTES``. At the first sample above it, it freezes the target (``SIGSTOP``), reads its
status once more, writes a kill report to ``PATH`` (written beside it, then renamed:
the reader sees all of it or nothing), then ``SIGKILL``s it. The report is records of the
same layout: one ``K_BUDGET`` (time of the crossing sample; a = its RSS, b = the budget,
c = the peak at the stop: max of that RSS, ``VmHWM`` and the RSS read after ``SIGSTOP``),
then the ``K_STATUS`` samples of the last :data:`KEEP_S` seconds up to the stop (the
target's reader of the pipe dies with it, so these are the samples it never streamed).

The sidecar never blocks on the pipe: records that do not fit are kept in its own memory
and written when the reader catches up (the reader is a thread of the target, which only
runs when the target releases the GIL). It exits when the target is gone (``ESRCH`` or
``ENOENT`` reading ``/proc``), when its parent is gone (``getppid()`` changed: the parent
crashed), or when told to stop.

This file must stay importable with ``-S`` and must not import bigviz.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import struct
import sys
import time
from collections import deque

__all__ = [
    "BUDGET_ENV",
    "CPU_ENV",
    "CPU_PLACEMENTS",
    "KEEP_S",
    "REC",
    "REC_SIZE",
    "SCHED_ENV",
    "SCHED_POLICIES",
    "main",
    "parse_budget_env",
    "parse_kib",
    "parse_rss_split",
    "parse_stat_cpu",
    "parse_statm",
    "placement",
    "set_sched",
    "text_records",
]

REC = struct.Struct("<B7xdqqq")
REC_SIZE = REC.size
TEXT_CHUNK = 24
FLUSH_EVERY = 0.01  # seconds between writes to the pipe (the reader collects every 25-100 ms)

K_HELLO = 1  # a = sidecar's pid, b = page size, c = 0
K_STATM = 2  # (no longer written: anon/file/shmem come from one status read, K_STATUS)
K_STATUS = 3  # a = anon, b = file, c = shmem, every tick; rss = a + b + c (bytes; see above)
K_SMAPS = 4  # a = USS (Private_Clean + Private_Dirty), b = PSS, c = read cost (ns)
K_MEMINFO = 5  # a = MemAvailable, b = MemTotal, c = 0                   (bytes)
K_ERROR = 6  # a = number of TEXT records that follow, b = error code (see E_*)
K_TEXT = 7  # 24 bytes of UTF-8 text in the a, b, c slots
K_BYE = 8  # a = reason (see R_*), b = ticks done, c = ticks late (skipped)
K_BUDGET = 9  # kill report only: a = RSS of the crossing sample, b = budget, c = peak at stop

#: the environment variable that arms the budget: ``"BYTES:PATH"``
BUDGET_ENV = "BIGVIZ_SIDECAR_BUDGET"
#: the environment variable that picks the sidecar's scheduling policy (see the module's doc)
SCHED_ENV = "BIGVIZ_SIDECAR_SCHED"
#: the policies :data:`SCHED_ENV` may name
SCHED_POLICIES = ("normal", "batch", "idle")
#: the environment variable that picks the sidecar's CPU placement (see the module's doc)
CPU_ENV = "BIGVIZ_SIDECAR_CPU"
#: the placements :data:`CPU_ENV` may name
CPU_PLACEMENTS = ("away", "any")
#: seconds between two looks at the target's CPU (``placement="away"``)
PLACE_EVERY = 0.02
#: seconds of samples the kill report keeps (the ones the target had not streamed yet)
KEEP_S = 30.0

E_SOURCE = 1  # a /proc file could not be read; sampling of it stops
R_STOP, R_TARGET_GONE, R_PARENT_GONE, R_PIPE_CLOSED, R_BUDGET = 1, 2, 3, 4, 5


def parse_budget_env(value: str | None) -> tuple[int, str] | None:
    """``(bytes, report path)`` from :data:`BUDGET_ENV`'s value; ``None``: no budget.

    Example:
        >>> parse_budget_env("400000000:/tmp/w/.budget-kill")
        (400000000, '/tmp/w/.budget-kill')
        >>> parse_budget_env(None) is None
        True
    """
    if not value:
        return None
    size, sep, path = value.partition(":")
    if not sep or not path or not size.isdigit() or int(size) <= 0:
        return None
    return int(size), path


def set_sched(value: str | None) -> str | None:
    """Put this process under the scheduling policy named by :data:`SCHED_ENV`'s value.

    Returns:
        ``None`` when done (or nothing to do: unset, empty, ``"normal"``), else a one-line
        error naming the value and the fix.

    Example:
        >>> set_sched("normal") is None
        True
        >>> set_sched("fast")
        "BIGVIZ_SIDECAR_SCHED='fast': use one of normal, batch, idle"
    """
    if not value or value == "normal":
        return None
    if value not in SCHED_POLICIES:
        return f"{SCHED_ENV}={value!r}: use one of {', '.join(SCHED_POLICIES)}"
    policy = os.SCHED_BATCH if value == "batch" else os.SCHED_IDLE
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError as exc:
        return f"{SCHED_ENV}={value!r}: cannot set the policy ({exc}); unset it to use normal"
    return None


def placement(value: str | None) -> tuple[str, str | None]:
    """``(placement, problem)`` from :data:`CPU_ENV`'s value: ``away`` when unset or empty;
    an unknown value gives ``away`` and a one-line problem naming the value and the fix.

    Example:
        >>> placement(None)
        ('away', None)
        >>> placement("any")
        ('any', None)
        >>> placement("near")
        ('away', "BIGVIZ_SIDECAR_CPU='near': use one of away, any")
    """
    if not value:
        return "away", None
    if value not in CPU_PLACEMENTS:
        return "away", f"{CPU_ENV}={value!r}: use one of {', '.join(CPU_PLACEMENTS)}"
    return value, None


def parse_stat_cpu(text: bytes | bytearray) -> int:
    """The CPU a task last ran on (field 39, ``processor``) from ``/proc/PID/stat``.

    The command name (field 2) may hold spaces and parentheses, so fields are counted from
    the last ``)``.

    Raises:
        ValueError: fewer than 39 fields.

    Example:
        >>> line = b"12 (a) b) R 1" + b" 0" * 34 + b" 3 0 0\\n"
        >>> parse_stat_cpu(line)
        3
    """
    fields = text[text.rfind(b")") + 2 :].split()
    if len(fields) < 37:
        raise ValueError(f"not /proc/PID/stat: {bytes(text[:80])!r}")
    return int(fields[36])


def parse_statm(text: bytes | bytearray) -> tuple[int, int]:
    """``(resident, shared)`` pages from the text of ``/proc/PID/statm``.

    ``resident`` is anon + file + shmem pages, ``shared`` is file + shmem pages (the
    kernel's ``MM_FILEPAGES + MM_SHMEMPAGES``), so ``resident - shared`` is anon.

    Raises:
        ValueError: not three numbers.

    Example:
        >>> parse_statm(b"79937 78965 1462 1 0 77998 0\\n")
        (78965, 1462)
    """
    i = text.find(b" ")
    j = text.find(b" ", i + 1)
    k = text.find(b" ", j + 1)
    if i < 0 or j < 0 or k < 0:
        raise ValueError(f"not statm: {bytes(text[:80])!r}")
    return int(text[i + 1 : j]), int(text[j + 1 : k])


def text_records(t: float, code: int, message: str) -> bytes:
    """Encode an ERROR record and the TEXT records carrying ``message``."""
    raw = message.encode("utf-8", "replace")[:2400]
    chunks = [raw[i : i + TEXT_CHUNK].ljust(TEXT_CHUNK, b"\0") for i in range(0, len(raw), 24)]
    out = [REC.pack(K_ERROR, t, len(chunks), code, 0)]
    for c in chunks:
        a, b, cc = struct.unpack("<qqq", c)
        out.append(REC.pack(K_TEXT, t, a, b, cc))
    return b"".join(out)


def parse_kib(text: bytes, names: tuple[bytes, ...]) -> list[int]:
    """Values (bytes) of ``Name:   123 kB`` lines, in the order of ``names`` (-1 if absent).

    The one parser of this format in bigviz. It is written here because this file runs
    with ``python -I -S`` and may import nothing from bigviz; the rest of bigviz uses it
    as :func:`bigviz.recorder.procfs.parse_kib`.

    Example:
        >>> parse_kib(b"VmHWM:  2 kB\\nVmRSS:  1 kB\\n", (b"VmRSS", b"VmSwap"))
        [1024, -1]
    """
    # a find per name, not a split of every line: /proc/meminfo has ~50 lines and the
    # sidecar reads it every 10 ms
    out = []
    for name in names:
        key = name + b":"
        if text.startswith(key):
            start = len(key)
        else:
            i = text.find(b"\n" + key)
            if i < 0:
                out.append(-1)
                continue
            start = i + 1 + len(key)
        end = text.find(b"\n", start)
        out.append(int(text[start : end if end >= 0 else len(text)].split()[0]) * 1024)
    return out


def parse_rss_split(text: bytes | bytearray) -> tuple[int, int, int]:
    """``(RssAnon, RssFile, RssShmem)`` bytes from the text of ``/proc/PID/status``.

    One read gives all three, so they are consistent with each other (and sum to
    ``VmRSS``). Written for speed (it runs every tick): three ``find`` calls, no split.

    Raises:
        ValueError: a field is missing (a zombie's status has no ``Rss*`` lines).

    Example:
        >>> parse_rss_split(b"RssAnon:  8 kB\\nRssFile:  4 kB\\nRssShmem:  0 kB\\n")
        (8192, 4096, 0)
    """
    i = text.find(b"RssAnon:")
    j = text.find(b"RssFile:", i)
    k = text.find(b"RssShmem:", j)
    if i < 0 or j < 0 or k < 0:
        raise ValueError("no RssAnon/RssFile/RssShmem lines")
    return (
        int(text[i + 8 : text.find(b"kB", i)]) * 1024,
        int(text[j + 8 : text.find(b"kB", j)]) * 1024,
        int(text[k + 9 : text.find(b"kB", k)]) * 1024,
    )


class _Sampler:
    def __init__(
        self,
        pid: int,
        interval: float,
        status_every: float,  # status (the file/shmem split) is re-read at least this often
        smaps_every: float,
        meminfo_every: float,
        proc: bool,
        system: bool,
    ) -> None:
        self.pid = pid
        self.interval = interval
        self.status_every = status_every
        self.smaps_every = smaps_every
        self.meminfo_every = meminfo_every
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.backlog = bytearray()
        self.fds: dict[str, int] = {}
        self.budget = parse_budget_env(os.environ.get(BUDGET_ENV))
        self.place, problem = placement(os.environ.get(CPU_ENV))
        if problem:
            self.error(time.monotonic(), problem)
        self.cpus: set[int] = set()
        self.avoided = -1  # the CPU the sidecar keeps off now (-1: none)
        if self.place == "away":
            with contextlib.suppress(OSError):
                self.cpus = set(os.sched_getaffinity(0))
        # the recent samples a kill report keeps (only with a budget)
        self.recent: deque[bytes] = deque(maxlen=max(16, int(KEEP_S / max(interval, 1e-4))))
        if proc:
            for name in ("status", "statm", "stat", "smaps_rollup"):
                try:
                    self.fds[name] = os.open(f"/proc/{pid}/{name}", os.O_RDONLY)
                except OSError as exc:
                    if name not in ("smaps_rollup", "stat"):
                        raise  # no status: the target is gone or not ours to read
                    self.error(time.monotonic(), f"cannot open /proc/{pid}/{name}: {exc}")
        if system:
            try:
                self.fds["meminfo"] = os.open("/proc/meminfo", os.O_RDONLY)
            except OSError as exc:
                self.error(time.monotonic(), f"cannot open /proc/meminfo: {exc}")

    def error(self, t: float, message: str) -> None:
        self.backlog += text_records(t, E_SOURCE, message)

    def read(self, name: str) -> bytes | None:
        """Read one /proc file; drop it (and report) if it fails for a reason other than the
        target being gone."""
        fd = self.fds.get(name)
        if fd is None:
            return None
        try:
            return os.pread(fd, 8192, 0)
        except (ProcessLookupError, FileNotFoundError):
            raise
        except OSError as exc:
            if exc.errno == 3:  # ESRCH
                raise
            del self.fds[name]
            self.error(time.monotonic(), f"reading /proc/{self.pid}/{name} failed: {exc}")
            return None

    def flush(self, *, block: bool = False) -> None:
        while self.backlog:
            try:
                n = os.write(1, self.backlog)
            except BlockingIOError:
                if not block:
                    return
                select.select([], [1], [], 0.05)
                continue
            del self.backlog[:n]

    def keep_away(self) -> None:
        """Pin this process to its CPUs but the one the target's main thread is on."""
        fd = self.fds.get("stat")
        if fd is None:
            return
        try:
            cpu = parse_stat_cpu(os.pread(fd, 4096, 0))
        except (OSError, ValueError):
            return  # the target going away is noticed by the statm read
        if cpu == self.avoided or cpu not in self.cpus:
            return
        try:
            os.sched_setaffinity(0, self.cpus - {cpu})
        except OSError as exc:
            self.cpus = set()  # not allowed here: stop trying
            self.error(time.monotonic(), f"cannot keep off the target's CPU: {exc}")
            return
        self.avoided = cpu

    def budget_kill(self, t: float, rss: int) -> None:
        """Freeze the target, write the kill report, kill it (see the module's doc)."""
        assert self.budget is not None
        budget, path = self.budget
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGSTOP)
        peak = rss
        t_stop = time.monotonic()
        # one more reading of the frozen target: what it reached before the stop landed
        with contextlib.suppress(OSError, ValueError):
            text = os.pread(self.fds["status"], 8192, 0)
            t_stop = time.monotonic()
            anon, file_, shmem = parse_rss_split(text)
            self.recent.append(REC.pack(K_STATUS, t_stop, anon, file_, shmem))
            (hwm,) = parse_kib(text, (b"VmHWM",))
            peak = max(peak, anon + file_ + shmem, hwm)
        data = REC.pack(K_BUDGET, t, rss, budget, peak) + b"".join(self.recent)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.rename(tmp, path)
        except OSError as exc:
            self.error(t_stop, f"cannot write the budget kill report {path}: {exc}")
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)

    def run(self, ppid: int) -> int:
        t_start = time.monotonic()
        self.backlog += REC.pack(K_HELLO, t_start, os.getpid(), self.page, 0)
        next_tick = t_start
        next_smaps = next_meminfo = next_flush = next_status = next_place = t_start
        place = len(self.cpus) > 1
        ticks = late = 0
        # hot-loop names, bound once (the loop runs 1,000 times a second)
        fds = self.fds
        backlog = self.backlog  # the same bytearray: flush() drains it in place
        recent = self.recent
        budget = None if self.budget is None else self.budget[0]
        page = self.page
        pack = REC.pack
        preadv = os.preadv
        statm_buf = bytearray(256)
        statm_bufs = [statm_buf]
        split_pages = -1  # file+shmem pages of the last status reading (-1: none yet)
        anon = file_ = shmem = 0
        reason = R_STOP
        try:
            while True:
                now = time.monotonic()
                statm_fd = fds.get("statm")
                if statm_fd is not None:
                    # statm every tick into the one buffer: ~1/6 of a status read
                    try:
                        n = preadv(statm_fd, statm_bufs, 0)
                    except OSError as exc:
                        if isinstance(exc, (ProcessLookupError, FileNotFoundError)):
                            raise
                        if exc.errno == 3:  # ESRCH
                            raise
                        del fds["statm"]
                        self.error(now, f"reading /proc/{self.pid}/statm failed: {exc}")
                        n = 0
                    t = time.monotonic()
                    if n:
                        resident, shared = parse_statm(statm_buf[:n])
                        if resident == 0 or shared != split_pages or now >= next_status:
                            # file+shmem moved (or a zombie's zeros): re-read the split
                            next_status = now + self.status_every
                            status = self.read("status")
                            if status is not None:
                                t = time.monotonic()
                                try:
                                    anon, file_, shmem = parse_rss_split(status)
                                except ValueError:
                                    raise ProcessLookupError(self.pid) from None  # a zombie
                                split_pages = (file_ + shmem) // page
                            else:
                                # no split any more: all of file+shmem counted as file
                                anon, file_, shmem = (resident - shared) * page, shared * page, 0
                                split_pages = -1
                        else:
                            anon = (resident - shared) * page
                        record = pack(K_STATUS, t, anon, file_, shmem)
                        backlog += record
                        if budget is not None:
                            recent.append(record)
                            if anon + file_ + shmem > budget:
                                self.budget_kill(t, anon + file_ + shmem)
                                reason = R_BUDGET
                                return 0
                else:
                    t = now
                if now >= next_meminfo and "meminfo" in self.fds:
                    next_meminfo = now + self.meminfo_every
                    mem = self.read("meminfo")
                    if mem is not None:
                        avail, total = parse_kib(mem, (b"MemAvailable", b"MemTotal"))
                        self.backlog += REC.pack(K_MEMINFO, time.monotonic(), avail, total, 0)
                if now >= next_smaps and "smaps_rollup" in self.fds:
                    c0 = time.monotonic()
                    smaps = self.read("smaps_rollup")
                    c1 = time.monotonic()
                    # smaps_rollup walks every page table of the target (ms for GBs): keep
                    # it under ~2% of the sidecar's time so the 1 ms ticks stay on time.
                    next_smaps = c1 + max(self.smaps_every, 50 * (c1 - c0))
                    if smaps is not None:
                        pc, pd, pss = parse_kib(
                            smaps, (b"Private_Clean", b"Private_Dirty", b"Pss")
                        )
                        cost = int((c1 - c0) * 1e9)
                        self.backlog += REC.pack(K_SMAPS, c1, pc + pd, pss, cost)
                if place and now >= next_place:
                    next_place = now + PLACE_EVERY
                    self.keep_away()
                    place = len(self.cpus) > 1
                ticks += 1
                # write (and check on the parent) every ~10 ms, not every tick: the
                # reader collects every 25-100 ms anyway, and each syscall is CPU the
                # measured process may want on a small machine
                if t >= next_flush:
                    next_flush = t + FLUSH_EVERY
                    if self.backlog:
                        try:
                            self.flush()
                        except BrokenPipeError:
                            reason = R_PIPE_CLOSED
                            return 0
                    if os.getppid() != ppid:
                        reason = R_PARENT_GONE
                        return 0
                next_tick += self.interval
                now = time.monotonic()
                if now - next_tick > self.interval:
                    # more than a whole tick behind (CPU contention, a slow smaps read):
                    # drop the missed ticks and sample now; a smaller delay is caught up
                    # by sampling at once, so the grid holds without bursts
                    late += int((now - next_tick) / self.interval)
                    next_tick = now
                # the sleep doubles as the wait for "stop" on stdin: we wake at once on it
                ready, _, _ = select.select([0], [], [], max(0.0, next_tick - now))
                if ready:
                    reason = R_STOP
                    return 0
        except (ProcessLookupError, FileNotFoundError):
            reason = R_TARGET_GONE
            return 0
        except OSError as exc:
            if exc.errno != 3:
                raise
            reason = R_TARGET_GONE
            return 0
        finally:
            if reason != R_PIPE_CLOSED:
                self.backlog += REC.pack(K_BYE, time.monotonic(), reason, ticks, late)
                with contextlib.suppress(OSError):
                    self.flush(block=True)


def main(argv: list[str]) -> int:
    """``sidecar.py PID INTERVAL_MS STATUS_MS SMAPS_MS MEMINFO_MS PROC SYS PPID``."""
    pid = int(argv[0])
    interval, status_ms, smaps_ms, meminfo_ms = (float(a) / 1000.0 for a in argv[1:5])
    proc, system = argv[5] == "1", argv[6] == "1"
    ppid = int(argv[7])
    os.set_blocking(1, False)
    try:
        sampler = _Sampler(pid, interval, status_ms, smaps_ms, meminfo_ms, proc, system)
        problem = set_sched(os.environ.get(SCHED_ENV))
        if problem:
            sampler.error(time.monotonic(), problem)
    except OSError as exc:
        os.set_blocking(1, True)
        t = time.monotonic()
        os.write(1, text_records(t, E_SOURCE, f"cannot read /proc/{pid}/status: {exc}"))
        os.write(1, REC.pack(K_BYE, t, R_TARGET_GONE, 0, 0))
        return 0
    return sampler.run(ppid)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
