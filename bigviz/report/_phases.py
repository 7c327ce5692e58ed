"""The HTML report's phase tables: one row per phase (a loop's repeated phases folded into
one row that expands to each), and a distributed run's tables per rank.

The rows are :mod:`bigviz.tables.phases`; this module only writes them as HTML, every
string escaped.
"""

from __future__ import annotations

from collections.abc import Callable

from bigviz.data.recording import Recording
from bigviz.tables.phases import PhaseGroup, PhaseRow, Stats, grouped, lanes, phase_rows
from bigviz.units import format_size as size

from ._common import escape as e

__all__ = ["num_cell", "phase_table", "rank_phase_tables"]


def num_cell(text: str, value: float | int | None) -> str:
    """A numeric table cell: ``text`` shown, ``value`` in ``data-v`` for sorting.

    Example:
        >>> num_cell("1.5 s", 1.5)
        '<td class="num" data-v="1.5">1.5 s</td>'
    """
    v = "" if value is None else repr(value)
    return f'<td class="num" data-v="{e(v)}">{e(text)}</td>'


def phase_table(rec: Recording) -> str:
    """The phases of ``rec`` as a table (a note where none were recorded).

    Example:
        >>> phase_table(Recording())
        '<p class=note>No phases were recorded.</p>'
    """
    phases = phase_rows(rec)
    if not phases:
        return "<p class=note>No phases were recorded.</p>"
    has_vram = any(p.vram for p in phases)
    head = (
        "<tr><th>phase</th><th class=num>start</th><th class=num>duration</th>"
        "<th class=num>RSS at start</th><th class=num>peak RSS</th><th class=num>growth</th>"
        "<th class=num>peak anonymous</th><th class=num>peak file-backed</th>"
        + ("<th class=num>peak VRAM</th>" if has_vram else "")
        + "<th>peak is</th></tr>"
    )
    # a loop's repeated phases (step 1 … step 800) are one row that expands to each
    items = grouped(phases)
    rows = [_phase_row(p, has_vram) if isinstance(p, PhaseRow) else _group_rows(p, has_vram)
            for p in items]
    folded = (" Repeated phases are one row: their count and the min / median / max of their "
              "peaks; click it to list every phase with its own peak.")
    return (
        f"<table class=phases><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
        "<p class=note>Absolute bytes. <em>exact</em>: the kernel's high-water mark (VmHWM), "
        "reset at the phase start; <em>sampled</em>: the highest sample."
        + (folded if len(items) < len(phases) else "") + "</p>"
    )


def rank_phase_tables(rec: Recording) -> str:
    """Rank 0's phases in view, every other rank's folded away.

    Example:
        >>> # rank_phase_tables(run.recording)   # a distributed run: one table per rank
    """
    out = []
    for i, (rank, lane) in enumerate(lanes(rec)):
        table = phase_table(lane)
        if i == 0:
            out.append(f"<h4>Phases of rank {rank}</h4>{table}")
        else:
            out.append(f"<details><summary>Phases of rank {rank}</summary>{table}</details>")
    return "".join(out)


def _phase_row(p: PhaseRow, has_vram: bool) -> str:
    indent = f' style="padding-left:{8 + 16 * p.depth}px"' if p.depth else ""
    name = e(p.name)
    if p.auto:
        name += ' <span class="note">(auto)</span>'
    if p.error:
        name += f' <span class="o-bad">✕ {e(p.error)}</span>'
    dur = p.duration
    vram = ""
    if has_vram:
        text = ", ".join(f"{e(dev)}: {e(size(v))}" for dev, v in p.vram.items()) or "—"
        vram = f'<td class="num">{text}</td>'
    return (
        f"<tr><td{indent}>{name}</td>"
        f"{num_cell(f'{p.start:.3f} s', p.start)}"
        f"{num_cell('open' if dur is None else f'{dur:.3f} s', dur)}"
        f"{num_cell(size(p.ram_start), p.ram_start)}"
        f"{num_cell(size(p.ram_peak), p.ram_peak)}"
        f"{num_cell(size(p.ram_growth), p.ram_growth)}"
        f"{num_cell(size(p.ram_anon_peak), p.ram_anon_peak)}"
        f"{num_cell(size(p.ram_file_peak), p.ram_file_peak)}"
        f"{vram}"
        f"<td>{p.how}</td></tr>"
    )


def _group_rows(g: PhaseGroup, has_vram: bool) -> str:
    """A group of repeated phases: one row of count and min / median / max, then a row that
    expands (``<details>``) to every phase with its exact peak (a compact table: 10,000
    phases stay a few MB)."""
    indent = f' style="padding-left:{8 + 16 * g.depth}px"' if g.depth else ""
    name = f'{e(g.label)} <span class="note">×{g.count}</span>'
    if g.errors:
        name += f' <span class="o-bad">✕ {len(g.errors)} failed</span>'
    peak, growth, dur = g.ram_peak, g.ram_growth, g.duration
    end = g.end
    span = None if end is None else end - g.start

    def stats(st: object, fmt: Callable[[float], str]) -> str:
        if not isinstance(st, Stats) or st.min is None or st.median is None:
            return ""
        return (f'<br><span class="note">min {e(fmt(st.min))} · median '
                f'{e(fmt(st.median))}</span>')

    def big(v: float) -> str:
        return size(round(v))

    def sec(v: float) -> str:
        return f"{v:.3f} s"

    anon = max((m.ram_anon_peak for m in g.members if m.ram_anon_peak is not None), default=None)
    file = max((m.ram_file_peak for m in g.members if m.ram_file_peak is not None), default=None)
    vram = ""
    if has_vram:
        devs: dict[str, int] = {}
        for m in g.members:
            for dev, v in m.vram.items():
                devs[dev] = max(devs.get(dev, 0), v)
        text = ", ".join(f"{e(dev)}: max {e(size(v))}" for dev, v in devs.items()) or "—"
        vram = f'<td class="num">{text}</td>'
    max_peak = None if peak.max is None else round(peak.max)
    max_growth = None if growth.max is None else round(growth.max)
    cells = (
        f'<tr class="group"><td{indent}>{name}</td>'
        f"{num_cell(f'{g.start:.3f} s', g.start)}"
        f'<td class="num" data-v="{e(repr(span) if span is not None else "")}">'
        f"{'open' if span is None else f'{span:.3f} s'}{stats(dur, sec)}</td>"
        f"{num_cell(size(g.members[0].ram_start), g.members[0].ram_start)}"
        f'<td class="num" data-v="{"" if max_peak is None else max_peak}">max '
        f"{e(size(max_peak))}{stats(peak, big)}</td>"
        f'<td class="num" data-v="{"" if max_growth is None else max_growth}">max '
        f"{e(size(max_growth))}{stats(growth, big)}</td>"
        f"{num_cell(size(anon), anon)}{num_cell(size(file), file)}{vram}<td>{e(g.how)}</td></tr>"
    )
    body = []
    for r in g.rows:
        pad = f' style="padding-left:{4 + 14 * (r.depth - g.depth)}px"' if r.depth > g.depth else ""
        bad = f' <span class="o-bad">✕ {e(r.error)}</span>' if r.error else ""
        dur_text = "open" if r.duration is None else f"{r.duration:.3f} s"
        body.append(
            f"<tr><td{pad}>{e(r.name)}{bad}</td><td>{r.start:.3f} s</td><td>{dur_text}</td>"
            f'<td data-v="{"" if r.ram_peak is None else r.ram_peak}">{e(size(r.ram_peak))}</td>'
            f"<td>{e(size(r.ram_growth))}</td><td>{r.how}</td></tr>"
        )
    ncols = 10 if has_vram else 9
    members = (
        f'<tr class="members"><td colspan={ncols}><details><summary>each of the {g.count} '
        f"phases {e(g.label)}</summary><table class=members><thead><tr><th>phase</th>"
        "<th>start</th><th>duration</th><th>peak RSS</th><th>growth</th><th>peak is</th></tr>"
        f"</thead><tbody>{''.join(body)}</tbody></table></details></td></tr>"
    )
    return cells + members
