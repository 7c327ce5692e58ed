"""The HTML report: one self-contained file that opens offline in any browser.

Plots are inline SVG, styles inline, and the only script (column sorting) is allowed by
its hash in a Content-Security-Policy that forbids every network request and any other
script: even a string that slipped through escaping could neither run nor fetch.
Every user-supplied string goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Callable
from typing import Any

import bigviz
from bigviz.data.recording import Recording
from bigviz.data.result import ALLOWANCE, RunResult, Sweep
from bigviz.tables.findings import CellFacts, cell_of, cell_run, failures, headline, is_cell
from bigviz.tables.labels import outcome_text, percent, shard_text
from bigviz.tables.ranks import rank_rows
from bigviz.tables.runs import RunRow, results_of, run_rows
from bigviz.units import format_size as size

from ._common import CELL_NOTE, Reportable, environment, recordings_of, title_of
from ._common import escape as e
from ._phases import num_cell as _num
from ._phases import phase_table, rank_phase_tables

_SORT_JS = (
    "document.querySelectorAll('table.sortable th').forEach(function(th){"
    "th.addEventListener('click',function(){"
    "var table=th.closest('table'),body=table.tBodies[0],i=th.cellIndex;"
    "var asc=th.getAttribute('aria-sort')!=='ascending';"
    "table.querySelectorAll('th').forEach(function(h){h.removeAttribute('aria-sort');});"
    "th.setAttribute('aria-sort',asc?'ascending':'descending');"
    "var rows=Array.prototype.slice.call(body.rows);"
    "rows.sort(function(a,b){"
    "var x=a.cells[i].getAttribute('data-v'),y=b.cells[i].getAttribute('data-v');"
    "var c=(x!==null&&y!==null&&x!==''&&y!=='')?parseFloat(x)-parseFloat(y):"
    "a.cells[i].textContent.localeCompare(b.cells[i].textContent);"
    "return asc?c:-c;});"
    "rows.forEach(function(r){body.appendChild(r);});});});"
)
_SORT_HASH = base64.b64encode(hashlib.sha256(_SORT_JS.encode()).digest()).decode()
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    f"script-src 'sha256-{_SORT_HASH}'; base-uri 'none'; form-action 'none'"
)

_CSS = """
:root{--ink:#1f2933;--muted:#5f6b7a;--line:#d9dee5;--bg:#fff;--soft:#f5f7fa;--bad:#b42318;
--good:#067647;--accent:#3b75af}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:1080px;margin:0 auto;padding:28px 24px 60px}
h1{font-size:1.6rem;margin:0 0 4px}h2{font-size:1.2rem;margin:36px 0 10px;
border-bottom:1px solid var(--line);padding-bottom:4px}h3{font-size:1.05rem;margin:22px 0 8px}
h4{font-size:.95rem;margin:16px 0 6px}
.sub{color:var(--muted);margin:0 0 18px}
.finding{font-size:1.15rem;background:#eef4fb;border-left:4px solid var(--accent);
padding:12px 16px;margin:16px 0;border-radius:4px}
.warn{background:#fef3f2;border-left:4px solid var(--bad);padding:10px 16px;border-radius:4px}
.warn ul{margin:4px 0;padding-left:20px}
table{border-collapse:collapse;width:100%;font-size:.86rem;margin:8px 0 4px}
th,td{padding:5px 7px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600;white-space:nowrap}
table.sortable th{cursor:pointer}table.sortable th:hover{background:#e9edf2}
th[aria-sort=ascending]::after{content:" ▲";font-size:.7em}
th[aria-sort=descending]::after{content:" ▼";font-size:.7em}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.pred{white-space:normal;min-width:9em}.scroll{overflow-x:auto}
tbody tr:hover{background:#fafbfc}
.o-ok{color:var(--good);font-weight:600}.o-bad{color:var(--bad);font-weight:600}
.off{color:var(--bad);font-weight:600}
figure{margin:14px 0 22px}figcaption{color:var(--muted);font-size:.85rem;margin-top:2px}
figure svg{width:100%;height:auto;display:block}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;font-size:.9rem;margin:6px 0}
.facts dt{color:var(--muted)}.facts dd{margin:0;word-break:break-word}
pre{background:var(--soft);padding:10px 12px;border-radius:4px;overflow-x:auto;font-size:.82rem;
white-space:pre-wrap;word-break:break-word}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace}
.note{color:var(--muted);font-size:.82rem}
details>summary{cursor:pointer;font-weight:600;margin:8px 0}
table.members{margin:0 0 6px;font-size:.8rem}tr.group td{border-bottom:0}
table.members td+td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
footer{color:var(--muted);font-size:.8rem;margin-top:40px}
"""


def _outcome(outcome: str) -> str:
    cls = "o-ok" if outcome == "ok" else "o-bad"
    return f'<span class="{cls}">{e(outcome_text(outcome))}</span>'


def _summary_table(rows: list[RunRow], anchors: list[str]) -> str:
    # a column that is the same for every run is said once above the table, so the
    # columns that differ get the width
    optional: dict[str, Callable[[RunRow], str]] = {
        "shard size": lambda r: shard_text(r.shard_size, r.as_saved),
        "format": lambda r: r.format or "—",
        "device map": lambda r: r.device_map or "cpu",
        "ranks": lambda r: "1 process" if r.nproc is None else str(r.nproc),
    }
    if any(r.cache for r in rows):  # issue 17: cold or warm, measured
        optional["page cache"] = lambda r: r.cache or "—"
    shown = {k: len({f(r) for r in rows}) > 1 for k, f in optional.items()}
    common = [f"{k} {f(rows[0])}" for k, f in optional.items() if rows and not shown[k]]
    head = "<tr><th>strategy</th>"
    head += "<th class=num>shard size</th>" if shown["shard size"] else ""
    head += "<th>format</th>" if shown["format"] else ""
    head += "<th>device map</th>" if shown["device map"] else ""
    head += "<th class=num>ranks</th>" if shown["ranks"] else ""
    head += "<th>page cache</th>" if shown.get("page cache") else ""
    head += (
        "<th class=num>peak RAM</th><th class=num>anonymous</th>"
        "<th class=num>file-backed</th><th class=num>peak VRAM</th><th class=num>predicted</th>"
        "<th class=num title='measured peak divided by the predicted peak'>vs predicted</th>"
        "<th class=num>time</th><th>outcome</th></tr>"
    )
    body = []
    for row, anchor in zip(rows, anchors, strict=True):
        ratio = row.vs_predicted
        ratio_cell = (
            '<td class="num" data-v="">—</td>'
            if ratio is None
            else f'<td class="num{" off" if row.off_prediction else ""}" data-v="{ratio!r}" '
            f'title="{e(row.verdict or "measured ÷ predicted")}">{ratio:.2f}×'
            + (f'<br><span class="note">{e(row.verdict)}</span>' if row.off_prediction
               else "") + "</td>"
        )
        shown_formula = row.range_formula or row.formula
        formula = f'<br><span class="note">{e(shown_formula)}</span>' if shown_formula else ""
        pv = "" if row.predicted is None else repr(row.predicted)
        cells = [f'<td><a href="#{anchor}" title="{e(row.label)}">{e(row.strategy)}</a></td>']
        if shown["shard size"]:
            cells.append(_num(shard_text(row.shard_size, row.as_saved), row.shard_size))
        if shown["format"]:
            cells.append(f"<td>{e(row.format or '—')}</td>")
        if shown["device map"]:
            cells.append(f"<td>{e(row.device_map or 'cpu')}</td>")
        if shown["ranks"]:
            cells.append(_num(optional["ranks"](row), row.nproc))
        if shown.get("page cache"):
            cells.append(f"<td>{e(row.cache or '—')}</td>")
        read_note = ("" if row.read_bytes is None else
                     f'<br><span class="note" title="read from storage">{e(row.read_text)}'
                     "</span>")
        cells += [
            _num(size(row.ram_peak), row.ram_peak),
            _num(size(row.ram_anon_peak), row.ram_anon_peak),
            _num(size(row.ram_file_peak), row.ram_file_peak),
            _num(size(row.vram_peak), row.vram_peak),
            f'<td class="num pred" data-v="{pv}">{e(row.predicted_range)}{formula}</td>',
            ratio_cell,
            f'<td class="num" data-v="{row.seconds!r}">{e(f"{row.seconds:.2f} s")}'
            f"{read_note}</td>",
            f'<td data-v="">{_outcome(row.outcome)}</td>',
        ]
        body.append(f"<tr>{''.join(cells)}</tr>")
    note = f"<p class=note>All runs: {e(' · '.join(common))}.</p>" if common else ""
    if any(r.nproc is not None for r in rows):
        note += (
            "<p class=note>Distributed runs: <em>peak RAM</em> is the node total, the sum of "
            "the ranks' PSS (a page shared by N ranks counts 1/N in each), above the sum of "
            "their baselines; <em>anonymous</em> is summed over ranks, <em>file-backed</em> "
            "is the largest rank's (the ranks map the same files).</p>"
        )
    return (
        f'{note}<div class="scroll"><table class="sortable summary"><thead>{head}</thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
        + ("<p class=note><em>time</em>: under it, the bytes the run's phases read from "
           "storage (<code>/proc/PID/io</code> read_bytes: page-cache misses) and their rate; "
           "a warm run reads next to nothing.</p>"
           if any(r.read_bytes is not None for r in rows) else "")
        + "<p class=note>Peaks are bytes above each run's baseline (its RSS after imports, "
        "before the first phase); <em>predicted</em> is the range the strategy's terms allow; "
        "<em>vs predicted</em> is measured ÷ the nominal formula, in red with the bound "
        "crossed when the peak lies outside the range by more than the fixed allowance "
        f"({size(ALLOWANCE)} per process). Click a column to sort.</p>"
    )


def _rank_table(run: RunResult | Recording) -> str:
    """One row per rank: what each rank held, above its own baseline."""
    rows = rank_rows(run)
    if not rows:
        return ""
    hosts = len({r.host for r in rows}) > 1
    head = (
        "<tr><th class=num>rank</th>"
        + ("<th>host</th>" if hosts else "")
        + "<th class=num>peak RSS</th><th class=num>peak anonymous</th>"
        "<th class=num>peak file-backed</th><th class=num>USS</th><th class=num>PSS</th>"
        "<th>phase reached</th><th>status</th></tr>"
    )
    body = []
    for r in rows:
        status = (
            f'<span class="o-ok">{e(r.status)}</span>'
            if r.status == "ok"
            else f'<span class="o-bad">{e(r.status)}</span>'
        )
        body.append(
            f'<tr data-rank="{r.rank}">'
            + _num(str(r.rank), r.rank)
            + (f"<td>{e(r.host)}</td>" if hosts else "")
            + _num(size(r.ram_peak) + ("" if r.ram_peak_exact else " (sampled)"), r.ram_peak)
            + _num(size(r.anon), r.anon)
            + _num(size(r.file), r.file)
            + _num(size(r.uss), r.uss)
            + _num(size(r.pss), r.pss)
            + f"<td>{e(r.phase_reached or '—')}</td><td>{status}</td></tr>"
        )
    return (
        f'<h4>Per rank</h4><div class="scroll"><table class="sortable ranks"><thead>{head}'
        f"</thead><tbody>{''.join(body)}</tbody></table></div>"
        "<p class=note>Bytes above each rank's own baseline. <em>peak RSS</em> is exact "
        "(VmHWM) unless marked; <em>USS</em> is memory only that rank holds, <em>PSS</em> "
        "its proportional share (shared pages split between the ranks that map them): the "
        "larger of the sampled peak and the snapshot taken while every rank held its "
        "weights. The ranks' PSS add up to the node total; their RSS do not.</p>"
    )


def _facts(pairs: list[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in pairs)
    return f'<dl class="facts">{items}</dl>'


def _run_facts(r: RunResult) -> list[tuple[str, str]]:
    pairs = [
        ("model", f"{r.model} ({size(r.model_bytes)})" if r.model_bytes else r.model or "—"),
        ("shard size", shard_text(r.shard_size, r.params.get("as_saved"))),
        ("format", r.format or "—"),
        ("device map", r.device_map or "cpu"),
        ("baseline RSS", size(r.baseline)),
        ("peak RAM above baseline", size(r.ram_peak)),
    ]
    if r.fixed_cost:  # issue 13 item 6: what the worker cost the machine beside the growth
        pairs.append(("fixed cost of the worker", (
            f"{size(r.fixed_cost.get('total'))}: {size(r.fixed_cost.get('private'))} private "
            f"(copied from the fork server on write, or imported after the fork: "
            f"{size(r.fixed_cost.get('after_fork'))}) + {size(r.fixed_cost.get('page_tables'))}"
            " page tables, before the first phase")))
    if isinstance(r.params.get("ram_budget"), int) and not r.recording.ranks:
        pairs.append(("RAM budget", f"{size(r.params['ram_budget'], binary=False)} "
                                    "of RSS, baseline included"))
    if r.recording.ranks:
        # a distributed run's figures are node totals of PSS, not one process's RSS
        n = len(r.recording.ranks)
        pairs[-2:] = [
            ("ranks", str(r.params.get("nproc", n))),
            (f"baseline (Σ PSS of {n} ranks)", size(r.baseline)),
            ("node RAM above baseline (Σ PSS)", size(r.ram_peak)),
        ]
    pairs.append(("time", f"{r.seconds:.2f} s"))
    pairs += _cache_facts(r)
    if r.predicted is not None:
        low, high = r.predicted.bounds
        span = size(low) if low == high else f"{size(low)} … {size(high)}"
        pred = f"{span} = {r.predicted.range_formula}"
        if r.ram_peak is not None and r.predicted.ram_peak:
            pred += (f" (measured {percent(r.ram_peak / r.predicted.ram_peak - 1)} vs "
                     f"{r.predicted.formula})")
        pairs.append(("predicted", pred))
        if r.predicted.width:
            pairs.append(("why this range", r.predicted.width))
        if r.checks.prediction is not None and r.checks.prediction.says:
            pairs.append(("verdict", r.checks.prediction.says))
        if r.predicted.notes:
            pairs.append(("prediction notes", r.predicted.notes))
    if r.vram_peak:
        pairs.append(("peak VRAM", ", ".join(f"{d}: {size(v)}" for d, v in r.vram_peak.items())))
    if r.phase_reached:
        pairs.append(("phase reached", r.phase_reached))
    if r.error:
        pairs.append(("error", r.error))
    warned = r.recording.meta.get("warnings") or []
    if warned:  # what the libraries warned during the run (the worker captured it)
        pairs.append(("warnings", " · ".join(map(str, warned))))
    return pairs


def _cache_facts(r: RunResult) -> list[tuple[str, str]]:
    """The page cache at the run's start and what each top-level phase read from storage
    (issue 17); nothing for a result that did not measure them."""
    pairs: list[tuple[str, str]] = []
    note = r.params.get("cache")
    if isinstance(note, dict) and note.get("text"):
        pairs.append(("page cache at start", str(note["text"])))
    reads = []
    for p in r.recording.phases:
        n = p.detail.get("read_bytes") if p.parent is None else None
        if isinstance(n, int):
            gbps = p.detail.get("read_gbps")
            rate = f", {gbps:.2f} GB/s" if isinstance(gbps, (int, float)) else ""
            reads.append(f"{p.name}: {size(n, binary=False)}{rate}")
    if reads:
        pairs.append(("read from storage", " · ".join(reads)))
    return pairs


def _cell_table(results: list[RunResult], anchors: list[str]) -> str:
    """The summary of profiled cells: each from its own start, none compared with another
    (no shard size, format or prediction: a cell is not a strategy run)."""
    head = (
        "<tr><th>cell</th><th class=num>RSS at start</th><th class=num>peak RAM</th>"
        "<th class=num>anonymous</th><th class=num>file-backed</th><th class=num>peak VRAM</th>"
        "<th class=num>time</th><th>outcome</th></tr>"
    )
    body = []
    for r, row, anchor in zip(results, run_rows(results), anchors, strict=True):
        body.append(
            f'<tr><td><a href="#{anchor}" title="{e(row.label)}">{e(row.strategy)}</a></td>'
            + _num(size(r.baseline or None), r.baseline or None)
            + _num(size(row.ram_peak), row.ram_peak)
            + _num(size(row.ram_anon_peak), row.ram_anon_peak)
            + _num(size(row.ram_file_peak), row.ram_file_peak)
            + _num(size(row.vram_peak), row.vram_peak)
            + _num(f"{row.seconds:.2f} s", row.seconds)
            + f'<td data-v="">{_outcome(row.outcome)}</td></tr>'
        )
    return (
        f'<div class="scroll"><table class="sortable summary cells"><thead>{head}</thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
        f"<p class=note>{e(CELL_NOTE)} Click a column to sort.</p>"
    )


def _cell_facts(r: RunResult, cell: CellFacts) -> list[tuple[str, str]]:
    pairs = []
    if cell.execution_count is not None:
        pairs.append(("cell", f"In [{cell.execution_count}]"))
    pairs += [
        ("RSS at the cell's start (baseline)", size(cell.baseline)),
        ("peak RSS", size(cell.peak) + (" (exact, VmHWM)" if cell.peak_exact else " (sampled)")),
        ("peak RAM above the start", size(r.ram_peak)),
        ("anonymous above the start", size(r.ram_anon_peak)),
        ("file-backed above the start", size(r.ram_file_peak)),
    ]
    if cell.kept is not None:
        kept = cell.kept
        pairs.append(("RSS at the cell's end",
                      f"{size(cell.end['rss'])} ({'+' if kept >= 0 else '−'}{size(abs(kept))})"))
    if r.vram_peak:
        pairs.append(("peak VRAM", ", ".join(f"{d}: {size(v)}" for d, v in r.vram_peak.items())))
    pairs.append(("time", f"{r.seconds:.2f} s"))
    if r.error:
        pairs.append(("error", r.error))
    return pairs


def _code(label: str, cell: CellFacts) -> str:
    """The cell's code, escaped and folded away."""
    if not cell.code:
        return "<p class=note>The cell's code was not recorded.</p>"
    n = f" In [{cell.execution_count}]" if cell.execution_count is not None else ""
    lines = cell.code.count("\n") + (not cell.code.endswith("\n"))
    return (
        f'<details class="cell-code"><summary>Code of {e(label)}{e(n)} '
        f'<span class="note">({lines} line{"s" if lines != 1 else ""})</span></summary>'
        f"<pre><code>{e(cell.code)}</code></pre></details>"
    )


def _run_details(r: RunResult) -> str:
    """Checks and parameters: useful to reproduce, too long to lead with."""
    pairs = [(f"checks.{k}", json.dumps(v, ensure_ascii=False))
             for k, v in r.checks.present().items()]
    pairs += [(f"parameters.{k}", json.dumps(v, ensure_ascii=False)) for k, v in r.params.items()]
    if not pairs:
        return ""
    return f"<details><summary>Checks and parameters</summary>{_facts(pairs)}</details>"


def _figure(svg_text: str, caption: str) -> str:
    return f"<figure>{svg_text}<figcaption>{e(caption)}</figcaption></figure>"


#: Samples per run in a report's interactive timeline (min/max per bucket above it).
REPORT_EXACT = 30_000


def _timeline(svg_text: str, caption: str, obj: Recording | RunResult, uid: str,
              views: list[str]) -> str:
    """A run's timeline as the interactive view (zoom, pan, hover readout; issue 15), the
    static SVG its fallback without JavaScript; the SVG alone when there is nothing to show."""
    from bigviz.plots.interactive import can_show, timeline_html

    if not can_show(obj):
        return _figure(svg_text, caption)
    views.append(uid)
    view = timeline_html(obj, max_points=REPORT_EXACT, uid=uid, fallback=svg_text, script=False)
    return f"<figure>{view}<figcaption>{e(caption)}</figcaption></figure>"


def render(obj: Reportable) -> str:
    """The whole HTML document for ``obj``."""
    from bigviz.plots import to_svg

    from ._figures import overview_figures, timeline_figure

    results = results_of(obj)
    timelines = recordings_of(obj)
    title = title_of(obj)
    parts: list[str] = []
    sub = []
    started = (
        obj.started_at
        if isinstance(obj, (Sweep, Recording))
        else (results[0].recording.started_at if results else "")
    )
    if started:
        sub.append(f"started {started}")
    sub.append(f"bigviz {bigviz.__version__}")
    parts.append(f"<header><h1>bigviz report: {e(title)}</h1>")
    parts.append(f'<p class="sub">{e(" · ".join(sub))}</p></header>')

    finding = headline(obj)
    if finding:
        parts.append(f'<p class="finding" id="finding">{e(finding)}</p>')
    failed = failures(results)
    if failed:
        items = "".join(f"<li>{e(f)}</li>" for f in failed)
        parts.append(f'<div class="warn"><strong>Did not finish</strong><ul>{items}</ul></div>')

    anchors = [f"run-{i + 1}" for i in range(len(timelines))]
    cells = bool(results) and all(map(is_cell, results))
    if results:
        parts.append("<h2>Summary</h2>")
        parts.append(_cell_table(results, anchors) if cells
                     else _summary_table(run_rows(results), anchors))

    n = 0
    views: list[str] = []  # interactive timelines: they need their script
    for slug, caption, make in overview_figures(obj):
        n += 1
        svg = to_svg(make(), salt=f"bigviz-{slug}-{n}")
        if slug == "timeline" and timelines:
            _l, rec0, run0 = timelines[0]
            parts.append(_timeline(svg, caption, rec0 if run0 is None else run0, f"{slug}-{n}",
                                     views))
        else:
            parts.append(_figure(svg, caption))

    single = len(timelines) == 1
    parts.append("<h2>Phases</h2>" if single else "<h2>Cells</h2>" if cells else "<h2>Runs</h2>")
    for i, (label, rec, run) in enumerate(timelines):
        parts.append(f'<section class="run" id="{anchors[i]}">')
        if not single:
            outcome = _outcome(run.outcome) if run is not None else ""
            parts.append(f"<h3>{e(label)} {outcome}</h3>")
        cell = cell_of(rec)
        if cell is not None:
            # a profiled cell: its own figures (from its start), then its code, folded
            parts.append(_facts(_cell_facts(run if run is not None else cell_run(rec), cell)))
            parts.append(_code(label, cell))
        elif run is not None:
            parts.append(_facts(_run_facts(run)))
            parts.append(_run_details(run))
        if not single:
            n += 1
            caption = "Per-rank lanes and node total" if rec.ranks else "Timeline"
            fig = timeline_figure(rec, run)
            svg = to_svg(fig, salt=f"bigviz-run-{n}")
            parts.append(_timeline(svg, caption, rec if run is None else run, f"run-{n}", views))
        if rec.ranks:
            parts.append(_rank_table(run if run is not None else rec))
        if rec.errors:
            items = "".join(f"<li>{e(x)}</li>" for x in rec.errors)
            parts.append(
                f'<div class="warn"><strong>Recorder warnings</strong><ul>{items}</ul></div>'
            )
        if rec.ranks:
            parts.append(rank_phase_tables(rec))
        else:
            parts.append(phase_table(rec))
        if rec.marks:
            marks = ", ".join(f"{m.name} at {m.t:.3f} s" for m in rec.marks)
            parts.append(f"<p class=note>Marks: {e(marks)}</p>")
        parts.append("</section>")

    parts.append("<h2>Environment</h2>")
    env = environment(obj)
    parts.append(_facts(env) if env else "<p class=note>No environment was recorded.</p>")
    if timelines:
        rec0 = timelines[0][1]
        if rec0.sources:
            rows = "".join(
                f"<tr><td>{e(s.name)}</td><td>{'yes' if s.available else 'no'}</td>"
                f"<td>{'exact' if s.exact else 'sampled'}</td>"
                f"<td>{e(', '.join(s.series) or '—')}</td><td>{e(s.reason or '')}</td></tr>"
                for s in rec0.sources
            )
            parts.append(
                "<h3>Memory sources</h3><table><thead><tr><th>source</th><th>available</th>"
                "<th>peaks</th><th>series</th><th>why not</th></tr></thead>"
                f"<tbody>{rows}</tbody></table>"
            )

    parts.append("<h2>Reproduce</h2>")
    command = obj.command if isinstance(obj, Sweep) else ""
    if not command and timelines:
        command = str(timelines[0][1].meta.get("command", ""))
    if command:
        parts.append(f"<pre><code>{e(command)}</code></pre>")
    config: dict[str, Any] = obj.config if isinstance(obj, Sweep) else {}
    if config:
        pairs = [(str(k), json.dumps(v, ensure_ascii=False)) for k, v in config.items()]
        parts.append(f"<h3>Configuration</h3>{_facts(pairs)}")
    if not command and not config:
        parts.append("<p class=note>No command or configuration was recorded.</p>")
    parts.append(
        f"<footer>Made by bigviz {e(bigviz.__version__)} · schema {e(obj_schema(obj))} · "
        "this file makes no network requests.</footer>"
    )
    script = _SORT_JS
    if views:
        from bigviz.plots.interactive import SCRIPT

        script += SCRIPT
    csp = _CSP.replace(_SORT_HASH, base64.b64encode(hashlib.sha256(script.encode()).digest())
                       .decode())
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(csp, quote=False)}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>bigviz report: {e(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main><script>{script}</script></body></html>\n"
    )


def obj_schema(obj: Reportable) -> int:
    """The schema version of ``obj`` (lists: their first run's)."""
    if isinstance(obj, (Recording, RunResult, Sweep)):
        return obj.schema
    return obj[0].schema if obj else 0
