"""Process RAM and system RAM, sampled by the sidecar process (:mod:`bigviz.recorder.sidecar`).

The timeline comes from a tiny separate process reading ``/proc/PID/statm`` every tick
(``status`` for the file-backed / shmem split when it moves; and, less often, ``smaps_rollup``,
``/proc/meminfo``), so a workload that holds the GIL
is still sampled on time. Exact per-phase peaks come from the kernel's ``VmHWM``, reset
through ``/proc/PID/clear_refs``.

Example:
    >>> sidecar_target(["python", "-I", "-S", "/x/bigviz/recorder/sidecar.py", "7", "1.0"])
    7
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import sys
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bigviz.data.recording import SourceInfo
from bigviz.recorder import procfs
from bigviz.recorder import sidecar as sc
from bigviz.recorder.sources.base import Clock, SampleBatch, Source

__all__ = ["ProcSource", "proc_available", "sidecar_command", "sidecar_target"]


def proc_available() -> bool:
    """True where Linux's ``/proc`` gives this process's memory (``/proc/self/status``).
    Elsewhere (macOS, Windows) the recorder falls back to
    :class:`~bigviz.recorder.sources.fallback.PsutilSource`.

    Example:
        >>> isinstance(proc_available(), bool)
        True
    """
    return sys.platform.startswith("linux") and os.path.exists("/proc/self/status")


#: how the sidecar script's path ends (``/proc`` exists on Linux only: "/" separators)
_SIDECAR_TAIL = "bigviz/recorder/sidecar.py"


def sidecar_command(
    pid: int,
    *,
    interval_ms: float,
    status_ms: float,
    smaps_ms: float,
    meminfo_ms: float,
    proc: bool,
    system: bool,
) -> list[str]:
    """The command line of a sidecar sampler measuring ``pid`` for this process; the
    layout is :func:`bigviz.recorder.sidecar.main`'s, and :func:`sidecar_target` reads
    it back."""
    return [
        sys.executable,
        "-I",
        "-S",
        str(Path(sc.__file__)),
        str(pid),
        repr(interval_ms),
        repr(status_ms),
        repr(smaps_ms),
        repr(meminfo_ms),
        "1" if proc else "0",
        "1" if system else "0",
        str(os.getpid()),
    ]


def sidecar_target(cmdline: str | Sequence[str]) -> int | None:
    """The pid a bigviz recorder's sidecar samples, if ``cmdline`` is a sidecar's.

    Args:
        cmdline: a process's command line, as the list of its arguments or as one string
            (``/proc/PID/cmdline`` with its arguments joined by spaces or NULs).

    Returns:
        The measured pid (the argument after the script, see :func:`sidecar_command`),
        or ``None`` for any other process.

    Example:
        >>> sidecar_target(["python", "-I", "-S", "/x/bigviz/recorder/sidecar.py", "42", "1.0"])
        42
    """
    if isinstance(cmdline, str):
        if _SIDECAR_TAIL not in cmdline:
            return None  # the usual answer, found cheaply: profile asks at every tick
        parts = cmdline.replace("\0", " ").split()
    else:
        parts = list(cmdline)
    for i, part in enumerate(parts[:-1]):
        if part.endswith(_SIDECAR_TAIL) and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


class ProcSource(Source):
    """Process RAM and system RAM, sampled by the sidecar process (:mod:`.sidecar`).

    Exact peaks: ``VmHWM`` reset through ``/proc/PID/clear_refs`` (writing ``5``).

    Args:
        pid: process to measure (default: this one).
        proc: sample ``ram.*`` series.
        system: sample ``sys.available``.
        status_ms: ``/proc/PID/status`` (the file-backed / shmem split) is re-read at
            least this often; the sidecar reads the cheaper ``statm`` at every tick and
            ``status`` whenever file+shmem moved (see :mod:`.sidecar`).
        smaps_ms: how often ``smaps_rollup`` is read for USS/PSS (it walks all page
            tables, so it is rate-limited further when it is slow).
        meminfo_ms: how often ``/proc/meminfo`` is read.
    """

    names = ("ram", "sys")
    peak_series = {"ram": "ram.rss"}  # noqa: RUF012

    def __init__(
        self,
        pid: int | None = None,
        *,
        proc: bool = True,
        system: bool = True,
        status_ms: float = 100.0,
        smaps_ms: float = 200.0,
        meminfo_ms: float = 10.0,
    ) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.proc = proc
        self.system = system
        self.status_ms = status_ms
        self.smaps_ms = smaps_ms
        self.meminfo_ms = meminfo_ms
        self._proc_target: int | str = "self" if pid is None else pid
        self._proc_dir = f"/proc/{self._proc_target}"
        self._popen: subprocess.Popen[bytes] | None = None
        self._sidecar_pid: int | None = None
        self._buf = bytearray()
        self._chunk = bytearray(64 << 10)  # ~1,600 records per read
        self._hwm_log: array[float] = array("d")
        self._text_left = 0
        self._text = bytearray()
        self._clear_refs_ok = False
        self._clear_refs_why = ""
        self._spawned_at = 0.0
        self._hello_at: float | None = None
        self._bye: tuple[int, int, int] | None = None
        self._ended_told = False
        self.errors: list[str] = []
        self._fd: int | None = None
        self._statm_fd: int | None = None
        self._pagesize = os.sysconf("SC_PAGE_SIZE")

    # -- lifecycle -------------------------------------------------------------
    def start(self, *, clock: Clock, interval_ms: float) -> list[SourceInfo]:
        infos: list[SourceInfo] = []
        if not sys.platform.startswith("linux") or not os.path.exists(f"/proc/{self.pid}/statm"):
            why = (
                f"/proc/{self.pid}/statm does not exist (not Linux, or the process is gone); "
                "bigviz samples RAM from Linux's /proc"
            )
            return [SourceInfo("ram", False, why), SourceInfo("sys", False, why)]
        self._statm_fd = os.open(f"{self._proc_dir}/statm", os.O_RDONLY)
        if self.proc:
            self._probe_clear_refs()
        args = sidecar_command(
            self.pid,
            interval_ms=interval_ms,
            status_ms=self.status_ms,
            smaps_ms=self.smaps_ms,
            meminfo_ms=self.meminfo_ms,
            proc=self.proc,
            system=self.system,
        )
        self._spawned_at = time.monotonic()
        self._popen = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._sidecar_pid = self._popen.pid
        assert self._popen.stdout is not None
        self._fd = self._popen.stdout.fileno()
        os.set_blocking(self._fd, False)
        # room for ~25k records before the sidecar has to buffer in its own memory
        with contextlib.suppress(OSError, AttributeError, ImportError):
            import fcntl

            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, 1 << 20)
        # wait for the first sample, so the timeline covers the user's code from its start
        # (the sidecar needs ~10 ms to start, more on a busy machine)
        deadline = time.monotonic() + 5.0
        while self._hello_at is None and time.monotonic() < deadline:
            if not self._read_available(wait=0.01):
                break  # the sidecar died at once; stop() reports its stderr
            self._scan_hello()
        if self._hello_at is None:
            self.errors.append("the sidecar sampler did not start within 5 s")
        exact = self._clear_refs_ok
        if self.proc:
            infos.append(
                SourceInfo(
                    "ram",
                    True,
                    None if exact else self._clear_refs_why,
                    exact=exact,
                    series=["ram.rss", "ram.anon", "ram.file", "ram.shmem", "ram.uss", "ram.pss"],
                )
            )
        else:
            infos.append(SourceInfo("ram", False, "not requested (sources=...)"))
        if self.system:
            infos.append(SourceInfo("sys", True, series=["sys.available"]))
        else:
            infos.append(SourceInfo("sys", False, "not requested (sources=...)"))
        return infos

    def _probe_clear_refs(self) -> None:
        path = f"{self._proc_dir}/clear_refs"
        # the mark before the first reset is the process's peak so far: keep it
        hwm = procfs.read_kib(self.pid, ("VmHWM",)).get("VmHWM")
        t_read = time.monotonic()
        try:
            self._clear_refs_ok = procfs.reset_hwm(self._proc_target)
            if self._clear_refs_ok and hwm is not None:
                self._log_read(hwm, time.monotonic(), t_read)
            why = "the process is gone"
        except OSError as exc:
            self._clear_refs_ok = False
            why = str(exc.strerror or exc)
        if not self._clear_refs_ok:
            self._clear_refs_why = (
                f"cannot write {path} ({why}); per-phase RAM peaks are the "
                "maximum of the samples, not the kernel's exact high-water mark"
            )

    def stop(self) -> None:
        p = self._popen
        if p is None:
            return
        self._popen = None
        try:
            assert p.stdin is not None
            try:
                p.stdin.write(b"q")
                p.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
            deadline = time.monotonic() + 5.0
            # drain until the sidecar closes its end (it flushes its backlog first)
            while self._fd is not None and time.monotonic() < deadline:
                if not self._read_available(wait=0.05):
                    break
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                self.errors.append("sidecar sampler did not stop within 5 s; killed it")
            err = p.stderr.read() if p.stderr is not None else b""
            if (p.returncode not in (0, None) and not self._ended_told) or err.strip():
                text = err.decode("utf-8", "replace").strip()[-2000:]
                self.errors.append(f"sidecar sampler exited with code {p.returncode}: {text}")
        finally:
            for fh in (p.stdout, p.stderr, p.stdin):
                if fh is not None:
                    fh.close()
            self._fd = None
            if self._statm_fd is not None:
                os.close(self._statm_fd)
                self._statm_fd = None

    def ended(self) -> str | None:
        """Why the sidecar sampler ended while this source records (``None`` while it
        runs, after :meth:`stop`, or when the measured process itself exited).

        Example:
            >>> ProcSource().ended() is None
            True
        """
        p = self._popen
        if p is None or p.poll() is None:
            return None
        if self._bye is not None and self._bye[0] == sc.R_TARGET_GONE:
            return None  # nothing left to sample
        code = p.returncode
        if code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        elif self._bye is not None and self._bye[0] == sc.R_STOP:
            how = "was told to stop by another process (a forked copy of the recorder?)"
        else:
            how = f"exited with code {code}"
        self._ended_told = True
        return f"the sidecar sampler (pid {p.pid}) {how}"

    # -- timeline --------------------------------------------------------------
    def _read_available(self, *, wait: float = 0.0) -> bool:
        """Move what the pipe holds into the buffer; False once the sidecar has closed it."""
        if self._fd is None:
            return False
        if wait:
            import select

            select.select([self._fd], [], [], wait)
        chunk = self._chunk
        while True:
            try:
                # into one reused buffer: os.read(fd, 1 MiB) would allocate (mmap) and free
                # a megabyte in the measured process at every collection
                n = os.readv(self._fd, [chunk])
            except BlockingIOError:
                return True
            if not n:
                return False
            with memoryview(chunk) as view:
                self._buf += view[:n]

    def _scan_hello(self) -> None:
        n = len(self._buf) - len(self._buf) % sc.REC_SIZE
        for kind, t, _a, _b, _c in sc.REC.iter_unpack(bytes(self._buf[:n])):
            if kind == sc.K_HELLO:
                self._hello_at = t
                return

    def poll(self) -> SampleBatch:
        self._read_available()
        n = len(self._buf) - len(self._buf) % sc.REC_SIZE
        if not n:
            return {}
        view = memoryview(self._buf)[:n]
        out: dict[str, tuple[array[float], array[int]]] = {}

        def put(name: str, t: float, v: int) -> None:
            ts_vs = out.get(name)
            if ts_vs is None:
                ts_vs = out[name] = (array("d"), array("q"))
            ts_vs[0].append(t)
            ts_vs[1].append(v)

        # arrays, not lists: after a long GIL hold the pipe and the sidecar's backlog hold
        # tens of thousands of records, decoded here inside the measured phase; as lists
        # of Python objects they would briefly cost ~170 bytes per tick, as arrays 32
        rss_t: array[float] = array("d")
        rss_v: array[int] = array("q")
        anon_v: array[int] = array("q")
        file_v: array[int] = array("q")
        shmem_v: array[int] = array("q")
        for kind, t, a, b, c in sc.REC.iter_unpack(view):
            if kind == sc.K_STATUS:
                # one status read: RssAnon, RssFile, RssShmem of the same instant
                rss_t.append(t)
                rss_v.append(a + b + c)
                anon_v.append(a)
                file_v.append(b)
                shmem_v.append(c)
            elif kind == sc.K_SMAPS:
                put("ram.uss", t, a)
                put("ram.pss", t, b)
            elif kind == sc.K_MEMINFO:
                put("sys.available", t, a)
            elif kind == sc.K_ERROR:
                self._text_left = a
                self._text.clear()
                if not a:
                    self.errors.append("sidecar: unknown error")
            elif kind == sc.K_TEXT:
                self._text += struct.pack("<qqq", a, b, c)
                self._text_left -= 1
                if self._text_left == 0:
                    msg = self._text.rstrip(b"\0").decode("utf-8", "replace")
                    self.errors.append(f"sidecar: {msg}")
            elif kind == sc.K_HELLO:
                self._hello_at = t
            elif kind == sc.K_BYE:
                self._bye = (a, b, c)
        view.release()
        del self._buf[:n]
        if rss_t and self.proc:
            out["ram.rss"] = (rss_t, rss_v)
            # one time list for the three: the recorder then keeps one time array for them
            out["ram.anon"] = (rss_t, anon_v)
            out["ram.file"] = (rss_t, file_v)
            out["ram.shmem"] = (rss_t, shmem_v)
        return out

    # -- exact peaks -----------------------------------------------------------
    def read_now(self) -> dict[str, int]:
        if not self.proc or self._statm_fd is None:
            return {}
        # the fd opened at start: one pread per phase boundary, not an open() each time
        rss, _shared = procfs.parse_statm(os.pread(self._statm_fd, 512, 0), self._pagesize)
        return {"ram": rss}

    def read_peaks(self) -> dict[str, int]:
        if not self._clear_refs_ok:
            return {}
        hwm = procfs.read_kib(self.pid, ("VmHWM",)).get("VmHWM")
        if hwm is not None:
            self._log_read(hwm, None)
            return {"ram": hwm}
        if os.path.isdir(self._proc_dir):
            return {}  # a zombie: exited, nothing resident, no VmHWM line any more
        # the recorder drops the source and says why in Recording.errors
        raise ProcessLookupError(
            f"cannot read VmHWM from /proc/{self.pid}/status: the process is gone"
        )

    def reset_peaks(self) -> None:
        if not self._clear_refs_ok:
            return
        # read the mark just before the reset: the first one is the process's peak
        # before the recording (ru_maxrss forgets it after the reset), and every one
        # is a VmHWM read for `bigviz profile` to merge with its own (hwm_reads)
        hwm = procfs.read_kib(self.pid, ("VmHWM",)).get("VmHWM")
        t_read = time.monotonic()
        if not procfs.reset_hwm(self._proc_target):
            raise ProcessLookupError(
                f"cannot reset VmHWM via {self._proc_dir}/clear_refs: the process is gone"
            )
        if hwm is not None:
            self._log_read(hwm, time.monotonic(), t_read)

    def _log_read(self, hwm: int, t_reset: float | None, t_read: float | None = None) -> None:
        # flat array of (t_read, hwm, t_reset or -1): 24 bytes per phase boundary
        self._hwm_log.extend((t_read or time.monotonic(), float(hwm), t_reset or -1.0))

    def hwm_reads(self) -> list[tuple[float, int, float | None]]:
        """Every ``VmHWM`` read so far: ``(t_read, hwm, t_reset or None)``, monotonic
        times; the process's peak over its life is the largest ``hwm``.

        Example:
            >>> ProcSource().hwm_reads()
            []
        """
        log = self._hwm_log
        return [
            (log[i], int(log[i + 1]), log[i + 2] if log[i + 2] >= 0 else None)
            for i in range(0, len(log), 3)
        ]

    def exact_keys(self) -> set[str]:
        return {"ram"} if self._clear_refs_ok else set()

    def meta(self) -> dict[str, Any]:
        m: dict[str, Any] = {"sidecar_pid": self._sidecar_pid}
        if self._hello_at is not None:
            m["sidecar_startup_ms"] = round((self._hello_at - self._spawned_at) * 1000, 3)
        if self._bye is not None:
            reasons = {sc.R_STOP: "stopped", sc.R_TARGET_GONE: "target exited"}
            reasons[sc.R_PARENT_GONE] = "parent exited"
            m["sidecar_exit"] = reasons.get(self._bye[0], str(self._bye[0]))
            m["sidecar_ticks"] = self._bye[1]
            m["sidecar_ticks_late"] = self._bye[2]
        reads = self.hwm_reads()
        if reads:
            m["hwm_reads"] = [list(r) for r in reads]
            m["ram_peak_process"] = max(r[1] for r in reads)
        m["ram_peak_method"] = (
            "VmHWM reset per phase via clear_refs (exact)"
            if self._clear_refs_ok
            else "max of samples (clear_refs not writable)"
        )
        return m
