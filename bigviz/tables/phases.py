"""The phase table: one :class:`PhaseRow` per recorded phase, the cells every front end
formats (HTML, Markdown and CSV reports, the notebook table, the terminal).

Sizes are absolute bytes, as the recorder measured them; ``exact`` peaks come from the
kernel's high-water mark (``VmHWM``) reset at the phase start, the others are the highest
sample. A distributed run's phases are per rank: :func:`lanes` lists the recordings
whose phases to show (every rank's own, or the recording itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bigviz.data.recording import Recording

__all__ = ["PhaseRow", "lanes", "phase_rows"]


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
