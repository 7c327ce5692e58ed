"""The sidecar sampler on its own (issue 17): statm every tick, status when file+shmem move,
the scheduling policy from the environment. Real processes, real /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bigviz.recorder import sidecar as sc

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the sidecar reads Linux's /proc"
)

MiB = 2**20

# allocates 64 MiB of anon pages, then 64 MiB of shared anonymous (shmem) pages, then frees
# both, pausing 0.15 s between steps; says "ready" first and "done" at the end
TARGET = r"""
import mmap, sys, time
print("ready", flush=True)
time.sleep(0.15)
anon = bytearray(b"\x01") * (64 << 20)
time.sleep(0.15)
shm = mmap.mmap(-1, 64 << 20, flags=mmap.MAP_SHARED)
shm.write(b"\x01" * (64 << 20))
time.sleep(0.15)
del anon
shm.close()
time.sleep(0.15)
print("done", flush=True)
sys.stdin.read()
"""


def _records(raw: bytes) -> list[tuple[int, float, int, int, int]]:
    n = len(raw) - len(raw) % sc.REC_SIZE
    return list(sc.REC.iter_unpack(raw[:n]))


Rec = tuple[int, float, int, int, int]


def _sample(env: dict[str, str] | None = None) -> tuple[list[Rec], int]:
    """Run TARGET under a sidecar at 1 ms; the sidecar's records and its scheduling policy
    (read while it ran)."""
    target = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", TARGET], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert target.stdout is not None and target.stdin is not None
    try:
        assert target.stdout.readline() == b"ready\n"
        side = subprocess.Popen(
            [sys.executable, "-I", "-S", str(Path(sc.__file__)), str(target.pid), "1.0",
             "100.0", "200.0", "10.0", "1", "0", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        assert side.stdout is not None
        hello = b""  # written after the policy was set (unbuffered: communicate reads the fd)
        while len(hello) < sc.REC_SIZE:
            hello += os.read(side.stdout.fileno(), sc.REC_SIZE - len(hello))
        policy = os.sched_getscheduler(side.pid)
        assert target.stdout.readline() == b"done\n"
        out, _ = side.communicate(b"q", timeout=10)
        out = hello + out
    finally:
        target.kill()
        target.wait()
        target.stdin.close()
        target.stdout.close()
    return _records(out), policy


def test_every_tick_is_sampled_and_the_split_follows_anon_and_shmem() -> None:
    # GIVEN a process that allocates 64 MiB anon, then 64 MiB shmem, then frees both
    # WHEN the sidecar samples it at 1 ms
    recs, policy = _sample()
    status = [r for r in recs if r[0] == sc.K_STATUS]
    bye = [r for r in recs if r[0] == sc.K_BYE]
    # THEN it said hello, sampled every tick it did and said bye (told to stop)
    assert recs[0][0] == sc.K_HELLO and len(bye) == 1 and bye[0][2] == sc.R_STOP
    assert bye[0][3] == len(status) >= 100  # ~0.6 s at 1 ms, minus what a busy CPU drops
    assert policy == os.SCHED_OTHER
    anon = [r[2] for r in status]
    file_ = [r[3] for r in status]
    shmem = [r[4] for r in status]
    # AND the anon step and the shmem step show in their own series
    assert max(anon) - anon[0] >= 60 * MiB
    assert max(shmem) - shmem[0] >= 60 * MiB
    # AND shmem never shows up as file-backed memory (statm mixes the two: the split
    # must come from a status reading of the same file+shmem total)
    assert max(file_) - min(file_) < 16 * MiB
    # AND both are freed by the end
    assert anon[-1] - anon[0] < 16 * MiB and shmem[-1] - shmem[0] < 16 * MiB
    # AND the times only move forward
    ts = [r[1] for r in status]
    assert ts == sorted(ts)


def test_the_split_matches_status_exactly_when_nothing_moves() -> None:
    # GIVEN this quiet process's statm and status, read back to back
    page = os.sysconf("SC_PAGE_SIZE")
    for _ in range(20):
        with open("/proc/self/statm", "rb") as fh:
            resident, shared = sc.parse_statm(fh.read())
        with open("/proc/self/status", "rb") as fh:
            anon, file_, shmem = sc.parse_rss_split(fh.read())
        # THEN statm's resident is anon + file + shmem and its shared is file + shmem
        if resident * page == anon + file_ + shmem:
            break
    assert resident * page == anon + file_ + shmem
    assert shared * page == file_ + shmem
    assert (resident - shared) * page == anon


def test_parse_statm_rejects_what_is_not_statm() -> None:
    with pytest.raises(ValueError, match="not statm"):
        sc.parse_statm(b"garbage\n")


def test_idle_policy_from_the_environment() -> None:
    # GIVEN BIGVIZ_SIDECAR_SCHED=idle
    recs, policy = _sample({sc.SCHED_ENV: "idle"})
    # THEN the sidecar runs under SCHED_IDLE and still samples
    assert policy == os.SCHED_IDLE
    assert sum(r[0] == sc.K_STATUS for r in recs) > 0
    assert not [r for r in recs if r[0] == sc.K_ERROR]


def test_a_bad_policy_is_reported_and_sampling_goes_on() -> None:
    # GIVEN a policy name that does not exist
    recs, policy = _sample({sc.SCHED_ENV: "fast"})
    # THEN the sidecar says which value and what to use, under the normal policy
    assert policy == os.SCHED_OTHER
    errors = [i for i, r in enumerate(recs) if r[0] == sc.K_ERROR]
    assert len(errors) == 1
    i = errors[0]
    text = b"".join(
        sc.REC.pack(*r)[16:] for r in recs[i + 1 : i + 1 + recs[i][2]]
    ).rstrip(b"\0")
    assert text.decode() == "BIGVIZ_SIDECAR_SCHED='fast': use one of normal, batch, idle"
    assert sum(r[0] == sc.K_STATUS for r in recs) >= 100


def test_set_sched_names_the_value() -> None:
    assert sc.set_sched(None) is None
    assert sc.set_sched("normal") is None
    message = sc.set_sched("realtime")
    assert message is not None and "'realtime'" in message and "normal, batch, idle" in message


@pytest.mark.parametrize("name", ["/proc/self/status", "/proc/meminfo", "/proc/self/smaps_rollup"])
def test_parse_kib_reads_every_kb_field_of_real_proc_files(name: str) -> None:
    # GIVEN a real /proc file and every "Name:  123 kB" line of it, split the slow way
    with open(name, "rb") as fh:
        text = fh.read()
    expected = {}
    for line in text.split(b"\n"):
        key, _, rest = line.partition(b":")
        if rest.strip().endswith(b"kB"):
            expected[key] = int(rest.split()[0]) * 1024
    assert len(expected) >= 5
    names = (*expected, b"NoSuchField")
    # THEN parse_kib finds each value (the first line and the last included), -1 if absent
    assert sc.parse_kib(text, names) == [*expected.values(), -1]
    assert sc.parse_kib(b"VmHWM: 7 kB", (b"VmHWM",)) == [7 * 1024]  # no newline at all
    # AND a name that is only the tail of another one is not taken for it
    assert sc.parse_kib(b"RssVmHWM: 1 kB\nVmHWM: 2 kB\n", (b"VmHWM",)) == [2048]


# -- CPU placement (issue 17) ------------------------------------------------------------
# spins on whichever CPUs it is allowed; says "ready" first
SPIN = r"""
import sys, time
print("ready", flush=True)
while True:
    pass
"""


def _two_cpus() -> list[int]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("CPU placement needs at least 2 CPUs this process may use")
    return cpus


def _wait_for(pred: Any, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return bool(pred())


def _spinner_and_sidecar(cpu: int, env: dict[str, str]) -> tuple[Any, Any]:
    target = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", SPIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert target.stdout is not None
    os.sched_setaffinity(target.pid, {cpu})
    assert target.stdout.readline() == b"ready\n"
    side = subprocess.Popen(
        [sys.executable, "-I", "-S", str(Path(sc.__file__)), str(target.pid), "1.0",
         "100.0", "200.0", "10.0", "1", "0", str(os.getpid())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, **env},
    )  # fmt: skip
    return target, side


def _stop(target: Any, side: Any) -> list[Rec]:
    out, _ = side.communicate(b"q", timeout=10)
    target.kill()
    target.wait()
    target.stdin.close()
    target.stdout.close()
    return _records(out)


def test_the_sidecar_keeps_off_the_cpu_the_target_runs_on() -> None:
    cpus = _two_cpus()
    allowed = set(cpus)
    # GIVEN a busy target pinned to the first CPU, sampled by a sidecar (default: away)
    target, side = _spinner_and_sidecar(cpus[0], {})
    try:
        # THEN the sidecar pins itself to every other CPU it may use
        assert _wait_for(lambda: os.sched_getaffinity(side.pid) == allowed - {cpus[0]})
        # WHEN the target is moved to the second CPU
        os.sched_setaffinity(target.pid, {cpus[1]})
        # THEN the sidecar follows: off the second, back on the first
        assert _wait_for(lambda: os.sched_getaffinity(side.pid) == allowed - {cpus[1]})
        time.sleep(0.2)
    finally:
        recs = _stop(target, side)
    # AND it sampled all along, with no error
    assert sum(r[0] == sc.K_STATUS for r in recs) >= 50
    assert not [r for r in recs if r[0] == sc.K_ERROR]


def test_placement_any_leaves_the_sidecar_where_the_kernel_puts_it() -> None:
    cpus = _two_cpus()
    target, side = _spinner_and_sidecar(cpus[0], {sc.CPU_ENV: "any"})
    try:
        time.sleep(0.3)  # 15 looks at the target's CPU, had it been "away"
        assert os.sched_getaffinity(side.pid) == set(cpus)
    finally:
        recs = _stop(target, side)
    assert sum(r[0] == sc.K_STATUS for r in recs) >= 50


def test_a_bad_placement_is_reported_and_the_default_is_used() -> None:
    cpus = _two_cpus()
    target, side = _spinner_and_sidecar(cpus[0], {sc.CPU_ENV: "near"})
    try:
        assert _wait_for(lambda: os.sched_getaffinity(side.pid) == set(cpus) - {cpus[0]})
    finally:
        recs = _stop(target, side)
    errors = [i for i, r in enumerate(recs) if r[0] == sc.K_ERROR]
    assert len(errors) == 1
    i = errors[0]
    text = b"".join(sc.REC.pack(*r)[16:] for r in recs[i + 1 : i + 1 + recs[i][2]])
    assert text.rstrip(b"\0").decode() == "BIGVIZ_SIDECAR_CPU='near': use one of away, any"


def test_parse_stat_cpu_reads_the_cpu_a_pinned_process_runs_on() -> None:
    # GIVEN a process pinned to the last CPU this one may use, which reads its own stat
    cpu = max(os.sched_getaffinity(0))
    code = (
        f"import os; os.sched_setaffinity(0, {{{cpu}}}); x = sum(range(10**5)); "
        "import sys; sys.stdout.buffer.write(open('/proc/self/stat', 'rb').read())"
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                         check=True).stdout  # fmt: skip
    # THEN field 39 of its stat is that CPU
    assert sc.parse_stat_cpu(out) == cpu
    with pytest.raises(ValueError, match="not /proc/PID/stat"):
        sc.parse_stat_cpu(b"1 (x) R 1 2 3\n")
