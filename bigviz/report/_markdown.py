"""The Markdown report: a pull-request comment, with PNG plots written beside it."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from bigviz._errors import ReportError
from bigviz.data.recording import Recording
from bigviz.data.result import RunResult, Sweep
from bigviz.tables.findings import CellFacts, cell_of, failures, headline, is_cell
from bigviz.tables.labels import outcome_text, short_labels
from bigviz.tables.phases import PhaseGroup, grouped, phase_rows
from bigviz.tables.ranks import rank_rows
from bigviz.tables.runs import results_of, run_rows
from bigviz.units import format_size as size

from ._common import (
    CELL_NOTE,
    Reportable,
    atomic_write_all,
    environment,
    recordings_of,
    sibling,
    title_of,
)


def cell(value: Any) -> str:
    """Text safe in a Markdown table cell: HTML escaped (GitHub renders raw HTML), pipes
    escaped, newlines folded, backticks neutralised."""
    text = html.escape(str(value), quote=False)
    text = text.replace("|", "\\|").replace("`", "'").replace("\r", " ").replace("\n", " ")
    return text


def _runs_table(obj: Reportable) -> list[str]:
    rows = run_rows(results_of(obj))
    has_vram = any(r.vram_peak for r in rows)
    head = ["run", "peak RAM", "anonymous", "file-backed"]
    head += ["peak VRAM"] if has_vram else []
    has_fixed = any(r.fixed_cost is not None for r in rows)  # issue 13 item 6
    head += ["fixed cost"] if has_fixed else []
    has_cache = any(r.cache for r in rows)  # issue 17: the page cache, measured
    head += ["page cache"] if has_cache else []
    head += ["predicted", "time", "outcome"]
    out = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|",
    ]
    for r in rows:
        shown = r.range_formula or r.formula
        pred = r.predicted_range + (f" ({shown})" if shown else "")
        if r.off_prediction:
            pred += " — disagrees"
        vals = [r.label, size(r.ram_peak), size(r.ram_anon_peak), size(r.ram_file_peak)]
        vals += [size(r.vram_peak)] if has_vram else []
        vals += [size(r.fixed_cost)] if has_fixed else []
        vals += [r.cache or "—"] if has_cache else []
        outcome = outcome_text(r.outcome)
        took = f"{r.seconds:.2f} s" + ("" if r.read_bytes is None else f" ({r.read_text})")
        vals += [pred, took, outcome if r.outcome == "ok" else f"**{outcome}**"]
        out.append("| " + " | ".join(cell(v) if not v.startswith("**") else v for v in vals) + " |")
    off = [f"- **{cell(r.label)}** disagrees with its prediction: {cell(r.verdict)}"
           for r in rows if r.off_prediction and r.verdict]
    out += ["", *off] if off else []
    if has_fixed:
        out += ["", "*fixed cost*: what the run's worker held for itself before its first "
                "phase (private pages: copied from the fork server on write, or imported "
                "and allocated after the fork; plus page tables). The machine held about "
                "fixed cost + peak RAM for the run."]
    return out


def _cells_table(results: list[RunResult]) -> list[str]:
    """Profiled cells, each above its own start: no prediction, nothing compared."""
    out = [
        "| cell | RSS at start | peak RAM | anonymous | file-backed | time | outcome |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r, row in zip(results, run_rows(results), strict=True):
        outcome = outcome_text(row.outcome)
        vals = [row.label, size(r.baseline or None), size(row.ram_peak), size(row.ram_anon_peak),
                size(row.ram_file_peak), f"{row.seconds:.2f} s"]
        out.append("| " + " | ".join(map(cell, vals)) + " | "
                   + (cell(outcome) if row.ok else f"**{cell(outcome)}**") + " |")
    return out


def _code(label: str, facts: CellFacts) -> list[str]:
    """A cell's code, folded: a <pre> block of escaped text (GitHub renders raw HTML, so the
    code is escaped rather than fenced, and a fence inside it cannot end anything)."""
    if not facts.code:
        return []
    n = f" In [{facts.execution_count}]" if facts.execution_count is not None else ""
    code = html.escape(facts.code.rstrip("\n"), quote=False)
    return [f"<details><summary>Code of {cell(label)}{n}</summary>", "",
            f"<pre><code>{code}</code></pre>", "", "</details>", ""]


def _phase_table(rec: Recording) -> list[str]:
    out = [
        "| phase | start | duration | peak RSS | growth | peak is |",
        "|---|---:|---:|---:|---:|---|",
    ]
    folded: list[str] = []
    for p in grouped(phase_rows(rec)):
        if isinstance(p, PhaseGroup):
            # a loop's repeated phases: one row, each phase listed in a <details> below
            out.append(_group_row(p))
            folded += _group_details(p)
            continue
        dur = "open" if p.duration is None else f"{p.duration:.3f} s"
        name = "&nbsp;&nbsp;" * p.depth + cell(p.name)
        out.append(
            f"| {name} | {p.start:.3f} s | {dur} | {size(p.ram_peak)} | {size(p.ram_growth)} | "
            f"{p.how} |"
        )
    return [*out, *(["", *folded] if folded else [])]


def _group_row(g: PhaseGroup) -> str:
    """One table row for repeated phases: count, span, and min / median / max peak."""
    name = "&nbsp;&nbsp;" * g.depth + f"{cell(g.label)} (×{g.count})"
    if g.errors:
        name += f" **✕ {len(g.errors)} failed**"
    end = g.end
    span = "open" if end is None else f"{end - g.start:.3f} s"
    pk, gr = g.ram_peak, g.ram_growth

    def mmm(st: object) -> str:
        vals = [getattr(st, k) for k in ("min", "median", "max")]
        if any(v is None for v in vals):
            return "—"
        return " / ".join(size(round(v)) for v in vals)

    return (f"| {name} | {g.start:.3f} s | {span} | {mmm(pk)} | {mmm(gr)} | "
            f"{cell(g.how)} (min / median / max) |")


def _group_details(g: PhaseGroup) -> list[str]:
    """Every phase of a group with its own peak, folded under a summary."""
    out = [f"<details><summary>each of the {g.count} phases {cell(g.label)}</summary>", "",
           "| phase | start | duration | peak RSS | growth | peak is |",
           "|---|---:|---:|---:|---:|---|"]
    for r in g.rows:
        dur = "open" if r.duration is None else f"{r.duration:.3f} s"
        name = "&nbsp;&nbsp;" * (r.depth - g.depth) + cell(r.name)
        if r.error:
            name += " ✕"
        out.append(f"| {name} | {r.start:.3f} s | {dur} | {size(r.ram_peak)} | "
                   f"{size(r.ram_growth)} | {r.how} |")
    return [*out, "", "</details>", ""]


def _rank_table(obj: RunResult | Recording) -> list[str]:
    rows = rank_rows(obj)
    if not rows:
        return []
    out = [
        "| rank | peak RSS | anonymous | file-backed | USS | PSS | phase reached | status |",
        "|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r.rank} | {size(r.ram_peak)} | {size(r.anon)} | {size(r.file)} | "
            f"{size(r.uss)} | {size(r.pss)} | {cell(r.phase_reached or '—')} | "
            f"{cell(r.status) if r.status == 'ok' else '**' + cell(r.status) + '**'} |"
        )
    out += [
        "",
        "Per rank, above its own baseline; PSS splits shared pages between the ranks, so the "
        "ranks' PSS add up to the node total and their RSS do not.",
    ]
    return out


#: per-rank lane figures a pull-request comment carries at most (one per distributed run)
MAX_LANE_FIGURES = 4


def render(obj: Reportable, path: Path, *, assets: Path | None = None
           ) -> tuple[str, list[tuple[Path, bytes]]]:
    """The Markdown text for ``obj`` written at ``path`` and the PNGs to put beside it
    (``out.peaks.png``…), or in the folder ``assets`` (``out_files/peaks.png``…) that
    sits beside ``path``; the links are relative either way."""

    def png(slug: str) -> tuple[Path, str]:
        if assets is None:
            target = sibling(path, f".{slug}.png")
            return target, target.name
        return assets / f"{slug}.png", f"{assets.name}/{slug}.png"

    from bigviz.plots import to_png

    from ._figures import overview_figures, timeline_figure

    results = results_of(obj)
    lines = [f"### bigviz: {cell(title_of(obj))}", ""]
    finding = headline(obj)
    if finding:
        lines += [f"**{cell(finding)}**", ""]
    failed = failures(results)
    if failed:
        lines += ["Did not finish:", *[f"- {cell(f)}" for f in failed], ""]
    cells = bool(results) and all(map(is_cell, results))
    if cells:
        lines += [*_cells_table(results), "", CELL_NOTE, ""]
    elif results:
        lines += [*_runs_table(obj), ""]
        note = "Peaks are above each run's baseline (its RSS after imports)."
        if any(r.recording.ranks for r in results):
            note += (
                " Distributed runs: peak RAM is node RAM, the sum of the ranks' PSS above the "
                "sum of their baselines; anonymous is summed over ranks."
            )
        lines += [note, ""]
    elif isinstance(obj, Recording):
        lines += [*_phase_table(obj), ""]
    for label, rec, _run in recordings_of(obj):
        facts = cell_of(rec)
        if facts is not None:
            lines += _code(label, facts)
    images: list[tuple[Path, bytes]] = []
    for slug, caption, make in overview_figures(obj):
        target, link = png(slug)
        images.append((target, to_png(make())))
        # a relative link: the comment and its images move together
        lines += [f"![{cell(caption)}]({link})", ""]
    dist = [r for r in results if r.recording.ranks]
    if len(dist) == 1 and len(results) == 1:
        lines += [*_rank_table(dist[0]), ""]
    elif dist:
        labels = dict(zip(map(id, results), short_labels(results), strict=True))
        for i, r in enumerate(dist[:MAX_LANE_FIGURES]):
            target, link = png(f"ranks-{i + 1}")
            images.append((target, to_png(timeline_figure(r.recording, r))))
            lines += [f"**{cell(labels[id(r)])}**", ""]
            lines += [f"![per-rank lanes: {cell(labels[id(r)])}]({link})", ""]
            lines += [*_rank_table(r), ""]
        if len(dist) > MAX_LANE_FIGURES:
            lines += [
                f"Per-rank lanes of the other {len(dist) - MAX_LANE_FIGURES} distributed runs "
                "are in the HTML report.",
                "",
            ]
    elif isinstance(obj, Recording) and obj.ranks:
        lines += [*_rank_table(obj), ""]
    details: list[str] = []
    if isinstance(obj, Sweep) and obj.command:
        details += ["```", obj.command.replace("```", "'''"), "```", ""]
    env = environment(obj)
    if env:
        details += [f"- {cell(k)}: {cell(v)}" for k, v in env[:30]]
    if len(results) == 1:
        details += ["", *_phase_table(results[0].recording)]
    if details:
        lines += [
            "<details><summary>How this was measured</summary>",
            "",
            *details,
            "",
            "</details>",
            "",
        ]
    return "\n".join(lines), images


def write(obj: Reportable, path: Path, *, assets: Path | None = None) -> Path:
    """Write the PNGs and the Markdown, all or none: a failure (a full disk) leaves no PNG
    of this report behind (:func:`~bigviz.report._common.atomic_write_all`). ``assets``:
    the folder for the PNGs (made when missing), else beside ``path``."""
    text, images = render(obj, path, assets=assets)
    if assets is not None and images:
        try:
            assets.mkdir(exist_ok=True)
        except OSError as exc:
            raise ReportError(f"cannot write report {str(path)!r}: cannot make the folder "
                              f"{str(assets)!r} for its images: {exc.strerror or exc}") from exc
    atomic_write_all([*images, (path, text.encode("utf-8"))])
    return path


__all__ = ["cell", "render", "write"]
