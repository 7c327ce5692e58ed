"""How an advice reads: a text table for the terminal, HTML for the dashboard, plain
data for ``--json``. Renderers only: every figure comes from the Advice.

Example:
    >>> from bigviz.advisor._rank import Candidate
    >>> rows([Candidate("meta", ram_peak=10**8, formula="M", seconds=(0.1, 0.2))])[0][1]
    'meta'
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from bigviz.advisor._rank import Candidate
from bigviz.units import format_size

__all__ = ["HEADERS", "RIGHT", "format_table", "html_table", "rows", "seconds_text"]

HEADERS = ["fits", "strategy", "device map", "shard", "peak RAM", "with baseline", "VRAM",
           "time (estimate)", "RAM formula", "time formula"]
#: right-aligned (numeric) columns of the text table
RIGHT = [4, 5, 6, 7]


def format_table(headers: Sequence[str], body: Sequence[Sequence[str]], *,
                 right: Sequence[int] = ()) -> str:
    """A plain-text table (the command line's layout; the core keeps its own copy so it
    never imports the command-line layer).

    Example:
        >>> print(format_table(["a", "b"], [["x", "1"]], right=[1]))
        a  b
        -  -
        x  1
    """
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                         for i, c in enumerate(cells)).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths),
                      *(line(r) for r in body)])


def seconds_text(c: Candidate) -> str:
    """``"0.1–0.2 s"``, ``"(lazy) 0.1–0.2 s"`` or ``"?"``."""
    if c.seconds is None:
        return "?"
    lo, hi = c.seconds
    return ("lazy, " if c.lazy else "") + f"{_secs(lo)}–{_secs(hi)} s"


def _secs(x: float) -> str:
    # two significant digits below 10 s: a 0.05 s load is not "0.1"
    return f"{x:.2g}" if x < 10 else f"{x:.0f}"


def _mb(n: int | None) -> str:
    return format_size(n, binary=False)


def _range(c: Candidate) -> str:
    if c.ram_low is None or c.ram_high is None or c.ram_low == c.ram_high:
        return _mb(c.ram_peak)
    return f"{_mb(c.ram_low)}–{_mb(c.ram_high)}"


def rows(candidates: Sequence[Candidate]) -> list[list[str]]:
    """One text row per candidate, in the order given (:data:`HEADERS`)."""
    out = []
    for c in candidates:
        shard = "as saved" if c.shard_size is None else _mb(c.shard_size)
        dm = c.device_map
        if c.max_memory:
            dm += " " + ",".join(f"{k}≤{_mb(v)}" for k, v in c.max_memory.items())
        if c.placement.get("disk"):
            dm += f" (disk {_mb(c.placement['disk'])})"
        vram = ", ".join(f"{d} {_mb(b)}" for d, b in sorted(c.vram.items()) if b) or "—"
        out.append(["yes" if c.fits else "no", c.strategy, dm,
                    f"{shard} (S {_mb(c.largest_shard)})", _range(c), _mb(c.ram_total),
                    vram, seconds_text(c), c.range_formula or c.formula, c.time_formula])
    return out


def html_table(candidates: Sequence[Candidate], *, pick: Candidate | None) -> str:
    """The candidates as an HTML table (the dashboard's Advise output); the pick's row
    is bold, rows that do not fit are grey with the reason as a tooltip."""
    e = html.escape
    head = "".join(f"<th style='text-align:left;padding:2px 6px'>{e(h)}</th>"
                   for h in HEADERS)
    body = []
    for c, row in zip(candidates, rows(candidates), strict=True):
        style = "font-weight:bold" if c is pick else ("color:#888" if not c.fits else "")
        cells = "".join(f"<td style='padding:2px 6px'>{e(x)}</td>" for x in row)
        body.append(f"<tr class='bigviz-advice-row' data-fits='{str(c.fits).lower()}' "
                    f"data-strategy='{e(c.strategy)}' title='{e(c.why or 'fits')}' "
                    f"style='{style}'>{cells}</tr>")
    return (f"<table class='bigviz-advice' style='border-collapse:collapse;font-size:12px'>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
