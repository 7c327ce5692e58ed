"""Bounds on what a report file may say, checked before anything is drawn or allocated.

A JSON report is input like any other: a forged one said a phase sat at depth 10^9
(the timeline then tried to draw a billion rows and the machine ran out of memory),
``ram_peak: 10**400`` (an OverflowError in the plots), ``start: "nan"`` (a ValueError in
matplotlib) or series whose ``t`` and ``v`` differ in length. :func:`check_document`
refuses each with a :class:`~bigviz.ReportError` naming the field, so every reader
(``bigviz report``, ``bigviz diff``, ``report.load``, ``from_json``) stops there.

Packed series (schema 2) are checked before anything is decoded: :func:`check_columns`
refuses a column claiming more than :data:`MAX_SAMPLES` samples, a document claiming more
than :data:`MAX_DOCUMENT_SAMPLES`, or more than zlib can expand its data to (a forged
``n``); the decoder then inflates at most the declared bytes (a zip bomb stops there).

Example:
    >>> from bigviz.data.recording import Phase, Recording
    >>> check_document(Recording(phases=[Phase("load", 0.0, 1.0)]), "r.json")
    >>> check_document(Recording(phases=[Phase("x", 0.0, depth=10**9)]), "r.json")
    Traceback (most recent call last):
    ...
    bigviz._errors.ReportError: r.json: phases[0] 'x': depth 1000000000 is out of range (0..64)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bigviz._errors import ReportError
from bigviz.data.columns import ENC_SAME_T, ENC_T, ENC_V, column_bytes

__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_SAMPLES",
    "MAX_INT",
    "MAX_RANKS",
    "MAX_SAMPLES",
    "check_columns",
    "check_document",
]

#: deepest phase nesting a recording may hold (a recorder nests a few levels)
MAX_DEPTH = 64
#: largest magnitude of an integer in a report (bytes, counts): a signed 64-bit value
MAX_INT = 2**63 - 1
#: most rank lanes one recording may hold
MAX_RANKS = 4096
#: most samples one packed column may declare (37 hours at 1 ms)
MAX_SAMPLES = 2**27
#: most samples the packed columns of one document may declare together, times
#: included (~12 hours of the five 1 ms series of a recording); decoded as Python lists
#: they take ~40 bytes each
MAX_DOCUMENT_SAMPLES = 2**28
#: deflate expands at most ~1032:1; a column declaring more than this is forged
_ZLIB_RATIO = 1100


def check_columns(data: Any, where: str) -> None:
    """Raise ReportError unless every packed column in the plain ``data`` of a
    Recording, RunResult, Sweep or list of runs declares a size it can hold, within
    :data:`MAX_SAMPLES` per column and :data:`MAX_DOCUMENT_SAMPLES` in all. Runs
    before anything is decoded, so a forged size allocates nothing.

    Example:
        >>> col = {"encoding": "zlib+shuffle+delta-i64", "n": 10**12, "data": "eJw="}
        >>> check_columns({"series": {"ram.rss": {"t": [], "v": col}}}, "r.json")
        Traceback (most recent call last):
        ...
        bigviz._errors.ReportError: r.json: series 'ram.rss'.v declares 1000000000000 samples, ...
    """
    total = 0
    todo: list[Any] = [data]
    while todo:
        node = todo.pop()
        if not isinstance(node, dict):
            continue
        todo.append(node.get("recording"))
        for key in ("results", "ranks"):
            if isinstance(node.get(key), list):
                todo.extend(node[key])
        series = node.get("series")
        if isinstance(series, dict):
            for name, item in series.items():
                if isinstance(item, dict):
                    total += _series_columns(item, series, f"{where}: series {name!r}")
        if total > MAX_DOCUMENT_SAMPLES:
            raise ReportError(
                f"{where}: the packed series declare {total} samples, more than one "
                f"document may hold ({MAX_DOCUMENT_SAMPLES}); the file is forged or corrupt"
            )


def _series_columns(item: Mapping[str, Any], series: Mapping[str, Any], what: str) -> int:
    total = 0
    for field_name, known in (("t", (ENC_T, ENC_SAME_T)), ("v", (ENC_V,))):
        col = item.get(field_name)
        if not isinstance(col, dict):
            continue
        here = f"{what}.{field_name}"
        enc = col.get("encoding")
        if enc not in known:
            raise ReportError(
                f"{here} has an unknown encoding {str(enc)[:40]!r}; this bigviz reads "
                f"{', '.join(known)} (a newer bigviz may have written it: pip install -U bigviz)"
            )
        if enc == ENC_SAME_T:
            ref_name = col.get("as")
            ref = series.get(ref_name) if isinstance(ref_name, str) else None
            ref_t = ref.get("t") if isinstance(ref, dict) else None
            if not isinstance(ref_t, dict) or ref_t.get("encoding") != ENC_T:
                raise ReportError(
                    f"{here}: 'same-t' names {str(col.get('as'))[:40]!r}, not a series with "
                    "packed times; the file is corrupt: re-export it"
                )
            col = ref_t  # a copy of its times: as many samples
        total += _column_size(col, here)
    return total


def _column_size(col: Mapping[str, Any], here: str) -> int:
    n, blob = col.get("n"), col.get("data")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ReportError(f"{here}: 'n' must be a count of samples, got {str(n)[:40]!r}")
    if n > MAX_SAMPLES:
        raise ReportError(
            f"{here} declares {n} samples, more than a column may hold ({MAX_SAMPLES}); "
            "the file is forged or corrupt"
        )
    if not isinstance(blob, str):
        raise ReportError(f"{here}: 'data' must be a base64 string, got {type(blob).__name__}")
    if col.get("encoding") == ENC_T:
        origin, fix = col.get("origin"), col.get("fix")
        if isinstance(origin, bool) or not isinstance(origin, (int, float)) \
                or not math.isfinite(origin):  # fmt: skip
            raise ReportError(f"{here}: 'origin' must be a finite number, got {origin!r}")
        if not isinstance(fix, bool):
            raise ReportError(f"{here}: 'fix' must be true or false, got {fix!r}")
    if column_bytes(col) > _ZLIB_RATIO * (len(blob) * 3 // 4) + 64:
        raise ReportError(
            f"{here} declares {n} samples in {len(blob)} characters of data, more than "
            "zlib can hold; the file is forged or corrupt"
        )
    return n


def check_document(obj: Any, where: str) -> None:
    """Raise ReportError unless ``obj`` (a Recording, RunResult or Sweep just read from a
    file) is within the bounds every reader relies on.

    Example:
        >>> check_document(object(), "x.json")  # anything else: nothing to check
    """
    from bigviz.data.recording import Recording
    from bigviz.data.result import RunResult, Sweep

    if isinstance(obj, Sweep):
        for i, r in enumerate(obj.results):
            _recording(r.recording, f"{where}: results[{i}].recording")
    elif isinstance(obj, RunResult):
        _recording(obj.recording, f"{where}: recording")
    elif isinstance(obj, Recording):
        _recording(obj, where)


def _finite(value: float | None, what: str) -> None:
    if value is not None and not math.isfinite(value):
        raise ReportError(f"{what} is {value!r}; a time must be a finite number of seconds")


def _all_finite(xs: list[float]) -> bool:
    """True when every number is finite: one C pass (a NaN or infinity makes the sum
    non-finite); only a sum that overflows is looked at number by number."""
    try:
        if math.isfinite(sum(xs)):
            return True
    except TypeError:
        pass
    return all(map(math.isfinite, xs))


def _recording(rec: Any, where: str, level: int = 0) -> None:
    if len(rec.ranks) > MAX_RANKS:
        raise ReportError(f"{where}: {len(rec.ranks)} rank lanes is more than {MAX_RANKS}")
    for name, s in rec.series.items():
        if len(s.t) != len(s.v):
            raise ReportError(
                f"{where}: series {name!r} has {len(s.t)} times but {len(s.v)} values; "
                "the file is corrupt: re-export it"
            )
        if s.t and not _all_finite(s.t):
            raise ReportError(f"{where}: series {name!r} has a time that is not finite")
    n = len(rec.phases)
    for i, p in enumerate(rec.phases):
        what = f"{where}: phases[{i}] {p.name!r}"
        if not 0 <= p.depth <= MAX_DEPTH:
            raise ReportError(f"{what}: depth {p.depth} is out of range (0..{MAX_DEPTH})")
        if p.parent is not None and not 0 <= p.parent < n:
            raise ReportError(f"{what}: parent {p.parent} is not a phase of this recording")
        _finite(p.start, f"{what}: start")
        _finite(p.end, f"{what}: end")
    for i, m in enumerate(rec.marks):
        _finite(m.t, f"{where}: marks[{i}] {m.name!r}: t")
    if level == 0:
        for j, lane in enumerate(rec.ranks):
            if lane.ranks:
                raise ReportError(f"{where}: ranks[{j}] holds ranks of its own")
            _recording(lane, f"{where}: ranks[{j}]", level + 1)
