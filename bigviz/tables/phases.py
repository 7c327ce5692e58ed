"""The phase table: one :class:`PhaseRow` per recorded phase, the cells every front end
formats (HTML, Markdown and CSV reports, the notebook table, the terminal).

Sizes are absolute bytes, as the recorder measured them; ``exact`` peaks come from the
kernel's high-water mark (``VmHWM``) reset at the phase start, the others are the highest
sample. A distributed run's phases are per rank: :func:`lanes` lists the recordings
whose phases to show (every rank's own, or the recording itself).

A loop records the same phase again and again (``step 1 … step 800``, a shard per file):
:func:`grouped` folds such runs of sibling phases into one :class:`PhaseGroup` with
count / min / median / max, which the reports show as one row that expands to every phase.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bigviz.data.recording import Recording
from bigviz.units import format_size

__all__ = ["MIN_REPEAT", "PhaseGroup", "PhaseRow", "Stats", "family", "grouped", "lanes",
           "lazy_lines", "phase_rows", "repeats"]

#: Consecutive sibling phases of one family folded into one group, at least.
MIN_REPEAT = 5
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class PhaseRow:
    """One phase of one process (``rank`` is ``None`` outside distributed runs).

    Example:
        >>> from bigviz.data.recording import Phase
        >>> rec = Recording(phases=[Phase("load", 0.0, 1.5, ram_start=10, ram_peak=30)])
        >>> row = phase_rows(rec)[0]
        >>> row.name, row.duration, row.how
        ('load', 1.5, 'sampled')
    """

    index: int
    name: str
    depth: int
    parent: int | None
    auto: bool
    start: float
    end: float | None
    duration: float | None
    ram_start: int | None
    ram_end: int | None
    ram_peak: int | None
    ram_peak_exact: bool
    ram_growth: int | None
    ram_anon_peak: int | None
    ram_file_peak: int | None
    vram: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    scope: str = ""
    rank: int | None = None

    @property
    def how(self) -> str:
        """How the peak was measured: ``"exact"`` or ``"sampled"``."""
        return "exact" if self.ram_peak_exact else "sampled"


def phase_rows(rec: Recording, *, rank: int | None = None) -> list[PhaseRow]:
    """The phases of ``rec`` in recorded order (nested ones after their parent).

    Args:
        rec: a recording (for a distributed run, one rank's lane: see :func:`lanes`).
        rank: the rank the rows belong to, if any.

    Returns:
        One row per phase.

    Example:
        >>> phase_rows(Recording())
        []
    """
    return [
        PhaseRow(
            index=i,
            name=p.name,
            depth=p.depth,
            parent=p.parent,
            auto=p.auto,
            start=p.start,
            end=p.end,
            duration=p.duration,
            ram_start=p.ram_start,
            ram_end=p.ram_end,
            ram_peak=p.ram_peak,
            ram_peak_exact=p.ram_peak_exact,
            ram_growth=p.ram_growth,
            ram_anon_peak=p.ram_anon_peak,
            ram_file_peak=p.ram_file_peak,
            vram=dict(p.vram_peak),
            error=p.error,
            scope=str(p.detail.get("scope", "")),
            rank=rank,
        )
        for i, p in enumerate(rec.phases)
    ]


def lanes(rec: Recording) -> list[tuple[int | None, Recording]]:
    """``(rank, recording)`` whose phases to list: every rank's own (the merged recording's
    phases are a copy of rank 0's), or the recording itself with rank ``None``.

    Example:
        >>> lanes(Recording(name="x"))[0][0] is None
        True
    """
    if rec.ranks:
        return [
            (lane.rank if lane.rank is not None else i, lane) for i, lane in enumerate(rec.ranks)
        ]
    return [(None, rec)]


def lazy_lines(rec: Recording, *, not_in_ram: str) -> list[str]:
    """The lazy loads of ``rec`` (phases that mapped weights not yet in RAM, outermost
    only) and the lazily mapped weights that arrived later (the instrumentation's
    "arrived on first use" marks), one line each.

    Args:
        rec: the recording.
        not_in_ram: what a lazy load's line says after "N of the mapped weights ", in the
            front end's own words (a cell's "is not in RAM yet; …").

    Example:
        >>> lazy_lines(Recording(name="x"), not_in_ram="is not in RAM yet")
        []
    """
    lines = []
    for p in rec.phases:
        lazy = p.detail.get("lazy_bytes")
        parent = rec.phases[p.parent] if p.parent is not None else None
        if lazy and not (parent is not None and parent.detail.get("lazy_bytes")):
            lines.append(f"lazy load: {p.name} — {format_size(lazy)} of the mapped weights "
                         f"{not_in_ram}")
    lines += [m.name for m in rec.marks if m.name.startswith("arrived on first use")]
    return lines


def family(name: str) -> str:
    """The name a repeated phase shares with its siblings: every number becomes ``#``.

    Example:
        >>> family("step 12"), family("shard 3/20")
        ('step #', 'shard #/#')
    """
    return _NUMBER.sub("#", name)


@dataclass(frozen=True)
class Stats:
    """count / min / median / max of one figure over a group's phases (``None`` values are
    left out; ``median`` is the middle value, the mean of the two middle ones for an even
    count).

    Example:
        >>> Stats.of([3, None, 1, 2])
        Stats(count=3, min=1, median=2, max=3)
    """

    count: int
    min: float | None
    median: float | None
    max: float | None

    @classmethod
    def of(cls, values: list[int | None] | list[float | None]) -> Stats:
        """The statistics of ``values`` (``None`` skipped)."""
        vals = [v for v in values if v is not None]
        if not vals:
            return cls(0, None, None, None)
        return cls(len(vals), min(vals), statistics.median(vals), max(vals))


@dataclass(frozen=True)
class PhaseGroup:
    """A run of consecutive sibling phases of one :func:`family` (``step 1 … step 800``).

    ``members`` are the repeated phases themselves; ``rows`` are the members with the phases
    nested in them, in recorded order (what the group expands to).

    Example:
        >>> from bigviz.data.recording import Phase
        >>> rec = Recording(phases=[Phase(f"step {k}", k, k + 1, ram_peak=10 * k)
        ...                         for k in range(1, 7)])
        >>> g = grouped(phase_rows(rec))[0]
        >>> g.label, g.count, g.ram_peak.median
        ('step 1 … step 6', 6, 35.0)
    """

    family: str
    members: tuple[PhaseRow, ...]
    rows: tuple[PhaseRow, ...]

    @property
    def count(self) -> int:
        """How many phases were folded."""
        return len(self.members)

    @property
    def depth(self) -> int:
        """The members' nesting depth."""
        return self.members[0].depth

    @property
    def label(self) -> str:
        """``"first … last"`` (the name alone when every member has the same name)."""
        first, last = self.members[0].name, self.members[-1].name
        return first if first == last else f"{first} … {last}"

    @property
    def start(self) -> float:
        """When the first member started."""
        return self.members[0].start

    @property
    def end(self) -> float | None:
        """When the last member ended (``None`` while it is open)."""
        return self.members[-1].end

    @property
    def duration(self) -> Stats:
        """The members' durations (s)."""
        return Stats.of([m.duration for m in self.members])

    @property
    def ram_peak(self) -> Stats:
        """The members' peak RSS (bytes)."""
        return Stats.of([m.ram_peak for m in self.members])

    @property
    def ram_growth(self) -> Stats:
        """The members' growth (bytes)."""
        return Stats.of([m.ram_growth for m in self.members])

    @property
    def how(self) -> str:
        """``"exact"``, ``"sampled"`` or ``"exact for k of n"``."""
        exact = sum(m.ram_peak_exact for m in self.members)
        if exact == self.count:
            return "exact"
        return "sampled" if exact == 0 else f"exact for {exact} of {self.count}"

    @property
    def errors(self) -> list[PhaseRow]:
        """The members (and nested phases) that failed."""
        return [r for r in self.rows if r.error]


class _Nested(Protocol):
    """What :func:`repeats` reads of a phase (a Phase or a PhaseRow)."""

    @property
    def name(self) -> str: ...

    @property
    def depth(self) -> int: ...

    @property
    def parent(self) -> int | None: ...


def repeats(phases: Sequence[_Nested], *, min_repeat: int = MIN_REPEAT) -> list[list[int]]:
    """The indices of ``phases`` in display order, one list per item: a single phase
    ``[i]``, or a run of at least ``min_repeat`` consecutive siblings of one :func:`family`
    with the phases nested in them (the first index of each member's subtree is a member).
    Works on :class:`~bigviz.data.recording.Phase` and :class:`PhaseRow` alike; linear in
    the number of phases.

    Example:
        >>> from bigviz.data.recording import Phase
        >>> repeats([Phase("init", 0)] + [Phase(f"step {k}", k) for k in range(1, 6)])
        [[0], [1, 2, 3, 4, 5]]
    """
    n = len(phases)
    # end of each phase's subtree: nested phases follow their parent in recorded order
    ends = list(range(1, n + 1))
    stack: list[int] = []
    for i, r in enumerate(phases):
        while stack and phases[stack[-1]].depth >= r.depth:
            ends[stack.pop()] = i
        stack.append(i)
    for i in stack:
        ends[i] = n
    rank = [getattr(r, "rank", None) for r in phases]
    out: list[list[int]] = []
    i = 0
    while i < n:
        r = phases[i]
        key = family(r.name)
        count = 1
        k = ends[i]
        while (k < n and phases[k].depth == r.depth and phases[k].parent == r.parent
               and rank[k] == rank[i] and family(phases[k].name) == key):
            count += 1
            k = ends[k]
        if count >= max(2, min_repeat):
            out.append(list(range(i, k)))
            i = k
        else:
            out.append([i])
            i += 1
    return out


def grouped(rows: list[PhaseRow], *, min_repeat: int = MIN_REPEAT) -> list[PhaseRow | PhaseGroup]:
    """``rows`` with every run of at least ``min_repeat`` consecutive sibling phases of one
    :func:`family` folded into a :class:`PhaseGroup` (with the phases nested in them).

    Everything else is kept as it is, in order; a phase inside a group is only in the group.
    Linear in the number of phases (:func:`repeats`).

    Args:
        rows: phase rows in recorded order (:func:`phase_rows`).
        min_repeat: the shortest run folded.

    Returns:
        PhaseRows and PhaseGroups, in recorded order.

    Example:
        >>> from bigviz.data.recording import Phase
        >>> rec = Recording(phases=[Phase("init", 0, 1)]
        ...                 + [Phase(f"step {k}", k, k + 1) for k in range(1, 9)])
        >>> [getattr(x, "label", getattr(x, "name", "")) for x in grouped(phase_rows(rec))]
        ['init', 'step 1 … step 8']
    """
    out: list[PhaseRow | PhaseGroup] = []
    for idx in repeats(rows, min_repeat=min_repeat):
        if len(idx) == 1:  # a single phase (a group has at least two)
            out.append(rows[idx[0]])
            continue
        depth = rows[idx[0]].depth
        members = tuple(rows[i] for i in idx if rows[i].depth == depth)
        out.append(PhaseGroup(family(members[0].name), members, tuple(rows[i] for i in idx)))
    return out
