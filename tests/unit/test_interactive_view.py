"""The interactive timeline's fragment: bounded in size, every peak kept, every string inert.

The browser side (zoom, hover readout, no script injection) is tested in
tests/integration/test_interactive_timeline.py.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bigviz import report
from bigviz._errors import ConfigError
from bigviz.data.recording import Phase, Recording, Series
from bigviz.data.result import RunResult
from bigviz.plots.interactive import (
    MAX_EXACT,
    SCRIPT,
    InteractiveTimeline,
    can_show,
    timeline_data,
    timeline_html,
)

MiB = 2**20
HOSTILE = "</script><img src=x onerror=alert(1)>"


def long_recording(seconds: float, *, seed: int = 0, phases: int = 50) -> Recording:
    """``seconds`` at 1 ms: noisy anonymous memory (not page-aligned), a ramp of
    file-backed memory and one single-sample spike of 700 MiB."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 1000)
    t = np.round(np.arange(n) * 0.001 + rng.uniform(0, 0.0002, n), 6)
    anon = (300 * MiB + (np.arange(n) % 997) * 400_000 + rng.integers(0, 256 * 1024, n))
    file = (20 * MiB + np.minimum(1.0, np.arange(n) / n * 2) * 100 * MiB).astype(np.int64)
    anon[int(n * 0.6173)] += 700 * MiB
    rss = anon + file
    tl = t.tolist()
    edges = np.linspace(0.0, float(t[-1]), phases + 1)
    return Recording(
        name="long",
        duration=float(t[-1]),
        series={
            "ram.rss": Series("ram.rss", tl, rss.tolist()),
            "ram.anon": Series("ram.anon", list(tl), anon.tolist()),
            "ram.file": Series("ram.file", list(tl), file.tolist()),
        },
        phases=[Phase(f"step {k + 1}", float(edges[k]), float(edges[k + 1]))
                for k in range(phases)],
    )


def embedded(fragment: str) -> dict[str, Any]:
    """The JSON a fragment carries, read back the way the browser reads it."""
    m = re.search(r'data-bigviz="([^"]*)"', fragment)
    assert m is not None
    data: dict[str, Any] = json.loads(html.unescape(m.group(1)))
    return data


def decoded(data: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(times in µs, values in bytes per series key), as the script decodes them."""
    t = np.cumsum(np.asarray(data["t"], dtype=np.int64))
    return t, {s["key"]: np.cumsum(np.asarray(s["d"], dtype=np.int64)) * s["q"]
               for s in data["series"]}


def test_a_60_s_1_ms_recording_is_embedded_exactly_and_in_bounded_size() -> None:
    # GIVEN a 60 s recording at 1 ms (60,000 samples per series)
    rec = long_recording(60.0)
    # WHEN it becomes an interactive view
    fragment = timeline_html(rec, uid="a")
    # THEN every sample is there, exact to the byte and the microsecond
    data = embedded(fragment)
    assert data["exact"] and data["samples"] == 60_000
    t, values = decoded(data)
    assert t.tolist() == [round(x * 1e6) for x in rec.series["ram.rss"].t]
    for key in ("rss", "anon", "file"):
        assert values[key].tolist() == rec.series[f"ram.{key}"].v
    # AND the page stays light: < 2 MB for 180,000 noisy values and 50 phases
    assert len(fragment.encode()) < 2_000_000, len(fragment.encode())


def test_a_10_minute_recording_is_thinned_keeping_every_series_peak() -> None:
    # GIVEN 10 minutes at 1 ms: 600,000 samples, above the exact bound
    rec = long_recording(600.0, phases=10)
    fragment = timeline_html(rec, uid="b")
    data = embedded(fragment)
    _t, values = decoded(data)
    # THEN it is thinned below the bound, by min/max per bucket...
    assert not data["exact"] and data["samples"] == 600_000
    assert len(data["t"]) <= MAX_EXACT
    # ...so each series keeps its true maximum and minimum (the one-sample spike too)
    for key in ("rss", "anon", "file"):
        v = rec.series[f"ram.{key}"].v
        assert int(values[key].max()) == max(v) and int(values[key].min()) == min(v)
    assert len(fragment.encode()) < 3_000_000, len(fragment.encode())
    # AND a smaller bound (the report's) gives a smaller page, peaks still exact
    small = embedded(timeline_html(rec, uid="c", max_points=20_000))
    assert len(small["t"]) <= 20_000
    assert int(decoded(small)[1]["rss"].max()) == max(rec.series["ram.rss"].v)


def test_strings_from_the_recording_cannot_break_out_of_the_fragment() -> None:
    rec = long_recording(0.2, phases=1)
    rec.phases[0].name = HOSTILE
    rec.name = HOSTILE
    fragment = timeline_html(rec, uid="x", script=False)
    # no raw markup from the recording: not in the attribute, not in the label
    assert "<img" not in fragment and "</script" not in fragment
    # and the name arrives intact where the script reads it
    data = embedded(fragment)
    assert data["phases"][0][0] == HOSTILE and data["title"] == HOSTILE


def test_each_view_has_its_own_id_and_a_bad_id_is_refused() -> None:
    rec = long_recording(0.1, phases=1)
    ids = {re.search(r'id="(bigviz-itl-[^"]+)"', timeline_html(rec)).group(1)  # type: ignore[union-attr]
           for _ in range(3)}
    assert len(ids) == 3
    with pytest.raises(ConfigError, match="uid="):
        timeline_html(rec, uid='x" onload="alert(1)')
    with pytest.raises(ConfigError, match="max_points=10"):
        timeline_data(rec, max_points=10)


def test_a_recording_without_rss_samples_says_so() -> None:
    assert not can_show(Recording(name="empty"))
    with pytest.raises(ConfigError, match="'empty' has no RSS samples"):
        timeline_html(Recording(name="empty"))


def test_a_run_brings_its_baseline_and_label() -> None:
    rec = long_recording(0.5, phases=2)
    run = RunResult("mmap", "ok", recording=rec, baseline=310 * MiB)
    data = timeline_data(run)
    assert data["baseline"] == 310 * MiB
    assert data["title"] == run.label
    assert InteractiveTimeline(run)._repr_html_().count("<script>") == 1


def test_the_report_allows_exactly_its_own_script_by_hash(tmp_path: Path) -> None:
    # GIVEN a report of a recording with a hostile phase name
    rec = long_recording(0.5, phases=2)
    rec.phases[1].name = HOSTILE
    page = report.write(rec, tmp_path / "r.html").read_text()
    # THEN it has one script: the sorting and the timeline's, allowed by its hash alone
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    assert len(scripts) == 1 and page.count("<script") == 1
    assert scripts[0].endswith(SCRIPT)
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    csp = re.search(r'Content-Security-Policy" content="([^"]*)"', page).group(1)  # type: ignore[union-attr]
    assert f"script-src 'sha256-{digest}';" in csp and "default-src 'none'" in csp
    # AND the interactive view is there with the static SVG as its fallback
    assert 'class="bigviz-itl"' in page
    assert re.search(r'class="bigviz-itl-fallback"><svg', page)
    assert "<img" not in page
