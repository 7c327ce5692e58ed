"""Recordings, RunResults and Sweeps are plain data: JSON round-trips are exact."""

from __future__ import annotations

import json
import math

import pytest

from bigviz import ReportError
from bigviz.data.recording import SCHEMA_VERSION, Mark, Phase, Recording, Series, SourceInfo
from bigviz.data.result import Prediction, RunResult, Sweep


def _recording() -> Recording:
    return Recording(
        name="load <b>",
        pid=42,
        interval_ms=1.0,
        started_at="2026-11-28T12:00:00+00:00",
        duration=1.25,
        series={"ram.rss": Series("ram.rss", t=[0.0, 0.1 + 0.2], v=[1, 2**40 + 3], source="proc")},
        phases=[
            Phase("outer", 0.0, 1.0, ram_start=10, ram_peak=20, ram_peak_exact=True),
            Phase("inner", 0.1, 0.9, parent=0, depth=1, detail={"file": "a.bin", "bytes": 3}),
        ],
        marks=[Mark("opened", 0.5, {"x": 1.5})],
        sources=[SourceInfo("cuda", False, reason="no GPU")],
        meta={"host": "h", "gpus": [], "interval_achieved_ms": 1.0000000000000002},
        errors=["nvml failed"],
        ranks=[Recording(name="rank1", rank=1)],
    )


def test_recording_round_trip_is_exact() -> None:
    rec = _recording()
    again = Recording.from_json(rec.to_json())
    assert again == rec
    assert again.series["ram.rss"].t[1] == 0.1 + 0.2  # float bits kept
    assert again.phase("inner").ram_growth is None
    assert rec.phase("outer").ram_growth == 10
    assert rec.children(0) == [rec.phases[1]]


def test_run_result_and_sweep_round_trip() -> None:
    result = RunResult(
        strategy="naive",
        outcome="ok",
        model="gpt:10MB",
        model_bytes=10_000_000,
        shard_size=200_000_000,
        format="bin",
        predicted=Prediction(ram_peak=20_000_000, formula="2 × M", vram={"cuda:0": 1}),
        recording=_recording(),
        seconds=math.pi,
    )
    sweep = Sweep(results=[result], config={"model": "gpt:10MB", "shard_sizes": [1, 2]})
    assert Sweep.from_json(sweep.to_json()) == sweep
    assert RunResult.from_json(result.to_json()) == result
    assert result.label == "naive · 200MB · bin"
    ranks = RunResult(strategy="shared-mmap", outcome="ok", params={"nproc": 2})
    assert ranks.label == "shared-mmap · 2 ranks"


def test_newer_schema_is_refused_with_upgrade_hint() -> None:
    data = _recording().to_dict()
    data["schema"] = SCHEMA_VERSION + 1
    with pytest.raises(ReportError, match="upgrade bigviz"):
        Recording.from_dict(data)


def test_truncated_json_is_a_clear_error() -> None:
    text = Sweep().to_json()[:-3]
    with pytest.raises(ReportError, match="truncated"):
        Sweep.from_json(text)


def test_wrong_field_type_names_the_field() -> None:
    data = json.loads(RunResult(strategy="meta", outcome="ok").to_json())
    data["outcome"] = "exploded"
    with pytest.raises(ReportError, match="outcome"):
        RunResult.from_dict(data)


def test_non_finite_floats_stay_strict_json() -> None:
    rec = Recording(duration=float("nan"))
    text = rec.to_json()
    assert "NaN" not in text
    assert math.isnan(Recording.from_json(text).duration)


def test_float_list_with_both_infinities_round_trips() -> None:
    from dataclasses import dataclass

    from bigviz.data.serde import from_plain, to_plain

    @dataclass
    class Limits:
        bounds: list[float]

    # GIVEN a float list holding +inf and -inf (math.fsum of the two raises ValueError)
    obj = Limits([float("inf"), float("-inf"), 1.5])
    # WHEN it goes through strict JSON
    text = json.dumps(to_plain(obj), allow_nan=False)
    # THEN it comes back equal
    assert from_plain(Limits, json.loads(text)) == obj
