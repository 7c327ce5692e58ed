"""The recorder's own footprint: samples are stored compactly in the measured process,
and the Recording built from them is exactly what plain lists would have held."""

from __future__ import annotations

import gc
import random
import statistics
import time
import tracemalloc
from array import array
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bigviz.recorder import Recording, Source, SourceInfo, _store, record
from bigviz.recorder._store import SampleStore
from bigviz.recorder.sources import Clock, Samples
from bigviz.testing import FakeClock, FakeSource

GiB = 1 << 30


class StatmLike(Source):
    """Like the sidecar's RAM source: rss/anon/file of one tick share one time list."""

    names = ("ram",)

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.ts: list[float] = []
        self.rss: list[int] = []
        self.anon: list[int] = []
        self.file: list[int] = []

    def tick(self, i: int) -> None:
        self.ts.append(self.clock())
        vals = _values(i)
        self.rss.append(vals["rss"])
        self.anon.append(vals["anon"])
        self.file.append(vals["file"])

    def start(self, *, clock: Clock, interval_ms: float) -> list[SourceInfo]:
        return [SourceInfo("ram", True)]

    def poll(self) -> Samples:
        out: Samples = {
            "ram.rss": (self.ts, self.rss),
            "ram.anon": (self.ts, self.anon),
            "ram.file": (self.ts, self.file),
        }
        self.ts, self.rss, self.anon, self.file = [], [], [], []
        return out


def _values(i: int) -> dict[str, int]:
    return {"rss": 3 * GiB + i * 4096, "anon": 2 * GiB + i * 4096, "file": GiB + (i % 7) * 4096}


def _held_while_recording(n: int, source: str) -> tuple[int, Recording]:
    """Record ``n`` 1 ms ticks of rss/anon/file; return (bytes the recorder holds at the
    end, by tracemalloc, and the Recording)."""
    clock = FakeClock()
    src: Any = StatmLike(clock) if source == "statm" else FakeSource(clock, rss=0)
    rec = record(sources=[src], clock=clock, background=False, instrument=False)
    gc.collect()
    tracemalloc.start()
    try:
        with rec:
            base = tracemalloc.get_traced_memory()[0]
            for i in range(n):
                clock.advance(0.001)
                if source == "statm":
                    src.tick(i)
                else:
                    src.set(**_values(i))
                if i % 25 == 24:  # the background collector's batches
                    rec.poll()
            rec.poll()
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return held, rec.recording


def _plain_lists(n: int) -> dict[str, tuple[list[float], list[int]]]:
    """What the recorder used to keep: lists of t - t0 and values, tick by tick."""
    clock = FakeClock()
    t0 = clock()
    old: dict[str, tuple[list[float], list[int]]] = {
        f"ram.{k}": ([], []) for k in ("rss", "anon", "file")
    }
    for i in range(n):
        clock.advance(0.001)
        for k, v in _values(i).items():
            old[f"ram.{k}"][0].append(clock() - t0)
            old[f"ram.{k}"][1].append(v)
    return old


@pytest.mark.parametrize("source", ["statm", "fake"])
def test_60k_samples_cost_a_few_bytes_each_and_the_recording_is_unchanged(source: str) -> None:
    # GIVEN a minute of 1 ms ticks of three series (180,000 samples)
    n = 60_000
    held, r = _held_while_recording(n, source)
    samples = 3 * n
    # THEN the recorder holds under 20 bytes per sample in the process (plain lists
    # of Python floats and ints held ~72-77); series sharing one time list share it
    limit = 13 if source == "statm" else 20
    assert held / samples < limit, f"{held / samples:.1f} bytes per sample"
    # AND its own account of it is what tracemalloc sees
    assert r.meta["recorder_bytes"] == pytest.approx(held, rel=0.1)
    assert r.meta["recorder_bytes_per_sample"] == pytest.approx(held / samples, rel=0.1)
    # AND the Recording is exactly what plain lists gave: same floats, same ints
    for name, (ts, vs) in _plain_lists(n).items():
        s = r.series[name]
        assert s.t == ts and s.v == vs
        assert all(type(t) is float for t in s.t) and all(type(v) is int for v in s.v)
    assert Recording.from_json(r.to_json()) == r


def test_a_real_1ms_recording_reports_its_own_footprint() -> None:
    # GIVEN a real recording (sidecar process, 1 ms) of half a second
    rec = record(interval_ms=1.0, instrument=False, sources=["ram", "sys"])
    with rec, rec.phase("wait"):
        time.sleep(0.5)
    r = rec.recording
    n = sum(len(s.t) for s in r.series.values())
    assert len(r.series["ram.rss"].t) > 100
    # THEN the recorder says what its timeline costs, and it is ~12 bytes per sample
    assert r.meta["recorder_bytes_per_sample"] < 16
    assert r.meta["recorder_bytes"] < 16 * n
    # AND rss/anon/file share their sample times (one statm read each tick)
    assert r.series["ram.anon"].t == r.series["ram.rss"].t == r.series["ram.file"].t
    assert Recording.from_json(r.to_json()) == r


def test_streamed_batches_add_up_to_the_final_series_exactly() -> None:
    events: list[dict[str, Any]] = []
    clock = FakeClock()
    src = StatmLike(clock)
    rec = record(
        sources=[src], clock=clock, background=False, instrument=False, on_event=events.append
    )
    with rec:
        for i in range(1000):
            clock.advance(0.001)
            src.tick(i)
            if i % 37 == 0:
                rec.poll()
    got: dict[str, list[list[Any]]] = {}
    for e in events:
        if e["type"] == "samples":
            for k, (ts, vs) in e["series"].items():
                assert type(ts) is list and type(vs) is list  # JSON-ready batches
                part = got.setdefault(k, [[], []])
                part[0] += ts
                part[1] += vs
    r = rec.recording
    assert got == {k: [s.t, s.v] for k, s in r.series.items()}


class Odd(Source):
    """A custom source with floats, ints beyond int64, and later a time that is no number."""

    names = ("odd",)

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.batches: list[Samples] = []

    def start(self, *, clock: Clock, interval_ms: float) -> list[SourceInfo]:
        return [SourceInfo("odd", True)]

    def poll(self) -> Samples:
        return self.batches.pop(0) if self.batches else {}


def test_values_that_do_not_fit_int64_are_kept_exactly_and_bad_times_drop_the_source() -> None:
    clock = FakeClock()
    src = Odd(clock)
    t = clock()
    src.batches = [
        {"x.int": ([t + 0.1], [5]), "x.mixed": ([t + 0.1], [7])},
        {"x.int": ([t + 0.2], [2**70]), "x.mixed": ([t + 0.2], [0.5])},  # type: ignore[list-item]
        {"x.int": (["later"], [1])},  # type: ignore[list-item]
    ]
    with record(sources=[src], clock=clock, background=False, instrument=False) as rec:
        rec.poll()
        rec.poll()
        with rec.phase("after"):
            rec.mark("still recording")
    r = rec.recording
    assert r.series["x.int"].v == [5, 2**70]
    assert r.series["x.mixed"].v == [7, 0.5]
    assert r.series["x.int"].t == [t + 0.1 - t, t + 0.2 - t]
    assert any("failed" in e for e in r.errors)
    assert r.phase("after").end is not None


# -- the store against a plain-list model, on random batches ----------------------------
names = st.sampled_from(["a", "b", "c", "d"])
values = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(2**63, 2**80), st.floats(0, 1))


@st.composite
def batches(draw: Any) -> list[dict[str, tuple[list[float], list[Any]]]]:
    out = []
    t = 0.0
    for _ in range(draw(st.integers(1, 8))):
        batch: dict[str, tuple[list[float], list[Any]]] = {}
        shared: list[float] = []
        for _ in range(draw(st.integers(1, 3))):
            t += draw(st.floats(0.0001, 0.01))
            shared.append(t)
        for name in draw(st.lists(names, unique=True)):
            if draw(st.booleans()):  # same list object: may share a time array
                ts = shared
            else:
                ts = [x + draw(st.floats(0, 0.001)) for x in shared[: draw(st.integers(0, 3))]]
            batch[name] = (ts, [draw(values) for _ in ts])
        out.append(batch)
    return out


@settings(max_examples=200, deadline=None)
@given(batches())
def test_store_equals_plain_lists_for_any_batches(seq: list[Any]) -> None:
    store = SampleStore()
    plain: dict[str, tuple[list[float], list[Any]]] = {}
    t0 = 0.25
    for batch in seq:
        store.add(batch, t0=t0, source="s")
        for name, (ts, vs) in batch.items():
            if ts:
                p = plain.setdefault(name, ([], []))
                p[0].extend(t - t0 for t in ts)
                p[1].extend(vs)
        for s in store.series.values():  # every value keeps its own time at all times
            assert len(s.t) == len(s.v)
    got = store.to_series()
    assert {k: (s.t, s.v) for k, s in got.items()} == plain


def test_median_of_a_long_array_is_exact_without_sorting_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_store, "MEDIAN_SORT_MAX", 10)
    rng = random.Random(7)
    for n in (11, 12, 1001, 5000):
        gaps = [0.001 + rng.gauss(0, 2e-5) for _ in range(n)]
        gaps += [0.001] * rng.randrange(0, 50)  # ties, as a steady sampler gives
        assert _store.median(array("d", gaps)) == statistics.median(gaps)
