"""The one supervisor for 1..N children, driven by scripted children on a fake clock:
budget, timeout, cancel, the first failing rank as the culprit, and the OOM verdict."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from bigviz.runner import supervisor
from bigviz.runner.supervisor import exit_verdict, supervise
from bigviz.testing import FakeChild, FakeClock

MB = 1_000_000


def _start(index: int, name: str, t: float) -> dict[str, Any]:
    return {"type": "phase_start", "index": index, "name": name, "t": t, "parent": None}


def _run(children: list[FakeChild], clock: FakeClock, **kw: Any) -> supervisor.Supervision:
    return supervise(children, clock=clock, sleep=clock.advance, **kw)


def test_a_worker_over_its_budget_is_killed_in_the_phase_it_reached() -> None:
    # GIVEN a worker whose RSS passes 100 MB 0.2 s into phase "load"
    clock = FakeClock()
    child = FakeChild(clock)
    child.send_at(0.0, _start(0, "load", 0.0))
    child.memory_at(0.0, rss=10 * MB)
    child.memory_at(0.2, rss=150 * MB)
    child.exit_at(5.0, 0)
    # WHEN it is supervised with a 100 MB budget
    seen = _run([child], clock, ram_budget=100 * MB)
    # THEN it was killed then and there, and the message says where
    assert child.killed and seen.watched[0].exit_code == -9
    assert seen.stop is not None and seen.stop.outcome == "budget_exceeded"
    assert seen.stop.error == ("would not fit in 100.0 MB (RSS of the whole worker, its "
                              "baseline included): reached 150.0 MB in phase 'load'")
    assert seen.watched[0].rss_peak == 150 * MB
    assert seen.seconds < 1.0


def test_an_exact_phase_peak_over_budget_counts_even_if_no_sample_saw_it() -> None:
    clock = FakeClock()
    child = FakeChild(clock)
    child.memory_at(0.0, rss=10 * MB)
    end = {"type": "phase_end", "index": 0,
           "phase": {"name": "spike", "start": 0.0, "end": 0.1, "ram_peak": 300 * MB}}
    child.send_at(0.0, _start(0, "spike", 0.0))
    child.send_at(0.1, end)
    child.exit_at(5.0, 0)
    seen = _run([child], clock, ram_budget=100 * MB)
    assert seen.stop is not None and seen.stop.phase == "spike"
    assert seen.stop.error == ("would not fit in 100.0 MB (RSS of the whole worker, its "
                              "baseline included): reached 300.0 MB in phase 'spike'")


def test_timeout_and_cancel_stop_a_worker_with_the_phase_in_the_message() -> None:
    clock = FakeClock()
    hung = FakeChild(clock)
    hung.send_at(0.0, _start(0, "load shard 1/1", 0.0))
    seen = _run([hung], clock, timeout=1.5)
    assert seen.stop is not None and seen.stop.outcome == "error"
    assert seen.stop.error == "timed out after 1.5 s in phase 'load shard 1/1'"
    assert hung.killed and 1.5 < seen.seconds < 2.5

    clock = FakeClock()
    child = FakeChild(clock)
    child.send_at(0.0, _start(0, "build", 0.0))
    cancel = threading.Event()
    cancel.set()
    seen = _run([child], clock, cancel=cancel)
    assert seen.stop is not None and seen.stop.outcome == "cancelled"
    assert seen.stop.error == "cancelled while running in phase 'build'"


def test_the_first_rank_to_fail_is_the_culprit_and_the_others_are_stopped() -> None:
    # GIVEN three ranks; rank 1 segfaults at 0.2 s while the others wait in a collective
    clock = FakeClock()
    ranks = [FakeChild(clock, pid=100 + r) for r in range(3)]
    for r, child in enumerate(ranks):
        child.send_at(0.0, _start(0, f"load {r}", 0.0))
    ranks[1].exit_at(0.2, -11)
    seen = _run(ranks, clock, group=True)  # type: ignore[arg-type]
    # THEN the others were killed (they would wait forever), and rank 1 is to blame
    assert ranks[0].killed and ranks[2].killed
    culprit = seen.first_failed()
    assert culprit is not None and culprit.rank == 1
    assert exit_verdict(-11, "rank 1 (pid 101)", culprit.phase(), None) == (
        "crashed", "rank 1 (pid 101) died of SIGSEGV in phase 'load 1'")


def test_ranks_share_file_pages_in_the_node_budget() -> None:
    # GIVEN two ranks that each map the same 80 MB of files and hold 30 MB of their own
    clock = FakeClock()
    ranks = [FakeChild(clock, pid=7 + r) for r in range(2)]
    for r, child in enumerate(ranks):
        child.send_at(0.0, _start(0, "map", 0.0))
        child.memory_at(0.0, rss=110 * MB, anon=30 * MB + r, file=80 * MB, shmem=0)
        child.exit_at(1.0, 0)
    # THEN the node holds 140 MB, not 220 MB: within a 150 MB budget
    assert _run(ranks, clock, ram_budget=150 * MB, group=True).stop is None  # type: ignore[arg-type]
    clock = FakeClock()
    ranks = [FakeChild(clock, pid=7 + r) for r in range(2)]
    for r, child in enumerate(ranks):
        child.send_at(0.0, _start(0, "map", 0.0))
        child.memory_at(0.0, rss=110 * MB, anon=30 * MB + r, file=80 * MB, shmem=0)
    seen = _run(ranks, clock, ram_budget=120 * MB, group=True)  # type: ignore[arg-type]
    assert seen.stop is not None and seen.stop.culprit is not None
    assert seen.stop.error == ("would not fit in 120.0 MB (Σ anonymous + shmem of the "
                               "ranks, plus the largest file-backed share): the ranks "
                               "reached 140.0 MB together (rank 1 in phase 'map')")


def test_a_failing_callback_never_kills_the_run() -> None:
    clock = FakeClock()
    child = FakeChild(clock)
    child.send_at(0.0, _start(0, "load", 0.0))
    child.exit_at(0.1, 0)

    def bad(ev: dict[str, Any]) -> None:
        raise ValueError("oops")

    seen = _run([child], clock, on_event=bad)
    assert seen.stop is None and seen.watched[0].exit_code == 0
    assert seen.callback_errors == ["on_event: ValueError('oops')"]


@pytest.mark.parametrize(("before", "after", "outcome"), [
    (5, 6, "oom"),         # the kernel says it killed something
    (5, 5, "crashed"),     # a kill -9 from outside
    (None, 5, "oom"),      # cannot tell: the likely cause
])
def test_sigkill_is_oom_only_when_the_kernels_counter_rose(
    monkeypatch: pytest.MonkeyPatch, before: int | None, after: int, outcome: str,
) -> None:
    monkeypatch.setattr(supervisor, "oom_kill_count", lambda: after)
    got, message = exit_verdict(-9, "worker", "load shard 2/5", before)
    assert got == outcome and "'load shard 2/5'" in message
    # any other signal is a crash whatever the counter says
    assert exit_verdict(-11, "worker", "x", before)[0] == "crashed"


def test_a_sidecar_kill_report_names_the_phase_open_at_the_kill_and_keeps_its_samples(
    tmp_path: Any,
) -> None:
    from bigviz.recorder import sidecar as sc

    # GIVEN a worker whose sidecar killed it 0.35 s into its recording (t0 = 100.0), in
    # phase "shard 2" — which the parent had not read yet when the worker died, and whose
    # last 50 ms of samples it never streamed
    clock = FakeClock()
    child = FakeChild(clock)
    report = tmp_path / ".budget-kill-7"
    child.send_at(0.0, {"type": "armed", "budget_report": str(report)},
                  {"type": "baseline", "rss": 50 * MB, "t0": 100.0},
                  _start(0, "load", 0.1),
                  {"type": "samples", "series": {"ram.rss": [[0.1, 0.2, 0.3], [60 * MB] * 3]}},
                  {"type": "phase_start", "index": 1, "name": "shard 1", "t": 0.15,
                   "parent": 0},
                  {"type": "phase_end", "index": 1, "phase": {"name": "shard 1", "start": 0.15,
                                                               "end": 0.3, "parent": 0,
                                                               "depth": 1}})
    child.send_at(0.4, {"type": "phase_start", "index": 2, "name": "shard 2", "t": 0.32,
                        "parent": 0})
    samples = [sc.REC.pack(sc.K_STATUS, 100.0 + t, 70 * MB + int(t * 1e8), 0, 0)
               for t in (0.3, 0.32, 0.34, 0.35)]
    report.write_bytes(sc.REC.pack(sc.K_BUDGET, 100.35, 105 * MB, 100 * MB, 106 * MB)
                       + b"".join(samples))
    child.exit_at(0.4, -9)
    # WHEN it is followed to the end
    seen = _run([child], clock, ram_budget=100 * MB)
    w = seen.watched[0]
    # THEN the stop is the sidecar's, in the phase open at 0.35 s, with the peak it read
    assert seen.stop is not None and seen.stop.outcome == "budget_exceeded"
    assert seen.stop.phase == "shard 2" and seen.stop.peak == 106 * MB
    assert seen.stop.error == ("would not fit in 100.0 MB (RSS of the whole worker, its "
                               "baseline included): reached 106.0 MB in phase 'shard 2'")
    # the samples after the last streamed one joined the timeline, the kill is marked,
    # and the report is gone
    rss = w.timeline.series["ram.rss"]
    assert rss.t == pytest.approx([0.1, 0.2, 0.3, 0.32, 0.34, 0.35])
    assert [m["name"] for m in w.timeline.marks] == ["budget exceeded"]
    assert w.timeline.marks[0]["t"] == pytest.approx(0.35)
    assert w.rss_peak == 106 * MB and not report.exists()
