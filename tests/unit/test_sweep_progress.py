"""SweepProgress: the one state of a running sweep that CLI, dashboard and magic display,
fed here with synthetic callbacks (no process runs)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import bigviz.runner
from bigviz.data.result import RunResult, Sweep
from bigviz.progress import BackgroundSweep, RunProgress, SweepProgress

MiB = 2**20


def stage(progress: SweepProgress, name: str, index: int, total: int, label: str = "",
          result: RunResult | None = None) -> None:
    progress.on_progress({"stage": name, "index": index, "total": total, "label": label,
                          "result": result})


def event(progress: SweepProgress, index: int, kind: str, **fields: Any) -> None:
    progress.on_event({"type": kind, "index_in_sweep": index, **fields})


def samples(t: list[float], rss: list[int]) -> dict[str, Any]:
    return {"series": {"ram.rss": [t, rss], "ram.anon": [t, rss]}}


def test_every_run_is_known_from_the_first_callback_and_waits_for_its_turn() -> None:
    # GIVEN a three-run sweep that starts by saving its checkpoint
    progress = SweepProgress()
    stage(progress, "prepare", 0, 3, "saving 20MB safetensors checkpoint")
    # THEN all three runs are there at once, waiting, under provisional labels
    assert [(r.index, r.total, r.label, r.state) for r in progress.runs] == [
        (0, 3, "run 1", "waiting"), (1, 3, "run 2", "waiting"), (2, 3, "run 3", "waiting")]
    assert progress.runs[0].preparing == "saving 20MB safetensors checkpoint"
    assert progress.current is None
    # WHEN the first run starts THEN it is running under its label, nothing is prepared
    stage(progress, "run", 0, 3, "naive · 20MB")
    run = progress.runs[0]
    assert (run.label, run.state, run.preparing) == ("naive · 20MB", "running", "")
    assert progress.current is run


def test_phase_baseline_and_samples_give_the_live_figures_of_their_run() -> None:
    progress = SweepProgress()
    stage(progress, "run", 0, 2, "meta")
    # GIVEN a baseline of 100 MiB, a top-level phase with a nested one, and samples
    event(progress, 0, "baseline", rss=100 * MiB)
    event(progress, 0, "phase_start", name="load", parent=None)
    event(progress, 0, "phase_start", name="shard 1/4", parent=0)
    event(progress, 0, "samples", **samples([0.1, 0.2, 0.3], [150 * MiB, 400 * MiB, 300 * MiB]))
    run = progress.runs[0]
    # THEN the run shows where it is and what it costs now and at its highest
    assert (run.phase, run.top_phase) == ("shard 1/4", "load")
    assert run.rss == 300 * MiB and run.above_baseline == 200 * MiB
    assert run.rss_peak == 400 * MiB and run.peak_above_baseline == 300 * MiB
    assert run.elapsed == pytest.approx(0.3)
    # AND only top-level phases that ended count towards its fraction, held below 1
    event(progress, 0, "phase_end", phase={"name": "shard 1/4", "parent": 0})
    assert run.phases_done == 0
    event(progress, 0, "phase_end", phase={"name": "load", "parent": None})
    assert run.phases_done == 1 and run.fraction(4) == 0.25
    assert RunProgress(0, 1, phases_done=9).fraction(4) == 0.95
    # AND the other run saw none of it
    other = progress.runs[1]
    assert (other.state, other.rss, other.phase) == ("waiting", 0, "")


def test_a_finished_run_keeps_its_result_and_is_complete() -> None:
    progress = SweepProgress()
    stage(progress, "run", 0, 1, "naive")
    result = RunResult("naive", "budget_exceeded", seconds=2.5, ram_peak=MiB)
    stage(progress, "done", 0, 1, "naive", result)
    run = progress.runs[0]
    assert run.finished and run.result is result
    assert run.state == "budget_exceeded" and run.elapsed == 2.5 and run.fraction(10) == 1.0


def test_events_without_a_sweep_index_belong_to_the_current_run() -> None:
    progress = SweepProgress()
    stage(progress, "run", 0, 2, "a")
    stage(progress, "run", 1, 2, "b")
    progress.on_event({"type": "phase_start", "name": "load", "parent": None})
    assert [r.phase for r in progress.runs] == ["", "load"]


def test_series_are_kept_only_when_asked() -> None:
    lean, full = SweepProgress(), SweepProgress(keep_series=True)
    for progress in (lean, full):
        stage(progress, "run", 0, 1, "meta")
        event(progress, 0, "samples", **samples([0.1, 0.2], [1, 2]))
        event(progress, 0, "samples", **samples([0.3], [3]))
    assert (lean.runs[0].t, lean.runs[0].v) == ([], [])
    assert (full.runs[0].t, full.runs[0].v) == ([0.1, 0.2, 0.3], [1, 2, 3])
    assert lean.runs[0].rss == full.runs[0].rss == 3


def test_the_listener_hears_each_change_with_its_run() -> None:
    heard: list[tuple[str, str, str]] = []
    progress = SweepProgress(listener=lambda kind, run: heard.append((kind, run.label, run.state)))
    stage(progress, "prepare", 0, 1, "saving")
    stage(progress, "run", 0, 1, "meta")
    event(progress, 0, "phase_start", name="load", parent=None)
    stage(progress, "done", 0, 1, "meta", RunResult("meta", "ok"))
    stage(progress, "done", 0, 1, "meta")  # no result: nothing to tell
    assert heard == [("prepare", "run 1", "waiting"), ("run", "meta", "running"),
                     ("phase_start", "meta", "running"), ("done", "meta", "ok")]


def test_callbacks_plug_into_the_sweep_keywords() -> None:
    progress = SweepProgress()
    assert progress.callbacks() == {"on_progress": progress.on_progress,
                                    "on_event": progress.on_event}


# -- BackgroundSweep, with a stand-in for the runner's sweep ---------------------------------


@pytest.fixture
def fake_sweep(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """bigviz.runner.sweep replaced: two runs, the second waits for ``release`` or cancel."""
    box: dict[str, Any] = {"release": threading.Event(), "fail": None}

    def sweep(model: str, *, strategies: list[str], on_progress: Any, on_event: Any,
              cancel: threading.Event) -> Sweep:
        if box["fail"] is not None:
            raise box["fail"]
        out = Sweep(config={"model": model})
        for i, name in enumerate(strategies):
            on_progress({"stage": "run", "index": i, "total": len(strategies), "label": name})
            on_event({"type": "phase_start", "name": "load", "parent": None,
                      "index_in_sweep": i})
            while i and not (box["release"].is_set() or cancel.is_set()):
                cancel.wait(0.01)
            r = RunResult(name, "cancelled" if cancel.is_set() else "ok")
            out.results.append(r)
            on_progress({"stage": "done", "index": i, "total": len(strategies), "label": name,
                         "result": r})
            if cancel.is_set():
                break
        return out

    monkeypatch.setattr(bigviz.runner, "sweep", sweep)
    return box


def test_background_sweep_returns_at_once_and_cancel_stops_it(
    fake_sweep: dict[str, Any],
) -> None:
    # GIVEN a two-run sweep started in the background
    calls: list[str] = []
    progress = SweepProgress()
    job = BackgroundSweep({"model": "gpt:1MB", "strategies": ["meta", "naive"]},
                          progress=progress, thread_name="bigviz-test-sweep",
                          on_result=lambda s: calls.append(f"result {len(s.results)}"),
                          on_error=lambda e: calls.append("error"),
                          on_end=lambda: calls.append("end"))
    assert not job.running
    job.start()
    assert job.running and job.sweep is None
    # WHEN the second run is under way and the sweep is cancelled
    with pytest.raises(TimeoutError, match="still running"):
        job.wait(timeout=0.05)
    job.cancel()
    sweep = job.wait(timeout=10)
    # THEN the finished run is kept, the running one reads cancelled, callbacks ran in order
    assert sweep is not None and [r.outcome for r in sweep.results] == ["ok", "cancelled"]
    assert [r.state for r in progress.runs] == ["ok", "cancelled"]
    assert calls == ["result 2", "end"] and not job.running and job.error is None
    with pytest.raises(RuntimeError, match="started already"):
        job.start()


def test_background_sweep_hands_its_error_to_wait(fake_sweep: dict[str, Any]) -> None:
    from bigviz._errors import StrategyError

    fake_sweep["fail"] = StrategyError("cuda:3 does not exist")
    seen: list[BaseException] = []
    job = BackgroundSweep({"model": "gpt:1MB", "strategies": ["dispatch"]},
                          progress=SweepProgress(), thread_name="bigviz-test-sweep",
                          on_error=seen.append)
    job.start()
    with pytest.raises(StrategyError, match="cuda:3"):
        job.wait(timeout=10)
    assert seen == [fake_sweep["fail"]] and job.sweep is None and not job.running
