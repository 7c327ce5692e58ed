"""CSV reports for spreadsheets: a summary, the phases and the timelines, in three files.

For ``out.csv``:

* ``out.csv`` — one row per run (RunResult, Sweep, list); for a Recording, one row per phase;
* ``out.phases.csv`` — one row per phase of every run (``run`` column first);
* ``out.timeline.csv`` — long format ``run,label,rank,series,t,value``, every sample.

Distributed runs: ``rank`` is the rank of a per-rank sample or phase, and empty for the
node totals (``node.pss``…) and for single-process runs; the phases file lists every
rank's own phases. The summary's ``nproc`` is the number of ranks.

Sizes are integer bytes and times seconds, so spreadsheets compute with them; text that
a spreadsheet would run as a formula (``=``, ``+``, ``@``…) is prefixed with ``'``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bigviz.data.recording import Recording
from bigviz.tables.phases import lanes, phase_rows
from bigviz.tables.runs import RunRow, results_of, run_rows

from ._common import Reportable, atomic_write_all, recordings_of, sibling

SUMMARY_COLUMNS = [
    "run", "label", "strategy", "model", "model_bytes", "shard_size", "format", "device_map",
    "outcome", "baseline", "ram_peak", "ram_anon_peak", "ram_file_peak", "vram_peak",
    "predicted_ram_peak", "predicted_formula", "seconds", "phase_reached", "error", "nproc",
]  # fmt: skip
PHASE_COLUMNS = [
    "run", "label", "rank", "index", "phase", "depth", "parent", "auto", "start", "end", "duration",
    "ram_start", "ram_end", "ram_peak", "ram_peak_exact", "ram_growth", "ram_anon_peak",
    "ram_file_peak", "vram_peak", "error",
]  # fmt: skip
TIMELINE_COLUMNS = ["run", "label", "rank", "series", "t", "value"]


def _safe(value: Any) -> Any:
    """Neutralise spreadsheet formulas in text (CSV injection); numbers pass unchanged."""
    if isinstance(value, str) and value[:1] in ("=", "+", "@", "\t", "\r", "-"):
        if value[:1] == "-":
            try:
                float(value)
                return value
            except ValueError:
                pass
        return "'" + value
    return value


def _table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow(["" if v is None else _safe(v) for v in row])
    return buf.getvalue()


def _phase_rows(run: int, label: str, rec: Recording) -> Iterable[list[Any]]:
    for rank, lane in lanes(rec):
        for p in phase_rows(lane, rank=rank):
            vram = ";".join(f"{d}={v}" for d, v in p.vram.items())
            yield [
                run, label, p.rank, p.index, p.name, p.depth, p.parent, p.auto, p.start, p.end,
                p.duration, p.ram_start, p.ram_end, p.ram_peak, p.ram_peak_exact, p.ram_growth,
                p.ram_anon_peak, p.ram_file_peak, vram, p.error,
            ]  # fmt: skip


def _summary_row(run: int, r: RunRow) -> list[Any]:
    return [
        run, r.label, r.strategy, r.model, r.model_bytes, r.shard_size, r.format,
        r.device_map, r.outcome, r.baseline, r.ram_peak, r.ram_anon_peak, r.ram_file_peak,
        r.vram_peak, r.predicted, r.formula, r.seconds, r.phase_reached, r.error, r.nproc,
    ]  # fmt: skip


def render(obj: Reportable) -> dict[str, str]:
    """``{suffix: text}``: ``""`` the summary, ``".phases"`` and ``".timeline"``."""
    timelines = recordings_of(obj)
    phases = [
        row for i, (lab, rec, _r) in enumerate(timelines) for row in _phase_rows(i + 1, lab, rec)
    ]
    if isinstance(obj, Recording):
        summary = _table(PHASE_COLUMNS, phases)
    else:
        rows = [_summary_row(i + 1, r) for i, r in enumerate(run_rows(results_of(obj)))]
        summary = _table(SUMMARY_COLUMNS, rows)

    def samples() -> Iterable[list[Any]]:
        for i, (lab, rec, _r) in enumerate(timelines):
            sources: list[tuple[int | None, Recording]] = [(None, rec)]
            if rec.ranks:
                sources += lanes(rec)
            for rank, part in sources:
                for name, s in part.series.items():
                    for t, v in zip(s.t, s.v, strict=True):
                        yield [i + 1, lab, rank, name, t, v]

    return {
        "": summary,
        ".phases": _table(PHASE_COLUMNS, phases),
        ".timeline": _table(TIMELINE_COLUMNS, samples()),
    }


def write(obj: Reportable, path: Path) -> Path:
    """Write the timeline and phase files, then the summary at ``path``."""
    files = render(obj)
    atomic_write_all([(sibling(path, f"{suffix}.csv"), files[suffix])
                      for suffix in (".timeline", ".phases")] + [(path, files[""])])
    return path
