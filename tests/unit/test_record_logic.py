"""Recorder logic, deterministic: fake source + fake clock, no sidecar, no timing luck."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

import bigviz
from bigviz import ConfigError, RecorderError
from bigviz.recorder import Recorder, Recording, record
from bigviz.testing import FakeClock, FakeSource

MiB = 1 << 20


def fake_recorder(
    *, exact: bool = True, on_event: Any = None, **values: int
) -> tuple[Recorder, FakeSource, FakeClock]:
    clock = FakeClock()
    src = FakeSource(clock, exact=exact, **(values or {"rss": 100 * MiB}))
    rec = record(sources=[src], clock=clock, background=False, instrument=False, on_event=on_event)
    return rec, src, clock


def test_spike_between_samples_is_in_its_phase_only() -> None:
    # GIVEN a phase whose 512 MiB spike no sample saw, between two quiet phases
    rec, ram, clock = fake_recorder()
    with rec:
        with rec.phase("quiet before"):
            clock.advance(0.01)
            ram.set(rss=100 * MiB)
        with rec.phase("spike"):
            clock.advance(0.01)
            ram.spike(612 * MiB)
            ram.set(rss=100 * MiB)
        with rec.phase("quiet after"):
            clock.advance(0.01)
            ram.set(rss=100 * MiB)
    r = rec.recording
    # THEN the exact peak carries the spike in that phase and nowhere else
    assert r.phase("spike").ram_growth == 512 * MiB
    assert r.phase("spike").ram_peak_exact
    assert r.phase("quiet before").ram_growth == 0
    assert r.phase("quiet after").ram_growth == 0
    assert r.meta["ram_peak"] == 612 * MiB


def test_without_exact_counter_peaks_fall_back_to_samples_and_say_so() -> None:
    rec, ram, clock = fake_recorder(exact=False)
    with rec, rec.phase("load"):
        clock.advance(0.01)
        ram.spike(900 * MiB)  # invisible without the kernel's high-water mark
        ram.set(rss=300 * MiB)
        clock.advance(0.01)
        ram.set(rss=200 * MiB)
    p = rec.recording.phase("load")
    assert p.ram_peak == 300 * MiB
    assert not p.ram_peak_exact
    assert "ram_peak" in rec.recording.meta["sampled"]


def test_nested_peaks_fold_children_into_parents() -> None:
    # GIVEN outer: [a stretch to 300] [child to 800] [a stretch to 500]; a sibling after
    rec, ram, clock = fake_recorder(rss=100)
    with rec:
        with rec.phase("outer") as outer:
            ram.spike(300)
            clock.advance(0.1)
            with rec.phase("child") as child:
                assert rec.current_phase == "child"
                ram.spike(800)
                clock.advance(0.1)
            ram.spike(500)
            clock.advance(0.1)
        with rec.phase("sibling") as sibling:
            ram.spike(400)
    # THEN each phase has the max of its own stretches and its children's, exactly
    assert child.ram_peak == 800
    assert outer.ram_peak == 800
    assert sibling.ram_peak == 400
    assert child.parent == 0 and child.depth == 1
    assert rec.recording.children(0) == [child]
    assert rec.current_phase is None


def test_parent_keeps_its_own_stretch_above_a_smaller_child() -> None:
    rec, ram, _ = fake_recorder(rss=100)
    with rec, rec.phase("outer") as outer:
        ram.spike(700)  # before the child: the reset at the child's start must not lose it
        with rec.phase("child") as child:
            ram.spike(200)
    assert (outer.ram_peak, child.ram_peak) == (700, 200)


def test_vram_peaks_are_per_device_and_exact() -> None:
    clock = FakeClock()
    src = FakeSource(clock, rss=10, cuda_0_allocated=0, cuda_1_allocated=5)
    with record(sources=[src], clock=clock, background=False, instrument=False) as rec:
        with rec.phase("to gpu") as ph:
            src.spike(cuda_0_allocated=4000)
            src.set(cuda_0_allocated=1000)
        with rec.phase("idle") as idle:
            pass
    assert ph.vram_start == {"cuda:0": 0, "cuda:1": 5}
    assert ph.vram_peak == {"cuda:0": 4000, "cuda:1": 5}
    assert idle.vram_peak["cuda:0"] == 1000


def test_marks_and_phase_times_use_the_recorder_clock() -> None:
    rec, _, clock = fake_recorder()
    with rec:
        clock.advance(1.5)
        rec.mark("checkpoint opened", files=3, path=bigviz)  # a module becomes its str
        with rec.phase("load"):
            clock.advance(0.25)
    r = rec.recording
    assert r.marks[0].name == "checkpoint opened"
    assert r.marks[0].t == 1.5
    assert r.marks[0].detail["files"] == 3
    assert isinstance(r.marks[0].detail["path"], str)
    assert r.phase("load").duration == 0.25
    assert r.duration == 1.75


def test_event_stream_carries_samples_phases_and_marks_as_json() -> None:
    events: list[dict[str, Any]] = []
    rec, ram, clock = fake_recorder(on_event=events.append)
    with rec:
        with rec.phase("load", shard=1):
            clock.advance(0.01)
            ram.set(rss=200)
            rec.poll()
        rec.mark("done")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "phase_start" and "mark" in kinds
    start = events[0]
    assert start == {
        "type": "phase_start",
        "index": 0,
        "name": "load",
        "t": 0.0,
        "parent": None,
        "auto": False,
    }
    samples = [e for e in events if e["type"] == "samples"]
    assert samples[0]["series"]["ram.rss"] == [[pytest.approx(0.01)], [200]]
    end = next(e for e in events if e["type"] == "phase_end")
    assert (
        end["phase"]["ram_peak"] == 100 * MiB
        and end["phase"]["ram_end"] == 200
        and end["phase"]["detail"] == {"shard": 1}
    )
    for e in events:
        json.dumps(e, allow_nan=False)  # every event is JSON-ready


def test_a_failing_on_event_is_recorded_not_raised() -> None:
    def boom(event: dict[str, Any]) -> None:
        raise ValueError("parent pipe closed")

    rec, _, _ = fake_recorder(on_event=boom)
    with rec, rec.phase("work"):
        pass
    assert any("parent pipe closed" in e for e in rec.recording.errors)
    assert rec.recording.phase("work").end is not None


@pytest.mark.parametrize("method", ["poll", "read_peaks", "read_now", "reset_peaks"])
def test_a_source_failing_mid_run_never_crashes_user_code(method: str) -> None:
    clock = FakeClock()
    bad = FakeSource(clock, name="ram", rss=100)
    good = FakeSource(clock, name="gpu", cuda_0_allocated=7)
    with record(sources=[bad, good], clock=clock, background=False, instrument=False) as rec:
        with rec.phase("before"):
            pass
        bad.fail(OSError("proc vanished"), on=method)
        with rec.phase("during") as during:  # the failure happens here
            clock.advance(0.1)
            good.set(cuda_0_allocated=9)
        with rec.phase("after") as after:
            good.spike(cuda_0_allocated=50)
    r = rec.recording
    assert any("proc vanished" in e for e in r.errors)
    assert during.end is not None and after.vram_peak == {"cuda:0": 50}
    info = next(s for s in r.sources if s.name == "ram")
    assert info.reason is not None and "proc vanished" in info.reason
    assert bad.stopped


def test_a_source_failing_to_start_is_unavailable_with_the_reason() -> None:
    clock = FakeClock()
    src = FakeSource(clock, rss=1)
    src.fail(PermissionError("no /proc here"), on="start")
    rec = record(sources=[src], clock=clock, background=False, instrument=False)
    with rec, rec.phase("p") as p:
        pass
    (info,) = rec.recording.sources
    assert not info.available and "no /proc here" in (info.reason or "")
    assert p.ram_peak is None


def test_body_exception_is_kept_on_the_phase_and_propagates() -> None:
    rec, _, _ = fake_recorder()
    with pytest.raises(KeyError, match="missing"), rec, rec.phase("load"):
        raise KeyError("missing")
    p = rec.recording.phase("load")
    assert p.error is not None and "KeyError" in p.error and p.end is not None


def test_phases_left_open_close_at_stop() -> None:
    rec, _, clock = fake_recorder()
    rec.start()
    cm = rec.phase("never closed")
    cm.__enter__()
    clock.advance(2.0)
    r = rec.stop()
    assert r.phases[0].end == 2.0
    assert "still open" in (r.phases[0].error or "")


def test_snapshot_while_running_is_a_consistent_copy() -> None:
    rec, ram, clock = fake_recorder()
    with rec:
        with rec.phase("first"):
            clock.advance(0.1)
            ram.set(rss=5)
        snap = rec.recording
        with rec.phase("second"):
            pass
    assert [p.name for p in snap.phases] == ["first"]
    assert [p.name for p in rec.recording.phases] == ["first", "second"]
    assert Recording.from_json(snap.to_json()) == snap


def test_fake_recording_round_trips_through_json() -> None:
    rec, ram, clock = fake_recorder()
    with rec, rec.phase("a", note="x"):
        clock.advance(0.001)
        ram.set(rss=1, anon=1, file=0)
        rec.mark("m", when=math.pi)
    r = rec.recording
    assert Recording.from_json(r.to_json()) == r


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "1ms", None, True])
def test_bad_interval_names_the_value(bad: Any) -> None:
    with pytest.raises(ConfigError, match="interval_ms") as err:
        record(interval_ms=bad)
    assert repr(bad) in str(err.value)


def test_unknown_source_names_the_value_and_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"'vram'.*'ram', 'sys', 'cuda', 'nvml'"):
        record(sources=["ram", "vram"])
    with pytest.raises(ConfigError, match="list of source names"):
        record(sources="ram")


@pytest.mark.parametrize("bad", [None, 3, b"load", ""])
def test_phase_and_mark_names_must_be_strings(bad: Any) -> None:
    rec, _, _ = fake_recorder()
    with rec:
        with pytest.raises(ConfigError, match="name must"), rec.phase(bad):
            pass
        with pytest.raises(ConfigError, match="name must"):
            rec.mark(bad)
    assert rec.recording.phases == []


def test_misuse_gets_a_recorder_error() -> None:
    rec, _, _ = fake_recorder()
    with pytest.raises(RecorderError, match=r"inside `with bigviz\.record"):
        rec.mark("too early")
    with rec:
        pass
    with pytest.raises(RecorderError, match="records once"):
        rec.start()
    with pytest.raises(RecorderError, match="stopped"), rec.phase("too late"):
        pass


def test_two_recorders_at_once_is_a_clear_error() -> None:
    first, _, _ = fake_recorder()
    second, _, _ = fake_recorder()
    with first, pytest.raises(RecorderError, match="already recording"):
        second.start()
    with second:  # the first one has released the process
        pass


def test_public_api_names() -> None:
    import bigviz.recorder as pkg

    assert set(pkg.__all__) >= {"record", "Recorder", "Recording", "Phase", "Source"}
    assert bigviz.Recorder is Recorder
    assert callable(bigviz.record) and callable(bigviz.run)  # functions, not packages
