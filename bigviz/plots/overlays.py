"""Several runs on one time axis, each from its own start (above its baseline).

Example:
    >>> from bigviz.plots import overlay  # doctest: +SKIP
    >>> overlay([naive_result, meta_result]).savefig("runs.png")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bigviz._errors import ConfigError
from bigviz.data.recording import Recording, Series
from bigviz.data.result import RunResult, Sweep
from bigviz.plots import sampling, style
from bigviz.tables.labels import short_labels

__all__ = ["overlay"]


def overlay(
    results: Sweep | Iterable[RunResult | Recording],
    *,
    series: str = "ram.rss",
    width: float = style.WIDTH,
    max_points: int = sampling.MAX_POINTS,
    title: str | None = None,
    px: int | None = None,
    theme: str = "light",
) -> Figure:
    """Several runs on one time axis, each from its own start.

    RunResults are drawn above their baseline (what the strategy needed), Recordings as
    measured. A second panel shows VRAM (allocator ``allocated``, summed over devices)
    when any run has it. A failed run's line ends in a red cross.

    Args:
        results: a Sweep, RunResults and/or Recordings.
        series: which RAM series to draw (``"ram.rss"``, ``"ram.anon"``, ``"ram.file"``).
        width: figure width in inches.
        max_points: points drawn per run at most.
        title: overrides the automatic title.
        px: figure width in pixels (at 100 dpi, so text stays >= 9 px); overrides ``width``.
        theme: ``"light"`` or ``"dark"`` (JupyterLab Dark).

    Returns:
        The figure.

    Raises:
        ConfigError: for anything else, or no runs at all.

    Example:
        >>> fig = overlay([naive_result, meta_result])  # doctest: +SKIP
    """
    width = style.size_in(width, px)
    with style.themed(theme):
        return style.finish(_overlay(results, series=series, width=width, max_points=max_points,
                                     title=title))


def _overlay(
    results: Sweep | Iterable[RunResult | Recording], *, series: str, width: float,
    max_points: int, title: str | None,
) -> Figure:
    items = list(results.results) if isinstance(results, Sweep) else list(results)
    if not items:
        raise ConfigError("overlay() got no runs; give RunResults or Recordings")
    runs: list[tuple[str, Recording, float, RunResult | None]] = []
    only_results = [x for x in items if isinstance(x, RunResult)]
    short = dict(zip(map(id, only_results), short_labels(only_results), strict=True))
    for i, item in enumerate(items):
        rec, res = sampling.as_recording(item)
        label = short[id(res)] if res is not None else (rec.name or f"recording {i + 1}")
        runs.append((label, rec, float(res.baseline) if res is not None else 0.0, res))
    any_baseline = any(r is not None for *_x, r in runs)
    has_vram = any(any(n.endswith(".allocated") for n in rec.series) for _l, rec, _b, _r in runs)
    fig = style.figure(width, 5.6 if has_vram else 3.8)
    axes = fig.subplots(
        2 if has_vram else 1,
        1,
        sharex=True,
        squeeze=False,
        height_ratios=[3, 1.6] if has_vram else [1],
    )[:, 0]
    ram_ax: Axes = axes[0]
    top = max(
        (max(s.v) - b for _l, rec, b, _r in runs if (s := _overlay_series(rec, series)) and s.v),
        default=1.0,
    )
    div, unit = style.axis_unit(top or 1.0)
    vtop = max(
        (float(v.max()) for _l, rec, _b, _r in runs if len(v := _vram_total(rec, max_points)[1])),
        default=1.0,
    )
    vdiv, vunit = style.axis_unit(vtop or 1.0)
    result_list = [r for *_x, r in runs if r is not None]
    colors = style.strategy_colors(result_list)
    labels_seen: dict[str, int] = {}
    for i, (label, rec, base, res) in enumerate(runs):
        color = colors.get(res.strategy, f"C{i % 10}") if res else f"C{i % 10}"
        # same strategy twice (other shard size): vary the dash so both stay readable
        nth = labels_seen.setdefault(color, 0)
        labels_seen[color] = nth + 1
        ls = ["-", "--", ":", "-."][nth % 4]
        s = _overlay_series(rec, series)
        if s is None or not s.v:
            continue
        t, v = sampling.downsample(s.t, s.v, max_points=max_points)
        ram_ax.plot(t, (v - base) / div, color=color, lw=1.3, ls=ls, label=style.plain(label))
        if res is not None and res.outcome in style.FAILED:
            ram_ax.plot([t[-1]], [(v[-1] - base) / div], marker="X", color=style.FAIL, ms=8)
        if has_vram:
            tv, vv = _vram_total(rec, max_points)
            if len(tv):
                axes[1].plot(tv, vv / vdiv, color=color, lw=1.2, ls=ls)
    name = series.split(".", 1)[-1].upper() if series == "ram.rss" else series
    dist = [rec.ranks != [] for _l, rec, _b, _r in runs]
    if series == "ram.rss" and any(dist):
        name = "node PSS" if all(dist) else "RSS (node PSS for distributed runs)"
    suffix = " above baseline" if any_baseline else ""
    ram_ax.set_ylabel(f"{name}{suffix} ({unit})")
    ram_ax.grid(color=style.current().grid, lw=0.6)
    if ram_ax.get_legend_handles_labels()[0]:
        ram_ax.legend(fontsize=7.5, loc="upper left", ncols=2, framealpha=0.9)
    ram_ax.set_ylim(bottom=min(0.0, ram_ax.get_ylim()[0]))
    if has_vram:
        axes[1].set_ylabel(f"VRAM allocated ({vunit})")
        axes[1].grid(color=style.current().grid, lw=0.6)
    axes[-1].set_xlabel("time since run start (s)")
    ram_ax.set_xlim(left=0)
    fig.suptitle(style.plain(style.wrap_title(title or "Runs compared", width * 0.97, 11)),
                 fontsize=11, x=0.01, ha="left")
    return fig


def _overlay_series(rec: Recording, series: str) -> Series | None:
    """The series to overlay; a distributed run has no RSS of its own, so its node PSS
    (the honest node RAM, what its baseline and peak are measured in) stands in."""
    s = rec.series.get(series)
    if (s is None or not s.v) and rec.ranks and series == "ram.rss":
        return rec.series.get("node.pss")
    return s


def _vram_total(rec: Recording, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Allocator ``allocated`` summed over devices, on the first device's clock."""
    alloc = [s for n, s in rec.series.items() if n.endswith(".allocated") and s.v]
    if not alloc:
        return np.zeros(0), np.zeros(0)
    grid = np.asarray(alloc[0].t, dtype=float)
    total = np.zeros(len(grid))
    for a in alloc:
        total += np.interp(grid, np.asarray(a.t, dtype=float), np.asarray(a.v, dtype=float))
    return sampling.downsample(grid, total, max_points=max_points)
