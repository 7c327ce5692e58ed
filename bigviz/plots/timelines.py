"""The timeline of one run: RAM, VRAM and phases over time.

:func:`timeline` stacks anonymous, file-backed and shared RAM under the RSS line, draws
VRAM per device, each phase's exact peak, the baseline and the predicted peak, and a strip
of (nested) phases; an OOM or budget kill is flagged where the samples stop. A distributed
recording is handed to :func:`bigviz.plots.lanes.ranks`.

Example:
    >>> from bigviz.plots import timeline  # doctest: +SKIP
    >>> timeline(result).savefig("run.png")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bigviz.data.recording import Recording
from bigviz.data.result import RunResult
from bigviz.plots import sampling, style
from bigviz.plots.lanes import ranks
from bigviz.tables.labels import OUTCOME_TEXT
from bigviz.tables.phases import repeats
from bigviz.units import format_size

__all__ = ["BASELINE_LABEL", "SMALL_GROWTH", "timeline"]

#: the key's name for a run's baseline: the worker's RSS after its imports
BASELINE_LABEL = "baseline (after imports)"


def timeline(
    obj: Recording | RunResult,
    *,
    width: float = style.WIDTH,
    max_points: int = sampling.MAX_POINTS,
    title: str | None = None,
    px: int | None = None,
    theme: str = "light",
    baseline_label: str = BASELINE_LABEL,
) -> Figure:
    """Plot one run over time.

    Panels, sharing the time axis: RAM (anonymous and file-backed resident memory stacked,
    plus shared memory (RssShmem, e.g. a checkpoint on tmpfs) when there is any, so the
    stack meets the RSS line), VRAM per device when recorded (allocator
    ``allocated``/``reserved`` and NVML ``used``), and a strip of phase bands (nested phases
    one row deeper). Each phase's peak is a short horizontal bar over the phase (solid when
    exact, from the kernel's high-water mark; dotted when sampled). For a RunResult the
    baseline and the predicted peak (baseline + prediction) are dashed lines, and an OOM or
    budget kill is flagged in red where the samples stop. Marks are dotted vertical lines.
    When the baseline dwarfs the growth (a tiny model on ~340 MiB of imports), the growth is
    written on the RAM panel. A distributed run (``recording.ranks``) is drawn by
    :func:`ranks`, one lane per rank.

    Args:
        obj: a Recording, or a RunResult (adds baseline, prediction and outcome).
        width: figure width in inches (:data:`~bigviz.plots.style.WIDTH`).
        max_points: points drawn per series at most (min/max kept per bucket; never more
            than two per pixel of the panel).
        title: overrides the automatic title (wrapped to two lines at most).
        px: figure width in pixels (at :data:`~bigviz.plots.style.DPI`, so text stays
            >= 9 px); overrides ``width``. Give the output's width to show it unscaled.
        theme: ``"light"``, ``"dark"`` (JupyterLab Dark) or ``"auto"`` (JupyterLab's
            active theme, :func:`~bigviz.plots.style.active_theme`).
        baseline_label: the key's name for the baseline line of a RunResult (a profiled
            cell's baseline is RSS at the cell's start, not the worker after imports).

    Many phases stay fast: bands and peaks are drawn as one artist per panel, and a run of
    repeated phases (``step 1 … step 800``) too dense for the pixels is one band named
    ``step 1 … step 800 (×800)`` whose peak line keeps every step's peak at pixel
    resolution (min/max per pixel, so the highest is never lost).

    Raises:
        ConfigError: for anything but a Recording or RunResult, a bad ``px`` or ``theme``.

    Example:
        >>> fig = timeline(result)  # doctest: +SKIP
    """
    rec, result = sampling.as_recording(obj)
    if rec.ranks:
        return ranks(obj, width=width, max_points=max_points, title=title, px=px, theme=theme)
    width = style.size_in(width, px)
    with style.themed(theme):
        return _timeline(rec, result, width, max_points, title, baseline_label)


def _timeline(
    rec: Recording, result: RunResult | None, width: float, max_points: int, title: str | None,
    baseline_label: str,
) -> Figure:
    # never more points than two per pixel of the panel: more only costs time and bytes
    max_points = max(4, min(max_points, int(width * style.DPI * 2)))
    devices = _devices(rec)
    depth_rows = max((p.depth for p in rec.phases), default=-1) + 1
    heights = [3.2]
    if devices:
        heights.append(1.9)
    if depth_rows:
        heights.append(0.24 * depth_rows + 0.15)
    fig = style.figure(width, sum(heights) + 0.9)
    axes = fig.subplots(len(heights), 1, sharex=True, height_ratios=heights, squeeze=False)[:, 0]
    ram_ax: Axes = axes[0]
    vram_ax: Axes | None = axes[1] if devices else None
    strip_ax: Axes | None = axes[-1] if depth_rows else None
    end = sampling.rec_end(rec)

    items = _phase_items(rec, width)
    _draw_ram(ram_ax, rec, result, max_points, width, items, baseline_label)
    if vram_ax is not None:
        _draw_vram(vram_ax, rec, result, devices, max_points)
    for ax in axes[: len(axes) - (1 if strip_ax is not None else 0)]:
        _shade_phases(ax, items)
        style.draw_marks(ax, rec, label=ax is ram_ax)
        if result is not None and result.outcome in style.FAILED:
            ax.axvline(end, color=style.FAIL, linewidth=1.6)
    if result is not None and result.outcome in style.FAILED:
        where = f" in {result.phase_reached}" if result.phase_reached else ""
        style.flag(ram_ax, f"✕ {OUTCOME_TEXT[result.outcome]}{where}", (end, 1.0), (-4, -4),
             va="top", fontsize=8.5)
    if strip_ax is not None:
        _draw_phase_strip(strip_ax, rec, items, depth_rows, width)

    bottom = axes[-1]
    bottom.set_xlabel("time (s)")
    bottom.set_xlim(0, end if end > 0 else 1.0)
    if title is None:
        if result is not None:
            title = f"{result.label} — {result.model or rec.name}"
            if result.outcome != "ok":
                title += f" — {OUTCOME_TEXT.get(result.outcome, result.outcome)}"
        else:
            title = rec.name or "recording"
    fig.suptitle(style.plain(style.wrap_title(title, width * 0.97, 11)), fontsize=11, x=0.01,
                 ha="left")
    return style.finish(fig)


def _draw_ram(
    ax: Axes, rec: Recording, result: RunResult | None, max_points: int, width: float,
    items: list[_Item], baseline_label: str,
) -> None:
    theme = style.current()
    anon = rec.series.get("ram.anon")
    file = rec.series.get("ram.file")
    rss = rec.series.get("ram.rss")
    tops: list[float] = [p.ram_peak for p in rec.phases if p.ram_peak is not None]
    for s in (rss,):
        if s is not None and s.v:
            tops.append(max(s.v))
    layers = sampling.ram_layers(rec, max_points)
    if layers is not None:
        tops.append(float(layers[1][-1].max()))
    div, unit = style.axis_unit(max(tops) if tops else 1.0)
    if layers is not None:
        style.fill_ram(ax, *layers, div, legend=True)
    if rss is not None and rss.v:
        t, v = sampling.downsample(rss.t, rss.v, max_points=max_points)
        filled = anon is not None and file is not None
        if filled:
            ax.plot(t, v / div, color=theme.rss, lw=0.8, label="RSS")
        else:
            ax.fill_between(t, 0, v / div, color=style.ANON, lw=0, label="RSS")
    if not rec.series.get("ram.rss") and not (anon and file):
        ax.text(0.5, 0.5, "no RAM samples", transform=ax.transAxes, ha="center",
                color=theme.muted)
    exact_seen, sampled_seen = _draw_peaks(ax, rec, items, div, width, max_points)
    if result is not None:
        ax.axhline(result.baseline / div, color=theme.baseline, lw=0.9, ls=(0, (1, 2)))
        if result.predicted is not None:
            pred = result.baseline + result.predicted.ram_peak
            tops.append(pred)
            ax.axhline(pred / div, color=style.PRED, lw=1.4, ls="--")
    budget = budget_of(result)
    if budget is not None:
        # an absolute line: a single worker's budget is its whole RSS, baseline included
        tops.append(budget)
        ax.axhline(budget / div, color=style.BUDGET, lw=1.3, ls="-.", gid="ram-budget")
    # legend built by hand so phase-peak styles and reference lines read as one key
    handles, _labels = ax.get_legend_handles_labels()
    if exact_seen:
        handles.append(Line2D([], [], color=theme.peak, lw=1.3, label="phase peak (exact, VmHWM)"))
    if sampled_seen:
        handles.append(
            Line2D([], [], color=theme.peak, lw=1.3, ls=":", label="phase peak (sampled)")
        )
    if result is not None:
        handles.append(
            Line2D([], [], color=theme.baseline, lw=0.9, ls=(0, (1, 2)),
                   label=style.plain(baseline_label))
        )
        if result.predicted is not None:
            handles.append(style.predicted_handle(f"predicted peak ({result.predicted.formula})"))
    if budget is not None:
        handles.append(Line2D([], [], color=style.BUDGET, lw=1.3, ls="-.",
                              label=f"RAM budget {format_size(budget, binary=False)} "
                                    "(RSS, baseline included)"))
    # always from zero: stacked anonymous/file-backed areas cut off at the bottom would
    # misstate which kind of memory grew
    top = max(tops) if tops else 1.0
    ax.set_ylim(0, top / div * 1.15 if top > 0 else 1.0)
    ax.set_ylabel(f"RAM ({unit})")
    _note_small_growth(ax, rec, result)
    style.grid_y(ax)
    # above the panel, so marks and the kill flag at the top never hide under it
    style.legend_above(ax, handles)


def budget_of(result: RunResult | None) -> int | None:
    """The RAM budget of a single-process run (``params["ram_budget"]``, bytes of RSS),
    ``None`` without one or for a distributed run (whose budget is a node sum, not the
    RSS drawn here).

    Example:
        >>> budget_of(RunResult("naive", "ok", params={"ram_budget": 400_000_000}))
        400000000
    """
    if result is None or result.recording.ranks or result.params.get("nproc"):
        return None
    v = result.params.get("ram_budget")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
        return int(v)
    return None


#: below this share of the peak, the growth above baseline gets written on the RAM panel
SMALL_GROWTH = 0.15


def _note_small_growth(ax: Axes, rec: Recording, result: RunResult | None) -> None:
    """Say the growth in words when the baseline (Python + torch) dwarfs it.

    A tiny model's load is a sliver on top of ~340 MiB of imports; the axis must still
    start at zero (see above), so the number is written inside the flat baseline block,
    where it hides nothing.
    """
    peaks = [p.ram_peak for p in rec.phases if p.ram_peak is not None]
    rss = rec.series.get("ram.rss")
    if rss is not None and rss.v:
        peaks.append(max(rss.v))
    if result is not None:
        base: int | None = result.baseline or None
    else:
        starts = [p.ram_start for p in rec.phases if p.depth == 0 and p.ram_start is not None]
        base = starts[0] if starts else None
    if not peaks or not base:
        return
    peak = max(peaks)
    growth = peak - base
    if growth < 0 or growth >= SMALL_GROWTH * peak:
        return
    ax.text(
        0.5,
        0.4,
        f"growth above baseline: +{format_size(growth)}\n"
        f"(baseline {format_size(base)} is {base / peak:.0%} of the peak)",
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=8.5,
        color=style.current().ink,
        bbox={"boxstyle": "round,pad=0.3", "fc": style.current().background, "ec": "0.6",
              "lw": 0.6, "alpha": 0.9},
        gid="growth-note",
    )


def _draw_vram(
    ax: Axes, rec: Recording, result: RunResult | None, devices: list[str], max_points: int
) -> None:
    kinds = (
        ("cuda:{}.allocated", "-", "allocated (torch)"),
        ("cuda:{}.reserved", "--", "reserved (torch)"),
        ("nvml:{}.used", ":", "used, all processes (NVML)"),
        ("nvml:{}.process", "-.", "this process (NVML)"),
    )
    top = 0.0
    for dev in devices:
        for pattern, _ls, _label in kinds:
            s = rec.series.get(pattern.format(dev))
            if s is not None and s.v:
                top = max(top, float(max(s.v)))
        if result is not None and result.predicted is not None:
            top = max(top, float(result.predicted.vram.get(f"cuda:{dev}", 0)))
    div, unit = style.axis_unit(top if top > 0 else 1.0)
    for i, dev in enumerate(devices):
        color = f"C{(i + 2) % 10}"
        for pattern, ls, label in kinds:
            s = rec.series.get(pattern.format(dev))
            if s is None or not s.v:
                continue
            t, v = sampling.downsample(s.t, s.v, max_points=max_points)
            ax.plot(t, v / div, color=color, ls=ls, lw=1.2, label=f"GPU {dev} {label}")
        if result is not None and result.predicted is not None:
            pred = result.predicted.vram.get(f"cuda:{dev}")
            if pred is not None:
                ax.axhline(
                    pred / div, color=style.PRED, ls="--", lw=1.2, label=f"GPU {dev} predicted"
                )
    ax.set_ylim(0, top / div * 1.15 if top > 0 else 1.0)
    ax.set_ylabel(f"VRAM ({unit})")
    style.grid_y(ax)
    if not ax.get_legend_handles_labels()[0]:
        return
    style.legend_above(ax)


def _devices(rec: Recording) -> list[str]:
    """GPU indices with any series, in order: ``cuda:0.*`` and ``nvml:0.*`` both give ``0``."""
    found: list[str] = []
    for name in rec.series:
        head = name.split(".", 1)[0]
        if head.startswith(("cuda:", "nvml:")):
            idx = head.split(":", 1)[1]
            if idx not in found:
                found.append(idx)
    return sorted(found, key=lambda s: (len(s), s))


@dataclass(frozen=True)
class _Item:
    """One band of the phase strip: a phase, or a run of repeated phases too dense to draw
    one by one (``members`` > 1)."""

    start: float
    end: float
    depth: int
    name: str
    color: int
    error: bool
    peaks: tuple[tuple[float, float, int, bool], ...]  # (start, end, peak, exact) per phase


def _phase_items(rec: Recording, width: float) -> list[_Item]:
    """The bands to draw: every phase, but a run of repeated phases gets one band when its
    members would be narrower than ~3 px on average (linear in the phases)."""
    phases = rec.phases
    if not phases:
        return []
    panel_px = width * 0.86 * style.DPI
    top_rank = {i: k for k, i in enumerate(i for i, p in enumerate(phases) if p.depth == 0)}
    colors: list[int] = []
    for i, p in enumerate(phases):
        # a nested phase takes its top-level phase's colour (parents come first)
        parent = p.parent
        ok = parent is not None and 0 <= parent < i
        colors.append(colors[parent] if ok and parent is not None else top_rank.get(i, 0))

    def one(i: int) -> _Item:
        p = phases[i]
        p_end = sampling.phase_end(p, rec)
        peaks = () if p.ram_peak is None else ((p.start, p_end, p.ram_peak, p.ram_peak_exact),)
        return _Item(p.start, p_end, p.depth, p.name, colors[i], bool(p.error), peaks)

    out: list[_Item] = []
    for idx in repeats(phases):
        depth = phases[idx[0]].depth
        members = [phases[i] for i in idx if phases[i].depth == depth]
        if len(idx) == 1 or len(members) * 3 <= panel_px:
            out.extend(one(i) for i in idx)
            continue
        first, last = members[0], members[-1]
        peaks = tuple((p.start, sampling.phase_end(p, rec), p.ram_peak, p.ram_peak_exact)
                      for p in members if p.ram_peak is not None)
        label = first.name if first.name == last.name else f"{first.name} … {last.name}"
        out.append(_Item(first.start, sampling.phase_end(last, rec), depth,
                         f"{label} (×{len(members)})", colors[idx[0]],
                         any(phases[i].error for i in idx), peaks))
    return out


def _draw_peaks(ax: Axes, rec: Recording, items: list[_Item], div: float, width: float,
                max_points: int) -> tuple[bool, bool]:
    """Every phase's peak as a short bar over the phase, in one artist per style; a dense
    group's peaks as one line thinned to the pixels, keeping each pixel's min and max.
    Returns whether exact and sampled peaks were drawn."""
    theme = style.current()
    inches_per_s = (width * 0.86) / (sampling.rec_end(rec) or 1.0)
    single: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    exact_seen = sampled_seen = False
    for it in items:
        if len(it.peaks) == 1 and (it.peaks[0][0], it.peaks[0][1]) == (it.start, it.end):
            s0, s1, peak, exact = it.peaks[0]
            single[exact].append((peak / div, s0, s1))
            exact_seen |= exact
            sampled_seen |= not exact
            text = format_size(peak)
            # label top-level peaks whose phase is wide enough for the text
            if it.depth == 0 and (s1 - s0) * inches_per_s >= len(text) * 7.5 * 0.62 / 72:
                ax.annotate(text, xy=((s0 + s1) / 2, peak / div), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom",
                            fontsize=7.5, color=theme.peak)
        elif it.peaks:
            xs = np.array([[a, b] for a, b, _p, _e in it.peaks], dtype=float).ravel()
            ys = np.repeat(np.array([pk for _a, _b, pk, _e in it.peaks], dtype=float), 2)
            keep = sampling.keep_indices(ys, max_points)
            exact = all(e for *_x, e in it.peaks)
            exact_seen |= exact
            sampled_seen |= not exact
            ax.plot(xs[keep], ys[keep] / div, color=theme.peak, lw=1.1,
                    ls="-" if exact else ":", gid="group-peaks")
    for exact, segs in single.items():
        if segs:
            arr = np.array(segs, dtype=float)
            dash: Literal["-", ":"] = "-" if exact else ":"
            ax.hlines(arr[:, 0], arr[:, 1], arr[:, 2], colors=theme.peak, linestyles=dash,
                      lw=1.3)
    return exact_seen, sampled_seen


def _shade_phases(ax: Axes, items: list[_Item]) -> None:
    """Top-level phase bands behind the data (zorder 0, so they never wash it out), with a
    thin line at each start: one artist each, however many phases."""
    theme = style.current()
    tops = [it for it in items if it.depth == 0]
    fills = theme.phase_fills
    style.bands(ax, [(it.start, it.end) for it in tops],
                [fills[it.color % len(fills)] for it in tops])
    style.vlines(ax, [it.start for it in tops], theme.divider, lw=0.5)


def _draw_phase_strip(
    ax: Axes, rec: Recording, items: list[_Item], rows: int, width: float
) -> None:
    theme = style.current()
    end = sampling.rec_end(rec) or 1.0
    inches_per_s = (width * 0.86) / end
    fills, edges = theme.phase_fills, theme.phase_edges
    for depth in sorted({it.depth for it in items}):
        row = [it for it in items if it.depth == depth]
        y = rows - 1 - depth
        style.bands(ax, [(it.start, max(it.end, it.start + 1e-9)) for it in row],
                    [fills[it.color % len(fills)] for it in row],
                    edges=[edges[it.color % len(edges)] for it in row], alpha=1.0,
                    y=(y + 0.08, y + 0.92), data_y=True, lw=0.7, zorder=1)
    failed_x, failed_y = [], []
    for it in items:
        y = rows - 1 - it.depth
        text = style.fit_label(it.name, (it.end - it.start) * inches_per_s, 7.5)
        if text:
            ax.text((it.start + it.end) / 2, y + 0.5, style.plain(text), ha="center",
                    va="center", fontsize=7.5, clip_on=True, color=theme.ink)
        if it.error:
            failed_x.append(it.end)
            failed_y.append(y + 0.5)
    if failed_x:
        ax.plot(failed_x, failed_y, ls="none", marker="X", color=style.FAIL, ms=7, clip_on=False)
    ax.set_ylim(0, rows)
    ax.set_yticks([rows - 0.5 - d for d in range(rows)])
    ax.set_yticklabels(["phases" if d == 0 else f"depth {d}" for d in range(rows)], fontsize=7)
    ax.tick_params(axis="y", length=0)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
