"""HTML pieces for notebooks: the phase and run tables the magics and the dashboard show,
a profiled cell's summary line, and a link to a written report. They format the rows of
:mod:`bigviz.tables`; no widgets or IPython are needed, and matplotlib only to draw a
timeline (:func:`timeline_figure`).

Example:
    >>> from bigviz.data.result import RunResult
    >>> 'data-strategy="meta"' in results_table_html([RunResult("meta", "ok")])
    True
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bigviz.data.recording import Recording
from bigviz.data.result import RunResult
from bigviz.tables.findings import cell_sentence
from bigviz.tables.labels import vram_text
from bigviz.tables.phases import phase_rows
from bigviz.tables.runs import run_rows
from bigviz.units import format_size

from ._common import escape as _e

__all__ = [
    "MAX_DATA_LINK",
    "cell_summary_html",
    "link_html",
    "phase_table_html",
    "results_table_html",
    "timeline_figure",
]

#: The largest report :func:`link_html` embeds as a data: link (handy offline, in Voila or
#: a copied notebook, but not for huge files).
MAX_DATA_LINK = 8 * 2**20


def _table(cls: str, headers: Sequence[str], rows: Sequence[tuple[dict[str, str], list[str]]],
           *, right: Sequence[int] = ()) -> str:
    """An HTML table; cells are pre-escaped HTML, ``rows`` carry ``data-*`` attributes."""
    style = ("border-collapse:collapse;font:12px/1.4 system-ui,sans-serif;"
             "margin:4px 0 8px 0")
    th = "padding:2px 8px;border-bottom:1px solid #999;text-align:{}"
    td = "padding:1px 8px;border-bottom:1px solid #e4e4e4;text-align:{};white-space:nowrap"
    head = "".join(
        f'<th style="{th.format("right" if i in right else "left")}">{_e(h)}</th>'
        for i, h in enumerate(headers)
    )
    body = []
    for attrs, cells in rows:
        attr = "".join(f' data-{k}="{_e(v)}"' for k, v in attrs.items())
        tds = "".join(
            f'<td style="{td.format("right" if i in right else "left")}">{c}</td>'
            for i, c in enumerate(cells)
        )
        body.append(f"<tr{attr}>{tds}</tr>")
    return (f'<table class="{cls}" style="{style}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def phase_table_html(rec: Recording) -> str:
    """An HTML table of a recording's phases: timing, RAM at start, peak and growth.

    Nested phases are indented under their parent. "exact" peaks come from the kernel's
    high-water mark reset per phase; "sampled" ones from the timeline's samples.

    Example:
        >>> from bigviz.data.recording import Phase, Recording
        >>> rec = Recording(phases=[Phase("load", 0.0, 1.0, ram_start=0, ram_peak=2**20)])
        >>> 'data-phase="load"' in phase_table_html(rec)
        True
    """
    phases = phase_rows(rec)
    has_vram = any(p.vram for p in phases)
    headers = ["phase", "start s", "duration s", "RAM at start", "peak", "growth",
               "anon peak", "file peak", "how"] + (["VRAM peak"] if has_vram else [])
    rows = []
    for p in phases:
        pad = "&nbsp;" * 4 * p.depth
        name = pad + _e(p.name) + (" <i>(auto)</i>" if p.auto else "")
        if p.error:
            name += f' <span style="color:#c0392b">✗ {_e(p.error)}</span>'
        cells = [
            name,
            f"{p.start:.3f}",
            "open" if p.duration is None else f"{p.duration:.3f}",
            format_size(p.ram_start), format_size(p.ram_peak), format_size(p.ram_growth),
            format_size(p.ram_anon_peak), format_size(p.ram_file_peak),
            p.how,
        ]
        if has_vram:
            cells.append(_e(vram_text(p.vram)))
        rows.append(({"phase": p.name, "depth": str(p.depth)}, cells))
    if not rows:
        return ('<p class="bigviz-phases"><i>no phases: wrap steps in rec.phase("name"), or '
                "call torch.load / safetensors / load_state_dict with instrument on</i></p>")
    return _table("bigviz-phases", headers, rows, right=[1, 2, 3, 4, 5, 6, 7])


def cell_summary_html(rec: Recording) -> str:
    """A profiled cell's line: RSS at its start (the baseline), its peak and growth above
    that start, and what it kept at the end; ``""`` for a recording that is no cell.

    Example:
        >>> cell_summary_html(Recording())
        ''
    """
    text = cell_sentence(rec)
    return "" if text is None else f'<p class="bigviz-cell">{_e(text)}</p>'


def timeline_figure(rec: Recording, run: RunResult | None = None) -> Any:
    """The timeline figure of a recording or run at notebook resolution; a profiled cell's
    baseline is RSS at the cell's start (:func:`bigviz.report._figures.timeline_figure`)."""
    from ._figures import timeline_figure as _timeline

    return _timeline(rec, run, max_points=None)


def results_table_html(results: Sequence[RunResult]) -> str:
    """An HTML table of runs: measured peaks (above baseline) beside the prediction.

    One row per run (``data-strategy`` names it); "agrees" says whether measurement and
    prediction agree within the runner's tolerance.

    Example:
        >>> from bigviz.data.result import RunResult
        >>> 'data-strategy="meta"' in results_table_html([RunResult("meta", "ok")])
        True
    """
    headers = ["run", "outcome", "peak RAM", "anon", "file", "VRAM", "predicted",
               "measured ÷ predicted", "agrees", "time s"]
    rows = []
    for r in run_rows(results):
        check = r.prediction
        ratio = check.ratio if check is not None else None
        agrees = "" if check is None else ("yes" if check.agrees else "<b>NO</b>")
        outcome = _e(r.outcome) if r.ok else (
            f'<span style="color:#c0392b" title="{_e(r.error or "")}">{_e(r.outcome)}'
            f"{' in ' + _e(r.phase_reached) if r.phase_reached else ''}</span>")
        cells = [
            _e(r.full_label), outcome, format_size(r.ram_peak), format_size(r.ram_anon_peak),
            format_size(r.ram_file_peak),
            _e(vram_text(r.vram)),
            f"{format_size(r.predicted)} ({_e(r.formula)})" if r.predicted is not None else "—",
            "—" if ratio is None else f"{ratio:.2f}",
            agrees, f"{r.seconds:.2f}",
        ]
        rows.append(({"strategy": r.strategy, "outcome": r.outcome}, cells))
    return _table("bigviz-results", headers, rows, right=[2, 3, 4, 7, 9])


def link_html(path: Path) -> str:
    """A link to a written report: a data: URL (works in Voila and offline) and the path.

    Reports over :data:`MAX_DATA_LINK` bytes get the path only.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = Path(d, "r.json")
        ...     _ = p.write_text("{}")
        ...     'download="r.json"' in link_html(p)
        True
    """
    name = _e(path.name)
    where = _e(str(path.resolve()))
    if path.stat().st_size <= MAX_DATA_LINK:
        mime = {".html": "text/html", ".json": "application/json", ".md": "text/markdown"}.get(
            path.suffix, "application/octet-stream")
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return (f'<a class="bigviz-report-link" download="{name}" target="_blank" '
                f'href="data:{mime};base64,{data}">{name}</a> <small>({where})</small>')
    return f'<span class="bigviz-report-link">{name}</span> <small>({where})</small>'
