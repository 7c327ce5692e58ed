"""The Recording: plain data for one recorded stretch of a process's memory.

A Recording holds no live tensors or models, only numbers and strings, so it
round-trips through JSON exactly (``Recording.from_json(r.to_json()) == r``) and can be
sent between processes, saved, diffed and plotted anywhere.

Times are seconds since the recording started (monotonic clock); sizes are bytes.

Series names used by the built-in sources:

============================  =================================================
``ram.rss``                   resident set size (``VmRSS``)
``ram.anon``                  anonymous resident memory (``RssAnon``)
``ram.file``                  file-backed resident memory (``RssFile``), e.g. mmapped safetensors
``ram.shmem``                 shared memory (``RssShmem``)
``ram.uss`` / ``ram.pss``     unique / proportional set size (``smaps_rollup``, lower rate)
``sys.available``             the system's available RAM (``MemAvailable``)
``cuda:N.allocated``          torch caching allocator, bytes in tensors on device N
``cuda:N.reserved``           torch caching allocator, bytes reserved from the driver
``nvml:N.used``               NVML: memory used on device N by everyone (context included)
``nvml:N.process``            NVML: memory used on device N by this process
============================  =================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bigviz.data.columns import pack_series, unpack_series
from bigviz.data.serde import SCHEMA_VERSION, Document, plain_fields

__all__ = ["SCHEMA_VERSION", "Mark", "Phase", "Recording", "Series", "SourceInfo"]


@dataclass
class Series:
    """One measured quantity over time: ``v[i]`` was measured at ``t[i]`` seconds.

    Example:
        >>> s = Series("ram.rss", t=[0.0, 0.001], v=[100, 200])
        >>> s.max()
        200
    """

    name: str
    t: list[float] = field(default_factory=list)
    v: list[int] = field(default_factory=list)
    unit: str = "bytes"
    source: str = ""

    def max(self) -> int | None:
        """Largest value, or ``None`` for an empty series."""
        return max(self.v) if self.v else None

    def max_between(self, start: float, end: float | None) -> int | None:
        """Largest value sampled in ``[start, end]`` (``end=None``: to the last sample)."""
        pairs = zip(self.t, self.v, strict=True)
        vals = [v for t, v in pairs if t >= start and (end is None or t <= end)]
        return max(vals) if vals else None

    def at(self, t: float) -> int | None:
        """The last value sampled at or before ``t`` (``None`` if none yet)."""
        best = None
        for ti, vi in zip(self.t, self.v, strict=True):
            if ti > t:
                break
            best = vi
        return best


@dataclass
class Phase:
    """A named stretch of the recording, possibly nested in another.

    ``ram_peak`` is the highest RSS reached during the phase, in absolute bytes. When
    ``ram_peak_exact`` is true it comes from the kernel's high-water mark (``VmHWM``,
    reset at the phase start), so a spike between two samples is not missed; when false
    it is the maximum of the samples. ``ram_growth`` is that peak minus the RSS at the
    phase start: the memory the phase itself needed.

    ``ram_peak_why`` says why the peak is sampled and not exact (``None`` when exact, or
    when no exact figure was attempted), e.g. a ``VmHWM`` reset that waited for the
    process's mmap lock.

    ``vram_peak`` maps a CUDA device (``"cuda:0"``) to the allocator's exact
    ``max_memory_allocated`` during the phase.

    Example:
        >>> p = Phase("load", start=0.0, end=1.0, ram_start=100, ram_peak=612)
        >>> p.ram_growth, p.duration
        (512, 1.0)
    """

    name: str
    start: float
    end: float | None = None
    parent: int | None = None
    depth: int = 0
    auto: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
    ram_start: int | None = None
    ram_end: int | None = None
    ram_peak: int | None = None
    ram_peak_exact: bool = False
    ram_peak_why: str | None = None
    ram_anon_peak: int | None = None
    ram_file_peak: int | None = None
    vram_start: dict[str, int] = field(default_factory=dict)
    vram_peak: dict[str, int] = field(default_factory=dict)
    nvml_peak: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, ``None`` while the phase is open."""
        return None if self.end is None else self.end - self.start

    @property
    def ram_growth(self) -> int | None:
        """Peak RSS during the phase minus RSS at its start (bytes)."""
        if self.ram_peak is None or self.ram_start is None:
            return None
        return self.ram_peak - self.ram_start


@dataclass
class Mark:
    """An instant event on the timeline (``rec.mark("checkpoint opened")``)."""

    name: str
    t: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceInfo:
    """What a memory source could measure: available or why not, and how exactly."""

    name: str
    available: bool
    reason: str | None = None
    exact: bool = False
    series: list[str] = field(default_factory=list)


@dataclass
class Recording(Document):
    """RAM and VRAM of one process over time, with named phases and marks.

    ``ram_peak_process`` is the process's RSS peak over its whole life up to the end of
    the recording, as ``getrusage().ru_maxrss`` would report it if bigviz had not reset
    the kernel's high-water mark at each phase (after a reset, ``ru_maxrss`` and
    ``/usr/bin/time -v`` report only the peak since the last reset). For ``bigviz
    profile`` it is the command's own process. ``None`` when not measured.

    Example:
        >>> r = Recording(name="demo", pid=1, interval_ms=1.0)
        >>> Recording.from_json(r.to_json()) == r
        True
    """

    KIND: ClassVar[str] = "recording"

    name: str = ""
    pid: int = 0
    interval_ms: float = 1.0
    started_at: str = ""
    duration: float = 0.0
    series: dict[str, Series] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    sources: list[SourceInfo] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    ram_peak_process: int | None = None
    rank: int | None = None
    ranks: list[Recording] = field(default_factory=list)
    schema: int = SCHEMA_VERSION

    # -- JSON: series as packed columns (schema 2, see bigviz.data.columns) ------
    def __to_plain__(self) -> dict[str, Any]:
        """Plain data with every series' ``t`` and ``v`` as packed columns."""
        t0 = self.meta.get("t0_monotonic")
        origin = float(t0) if isinstance(t0, (int, float)) and math.isfinite(t0) else 0.0
        return plain_fields(self, series=pack_series(self.series, origin))

    @classmethod
    def __from_plain__(cls, data: dict[str, Any], where: str) -> dict[str, Any]:
        """``data`` with packed series decoded (``from_plain`` rebuilds the rest)."""
        series = data.get("series")
        if not isinstance(series, dict):
            return data
        return {**data, "series": unpack_series(series, where)}

    # -- lookups ---------------------------------------------------------------
    def phase(self, name: str) -> Phase:
        """The first phase called ``name``.

        Raises:
            KeyError: naming the phases that exist.
        """
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(f"no phase {name!r}; phases: {[p.name for p in self.phases]}")

    def children(self, index: int) -> list[Phase]:
        """The phases directly inside ``phases[index]``."""
        return [p for p in self.phases if p.parent == index]

    def peak(self, series: str) -> int | None:
        """Largest value of a series over the whole recording (``None`` if absent/empty)."""
        s = self.series.get(series)
        return s.max() if s else None
