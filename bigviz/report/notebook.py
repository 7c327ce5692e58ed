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
    "interactive_timeline",
    "link_html",
    "markdown_view",
    "phase_table_html",
    "relative_href",
    "results_table_html",
    "run_notes_html",
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


def timeline_figure(rec: Recording, run: RunResult | None = None, *,
                    theme: str = "light") -> Any:
    """The timeline figure of a recording or run at notebook resolution; a profiled cell's
    baseline is RSS at the cell's start (:func:`bigviz.report._figures.timeline_figure`);
    ``theme`` as :func:`bigviz.plots.timeline`'s (``"auto"``: JupyterLab's)."""
    from ._figures import timeline_figure as _timeline

    return _timeline(rec, run, max_points=None, theme=theme)


def interactive_timeline(obj: Recording | RunResult, *, max_points: int | None = None,
                         fallback: bool = True, theme: str = "light") -> Any:
    """The timeline of a recording or run as an interactive view for Jupyter: mouse-wheel
    zoom, drag to pan, double-click to reset, and a hover readout of time, phase, RSS,
    anonymous, file-backed and shared memory and VRAM at the nearest sample
    (:mod:`bigviz.plots.interactive`; no extension or widget needed).

    Args:
        obj: a Recording or a RunResult.
        max_points: samples kept exactly (min/max per bucket above it); default
            :data:`bigviz.plots.interactive.MAX_EXACT`.
        fallback: embed the static PNG, shown where the view's script cannot run (an
            untrusted notebook, a static render).
        theme: the fallback PNG's colours (:func:`timeline_figure`); the view itself
            follows JupyterLab's CSS variables.

    Returns:
        An object that displays itself (``_repr_html_``); its ``html`` is the fragment.

    Raises:
        ConfigError: for anything but a Recording or RunResult, or one without RSS samples.

    Example:
        >>> interactive_timeline(rec)  # doctest: +SKIP
    """
    from bigviz.plots import to_png
    from bigviz.plots.interactive import MAX_EXACT, InteractiveTimeline
    from bigviz.plots.sampling import as_recording

    rec, run = as_recording(obj)
    png = ""
    if fallback:
        fig = timeline_figure(rec, run, theme=theme)
        data = base64.b64encode(to_png(fig, dpi=100)).decode("ascii")
        png = (f'<img alt="{_e("timeline of " + (rec.name or "recording"))}" '
               f'style="max-width:100%" src="data:image/png;base64,{data}">')
    return InteractiveTimeline(obj, max_points=MAX_EXACT if max_points is None else max_points,
                               fallback=png)


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
        ratio = r.vs_predicted  # the one ratio every table shows (the HTML report's too)
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
    return (_table("bigviz-results", headers, rows, right=[2, 3, 4, 7, 9])
            + run_notes_html(results))


def run_notes_html(results: Sequence[RunResult]) -> str:
    """What the runs' libraries warned while they ran (the worker keeps it in
    ``recording.meta["warnings"]`` instead of printing it), one line each under the
    run's label; ``""`` when nothing warned.

    Example:
        >>> run_notes_html([RunResult("meta", "ok")])
        ''
    """
    items = []
    for r in results:
        for line in r.recording.meta.get("warnings") or []:
            items.append(f"<li><b>{_e(r.label)}</b>: {_e(line)}</li>")
    if not items:
        return ""
    return ('<details class="bigviz-notes" style="font:12px/1.4 system-ui,sans-serif">'
            f"<summary>notes: what the libraries warned during the runs ({len(items)})"
            f'</summary><ul style="margin:2px 0">{"".join(items)}</ul></details>')


def link_html(path: Path, *, cwd: Path | None = None) -> str:
    """A link to a written report, and its path.

    A report under the kernel's working folder (``cwd``, default: the current one, where
    the notebook is) gets a relative link: JupyterLab opens it in a tab of its own (the
    HTML viewer, the Markdown preview with its PNGs, the JSON viewer), and the file is
    not copied into the notebook. Elsewhere, a data: URL (works in Voila and offline) for
    a report up to :data:`MAX_DATA_LINK` bytes, except Markdown, whose PNGs a data: URL
    cannot carry: the path only.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = Path(d, "r.json")
        ...     _ = p.write_text("{}")
        ...     'download="r.json"' in link_html(p), 'href="r.json"' in link_html(p, cwd=Path(d))
        (True, True)
    """
    name = _e(path.name)
    where = _e(str(path.resolve()))
    rel = relative_href(path, cwd)
    if rel is not None:
        return (f'<a class="bigviz-report-link" href="{_e(rel)}" target="_blank" '
                f'title="{where}">{name}</a> <small>({_e(rel)})</small>')
    if path.suffix != ".md" and path.stat().st_size <= MAX_DATA_LINK:
        mime = {".html": "text/html", ".json": "application/json"}.get(
            path.suffix, "application/octet-stream")
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return (f'<a class="bigviz-report-link" download="{name}" target="_blank" '
                f'href="data:{mime};base64,{data}">{name}</a> <small>({where})</small>')
    return f'<span class="bigviz-report-link">{name}</span> <small>({where})</small>'


def relative_href(path: Path, cwd: Path | None = None) -> str | None:
    """``path`` as a URL relative to ``cwd`` (default: the working folder), ``None`` when
    it is not under it; what a notebook's links and images resolve against.

    Example:
        >>> relative_href(Path("/nb/reports/k.html"), Path("/nb"))
        'reports/k.html'
        >>> relative_href(Path("/tmp/k.html"), Path("/nb")) is None
        True
    """
    import urllib.parse

    base = (cwd or Path.cwd()).resolve()
    try:
        rel = path.resolve().relative_to(base)
    except ValueError:
        return None
    return urllib.parse.quote(rel.as_posix())


def markdown_view(path: Path, *, cwd: Path | None = None) -> str:
    """A Markdown report's text with its image links rebased for display in a notebook
    (``IPython.display.Markdown``): a notebook resolves them against its own folder, not
    the report's, so ``![..](k_files/peaks.png)`` of ``reports/k.md`` becomes
    ``reports/k_files/peaks.png``; a PNG outside the working folder is embedded.

    Raises:
        OSError: the report cannot be read.

    Example:
        >>> Markdown(markdown_view(Path("reports/k.md")))  # doctest: +SKIP
    """
    import re
    import urllib.parse

    folder = path.parent

    def rebase(m: re.Match[str]) -> str:
        target = m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:|^/|^#", target, flags=re.I):
            return m.group(0)  # absolute, a URL or an anchor: as it is
        image = folder / urllib.parse.unquote(target)
        rel = relative_href(image, cwd)
        if rel is None:
            if not image.is_file():
                return m.group(0)
            data = base64.b64encode(image.read_bytes()).decode("ascii")
            rel = f"data:image/png;base64,{data}"
        return f"![{m.group(1)}]({rel})"

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", rebase, path.read_text(encoding="utf-8"))
