"""Peak RAM against shard size: one line per strategy, one panel per device map.

Example:
    >>> from bigviz.plots import sweep_curves  # doctest: +SKIP
    >>> sweep_curves(sweep).savefig("sweep.png")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bigviz.data.result import RunResult, Sweep
from bigviz.plots import sampling, style
from bigviz.units import format_size

__all__ = ["sweep_curves"]


def sweep_curves(
    sweep: Sweep | Iterable[RunResult],
    *,
    width: float = style.WIDTH,
    title: str | None = None,
    px: int | None = None,
    theme: str = "light",
) -> Figure:
    """Peak RAM vs shard size, one line per strategy (log x), one panel per device map.

    Solid lines with dots are measured peaks above baseline; thin dotted lines in the
    same colour the predictions; dashed lines VRAM peaks (device maps that use a GPU).
    Failed runs are red crosses. Runs without a shard size (single file) are left out.

    Args:
        sweep: a Sweep or RunResults.
        width: figure width in inches.
        title: overrides the automatic title.
        px: figure width in pixels (at 100 dpi, so text stays >= 9 px); overrides ``width``.
        theme: ``"light"`` or ``"dark"`` (JupyterLab Dark).

    Returns:
        The figure (a message panel when no run has a shard size).

    Raises:
        ConfigError: for anything that is not RunResults.

    Example:
        >>> fig = sweep_curves(sweep)  # doctest: +SKIP
    """
    width = style.size_in(width, px)
    with style.themed(theme):
        return style.finish(_sweep_curves(sweep, width=width, title=title))


def _sweep_curves(sweep: Sweep | Iterable[RunResult], *, width: float, title: str | None) -> Figure:
    results = sampling.as_results(sweep)
    sized = [r for r in results if r.shard_size is not None]
    maps: list[str] = []
    for r in sized:
        dm = r.device_map or "cpu"
        if dm not in maps:
            maps.append(dm)
    cols = max(1, min(len(maps), 3))
    rows = max(1, math.ceil(len(maps) / cols))
    fig = style.figure(width, 3.4 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    if not sized:
        empty: Axes = axes[0][0]
        empty.text(0.5, 0.5, "no run in this sweep has a shard size", ha="center", va="center")
        empty.set_axis_off()
        return fig
    colors = style.strategy_colors(results)
    values = [v for r in sized for v in (r.ram_peak, *r.vram_peak.values()) if v is not None]
    values += [r.predicted.ram_peak for r in sized if r.predicted]
    div, unit = style.axis_unit(max(values, default=1) or 1)
    sizes = sorted({r.shard_size for r in sized if r.shard_size is not None})
    for k, dm in enumerate(maps):
        ax: Axes = axes[k // cols][k % cols]
        in_map = [r for r in sized if (r.device_map or "cpu") == dm]
        for strategy, color in colors.items():
            runs = sorted(
                (r for r in in_map if r.strategy == strategy), key=lambda r: r.shard_size or 0
            )
            if not runs:
                continue
            ok = [r for r in runs if r.ok and r.ram_peak is not None]
            ax.plot(
                [r.shard_size or 0 for r in ok],
                [(r.ram_peak or 0) / div for r in ok],
                marker="o",
                ms=4,
                color=color,
                label=style.plain(strategy),
            )
            pred = [r for r in runs if r.predicted is not None]
            if pred:
                ax.plot(
                    [r.shard_size or 0 for r in pred],
                    [r.predicted.ram_peak / div for r in pred if r.predicted],
                    color=color,
                    lw=0.9,
                    ls=":",
                )
            vram = [r for r in runs if r.vram_peak]
            if vram:
                ax.plot(
                    [r.shard_size or 0 for r in vram],
                    [sum(r.vram_peak.values()) / div for r in vram],
                    color=color,
                    lw=1.1,
                    ls="--",
                    marker="s",
                    ms=3,
                )
            failed = [r for r in runs if not r.ok]
            if failed:
                ax.plot(
                    [r.shard_size or 0 for r in failed],
                    [(r.ram_peak or 0) / div for r in failed],
                    ls="none",
                    marker="X",
                    ms=8,
                    color=style.FAIL,
                )
        ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels(
            [format_size(s, binary=False, precision=0).replace(" ", "") for s in sizes],
            fontsize=8,
        )
        ax.minorticks_off()
        ax.set_xlabel("shard size (log scale)")
        # a custom JSON map can be long: wrapped to its panel, it never squeezes the plot
        heading = style.wrap_title(f"device map: {dm}", width / cols * 0.85, 9.5)
        ax.set_title(style.plain(heading), fontsize=9.5, loc="left")
        ax.grid(color=style.current().grid, lw=0.6)
        ax.set_axisbelow(True)
        ax.set_ylim(bottom=0)
        if k % cols == 0:
            ax.set_ylabel(f"peak above baseline ({unit})")
    for k in range(len(maps), rows * cols):
        axes[k // cols][k % cols].set_axis_off()
    first = axes[0][0]
    handles, _labels = first.get_legend_handles_labels()
    handles += [
        Line2D([], [], color=style.current().muted, lw=0.9, ls=":", label="predicted"),
        Line2D([], [], ls="none", marker="X", color=style.FAIL, label="failed run"),
    ]
    if any(r.vram_peak for r in sized):
        handles.append(Line2D([], [], color=style.current().muted, lw=1.1, ls="--", marker="s",
                              label="VRAM"))
    first.legend(handles=handles, fontsize=7.5, loc="best", framealpha=0.9)
    heading = style.wrap_title(title or "Peak RAM vs shard size", width * 0.97, 11)
    fig.suptitle(style.plain(heading), fontsize=11, x=0.01, ha="left")
    return fig
