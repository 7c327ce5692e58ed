"""The one /proc reader (bigviz.recorder.procfs), on the real /proc of this process, of a
process that has exited and of a zombie."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from bigviz.recorder import ProcSource
from bigviz.recorder.procfs import parse_statm, read_kib, read_statm, reset_hwm
from bigviz.recorder.sources import sidecar_command, sidecar_target

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="/proc is Linux's"
)

MiB = 1 << 20
# RSS lives in per-CPU batched counters: two reads of "the same" figure may differ a little
SLACK = 4 * MiB


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def zombie_pid() -> Iterator[int]:
    """The pid of a process that has exited but is not reaped yet."""
    p = subprocess.Popen([sys.executable, "-I", "-S", "-c", "pass"])
    deadline = time.monotonic() + 10
    while psutil.Process(p.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the child did not exit within 10 s"
        time.sleep(0.01)
    yield p.pid
    p.wait()


def test_status_fields_are_this_process_s_memory_in_bytes() -> None:
    # GIVEN 64 MiB touched and held by this process
    before = read_kib("self", ("VmRSS",))["VmRSS"]
    buf = bytearray(64 * MiB)
    buf[:: 4096] = b"\x01" * (len(buf) // 4096)
    # WHEN its status is read by pid and by "self"
    by_pid = read_kib(os.getpid(), ("VmRSS", "RssAnon", "VmHWM", "NoSuchField"))
    by_self = read_kib("self", ("VmRSS",))
    del buf
    # THEN the figures are bytes that saw the 64 MiB, the high-water mark is at least
    # the RSS, and a field the file lacks is left out rather than invented
    assert by_pid["VmRSS"] - before >= 64 * MiB - SLACK
    assert abs(by_pid["VmRSS"] - by_self["VmRSS"]) <= SLACK
    assert by_pid["VmHWM"] >= by_pid["VmRSS"]
    assert by_pid["RssAnon"] <= by_pid["VmRSS"]
    assert "NoSuchField" not in by_pid


def test_any_kib_file_by_path() -> None:
    # GIVEN /proc/meminfo, which psutil reads independently
    # WHEN read by path THEN MemTotal is the machine's RAM in bytes
    assert read_kib("/proc/meminfo", ("MemTotal",)) == {"MemTotal": psutil.virtual_memory().total}


def test_statm_is_resident_and_shared_bytes() -> None:
    # GIVEN this process's RSS as /proc/PID/status says it
    vmrss = read_kib("self", ("VmRSS",))["VmRSS"]
    # WHEN statm is read
    got = read_statm(os.getpid())
    # THEN it gives the same resident size in bytes, and shared (file + shmem) within it
    assert got is not None
    rss, shared = got
    assert abs(rss - vmrss) <= SLACK
    assert 0 < shared <= rss
    with open("/proc/self/statm", "rb") as fh:
        raw = fh.read()
    assert parse_statm(raw, page=1) == (int(raw.split()[1]), int(raw.split()[2]))


def test_reset_hwm_restarts_the_peak_at_the_current_rss() -> None:
    # GIVEN a 128 MiB spike this process has freed again
    buf = bytearray(128 * MiB)
    buf[:: 4096] = b"\x01" * (len(buf) // 4096)
    del buf
    peak = read_kib("self", ("VmHWM",))["VmHWM"]
    rss = read_kib("self", ("VmRSS",))["VmRSS"]
    assert peak - rss >= 128 * MiB - SLACK
    # WHEN the high-water mark is reset
    assert reset_hwm("self") is True
    # THEN it no longer remembers the spike: it starts again at the current RSS
    after = read_kib("self", ("VmHWM",))["VmHWM"]
    assert after < peak - 64 * MiB
    assert abs(after - rss) <= SLACK


def test_a_process_that_is_gone_reads_as_nothing(dead_pid: int) -> None:
    # GIVEN a process that has exited and been reaped
    # THEN every reader says "nothing" instead of raising, and nothing is reset
    assert read_kib(dead_pid, ("VmRSS", "VmHWM")) == {}
    assert read_kib(f"/proc/{dead_pid}/smaps_rollup", ("Pss",)) == {}
    assert read_statm(dead_pid) is None
    assert reset_hwm(dead_pid) is False


def test_a_zombie_has_no_high_water_mark(zombie_pid: int) -> None:
    # GIVEN a process that has exited but is not reaped: its status has no Vm* lines
    # WHEN its memory fields are read THEN they are absent, not -1 or 0
    st = read_kib(zombie_pid, ("VmHWM", "VmRSS"))
    assert st == {}
    with open(f"/proc/{zombie_pid}/status", "rb") as fh:
        assert b"State:\tZ" in fh.read()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may reset any process's mark")
def test_reset_hwm_of_a_process_not_ours_says_why() -> None:
    # GIVEN init, owned by root, and this process, which is not
    # WHEN its mark is reset THEN the kernel's refusal is raised (its text names the
    # reason the caller reports), unlike a process that is merely gone
    with pytest.raises(OSError):
        reset_hwm(1)


def test_sidecar_command_line_names_its_target() -> None:
    # GIVEN a recorder's sidecar sampler, running
    src = ProcSource(os.getpid(), system=False)
    src.start(clock=time.monotonic, interval_ms=5.0)
    try:
        pid = src.meta()["sidecar_pid"]
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read().decode()
    finally:
        src.stop()
    # WHEN its command line is read as bigviz profile sees it (joined by spaces), as
    # /proc gives it (NUL-separated) or as a list
    # THEN the measured pid comes back each way
    args = [a for a in raw.split("\0") if a]
    assert sidecar_target(" ".join(args)) == os.getpid()
    assert sidecar_target(raw) == os.getpid()
    assert sidecar_target(args) == os.getpid()
    # AND the layout is the one sidecar_command builds
    cmd = sidecar_command(
        os.getpid(), interval_ms=5.0, status_ms=100.0, smaps_ms=200.0, meminfo_ms=10.0,
        proc=True, system=False,
    )
    assert cmd == args
    # AND other processes (a script merely named like it, with no pid after it) are not it
    assert sidecar_target(f"{sys.executable} -c pass") is None
    assert sidecar_target("python /home/me/_sidecar.py 123") is None
    assert sidecar_target([sys.executable, cmd[3]]) is None
