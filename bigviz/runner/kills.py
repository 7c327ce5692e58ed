"""The budget kill report of a worker's sidecar: read it, and merge it into the timeline
the supervisor kept.

A worker whose sidecar checks the RAM budget (``BIGVIZ_SIDECAR_BUDGET``, see
:mod:`bigviz.recorder.sidecar`) is killed by the sidecar at the first 1 ms sample above
it; the sidecar then writes a report: the crossing (its time, RSS, the budget, the peak
at the stop) and the samples of the last seconds up to the kill, which the worker never
streamed. :func:`read_kill_report` reads it (and removes it);
:func:`merge_kill_report` adds those samples to the ``ram.*`` series and marks the
crossing.

Example:
    >>> read_kill_report(None) is None
    True
"""

from __future__ import annotations

import contextlib
import os
from typing import NamedTuple

from bigviz.data.recording import Series
from bigviz.recorder import sidecar as sc
from bigviz.runner.events import Timeline

__all__ = ["KillReport", "Sample", "merge_kill_report", "read_kill_report"]

Sample = tuple[float, int, int, int]  # monotonic time, anon, file, shmem


class KillReport(NamedTuple):
    """A sidecar's budget kill report: the crossing sample's time (monotonic) and RSS,
    the budget, the peak RSS at the stop (bytes), and the samples up to the kill."""

    t: float
    rss: int
    budget: int
    peak: int
    samples: list[Sample]


def read_kill_report(path: str | None) -> KillReport | None:
    """The sidecar's kill report at ``path`` (and remove it), or ``None``: no path (the
    sidecar was not armed), no file (it killed nothing), or no crossing in it.

    Example:
        >>> read_kill_report("/nonexistent/bigviz-budget") is None
        True
    """
    if not path:
        return None
    try:
        fd = os.open(str(path), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        data = b""
        while chunk := os.read(fd, 1 << 20):
            data += chunk
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(str(path))
    n = len(data) - len(data) % sc.REC_SIZE
    head: Sample | None = None
    samples: list[Sample] = []
    for kind, t, a, b, c in sc.REC.iter_unpack(data[:n]):
        if kind == sc.K_BUDGET:
            head = (t, a, b, c)
        elif kind == sc.K_STATUS:
            samples.append((t, a, b, c))
    if head is None:
        return None
    return KillReport(*head, samples)


def merge_kill_report(tl: Timeline, report: KillReport, t0: float) -> None:
    """Add ``report``'s samples the stream did not carry to ``tl``'s ``ram.*`` series,
    and a ``budget exceeded`` mark at the crossing (``t0``: the recorder's start,
    monotonic).

    Example:
        >>> tl = Timeline()
        >>> merge_kill_report(tl, KillReport(10.5, 900, 800, 950, [(10.5, 900, 0, 0)]), 10.0)
        >>> tl.series["ram.rss"].v, tl.marks[0]["t"]
        ([900], 0.5)
    """
    _extend(tl, report.samples, t0)
    tl.marks.append({
        "type": "mark", "name": "budget exceeded", "t": report.t - t0,
        "detail": {"rss": report.rss, "budget": report.budget, "peak": report.peak,
                   "by": "sidecar (1 ms samples)"}})


def _extend(tl: Timeline, samples: list[Sample], t0: float) -> None:
    """Add the kill report's samples the stream did not carry to the ``ram.*`` series."""
    rss = tl.series.get("ram.rss")
    last = rss.t[-1] if rss is not None and rss.t else float("-inf")
    for t, anon, file_, shmem in samples:
        rel = t - t0
        if rel <= last:
            continue
        for name, v in (("ram.rss", anon + file_ + shmem), ("ram.anon", anon),
                        ("ram.file", file_), ("ram.shmem", shmem)):
            s = tl.series.setdefault(name, Series(name))
            s.t.append(rel)
            s.v.append(v)
        last = rel
