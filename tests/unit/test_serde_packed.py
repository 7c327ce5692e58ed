"""Schema 2: timelines as packed columns — small files, exact round trips, old files load,
forged sizes refused before anything is allocated (issue 17 item 3)."""

from __future__ import annotations

import base64
import json
import math
import random
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

import bigviz
from bigviz import report
from bigviz._errors import ConfigError, ReportError
from bigviz.data.columns import ENC_T, ENC_V
from bigviz.data.recording import Phase, Recording, Series
from bigviz.data.result import RunResult, Sweep
from bigviz.data.serde import SCHEMA_VERSION, dumps_document, plain_fields, to_plain
from bigviz.data.validate import MAX_SAMPLES
from bigviz.recorder._store import SampleStore


def _schema1_text(obj: Recording) -> str:
    """The file the schema-1 writer made: series as JSON lists, ``schema: 1``."""
    series = {k: plain_fields(s) for k, s in obj.series.items()}
    data = {**plain_fields(obj, series=series), "schema": 1}
    return dumps_document("recording", data)


@pytest.fixture(scope="module")
def recorded() -> Recording:
    # a real recording: 1 ms samples, a phase that allocates and frees 64 MiB
    with bigviz.record(instrument=False) as rec:
        time.sleep(0.1)
        with rec.phase("allocate"):
            buf = bytearray(64 << 20)
            buf[::4096] = b"x" * (len(buf) // 4096)
            time.sleep(0.1)
            del buf
        time.sleep(0.1)
    out: Recording = rec.recording
    return out


def test_a_real_recording_round_trips_exactly_in_a_fraction_of_the_bytes(
    recorded: Recording, tmp_path: Path
) -> None:
    # GIVEN a real recording WHEN it is saved and loaded
    path = recorded.save(tmp_path / "r.json")
    again = report.load(path)
    # THEN every sample, phase and figure is identical, float bits included
    assert again == recorded
    assert isinstance(again, Recording)
    for name, s in recorded.series.items():
        assert again.series[name].t == s.t and again.series[name].v == s.v
        assert [x.hex() for x in again.series[name].t] == [x.hex() for x in s.t]
    assert again.phase("allocate").ram_peak == recorded.phase("allocate").ram_peak
    # AND the timeline is packed: a few bytes per 1 ms tick instead of ~100 as lists
    # (the timeline's bytes: a short file is mostly its fixed meta)
    ticks = len(recorded.series["ram.rss"].t)
    data = json.loads(path.read_text())
    packed = len(json.dumps(data["series"], separators=(",", ":")))
    lists = len(json.dumps(json.loads(_schema1_text(recorded))["series"], separators=(",", ":")))
    assert ticks > 200
    assert packed / ticks <= 12, (packed, ticks)
    assert lists / packed > 5
    assert data["schema"] == SCHEMA_VERSION == 2
    assert data["series"]["ram.rss"]["v"]["encoding"] == ENC_V
    assert data["series"]["ram.rss"]["t"]["fix"] is False  # ns clock + origin: no fix bits
    assert data["series"]["ram.anon"]["t"] == {"encoding": "same-t", "as": "ram.rss"}
    # AND writing it again gives the same bytes
    assert report.dumps(again) == path.read_text()


def test_a_schema_1_file_loads_and_is_written_back_packed(
    recorded: Recording, tmp_path: Path
) -> None:
    # GIVEN a file the schema-1 writer made (plain lists, schema 1)
    old = tmp_path / "old.json"
    old.write_text(_schema1_text(recorded))
    assert (
        json.loads(old.read_text())["series"]["ram.rss"]["t"][:2]
        == recorded.series["ram.rss"].t[:2]
    )
    # WHEN it is loaded, as a report and as a Recording
    loaded = report.load(old)
    direct = Recording.from_json(old.read_text())
    # THEN it is the same recording, upgraded to this schema, and saves packed
    assert loaded == recorded == direct
    assert isinstance(loaded, Recording) and loaded.schema == SCHEMA_VERSION
    assert old.stat().st_size > 5 * len(report.dumps(loaded))


def test_a_hand_written_schema_1_run_and_sweep_still_load() -> None:
    # GIVEN schema-1 JSON as bigviz 0.x wrote it (no kind, lists, ints in t)
    text = (
        '{"strategy":"meta","outcome":"ok","recording":{"name":"w","series":{"ram.rss":'
        '{"name":"ram.rss","t":[0,0.001,0.002],"v":[5,9,7],"unit":"bytes","source":"proc"}},'
        '"phases":[{"name":"load","start":0.0,"end":0.002,"ram_peak":9}],"schema":1},'
        '"schema":1}'
    )
    # WHEN it is loaded THEN the values are there and the schema is upgraded throughout
    run = RunResult.from_json(text)
    assert run.recording.series["ram.rss"].t == [0.0, 0.001, 0.002]
    assert run.recording.series["ram.rss"].v == [5, 9, 7]
    assert run.schema == run.recording.schema == SCHEMA_VERSION
    sweep = Sweep.from_json('{"results":[' + text + '],"schema":1}')
    assert Sweep.from_json(sweep.to_json()) == sweep


def test_any_float_times_and_odd_values_round_trip_exactly() -> None:
    rng = random.Random(7)
    series = {
        # times off any nanosecond grid (fix bits), negative and sub-ns ones
        "odd.t": Series(
            "odd.t",
            sorted(rng.uniform(-5, 5) for _ in range(500)),
            [rng.randrange(-(2**61), 2**61) for _ in range(500)],
        ),
        "tiny": Series("tiny", [1e-300, 2.5e-10, 1e-9], [0, 1, 2]),
        # values whose differences do not fit an int64 (a custom source's)
        "huge": Series("huge", [0.0, 1.0], [2**63 - 1, -(2**63) + 1]),
        "empty": Series("empty"),
        "ns": Series("ns", [i / 1e9 for i in range(0, 10**7, 997)], list(range(10031))),
    }
    rec = Recording(name="odd", series=series, meta={"t0_monotonic": 12345.678})
    data = json.loads(rec.to_json())
    assert data["series"]["odd.t"]["t"]["fix"] is True
    assert data["series"]["huge"]["v"] == [2**63 - 1, -(2**63) + 1]  # kept as a plain list
    again = Recording.from_json(rec.to_json())
    assert again == rec
    for name, s in series.items():
        assert [x.hex() for x in again.series[name].t] == [float(x).hex() for x in s.t]
        assert again.series[name].v == s.v and [type(x) for x in again.series[name].v] == [
            type(x) for x in s.v
        ]
    # a non-finite time is not packed: the strict-JSON list a reader refuses by name
    inf = Recording(series={"x": Series("x", [0.0, math.inf], [1, 2])})
    assert json.loads(inf.to_json())["series"]["x"]["t"] == [0.0, "inf"]
    with pytest.raises(ReportError, match="series 'x' has a time that is not finite"):
        Recording.from_json(inf.to_json())


def _packed_report(tmp_path: Path, **col: Any) -> Path:
    rec = Recording(name="f", series={"ram.rss": Series("ram.rss", [0.0, 0.5], [1, 2])})
    data = json.loads(report.dumps(rec))
    data["series"]["ram.rss"]["v"].update(col)
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(data))
    return path


def _b64(raw: bytes) -> str:
    return base64.b64encode(zlib.compress(raw, 9)).decode()


@pytest.mark.parametrize(
    ("col", "message"),
    [
        ({"n": 10**12}, rf"declares 1000000000000 samples, more than a column .*{MAX_SAMPLES}"),
        ({"n": 10**7}, "more than zlib can hold"),
        ({"n": -1}, "'n' must be a count"),
        ({"n": True}, "'n' must be a count"),
        ({"encoding": "lz4+magic"}, "unknown encoding 'lz4\\+magic'"),
        ({"data": "!!not base64!!"}, "packed data is corrupt"),
        ({"data": _b64(b"\0" * 8)}, "does not hold the 2 samples"),
        ({"data": _b64(b"\0" * 24)}, "does not hold the 2 samples"),
        # a zip bomb: 2 samples declared, 200 MB inside; inflating stops at 16 bytes
        ({"data": _b64(b"\0" * 200_000_000)}, "does not hold the 2 samples"),
    ],
)
def test_forged_packed_columns_are_one_line_errors(
    col: dict[str, Any], message: str, tmp_path: Path
) -> None:
    path = _packed_report(tmp_path, **col)
    with pytest.raises(ReportError, match=message) as exc:
        report.load(path)
    assert "\n" not in str(exc.value) and "forged.json" in str(exc.value)
    assert "series 'ram.rss'.v" in str(exc.value)


def test_forged_time_references_and_document_totals_are_refused(tmp_path: Path) -> None:
    rec = Recording(series={k: Series(k, [0.0, 0.5], [1, 2]) for k in ("ram.rss", "ram.anon")})
    data = json.loads(report.dumps(rec))
    data["series"]["ram.anon"]["t"]["as"] = "ram.nowhere"
    with pytest.raises(ReportError, match=r"'same-t' names 'ram\.nowhere'"):
        Recording.from_dict(data)
    # many series pointing at one big column: each copy counts against the document
    big = {
        "encoding": ENC_T,
        "n": MAX_SAMPLES,
        "origin": 0.0,
        "fix": False,
        "data": "A" * (MAX_SAMPLES * 8 // 800),
    }
    forged = {"series": {"a": {"t": big, "v": [0]}, **{
        f"s{i}": {"t": {"encoding": "same-t", "as": "a"}, "v": [0]} for i in range(2)}},
        "schema": 2}  # fmt: skip
    with pytest.raises(ReportError, match="more than one document may hold"):
        Recording.from_dict(forged)


def test_the_bounded_store_keeps_every_peak_and_trough_within_its_bound() -> None:
    # GIVEN a bounded and an unbounded store fed the same 100 k samples (a 1-sample
    # spike and a 1-sample dip inside a noisy ramp)
    rng = random.Random(3)
    bounded, full = SampleStore(max_samples=1000), SampleStore()
    x, t = 1 << 30, 0.0
    for batch in range(4000):
        ts, vs = [], []
        for i in range(25):
            t += 0.001
            x += rng.randint(-4096, 8192)
            ts.append(t)
            vs.append(x + (1 << 28 if (batch, i) == (1234, 7) else 0)
                      - (1 << 28 if (batch, i) == (3000, 3) else 0))  # fmt: skip
        for store in (bounded, full):
            store.add({"ram.rss": (ts, vs), "ram.anon": (ts, vs[::-1])}, t0=0.0, source="ram")
    for name in ("ram.rss", "ram.anon"):
        b, f = bounded.series[name], full.series[name]
        # THEN it holds at most its bound, every kept point is a real sample in time
        # order, and the highest and lowest values are the true ones
        assert len(b) <= 1000 < len(f) == 100_000
        truth = dict(zip(f.t, f.v, strict=True))
        assert all(truth[ti] == vi for ti, vi in zip(b.t, b.v, strict=True))
        assert list(b.t) == sorted(b.t)
        assert b.max() == f.max() and min(b.v) == min(f.v)
    # AND it says what it holds, what it may hold at most, and the rate it received
    meta = bounded.meta()
    assert meta["store"]["received"] == {"ram.rss": 100_000, "ram.anon": 100_000}
    assert meta["store"]["bytes_max"] == 16 * 1000 * 2
    assert bounded.nbytes() < 2 * 16 * 1000 * 2 + 2000
    assert meta["samples_per_s"] == pytest.approx(1000, rel=0.01)


def test_record_max_samples_bounds_a_real_recording_and_keeps_its_peak() -> None:
    with pytest.raises(ConfigError, match=r"max_samples must be None .* got 10"):
        bigviz.record(max_samples=10)
    # GIVEN a recording bounded to 128 samples per series, longer than that at 1 ms
    with bigviz.record(instrument=False, max_samples=128) as rec:
        time.sleep(0.2)
        with rec.phase("hold 128 MiB"):
            buf = bytearray(128 << 20)
            buf[::4096] = b"x" * (len(buf) // 4096)
            time.sleep(0.2)
            del buf
        time.sleep(0.2)
    r = rec.recording
    ph = r.phase("hold 128 MiB")
    # THEN every series stays within the bound, yet the held 128 MiB is in its peak
    assert all(len(s.t) <= 128 for s in r.series.values())
    assert r.meta["store"]["received"]["ram.rss"] > 128
    assert r.peak("ram.rss") is not None and ph.ram_start is not None
    assert r.peak("ram.rss") - ph.ram_start > 120 << 20  # type: ignore[operator]
    assert Recording.from_json(r.to_json()) == r
    assert to_plain(r)["meta"]["store"]["kind"] == "bounded"


def test_unbounded_phase_figures_unchanged_by_packing() -> None:
    # the sampled figures a report shows come out of the loaded file unchanged
    s = Series("ram.anon", [0.0, 0.0011, 0.0022, 0.0031], [10, 50, 20, 5])
    rec = Recording(series={"ram.anon": s}, phases=[Phase("p", 0.001, 0.003)])
    again = Recording.from_json(rec.to_json())
    assert again.series["ram.anon"].max_between(0.001, 0.003) == 50


def test_a_plain_half_beside_a_packed_one_is_still_range_checked() -> None:
    # GIVEN packed times beside a forged plain list of values far beyond 64 bits
    rec = Recording(series={"ram.rss": Series("ram.rss", [0.0, 0.5], [1, 2])})
    data = json.loads(rec.to_json())
    data["series"]["ram.rss"]["v"] = [1, 10**400]
    # THEN loading names the value, as for a schema-1 file
    with pytest.raises(ReportError, match=r"out of range"):
        Recording.from_dict(data)
