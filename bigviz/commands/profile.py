"""``bigviz profile [--interval MS] [--out FILE] -- CMD ARGS…``: the RAM timeline of any command.

The command runs as a child of the ``bigviz`` process, which samples the whole process
tree (the command and every process it starts) from ``/proc``: summed and per process,
anonymous and file-backed apart. Sampling happens in the otherwise idle ``bigviz``
process, so the command's own threads and GIL are never touched.

Phases come from two places:

* **Markers** (any language). The child gets ``BIGVIZ_PHASE_FD`` (an inherited file
  descriptor) and ``BIGVIZ_PHASE_FILE`` (a FIFO path any descendant can open for
  writing). Each line written there is one event::

      BIGVIZ_PHASE start NAME     open a phase (nested inside the open one)
      BIGVIZ_PHASE end [NAME]     close the innermost open phase (or the one called NAME)
      BIGVIZ_MARK NAME            an instant event

  A marker phase's peak is the highest *summed* RSS of the process tree sampled during
  the phase; when one process alone ran through the phase it is that process's exact
  peak instead (``ram_peak_exact``): at every marker each process's ``VmHWM`` is read and
  reset through ``/proc/PID/clear_refs``, as the recorder does in one process. The exact
  per-process peaks are in ``detail["exact_peaks"]``.

* **Auto-instrumentation** (Python). When CMD is a Python program (``script.py``,
  ``python script.py``, ``python -m module``, ``python -c CODE``) run by this
  interpreter, it runs under a bootstrap that wraps it in ``bigviz.record(instrument=True)``.
  ``torch.load``, safetensors and ``load_state_dict`` calls become phases with *exact*
  per-process peaks (the kernel's high-water mark), merged into the timeline with
  ``detail["pid"]`` set. ``--no-instrument`` turns this off.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as _dt
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bigviz._errors import ConfigError
from bigviz.commands._output import add_verb, format_table
from bigviz.commands.report import check_out
from bigviz.data.recording import Mark, Phase, Recording, Series, SourceInfo
from bigviz.recorder._procfs import read_kib, read_statm, reset_hwm
from bigviz.recorder._sources import sidecar_target
from bigviz.units import format_size

__all__ = ["PHASE_PREFIX", "ProfileResult", "add_parser", "profile_command", "run"]

#: Line prefixes of the phase protocol.
PHASE_PREFIX = "BIGVIZ_PHASE"
MARK_PREFIX = "BIGVIZ_MARK"
#: Environment variables the profiled command receives.
ENV_FD = "BIGVIZ_PHASE_FD"
ENV_FILE = "BIGVIZ_PHASE_FILE"
#: Where the Python bootstrap writes its Recording (set by this module only).
ENV_BOOTSTRAP_OUT = "BIGVIZ_PROFILE_OUT"

EXAMPLES = """\
  bigviz profile -- python load.py --model gpt2          # a Python script, auto-instrumented
  bigviz profile --interval 5 --out load.html -- ./load.sh
  bigviz profile --out run.json -- torchrun --nproc-per-node 2 train.py

phases from any language: write lines to the file descriptor $BIGVIZ_PHASE_FD (or open
the FIFO $BIGVIZ_PHASE_FILE for writing):
  BIGVIZ_PHASE start NAME     open a phase (nested in the open one)
  BIGVIZ_PHASE end [NAME]     close the innermost open phase (or the one called NAME)
  BIGVIZ_MARK NAME            an instant event
e.g.
  bigviz profile -- bash -c 'echo "BIGVIZ_PHASE start load" >&$BIGVIZ_PHASE_FD; ./load;
                             echo "BIGVIZ_PHASE end" >&$BIGVIZ_PHASE_FD'

The summary goes to stderr (the command's own stdout is left alone). The exit code is
the command's own (128+N when killed by signal N), or 2 for a usage error.
"""


def add_parser(subparsers: Any) -> None:
    """Register ``bigviz profile``."""
    p = add_verb(
        subparsers,
        "profile",
        help="record the RAM timeline of any command, children included",
        description=(
            "Run CMD and record the RAM of its whole process tree (summed and per process,\n"
            "anonymous and file-backed apart), with phases from BIGVIZ_PHASE markers or,\n"
            "for Python programs, from bigviz's automatic loader instrumentation."
        ),
        examples=EXAMPLES,
    )
    p.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="MS",
        help="sampling interval in milliseconds (default: 2)",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="write the recording: .json, .html, .md or .csv (by suffix)",
    )
    p.add_argument(
        "--no-instrument",
        action="store_true",
        help="run a Python CMD as is, without the auto-instrumenting bootstrap",
    )
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command")
    p.set_defaults(func=run)


# -- process tree sampling --------------------------------------------------------------


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
class _ProcInfo:
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


@dataclass
class _OpenPhase:
    name: str
    start: float
    index: int
    #: per process: the highest VmHWM folded in so far (exact, see _TreeSampler._boundary)
    hwm: dict[int, int] = field(default_factory=dict)
    #: every process sampled while the phase was open
    pids: set[int] = field(default_factory=set)


class _TreeSampler:
    """Samples a process tree and reads phase markers, on one ``bigviz-profile`` thread."""

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
        self.procs: dict[int, _ProcInfo] = {}
        self.phases: list[Phase] = []
        self.marks: list[Mark] = []
        self.errors: list[str] = []
        self._stack: list[_OpenPhase] = []
        self._ppids: dict[int, int] = {}
        self._tracked: set[int] = {root}
        self._buf = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bigviz-profile", daemon=True)
        self._last_refresh = -1.0
        self._last_cmdline = 0.0

    # lifecycle
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        now = time.monotonic() - self.t0
        self._read_markers(now)  # lines written just before the command exited
        if self._stack:
            self._boundary()
        for op in reversed(self._stack):
            self._close(op, now, error="not ended before the command exited")
        self._stack.clear()

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
                info = _ProcInfo(pid, self._ppids.get(pid, 0), _cmdline(pid), now, now)
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
        for op in self._stack:
            op.pids.update(
                p for p in self._tracked if p in self.procs and not self.procs[p].excluded
            )

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
        if self.marker_fd is None:
            return
        while True:
            try:
                chunk = os.read(self.marker_fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                return
            if not chunk:
                break
            self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        for raw in lines:
            self._handle(raw.decode("utf-8", "replace").strip(), now)

    def _handle(self, line: str, now: float) -> None:
        if not line:
            return
        head, _, rest = line.partition(" ")
        if head == MARK_PREFIX and rest.strip():
            self.marks.append(Mark(rest.strip(), now, {"source": "marker"}))
            return
        verb, _, name = rest.strip().partition(" ")
        name = name.strip()
        opens = verb == "start" and bool(name)
        closes = verb == "end" and bool(self._stack)
        if head == PHASE_PREFIX and (opens or closes):
            self._boundary()
        if head == PHASE_PREFIX and verb == "start" and name:
            parent = self._stack[-1].index if self._stack else None
            phase = Phase(
                name,
                start=now,
                parent=parent,
                depth=len(self._stack),
                detail={"source": "marker", "scope": "process tree"},
            )
            self.phases.append(phase)
            self._stack.append(_OpenPhase(name, now, len(self.phases) - 1))
            return
        if head == PHASE_PREFIX and verb == "end":
            if not self._stack:
                self.errors.append(f"marker {line!r} ends a phase but none is open")
                return
            names = [op.name for op in self._stack]
            if name and name not in names:
                self.errors.append(f"marker {line!r} ends {name!r}, which is not open {names}")
                return
            while self._stack:
                op = self._stack.pop()
                self._close(op, now, error=None)
                if not name or op.name == name:
                    break
            return
        self.errors.append(
            f"ignored marker line {line[:80]!r}; write 'BIGVIZ_PHASE start NAME', "
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
            for op in self._stack:
                op.hwm[pid] = max(op.hwm.get(pid, 0), hwm)
            try:
                if not reset_hwm(pid):
                    continue  # it exited since
            except OSError as exc:
                self.hwm_reason = f"cannot reset VmHWM via /proc/{pid}/clear_refs: {exc}"
                self.errors.append(f"marker phases' peaks are sampled only: {self.hwm_reason}")
                for o in self._stack:
                    o.hwm.clear()
                return

    def _close(self, op: _OpenPhase, now: float, *, error: str | None) -> None:
        # sampled peaks are filled in at the end (_fill_marker_phases), once the totals
        # are final; the exact high-water marks are known now
        phase = self.phases[op.index]
        phase.end = now
        phase.error = error
        if op.hwm:
            phase.detail["exact_peaks"] = {str(pid): v for pid, v in sorted(op.hwm.items())}
        # one process all along, and its mark was kept: the tree's peak is exact
        if len(op.pids) == 1 and next(iter(op.pids)) in op.hwm:
            phase.detail["exact_peak"] = op.hwm[next(iter(op.pids))]

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


def _fill_marker_phases(s: _TreeSampler) -> None:
    """Peaks of the marker phases: sampled from the tree totals, or exact when a single
    process ran through the phase (see :meth:`_TreeSampler._boundary`)."""
    for phase in s.phases:
        end = phase.end if phase.end is not None else (s.t[-1] if s.t else phase.start)
        # the sample times only grow: bisect, not a scan of the whole run per phase
        # (seconds for a long run sampled every 2 ms)
        lo, hi = bisect.bisect_left(s.t, phase.start), bisect.bisect_right(s.t, end)
        last_before = bisect.bisect_right(s.t, phase.start) - 1
        if hi <= lo and s.t:
            # shorter than one interval: the nearest sample
            lo = max(last_before, 0)
            hi = lo + 1
        if hi > lo:
            phase.ram_peak = max(s.rss[lo:hi])
            phase.ram_anon_peak = max(s.anon[lo:hi])
            phase.ram_file_peak = max(s.file[lo:hi])
            phase.ram_end = s.rss[hi - 1]
        if last_before >= 0:
            phase.ram_start = s.rss[last_before]
        exact = phase.detail.pop("exact_peak", None)
        phase.ram_peak_exact = isinstance(exact, int)
        if isinstance(exact, int):
            # the kernel's mark can only be above the samples; max() guards a process that
            # was sampled before it was tracked for the reset
            phase.ram_peak = max(exact, phase.ram_peak or 0)


# -- Python auto-instrumentation ----------------------------------------------------------

_PYTHON_NAME = re.compile(r"^python(\d+(\.\d+)?)?$")


def _same_interpreter(exe: str) -> bool:
    found = shutil.which(exe)
    if found is None:
        return False
    # compare the venv's entry point itself: a venv python symlinks to the system one
    return os.path.abspath(found) == os.path.abspath(sys.executable) or (
        os.path.realpath(found) == os.path.realpath(sys.executable)
        and os.path.dirname(os.path.abspath(found)) == os.path.dirname(sys.executable)
    )


def python_bootstrap_argv(cmd: list[str]) -> list[str] | None:
    """The bootstrap command line for a Python CMD, or ``None`` when CMD is not one we wrap.

    Wrapped: ``script.py ARGS``, and ``PY script.py|-m MOD|-c CODE ARGS`` where ``PY`` is
    this interpreter (other interpreters may not have bigviz installed).

    Example:
        >>> python_bootstrap_argv(["ls", "-l"]) is None
        True
    """
    if not cmd:
        return None
    boot = [sys.executable, "-m", "bigviz.commands._bootstrap"]
    first = cmd[0]
    if first.endswith(".py") and os.path.isfile(first):
        return [*boot, first, *cmd[1:]]
    if _PYTHON_NAME.match(os.path.basename(first)) and _same_interpreter(first) and len(cmd) >= 2:
        rest = cmd[1:]
        if rest[0] in ("-m", "-c") and len(rest) >= 2:
            return [*boot, *rest]
        if not rest[0].startswith("-") and rest[0].endswith(".py"):
            return [*boot, *rest]
    return None


def _merge_bootstrap(rec: Recording, path: Path, t0: float) -> None:
    """Fold the instrumented process's Recording into the tree recording."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        rec.errors.append("the Python bootstrap wrote no recording (the program was killed?)")
        return
    if "error" in data:
        rec.errors.append(f"auto-instrumentation: {data['error']}")
        return
    inner = Recording.from_dict(data["recording"])
    # both sides use CLOCK_MONOTONIC, which is system-wide on Linux
    t_start = inner.meta.get("t0_monotonic", data["t_enter"])
    shift = float(t_start) - t0
    pid = int(data["pid"])
    offset = len(rec.phases)
    for ph in inner.phases:
        ph.start += shift
        if ph.end is not None:
            ph.end += shift
        ph.parent = None if ph.parent is None else ph.parent + offset
        ph.detail = {**ph.detail, "pid": pid, "scope": f"process {pid}"}
        rec.phases.append(ph)
    for mk in inner.marks:
        rec.marks.append(Mark(mk.name, mk.t + shift, {**mk.detail, "pid": pid}))
    # VRAM is only visible from inside the process (torch's allocator) or via NVML
    for name, s in inner.series.items():
        if name.startswith(("cuda:", "nvml:")):
            rec.series[f"proc:{pid}.{name}"] = Series(
                f"proc:{pid}.{name}", [t + shift for t in s.t], list(s.v), s.unit, s.source
            )
    for src in inner.sources:
        rec.sources.append(
            SourceInfo(f"proc:{pid}.{src.name}", src.available, src.reason, src.exact, src.series)
        )
    rec.errors.extend(f"process {pid}: {e}" for e in inner.errors)
    rec.meta["instrumented"] = {"pid": pid, "meta": inner.meta}


# -- the verb -------------------------------------------------------------------------------


@dataclass
class ProfileResult:
    """What ``bigviz profile`` measured: the recording and the command's exit status."""

    recording: Recording
    returncode: int


def profile_command(
    cmd: list[str],
    *,
    interval_ms: float = 2.0,
    instrument: bool = True,
) -> ProfileResult:
    """Run ``cmd`` and record its process tree's RAM, with phases (see the module doc).

    Args:
        cmd: the command and its arguments.
        interval_ms: sampling interval in milliseconds (> 0).
        instrument: wrap a Python CMD in the auto-instrumenting bootstrap.

    Returns:
        A :class:`ProfileResult`: the Recording (series ``ram.rss``/``ram.anon``/``ram.file``
        summed over the tree, ``proc:PID.ram.*`` per process) and the exit code.

    Raises:
        ConfigError: an empty command, a bad interval, or a command that cannot start.

    Example:
        >>> res = profile_command(["true"])  # doctest: +SKIP
        >>> res.returncode, res.recording.peak("ram.rss") > 0
        (0, True)
    """
    if not cmd:
        raise ConfigError("no command to profile; write it after `--`: bigviz profile -- CMD ARGS")
    if not (interval_ms > 0 and interval_ms < 60_000):  # also rejects NaN
        raise ConfigError(
            f"interval {interval_ms!r} ms is out of range; give a positive number of "
            "milliseconds, e.g. --interval 2"
        )
    workdir = Path(tempfile.mkdtemp(prefix="bigviz-profile-"))
    fifo = workdir / "phases"
    os.mkfifo(fifo)
    # O_RDWR: we hold a writer ourselves, so the FIFO never reports EOF between writers
    read_fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    child_fd = os.open(fifo, os.O_WRONLY)
    boot_out = workdir / "bootstrap.json"
    env = dict(os.environ)
    env[ENV_FD] = str(child_fd)
    env[ENV_FILE] = str(fifo)
    argv = list(cmd)
    boot = python_bootstrap_argv(cmd) if instrument else None
    if boot is not None:
        argv = boot
        env[ENV_BOOTSTRAP_OUT] = str(boot_out)
    started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(argv, env=env, pass_fds=(child_fd,))
    except OSError as exc:
        os.close(read_fd)
        os.close(child_fd)
        shutil.rmtree(workdir, ignore_errors=True)
        raise ConfigError(
            f"cannot run {cmd[0]!r}: {exc.strerror or exc}; check the command name and PATH"
        ) from None
    os.close(child_fd)
    sampler = _TreeSampler(
        proc.pid,
        interval_s=interval_ms / 1000.0,
        t0=t0,
        marker_fd=read_fd,
        # the bootstrap's recorder resets the program's VmHWM itself
        no_reset={proc.pid} if boot is not None else None,
    )
    sampler.start()
    interrupted = False
    try:
        try:
            returncode = proc.wait()
        except KeyboardInterrupt:
            # the terminal sent SIGINT to the command too; give it a moment to finish
            interrupted = True
            try:
                returncode = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                returncode = proc.wait()
    finally:
        sampler.stop()
        os.close(read_fd)
    duration = time.monotonic() - t0
    for pid in [p for p, info in sampler.procs.items() if info.excluded]:
        sampler.drop(pid)
    _fill_marker_phases(sampler)
    rec = _build_recording(sampler, cmd, interval_ms, started_at, duration, proc.pid, returncode)
    if boot is not None:
        _merge_bootstrap(rec, boot_out, t0)
    if interrupted:
        rec.errors.append("interrupted (Ctrl-C); the recording stops there")
    shutil.rmtree(workdir, ignore_errors=True)
    return ProfileResult(rec, 130 if interrupted else _exit_status(returncode))


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _build_recording(
    s: _TreeSampler,
    cmd: list[str],
    interval_ms: float,
    started_at: str,
    duration: float,
    root: int,
    returncode: int,
) -> Recording:
    series = {
        "ram.rss": Series("ram.rss", list(s.t), list(s.rss), source="proc-tree"),
        "ram.anon": Series("ram.anon", list(s.t), list(s.anon), source="proc-tree"),
        "ram.file": Series("ram.file", list(s.t), list(s.file), source="proc-tree"),
    }
    processes: dict[str, Any] = {}
    for pid, info in sorted(s.procs.items()):
        if not info.t:
            continue
        for kind, values in (("rss", info.rss), ("anon", info.anon), ("file", info.file)):
            name = f"proc:{pid}.ram.{kind}"
            series[name] = Series(name, list(info.t), list(values), source="proc-tree")
        processes[str(pid)] = {
            "ppid": info.ppid,
            "cmdline": info.cmdline,
            "first_seen": info.first_seen,
            "last_seen": info.last_seen,
            "ram_peak": info.ram_peak,
        }
    achieved = duration / len(s.t) * 1000.0 if s.t else None
    source = SourceInfo(
        "proc-tree",
        available=True,
        exact=False,
        series=sorted(series),
    )
    command = " ".join(cmd)
    return Recording(
        name=command[:200],
        pid=root,
        interval_ms=interval_ms,
        started_at=started_at,
        duration=duration,
        series=series,
        phases=s.phases,
        marks=s.marks,
        sources=[source],
        meta={
            "tool": "bigviz profile",
            "command": list(cmd),
            "exit_code": returncode,
            "processes": processes,
            "samples": len(s.t),
            "interval_ms_achieved": achieved,
            "note": (
                "ram.* series are summed over the process tree from /proc/PID/statm; "
                "anon = resident - shared, file = shared (file-backed + shmem). "
                "Marker phases' peaks are sampled; auto-instrumented phases are exact per process."
            ),
        },
        errors=s.errors,
    )


def _write(rec: Recording, out: str) -> Path:
    from bigviz import report

    return report.write(rec, check_out(out))


def _print_summary(res: ProfileResult, cmd: list[str], out_path: Path | None) -> None:
    rec = res.recording
    err = sys.stderr
    n = rec.meta.get("samples", 0)
    achieved = rec.meta.get("interval_ms_achieved")
    ach = f"{achieved:.1f} ms" if achieved else "—"
    short = " ".join(cmd)
    short = short if len(short) <= 60 else short[:57] + "..."
    print(
        f"\nbigviz profile: `{short}` exited {res.returncode} after {rec.duration:.2f} s; "
        f"{n} samples (every {ach})",
        file=err,
    )
    rss = rec.series.get("ram.rss")
    if rss and rss.v:
        i = max(range(len(rss.v)), key=rss.v.__getitem__)
        anon = rec.series["ram.anon"].v[i]
        file = rec.series["ram.file"].v[i]
        print(
            f"peak RAM, all processes: {format_size(rss.v[i])} at {rss.t[i]:.2f} s "
            f"(anon {format_size(anon)}, file-backed {format_size(file)})",
            file=err,
        )
    procs = rec.meta.get("processes", {})
    if procs:
        rows = [
            [pid, format_size(p["ram_peak"]), (p["cmdline"] or "?")[:60]]
            for pid, p in sorted(procs.items(), key=lambda kv: -int(kv[1]["ram_peak"]))[:10]
        ]
        print("\n" + format_table(["pid", "peak RSS", "command"], rows, right=[1]), file=err)
        if len(procs) > 10:
            print(f"... and {len(procs) - 10} more processes", file=err)
    if rec.phases:
        rows = []
        for ph in rec.phases:
            rows.append(
                [
                    "  " * ph.depth + ph.name[:50],
                    f"{ph.start:.3f}",
                    f"{ph.duration:.3f}" if ph.duration is not None else "—",
                    format_size(ph.ram_peak) + ("" if ph.ram_peak_exact else " ~"),
                    format_size(ph.ram_growth),
                    str(ph.detail.get("scope", "")),
                ]
            )
        headers = ["phase", "start s", "secs", "peak RAM", "growth", "scope"]
        print("\n" + format_table(headers, rows, right=[1, 2, 3, 4]), file=err)
        print("(~ = sampled peak; others are exact high-water marks)", file=err)
    for e in rec.errors[:5]:
        print(f"note: {e}", file=err)
    if out_path is not None:
        print(f"\nrecording written to {out_path}", file=err)


def run(args: argparse.Namespace) -> int:
    """``bigviz profile``: run the command, print the summary, write ``--out``."""
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if args.out:
        check_out(args.out)  # before running a possibly long command
    res = profile_command(cmd, interval_ms=args.interval, instrument=not args.no_instrument)
    out_path = _write(res.recording, args.out) if args.out else None
    _print_summary(res, cmd, out_path)
    return res.returncode
