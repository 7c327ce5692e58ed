"""``profile_command``: run any command and record the RAM of its whole process tree.

The command runs as a child; :class:`~bigviz.recorder.tree.TreeSampler` samples it and
every process it starts, with phases from marker lines (:mod:`bigviz.recorder.markers`)
written to ``$BIGVIZ_PHASE_FD`` or the FIFO ``$BIGVIZ_PHASE_FILE``.

CMD runs as the shell would run it: a name without a slash is looked up on ``PATH`` (not
in the working directory), a script runs with the interpreter its ``#!`` line names.

**Auto-instrumentation** (Python). When CMD is a Python program run by this interpreter
(``python script.py``, ``python -m module``, ``python -c CODE`` with ``python`` being this
interpreter, or a script whose ``#!`` line names this interpreter), it runs under a
bootstrap (:mod:`bigviz.recorder._bootstrap`) that wraps it in
``bigviz.record(instrument=True)``. ``torch.load``, safetensors and ``load_state_dict``
calls become phases with *exact* per-process peaks (the kernel's high-water mark), put on
the tree's clock by :func:`bigviz.recorder.merge.merge_process` with ``detail["pid"]`` set.

Example:
    >>> res = profile_command(["true"])  # doctest: +SKIP
    >>> res.returncode  # doctest: +SKIP
    0
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigviz._errors import ConfigError
from bigviz.data.recording import Recording, Series, SourceInfo
from bigviz.recorder.hwm import HwmRead, exact_peak
from bigviz.recorder.merge import merge_process
from bigviz.recorder.tree import TreeSampler

__all__ = [
    "ENV_FD",
    "ENV_FILE",
    "ProfileResult",
    "profile_command",
    "python_bootstrap_argv",
]

#: Environment variables the profiled command receives.
ENV_FD = "BIGVIZ_PHASE_FD"
ENV_FILE = "BIGVIZ_PHASE_FILE"
#: Where the Python bootstrap writes its Recording (read by :mod:`._bootstrap`).
ENV_BOOTSTRAP_OUT = "BIGVIZ_PROFILE_OUT"

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

    Wrapped: ``PY script.py|-m MOD|-c CODE ARGS`` where ``PY`` is this interpreter
    (other interpreters may not have bigviz installed), and ``SCRIPT ARGS`` when the
    file the shell would run for ``SCRIPT`` (``PATH`` lookup without a slash) starts
    with a ``#!`` line naming this interpreter. Anything else runs as the shell would
    run it: a ``tool.py`` whose ``#!`` names another Python runs with that one.

    Example:
        >>> python_bootstrap_argv(["ls", "-l"]) is None
        True
    """
    if not cmd:
        return None
    boot = [sys.executable, "-m", "bigviz.recorder._bootstrap"]
    first = cmd[0]
    if _PYTHON_NAME.match(os.path.basename(first)) and _same_interpreter(first) and len(cmd) >= 2:
        rest = cmd[1:]
        if rest[0] in ("-m", "-c") and len(rest) >= 2:
            return [*boot, *rest]
        if not rest[0].startswith("-") and rest[0].endswith(".py"):
            return [*boot, *rest]
        return None
    script = _shell_path(first)
    if script is not None and _shebang_is_ours(script):
        return [*boot, script, *cmd[1:]]
    return None


def _shell_path(name: str) -> str | None:
    """The executable file the shell runs for ``name`` (``None``: none)."""
    if "/" in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    return shutil.which(name)  # PATH only: the working directory is not searched


def _shebang_is_ours(path: str) -> bool:
    """Whether ``path`` starts with ``#!`` naming this interpreter and nothing else
    (``#!/path/to/python`` or ``#!/usr/bin/env python3``; interpreter options: no)."""
    try:
        with open(path, "rb") as f:
            line = f.readline(512)
    except OSError:
        return False
    if not line.startswith(b"#!"):
        return False
    parts = line[2:].decode("utf-8", "replace").split()
    if parts and os.path.basename(parts[0]) == "env":
        parts = parts[1:]
        if parts[:1] == ["-S"]:
            parts = parts[1:]
    return len(parts) == 1 and _same_interpreter(parts[0])


def _read_bootstrap(path: Path, t0: float) -> tuple[Recording, int, float] | str:
    """The instrumented process's Recording, its pid and its clock shift; or why not."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "the Python bootstrap wrote no recording (the program was killed?)"
    if "error" in data:
        return f"auto-instrumentation: {data['error']}"
    inner = Recording.from_dict(data["recording"])
    # both sides use CLOCK_MONOTONIC, which is system-wide on Linux
    t_start = inner.meta.get("t0_monotonic", data["t_enter"])
    return inner, int(data["pid"]), float(t_start) - t0


def _inner_reads(inner: Recording, pid: int, t0: float) -> list[HwmRead]:
    """The VmHWM reads the recorder inside the process made, on the tree's clock."""
    out: list[HwmRead] = []
    for t_read, hwm, t_reset in inner.meta.pop("hwm_reads", None) or []:
        reset = None if t_reset is None else float(t_reset) - t0
        # the recorder reads and resets in one go at its own boundary: asked = read
        out.append(HwmRead(pid, float(t_read) - t0, float(t_read) - t0, int(hwm), reset))
    return out


def _exact_inner_phases(rec: Recording, first: int, reads: list[HwmRead], pid: int) -> None:
    """Recompute the instrumented process's phase peaks from every VmHWM read of it (its
    recorder's and the tree sampler's, which resets it at markers): each read covers the
    stretch since the last reset by either of them."""
    own = [e for e in reads if e.boundary < 0]
    for ph in rec.phases[first:]:
        if not ph.ram_peak_exact or ph.end is None:
            continue
        # the recorder reads+resets, then stamps the start; at the end it stamps, then reads
        start = next((e for e in reversed(own) if e.t_reset is not None
                      and e.t_reset <= ph.start + 1e-6), None)  # fmt: skip
        end = next((e for e in own if e.t_read >= ph.end - 1e-6), None)
        if start is not None:
            # the phase began once that reset was done: its wait is not the phase's
            start = dataclasses.replace(start, t_request=start.t_reset or start.t_request)
        peak, why = exact_peak(reads, pid, start, end)
        if peak is None:
            ph.ram_peak_exact, ph.ram_peak_why = False, why
        else:
            ph.ram_peak = max(peak, ph.ram_start or 0, ph.ram_end or 0)


@dataclass
class ProfileResult:
    """What ``bigviz profile`` measured: the recording and the command's exit status
    (128+N when killed by signal N, 130 when interrupted).

    Example:
        >>> ProfileResult(Recording(name="true"), 0).returncode
        0
    """

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
        >>> res.returncode, res.recording.peak("ram.rss") > 0  # doctest: +SKIP
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
        raise ConfigError(f"cannot run {cmd[0]!r}: {exc.strerror or exc}; {_run_hint(cmd[0])}"
                          ) from None
    os.close(child_fd)
    sampler = TreeSampler(
        proc.pid,
        interval_s=interval_ms / 1000.0,
        t0=t0,
        marker_fd=read_fd,
        # the bootstrap's recorder resets the program's VmHWM too; its reads are merged
        # with the sampler's below, so both sets of phases stay exact
        shared_log={proc.pid} if boot is not None else None,
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
    inner = _read_bootstrap(boot_out, t0) if boot is not None else None
    reads: list[HwmRead] = []
    if isinstance(inner, tuple):
        reads = _inner_reads(inner[0], inner[1], t0)
        sampler.add_reads(reads)
    sampler.fill_phases()
    rec = _build_recording(sampler, cmd, interval_ms, started_at, duration, proc.pid, returncode)
    if isinstance(inner, str):
        rec.errors.append(inner)
    elif inner is not None:
        first = len(rec.phases)
        merge_process(rec, inner[0], dt=inner[2], pid=inner[1])
        _exact_inner_phases(rec, first, sampler.reads, inner[1])
        if inner[0].ram_peak_process is not None:
            rec.ram_peak_process = max(rec.ram_peak_process or 0, inner[0].ram_peak_process)
    if interrupted:
        rec.errors.append("interrupted (Ctrl-C); the recording stops there")
    shutil.rmtree(workdir, ignore_errors=True)
    return ProfileResult(rec, 130 if interrupted else _exit_status(returncode))


def _run_hint(name: str) -> str:
    """How to run ``name`` when the shell's way failed."""
    if "/" not in name and os.path.isfile(name):
        return (f"commands are looked up on PATH, as the shell does, not in this folder: "
                f"write ./{name}" + (f" or python {name}" if name.endswith(".py") else ""))
    if os.path.isfile(name) and not os.access(name, os.X_OK):
        return (f"it is not executable: chmod +x {name}"
                + (f", or write python {name}" if name.endswith(".py") else ""))
    return "check the command name and PATH"


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _build_recording(
    s: TreeSampler,
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
        "ram.shmem": Series("ram.shmem", list(s.t), list(s.shmem), source="proc-tree"),
    }
    processes: dict[str, Any] = {}
    for pid, info in sorted(s.procs.items()):
        if not info.t:
            continue
        kinds = (("rss", info.rss), ("anon", info.anon), ("file", info.file))
        for kind, values in (*kinds, ("shmem", info.shmem)):
            name = f"proc:{pid}.ram.{kind}"
            series[name] = Series(name, list(info.t), list(values), source="proc-tree")
        processes[str(pid)] = {
            "ppid": info.ppid,
            "cmdline": info.cmdline,
            "first_seen": info.first_seen,
            "last_seen": info.last_seen,
            "ram_peak": info.ram_peak,
            "ram_peak_process": info.hwm_peak,
            "counted": info.counted,
        }
    achieved = duration / len(s.t) * 1000.0 if s.t else None
    root_info = s.procs.get(root)
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
                "ram.* series are summed over the process tree from /proc/PID/status "
                "(RssAnon, RssFile, RssShmem from one read per process and tick); a child "
                "forked without exec counts its private pages only (USS), a vfork child "
                "nothing, so pages shared with the parent count once. Marker phases of one "
                "process and auto-instrumented phases are exact (VmHWM, reset at each "
                "boundary off the sampling thread) unless a phase says why not "
                "(ram_peak_why)."
            ),
        },
        errors=s.errors,
        ram_peak_process=max(
            [root_info.hwm_peak if root_info is not None else 0]
            + [e.hwm for e in s.reads if e.pid == root]
        )
        or None,
    )
