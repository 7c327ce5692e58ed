"""Peak memory per run as bars: single-process runs, and distributed runs by node RAM.

:func:`peaks` puts each run's anonymous, file-backed and VRAM peaks beside its prediction;
distributed runs get the node PSS peak stacked by each rank's share, Σ RSS beside it.

Example:
    >>> from bigviz.plots import peaks  # doctest: +SKIP
    >>> peaks(sweep).savefig("peaks.png")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bigviz._errors import ConfigError
from bigviz.data.result import RunResult, Sweep
from bigviz.plots import sampling, style
from bigviz.tables.labels import OUTCOME_TEXT, short_labels
from bigviz.tables.ranks import contributions, is_distributed, node_rss_sum

__all__ = ["peaks"]


def peaks(
    obj: Sweep | RunResult | Iterable[RunResult],
    *,
    width: float = style.WIDTH,
    title: str | None = None,
    px: int | None = None,
    theme: str = "light",
) -> Figure:
    """Bar chart of peak memory per run, above each run's baseline.

    Each run gets side-by-side bars: anonymous RAM peak, file-backed RAM peak, VRAM peak
    (summed over devices, when any run used a GPU) and the prediction (hatched). A black
    tick marks the total RSS peak; a failed run is labelled with its outcome.

    Distributed runs (with ``recording.ranks``) are compared by node RAM instead: the node
    PSS peak as a bar stacked by each rank's share of it, Σ RSS beside it (dotted: what
    adding up the ranks' RSS would claim, shared pages counted once per rank) and the
    prediction; the black tick is the reported node PSS peak.

    Args:
        obj: a Sweep, a RunResult, or RunResults.
        width: figure width in inches.
        title: overrides the automatic title.
        px: figure width in pixels (at 100 dpi, so text stays >= 9 px); overrides ``width``.
        theme: ``"light"`` or ``"dark"`` (JupyterLab Dark).

    Returns:
        The figure; ``fig.axes[0].containers`` holds one bar group per kind of bar.

    Raises:
        ConfigError: for anything that is not RunResults, or no runs at all.

    Example:
        >>> fig = peaks(sweep)  # doctest: +SKIP
    """
    width = style.size_in(width, px)
    with style.themed(theme):
        return style.finish(_peaks(obj, width=width, title=title))


def _peaks(
    obj: Sweep | RunResult | Iterable[RunResult], *, width: float, title: str | None
) -> Figure:
    results = sampling.as_results(obj)
    if not results:
        raise ConfigError("peaks() got no runs; give a Sweep or a non-empty list of RunResults")
    if any(is_distributed(r) for r in results):
        return _dist_peaks(results, width=width, title=title)
    has_vram = any(r.vram_peak for r in results)
    has_split = any(r.ram_anon_peak is not None or r.ram_file_peak is not None for r in results)
    kinds: list[tuple[str, str, Any]] = []
    if has_split:
        kinds.append(("RAM anonymous", style.ANON, lambda r: r.ram_anon_peak))
        kinds.append(("RAM file-backed", style.FILE, lambda r: r.ram_file_peak))
    else:
        kinds.append(("RAM (RSS)", style.ANON, lambda r: r.ram_peak))
    if has_vram:
        kinds.append(("VRAM", "C2", lambda r: sum(r.vram_peak.values()) if r.vram_peak else None))
    kinds.append(
        ("predicted RAM", style.current().background,
         lambda r: r.predicted.ram_peak if r.predicted else None)
    )

    values = [[f(r) for r in results] for _n, _c, f in kinds]
    everything = [v for row in values for v in row if v is not None]
    everything += [r.ram_peak for r in results if r.ram_peak is not None]
    top = max(everything, default=1) or 1
    div, unit = style.axis_unit(top)

    height = 3.9
    fig = style.figure(width, height)
    ax = fig.add_subplot()
    n = len(results)
    group = 0.8
    bar_w = group / len(kinds)
    x = np.arange(n)
    for k, ((name, color, _f), row) in enumerate(zip(kinds, values, strict=True)):
        xs = x - group / 2 + bar_w * (k + 0.5)
        ys = [0.0 if v is None else v / div for v in row]
        pred = name.startswith("predicted")
        ax.bar(
            xs,
            ys,
            bar_w * 0.92,
            color=color,
            edgecolor=style.PRED if pred else "none",
            hatch="///" if pred else None,
            linewidth=0.8 if pred else 0,
            label=name,
        )
    for i, r in enumerate(results):
        if r.ram_peak is not None:
            ax.hlines(r.ram_peak / div, i - group / 2, i + group / 2,
                      colors=style.current().peak, lw=1.6)
        _label_outcome(ax, i, r, div)
    handles, _labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color=style.current().peak, lw=1.6, label="RSS peak"))
    ax.legend(handles=handles, loc="upper right", fontsize=7.5, ncols=3, framealpha=0.9)
    _style_bars(ax, results, x, ylabel=f"peak above baseline ({unit})", ytop=top / div * 1.3)
    model = results[0].model
    if title is None:
        title = "Peak memory per run" + (f" — {model}" if model else "")
    ax.set_title(style.plain(style.wrap_title(title, width * 0.9, 11)), fontsize=11, loc="left")
    return fig


def _label_outcome(ax: Axes, x: float, r: RunResult, div: float) -> None:
    """Name a run's outcome above its bars when it did not finish."""
    if r.outcome == "ok":
        return
    ax.annotate(
        style.plain(OUTCOME_TEXT.get(r.outcome, r.outcome)),
        xy=(x, (r.ram_peak or 0) / div),
        xytext=(0, 4),
        textcoords="offset points",
        ha="center",
        va="bottom",
        color=style.FAIL,
        fontsize=8,
        fontweight="bold",
    )


def _style_bars(
    ax: Axes, results: Sequence[RunResult], x: Any, *, ylabel: str, ytop: float
) -> None:
    """Axis labels and grid shared by the per-run bar charts (labels slant when crowded)."""
    n = len(results)
    ax.set_xticks(x)
    labels = [style.plain(lab) for lab in short_labels(results)]
    rotate = n > 4 or max(len(s) for s in labels) * n > 90
    ax.set_xticklabels(labels, rotation=25 if rotate else 0, ha="right" if rotate else "center")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, ytop)
    style.grid_y(ax)


def _dist_peaks(results: Sequence[RunResult], *, width: float, title: str | None) -> Figure:
    """Node RAM per distributed run: PSS stacked by rank, Σ RSS beside it, prediction."""
    parts = [contributions(r) for r in results]
    rss_sums = [node_rss_sum(r) if is_distributed(r) else None for r in results]
    preds = [r.predicted.ram_peak if r.predicted else None for r in results]
    everything = [r.ram_peak for r in results if r.ram_peak is not None]
    everything += [v for v in (*rss_sums, *preds) if v is not None]
    everything += [sum(vals) for _rk, vals, _src in parts if vals]
    top = max(everything, default=1) or 1
    div, unit = style.axis_unit(top)
    fig = style.figure(width, 4.1)
    ax = fig.add_subplot()
    n = len(results)
    x = np.arange(n)
    bar_w = 0.8 / 3
    max_rank = max((len(rk) for rk, _v, _s in parts), default=0)
    shade = [style.RANK_SHADES[i % len(style.RANK_SHADES)] for i in range(max(max_rank, 1))]
    for i, (r, (rks, vals, _src)) in enumerate(zip(results, parts, strict=True)):
        xs = x[i] - bar_w
        if vals:
            bottom = 0.0
            for k, (rank, v) in enumerate(zip(rks, vals, strict=True)):
                ax.bar(
                    xs,
                    v / div,
                    bar_w * 0.92,
                    bottom=bottom,
                    color=shade[k % len(shade)],
                    edgecolor=style.current().background,
                    linewidth=0.5,
                    label=f"rank {rank}" if k < 8 else None,
                    gid=f"pss-{i}-rank-{rank}",
                )
                bottom += v / div
        elif r.ram_peak is not None:
            ax.bar(xs, r.ram_peak / div, bar_w * 0.92, color=style.ANON)
        if rss_sums[i] is not None:
            ax.bar(
                x[i],
                (rss_sums[i] or 0) / div,
                bar_w * 0.92,
                color=style.current().background,
                edgecolor=style.current().rss,
                hatch="...",
                linewidth=0.8,
                ls="--",
            )
        if preds[i] is not None:
            ax.bar(
                x[i] + bar_w,
                (preds[i] or 0) / div,
                bar_w * 0.92,
                color=style.current().background,
                edgecolor=style.PRED,
                hatch="///",
                linewidth=0.8,
            )
        if r.ram_peak is not None:
            ax.hlines(r.ram_peak / div, xs - bar_w / 2, xs + bar_w / 2,
                      colors=style.current().peak, lw=1.6)
        _label_outcome(ax, x[i], r, div)
    # one legend entry per rank, then the other bars
    handles, _labels = ax.get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for h, lab in zip(handles, _labels, strict=True):
        seen.setdefault(lab, h)
    handles = list(seen.values())
    handles.append(
        Patch(
            facecolor=style.current().background,
            edgecolor=style.current().rss,
            hatch="...",
            label="Σ RSS (shared pages once per rank)",
        )
    )
    handles.append(Patch(facecolor=style.current().background, edgecolor=style.PRED,
                         hatch="///", label="predicted"))
    handles.append(Line2D([], [], color=style.current().peak, lw=1.6, label="node PSS peak"))
    ax.legend(handles=handles, loc="upper right", fontsize=7.5, ncols=4, framealpha=0.9)
    _style_bars(ax, results, x, ylabel=f"node RAM above baseline ({unit})",
                ytop=top / div * 1.35)
    if title is None:
        model = results[0].model
        title = "Node RAM per run: PSS by rank" + (f" — {model}" if model else "")
    ax.set_title(style.plain(style.wrap_title(title, width * 0.9, 11)), fontsize=11, loc="left")
    return fig
