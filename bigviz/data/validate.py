"""Bounds on what a report file may say, checked before anything is drawn or allocated.

A JSON report is input like any other: a forged one said a phase sat at depth 10^9
(the timeline then tried to draw a billion rows and the machine ran out of memory),
``ram_peak: 10**400`` (an OverflowError in the plots), ``start: "nan"`` (a ValueError in
matplotlib) or series whose ``t`` and ``v`` differ in length. :func:`check_document`
refuses each with a :class:`~bigviz.ReportError` naming the field, so every reader
(``bigviz report``, ``bigviz diff``, ``report.load``, ``from_json``) stops there.

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
from typing import Any

from bigviz._errors import ReportError

__all__ = ["MAX_DEPTH", "MAX_INT", "MAX_RANKS", "check_document"]

#: deepest phase nesting a recording may hold (a recorder nests a few levels)
MAX_DEPTH = 64
#: largest magnitude of an integer in a report (bytes, counts): a signed 64-bit value
MAX_INT = 2**63 - 1
#: most rank lanes one recording may hold
MAX_RANKS = 4096


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


def _recording(rec: Any, where: str, level: int = 0) -> None:
    if len(rec.ranks) > MAX_RANKS:
        raise ReportError(f"{where}: {len(rec.ranks)} rank lanes is more than {MAX_RANKS}")
    for name, s in rec.series.items():
        if len(s.t) != len(s.v):
            raise ReportError(
                f"{where}: series {name!r} has {len(s.t)} times but {len(s.v)} values; "
                "the file is corrupt: re-export it"
            )
        if s.t and not (math.isfinite(min(s.t)) and math.isfinite(max(s.t))):
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
