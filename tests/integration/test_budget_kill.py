"""Budget kills and cancels on real workers (issue 13 items 6 and 12): the worker's sidecar
kills at the first 1 ms sample above the budget, the samples up to the kill are kept, the
kill names the innermost phase open at that moment in the kept recording, and every run
says what it costs the machine before its first phase (cross-checked with /proc)."""

from __future__ import annotations

import itertools
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

import bigviz
from bigviz.data.recording import Recording
from bigviz.data.result import RunResult
from bigviz.runner import forkserver
from bigviz.runner.memory import read_status
from bigviz.runner.supervisor import innermost_at

MiB = 2**20
MODEL = "gpt:200MB"
SHARD = "50MB"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


def _mark(rec: Recording, name: str) -> float:
    marks = [m.t for m in rec.marks if m.name == name]
    assert len(marks) == 1, [m.name for m in rec.marks]
    return marks[0]


def _server_rss() -> int:
    server = forkserver.get_server()
    server.ensure()
    assert server.pid is not None
    return read_status(server.pid)["VmRSS"]


@pytest.mark.slow
def test_budget_kill_from_the_1ms_samples_names_the_open_phase(work: Path) -> None:
    # GIVEN a budget ~150 MiB above what a fresh worker holds (its baseline is the fork
    # server's RSS plus ~50 MiB of warm-up), and a naive load that needs 2 × 191 MiB
    budget = _server_rss() + 200 * MiB
    # WHEN it runs
    r = bigviz.run("naive", model=MODEL, max_shard_size=SHARD, ram_budget=budget,
                   work_dir=work)
    rec = r.recording
    # THEN the sidecar killed it at a 1 ms sample and left its mark with the peak it read
    assert r.outcome == "budget_exceeded", (r.outcome, r.error)
    assert r.baseline < budget
    kill = next(m for m in rec.marks if m.name == "budget exceeded")
    assert kill.detail["by"] == "sidecar (1 ms samples)" and kill.detail["budget"] == budget
    peak = int(kill.detail["peak"])
    # the overshoot is at most a few MiB plus one sample's growth
    rss = rec.series["ram.rss"]
    steps = [b - a for a, b in itertools.pairwise(rss.v)]
    assert budget < peak <= budget + 4 * MiB + max(steps), (peak - budget) / MiB
    assert r.baseline + (r.ram_peak or 0) == peak
    # the samples up to the kill are kept: the last one is at (or after) the kill, and
    # the last 100 ms before it have no hole the worker failed to stream
    assert rss.t[-1] >= kill.t and max(rss.v) >= peak - 1 * MiB
    tail = [t for t in rss.t if kill.t - 0.1 <= t <= kill.t]
    assert max(b - a for a, b in itertools.pairwise(tail)) < 0.03, tail[-5:]
    # the phase named is the innermost phase open at the kill, in the kept recording
    inner = innermost_at(rec.phases, kill.t)
    assert inner is not None and r.phase_reached == inner.name
    assert r.error is not None and r.error.endswith(f"in phase {inner.name!r}")
    # and the message says what the budget is compared with
    assert "RSS of the whole worker, its baseline included" in r.error
    # the budget survives the round trip and is drawn as a line
    back = RunResult.from_json(r.to_json())
    assert back.params["ram_budget"] == budget
    assert [m.name for m in back.recording.marks] == [m.name for m in rec.marks]


@pytest.mark.slow
def test_cancel_mid_load_names_the_phase_open_at_the_kill(work: Path) -> None:
    # GIVEN a sharded load, cancelled as soon as its third shard starts
    cancel = threading.Event()

    def on_event(ev: dict[str, Any]) -> None:
        if ev.get("type") == "phase_start" and str(ev.get("name")).startswith("load shard 3/"):
            cancel.set()

    r = bigviz.run("sharded", model=MODEL, max_shard_size=SHARD, work_dir=work,
                   on_event=on_event, cancel=cancel)
    # THEN the run says cancelled, in the innermost phase open when it was killed
    assert r.outcome == "cancelled"
    t = _mark(r.recording, "cancelled")
    inner = innermost_at(r.recording.phases, t)
    assert inner is not None and r.phase_reached == inner.name
    assert r.error == f"cancelled while running in phase {inner.name!r}"
    # which is shard 3 or a phase inside it (the kill lands within ~5 ms of the event)
    top = inner
    by_index = r.recording.phases
    while top.parent is not None:
        top = by_index[top.parent]
    assert top.name.startswith(("load shard 3/", "load shard 4/")), top.name


@pytest.mark.slow
def test_fixed_cost_is_what_proc_says_at_the_baseline(work: Path) -> None:
    # GIVEN a run whose worker this test freezes the moment its baseline arrives, to read
    # the worker's /proc itself
    seen: dict[str, int] = {}

    def on_event(ev: dict[str, Any]) -> None:
        if ev.get("type") == "baseline" and not seen:
            pid = int(ev["pid"])
            os.kill(pid, signal.SIGSTOP)
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
                status = Path(f"/proc/{pid}/status").read_text()
            finally:
                os.kill(pid, signal.SIGCONT)
            kib = {line.split(":")[0]: int(line.split()[1]) * 1024
                   for line in (rollup + status).splitlines() if line.endswith(" kB")}
            seen["private"] = kib["Private_Clean"] + kib["Private_Dirty"]
            seen["page_tables"] = kib["VmPTE"]

    r = bigviz.run("meta", model="gpt:10MB", work_dir=work, on_event=on_event)
    # THEN the result carries the fixed cost, positive and the sum it claims to be
    assert r.outcome == "ok", r.error
    cost = r.fixed_cost
    assert cost["total"] == cost["private"] + cost["page_tables"]
    assert cost["private"] > 0 and cost["page_tables"] > 0
    assert 0 < cost["after_fork"] <= cost["private"]
    # and equal to what /proc said at that moment (the worker may have begun its first
    # phase before the stop landed: a 10 MB model's build is a few MiB at most)
    assert abs(cost["private"] - seen["private"]) <= 8 * MiB, (cost, seen)
    assert abs(cost["page_tables"] - seen["page_tables"]) <= 1 * MiB, (cost, seen)
    # the run table shows it beside the growth
    row = bigviz.tables.run_rows([r])[0]
    assert row.fixed_cost == cost["total"] and row.fixed_cost_text.startswith("+")


@pytest.mark.slow
def test_a_budget_below_the_baseline_kills_before_the_first_phase(work: Path) -> None:
    # GIVEN a budget smaller than any worker (torch alone is more)
    r = bigviz.run("meta", model="gpt:10MB", ram_budget="100MB", work_dir=work)
    # THEN the sidecar's kill is reported as the budget's, before any phase (not as a
    # SIGKILL from outside)
    assert r.outcome == "budget_exceeded", (r.outcome, r.error)
    assert r.error is not None and r.error.startswith(
        "would not fit in 100.0 MB (RSS of the whole worker, its baseline included): reached ")
    assert r.error.endswith(" before the first phase") and r.phase_reached is None
