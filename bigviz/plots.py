"""Matplotlib figures of Recordings, RunResults and Sweeps.

Five figures answer the questions people ask of a load:

* :func:`timeline` — one run over time: RAM (anonymous, file-backed and shared memory,
  stacked), VRAM per device, phases, each phase's exact peak, the predicted peak and events.
* :func:`ranks` — a distributed run: one lane per rank on one clock, and the node total
  (Σ PSS beside Σ RSS); :func:`timeline` uses it for any recording with ranks.
* :func:`peaks` — peak memory per run: anonymous vs file-backed vs VRAM, prediction beside.
* :func:`sweep_curves` — peak vs shard size per strategy (log x), one panel per device map.
* :func:`overlay` — several runs on one time axis.

Every function returns a :class:`matplotlib.figure.Figure` and never calls ``plt.show``;
in Jupyter the returned figure displays itself. Sizes are in binary units (MiB/GiB,
chosen by magnitude) and the axis labels say which. Long series are downsampled for
drawing, keeping each bucket's minimum and maximum so no peak disappears.

This is the only core module that imports matplotlib (``import bigviz`` does not).

Example:
    >>> from bigviz.plots import timeline  # doctest: +SKIP
    >>> fig = timeline(result)  # doctest: +SKIP
    >>> fig.savefig("run.png")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import matplotlib
import numpy as np
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bigviz._errors import ConfigError
from bigviz._labels import OUTCOME_TEXT, short_labels
from bigviz._ranks import (
    contributions,
    failed_rank,
    is_distributed,
    node_rss_sum,
    pss_snapshots,
)
from bigviz.data.recording import Phase, Recording, Series
from bigviz.data.result import RunResult, Sweep
from bigviz.units import format_size

# Choose Agg only when nobody chose a backend (Jupyter's inline backend arrives through
# MPLBACKEND, a user's through matplotlib.use): figures must render on headless machines.
# pyplot resolves its backend lazily, so switching after the import is safe.
_backend_or_none = getattr(matplotlib.rcParams, "_get_backend_or_none", None)
if _backend_or_none is not None and _backend_or_none() is None:  # pragma: no branch
    matplotlib.use("Agg")

__all__ = [
    "WIDTH",
    "downsample",
    "overlay",
    "peaks",
    "ranks",
    "short_labels",
    "sweep_curves",
    "timeline",
    "to_png",
    "to_svg",
]

#: Default figure width in inches: a Jupyter notebook's output cell.
WIDTH = 9.0
#: Points drawn per series at most; min and max of each bucket are kept.
MAX_POINTS = 3000

_FAILED = ("oom", "budget_exceeded", "error", "crashed", "cancelled")
_ANON = "#3b75af"
_FILE = "#9ecae9"
_SHMEM = "#d9c3e6"
_PRED = "#c0392b"
_FAIL = "#c0392b"
_PHASE_COLORS = ["#e8eef7", "#f6eadf", "#e6f2e6", "#f3e5f1", "#f7f2d9", "#e4f1f3"]
_PHASE_EDGES = ["#6d8fbf", "#c98d55", "#6aa56a", "#b675a8", "#b8a23a", "#5ea3ad"]


# -- small helpers ---------------------------------------------------------------------


def to_svg(fig: Figure, *, salt: str = "") -> str:
    """``fig`` as an ``<svg>`` element for inline use in HTML.

    Text stays text (``svg.fonttype = 'none'``): it is selectable, searchable, and
    matplotlib XML-escapes it. ``salt`` makes the clip-path ids unique per figure, since
    several SVGs share one HTML document, and keeps output deterministic.

    Example:
        >>> from bigviz.data.recording import Recording
        >>> to_svg(timeline(Recording()), salt="a").startswith("<svg")
        True
    """
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


def to_png(fig: Figure, *, dpi: int = 110) -> bytes:
    """``fig`` as PNG bytes (9 in × 110 dpi ≈ 1000 px: sharp in a pull request).

    Example:
        >>> from bigviz.data.recording import Recording
        >>> to_png(timeline(Recording()))[:4]
        b'\\x89PNG'
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _predicted_handle(label: str) -> Line2D:
    """Legend entry for the dashed predicted-peak line (timelines and the node panel)."""
    return Line2D([], [], color=_PRED, lw=1.4, ls="--", label=_plain(label))


def _plain(text: str) -> str:
    """User text for matplotlib: ``$`` would start mathtext, so escape it."""
    return text.replace("$", r"\$")


def _unit(max_bytes: float) -> tuple[float, str]:
    """A binary unit for an axis whose largest value is ``max_bytes``."""
    m = abs(max_bytes)
    for div, name in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if m >= div:
            return float(div), name
    return 1.0, "bytes"


def _figure(width: float, height: float) -> Figure:
    # pyplot gives the figure a canvas and Jupyter's display hook; closing it at once
    # keeps pyplot from holding figures (no leak in loops, no second auto-display).
    fig = plt.figure(figsize=(width, height), layout="constrained")
    plt.close(fig)
    return fig


def _keep(values: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of a min/max-per-bucket subsample of ``values`` (first and last kept)."""
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, max_points // 2)
    size = math.ceil(n / buckets)
    padded = np.concatenate([values, np.full(buckets * size - n, values[-1])])
    grid = padded.reshape(buckets, size)
    offsets = np.arange(buckets) * size
    idx = np.concatenate([grid.argmin(axis=1) + offsets, grid.argmax(axis=1) + offsets, [0, n - 1]])
    return np.unique(np.clip(idx, 0, n - 1))


def downsample(
    t: Sequence[float] | np.ndarray[Any, Any],
    v: Sequence[float] | np.ndarray[Any, Any],
    *,
    max_points: int = MAX_POINTS,
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce a series to about ``max_points`` points, keeping every bucket's min and max.

    Drawing 100,000 samples is slow and shows nothing more than this; the peak of the
    result equals the peak of the input, so no spike is hidden.

    Args:
        t: sample times.
        v: sample values (same length).
        max_points: the most points to return (at least 4).

    Returns:
        ``(t, v)`` as numpy arrays, in time order.

    Raises:
        ConfigError: if ``t`` and ``v`` differ in length or ``max_points`` < 4.

    Example:
        >>> import numpy as np
        >>> t, v = downsample(range(100_000), np.sin(np.arange(100_000)), max_points=1000)
        >>> len(t) <= 1002, float(v.max()) == float(np.sin(np.arange(100_000)).max())
        (True, True)
    """
    if len(t) != len(v):
        raise ConfigError(f"downsample: t has {len(t)} samples but v has {len(v)}")
    if max_points < 4:
        raise ConfigError(f"downsample: max_points={max_points} is too small; use >= 4")
    ta = np.asarray(t, dtype=float)
    va = np.asarray(v, dtype=float)
    if len(va) == 0:
        return ta, va
    idx = _keep(va, max_points)
    return ta[idx], va[idx]


def _as_recording(obj: Recording | RunResult) -> tuple[Recording, RunResult | None]:
    if isinstance(obj, RunResult):
        return obj.recording, obj
    if isinstance(obj, Recording):
        return obj, None
    raise ConfigError(
        f"cannot plot a {type(obj).__name__}; give a Recording or a RunResult "
        "(for a Sweep use peaks() or sweep_curves())"
    )


def _as_results(obj: Sweep | RunResult | Iterable[RunResult]) -> list[RunResult]:
    if isinstance(obj, Sweep):
        return list(obj.results)
    if isinstance(obj, RunResult):
        return [obj]
    try:
        items = list(obj)
    except TypeError:
        raise ConfigError(
            f"cannot plot a {type(obj).__name__}; give a Sweep or a list of RunResults"
        ) from None
    for item in items:
        if not isinstance(item, RunResult):
            raise ConfigError(
                f"expected RunResults, got a {type(item).__name__}; give a Sweep or RunResults"
            )
    return items


def _strategy_colors(results: Sequence[RunResult]) -> dict[str, str]:
    names: list[str] = []
    for r in results:
        if r.strategy not in names:
            names.append(r.strategy)
    palette = [f"C{i}" for i in range(10)]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def _phase_end(p: Phase, rec: Recording) -> float:
    if p.end is not None:
        return p.end
    last = max((s.t[-1] for s in rec.series.values() if s.t), default=p.start)
    return max(p.start, rec.duration, last)


def _rec_end(rec: Recording) -> float:
    last = max((s.t[-1] for s in rec.series.values() if s.t), default=0.0)
    return max(last, rec.duration)


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


def _fit_label(text: str, width_in: float, fontsize: float) -> str:
    """``text`` cut to fit ``width_in`` inches (empty when not even 3 characters fit)."""
    chars = int(width_in * 72 / (fontsize * 0.6))
    if chars >= len(text):
        return text
    if chars < 4:
        return ""
    return text[: chars - 1] + "…"


#: legend text of the stacked RAM layers, bottom to top
_LAYER_LABELS = (
    "RAM anonymous",
    "RAM file-backed (mmap, page cache)",
    "RAM shared (RssShmem: tmpfs, /dev/shm)",
)


def _ram_layers(rec: Recording, max_points: int) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """``(t, tops)``: the cumulative tops of the stacked RAM layers (anonymous, + file-backed,
    + shared memory when any), thinned so that no layer loses its peak; ``None`` without
    anonymous and file-backed samples.

    RSS is RssAnon + RssFile + RssShmem. Shared memory (a checkpoint mapped from tmpfs,
    e.g. ``/dev/shm`` or a tmpfs ``/tmp``; shared anonymous mappings) is neither anonymous
    nor file-backed, so without its own layer the stack ends below the RSS line by exactly
    that much. It is ``rss - anon - file`` on the shared clock: the RssShmem value the
    sampler split off (read every ``status_ms``, so the file/shared split may lag it by
    that long, while the stack's top is RSS at every sample).
    """
    anon, file = rec.series.get("ram.anon"), rec.series.get("ram.file")
    if anon is None or not anon.v or file is None or not file.v:
        return None
    ta = np.asarray(anon.t, dtype=float)
    av = np.asarray(anon.v, dtype=float)
    fv = np.asarray(file.v, dtype=float)
    same_clock = file.t == anon.t
    if not same_clock:  # different clocks: bring file-backed onto the anon samples
        fv = np.interp(ta, np.asarray(file.t, dtype=float), fv)
    tops = [av, av + fv]
    rss = rec.series.get("ram.rss")
    if same_clock and rss is not None and rss.t == anon.t:
        shmem = np.maximum(0.0, np.asarray(rss.v, dtype=float) - tops[-1])
        if shmem.any():
            tops.append(tops[-1] + shmem)
    idx = np.unique(np.concatenate([_keep(v, max_points) for v in tops]))
    return ta[idx], [v[idx] for v in tops]


def _fill_ram(ax: Axes, t: np.ndarray, tops: list[np.ndarray], div: float, *, legend: bool) -> None:
    """Stack the layers of :func:`_ram_layers` (labelled for the legend when ``legend``)."""
    colors = (_ANON, _FILE, _SHMEM)
    low: Any = 0
    for top, color, label in zip(tops, colors, _LAYER_LABELS, strict=False):
        ax.fill_between(t, low, top / div, color=color, lw=0, label=label if legend else None)
        low = top / div


# -- timeline --------------------------------------------------------------------------


def timeline(
    obj: Recording | RunResult,
    *,
    width: float = WIDTH,
    max_points: int = MAX_POINTS,
    title: str | None = None,
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
        width: figure width in inches (9 suits a notebook).
        max_points: points drawn per series at most (min/max kept per bucket).
        title: overrides the automatic title.

    Returns:
        The figure.

    Raises:
        ConfigError: for anything but a Recording or RunResult.

    Example:
        >>> fig = timeline(result)  # doctest: +SKIP
    """
    rec, result = _as_recording(obj)
    if rec.ranks:
        return ranks(obj, width=width, max_points=max_points, title=title)
    devices = _devices(rec)
    depth_rows = max((p.depth for p in rec.phases), default=-1) + 1
    heights = [3.2]
    if devices:
        heights.append(1.9)
    if depth_rows:
        heights.append(0.24 * depth_rows + 0.15)
    fig = _figure(width, sum(heights) + 0.9)
    axes = fig.subplots(len(heights), 1, sharex=True, height_ratios=heights, squeeze=False)[:, 0]
    ram_ax: Axes = axes[0]
    vram_ax: Axes | None = axes[1] if devices else None
    strip_ax: Axes | None = axes[-1] if depth_rows else None
    end = _rec_end(rec)

    _draw_ram(ram_ax, rec, result, max_points, width)
    if vram_ax is not None:
        _draw_vram(vram_ax, rec, result, devices, max_points)
    for ax in axes[: len(axes) - (1 if strip_ax is not None else 0)]:
        _shade_phases(ax, rec)
        _draw_marks(ax, rec, label=ax is ram_ax)
        if result is not None and result.outcome in _FAILED:
            ax.axvline(end, color=_FAIL, linewidth=1.6)
    if result is not None and result.outcome in _FAILED:
        where = f" in {result.phase_reached}" if result.phase_reached else ""
        ram_ax.annotate(
            _plain(f"✕ {OUTCOME_TEXT[result.outcome]}{where}"),
            xy=(end, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(-4, -4),
            textcoords="offset points",
            ha="right",
            va="top",
            color=_FAIL,
            fontsize=8.5,
            fontweight="bold",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": _FAIL, "lw": 0.8},
        )
    if strip_ax is not None:
        _draw_phase_strip(strip_ax, rec, depth_rows, width)

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
    fig.suptitle(_plain(title), fontsize=11, x=0.01, ha="left")
    return fig


def _draw_ram(
    ax: Axes, rec: Recording, result: RunResult | None, max_points: int, width: float
) -> None:
    inches_per_s = (width * 0.86) / (_rec_end(rec) or 1.0)
    anon = rec.series.get("ram.anon")
    file = rec.series.get("ram.file")
    rss = rec.series.get("ram.rss")
    tops: list[float] = [p.ram_peak for p in rec.phases if p.ram_peak is not None]
    for s in (rss,):
        if s is not None and s.v:
            tops.append(max(s.v))
    layers = _ram_layers(rec, max_points)
    if layers is not None:
        tops.append(float(layers[1][-1].max()))
    div, unit = _unit(max(tops) if tops else 1.0)
    if layers is not None:
        _fill_ram(ax, *layers, div, legend=True)
    if rss is not None and rss.v:
        t, v = downsample(rss.t, rss.v, max_points=max_points)
        filled = anon is not None and file is not None
        if filled:
            ax.plot(t, v / div, color="#1f2d3d", lw=0.8, label="RSS")
        else:
            ax.fill_between(t, 0, v / div, color=_ANON, lw=0, label="RSS")
    if not rec.series.get("ram.rss") and not (anon and file):
        ax.text(0.5, 0.5, "no RAM samples", transform=ax.transAxes, ha="center", color="0.4")
    exact_seen = sampled_seen = False
    for p in rec.phases:
        if p.ram_peak is None:
            continue
        p_end = _phase_end(p, rec)
        style: Literal["-", ":"] = "-" if p.ram_peak_exact else ":"
        exact_seen |= p.ram_peak_exact
        sampled_seen |= not p.ram_peak_exact
        ax.hlines(p.ram_peak / div, p.start, p_end, colors="#111111", linestyles=style, lw=1.3)
        text = format_size(p.ram_peak)
        # label top-level peaks whose phase is wide enough for the text, so they never pile up
        if p.depth == 0 and (p_end - p.start) * inches_per_s >= len(text) * 7.5 * 0.62 / 72:
            ax.annotate(
                text,
                xy=((p.start + p_end) / 2, p.ram_peak / div),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7.5,
                color="#111111",
            )
    if result is not None:
        ax.axhline(result.baseline / div, color="0.45", lw=0.9, ls=(0, (1, 2)))
        if result.predicted is not None:
            pred = result.baseline + result.predicted.ram_peak
            tops.append(pred)
            ax.axhline(pred / div, color=_PRED, lw=1.4, ls="--")
    # legend built by hand so phase-peak styles and reference lines read as one key
    handles, _labels = ax.get_legend_handles_labels()
    if exact_seen:
        handles.append(Line2D([], [], color="#111111", lw=1.3, label="phase peak (exact, VmHWM)"))
    if sampled_seen:
        handles.append(
            Line2D([], [], color="#111111", lw=1.3, ls=":", label="phase peak (sampled)")
        )
    if result is not None:
        handles.append(
            Line2D([], [], color="0.45", lw=0.9, ls=(0, (1, 2)), label="baseline (after imports)")
        )
        if result.predicted is not None:
            handles.append(_predicted_handle(f"predicted peak ({result.predicted.formula})"))
    # always from zero: stacked anonymous/file-backed areas cut off at the bottom would
    # misstate which kind of memory grew
    top = max(tops) if tops else 1.0
    ax.set_ylim(0, top / div * 1.15 if top > 0 else 1.0)
    ax.set_ylabel(f"RAM ({unit})")
    _note_small_growth(ax, rec, result)
    ax.grid(axis="y", color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    # above the panel, so marks and the kill flag at the top never hide under it
    ax.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        fontsize=7.5,
        frameon=False,
        ncols=3,
        borderaxespad=0.2,
    )


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
        color="#1f2d3d",
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.6", "lw": 0.6, "alpha": 0.9},
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
    div, unit = _unit(top if top > 0 else 1.0)
    for i, dev in enumerate(devices):
        color = f"C{(i + 2) % 10}"
        for pattern, ls, label in kinds:
            s = rec.series.get(pattern.format(dev))
            if s is None or not s.v:
                continue
            t, v = downsample(s.t, s.v, max_points=max_points)
            ax.plot(t, v / div, color=color, ls=ls, lw=1.2, label=f"GPU {dev} {label}")
        if result is not None and result.predicted is not None:
            pred = result.predicted.vram.get(f"cuda:{dev}")
            if pred is not None:
                ax.axhline(pred / div, color=_PRED, ls="--", lw=1.2, label=f"GPU {dev} predicted")
    ax.set_ylim(0, top / div * 1.15 if top > 0 else 1.0)
    ax.set_ylabel(f"VRAM ({unit})")
    ax.grid(axis="y", color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    if not ax.get_legend_handles_labels()[0]:
        return
    ax.legend(
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        fontsize=7.5,
        frameon=False,
        ncols=3,
        borderaxespad=0.2,
    )


def _top_index(rec: Recording, i: int) -> int:
    """Index of the top-level phase that contains ``phases[i]``."""
    seen = set()
    while rec.phases[i].parent is not None and i not in seen:
        seen.add(i)
        parent = rec.phases[i].parent
        if parent is None or not 0 <= parent < len(rec.phases):
            break
        i = parent
    return i


def _shade_phases(ax: Axes, rec: Recording) -> None:
    tops = [i for i, p in enumerate(rec.phases) if p.depth == 0]
    for k, i in enumerate(tops):
        p = rec.phases[i]
        # zorder 0: the bands sit behind the memory areas instead of washing them out
        ax.axvspan(
            p.start, _phase_end(p, rec), color=_PHASE_COLORS[k % 6], alpha=0.6, lw=0, zorder=0
        )
        ax.axvline(p.start, color="0.75", lw=0.5, zorder=0)


def _draw_marks(ax: Axes, rec: Recording, *, label: bool) -> None:
    for m in rec.marks:
        ax.axvline(m.t, color="#555555", lw=0.9, ls=(0, (2, 2)))
        if label:
            ax.annotate(
                _plain(m.name),
                xy=(m.t, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -2),
                textcoords="offset points",
                rotation=90,
                ha="left",
                va="top",
                fontsize=7,
                color="#333333",
            )


def _draw_phase_strip(ax: Axes, rec: Recording, rows: int, width: float) -> None:
    end = _rec_end(rec) or 1.0
    top_rank = {i: k for k, i in enumerate(i for i, p in enumerate(rec.phases) if p.depth == 0)}
    inches_per_s = (width * 0.86) / end
    for i, p in enumerate(rec.phases):
        p_end = _phase_end(p, rec)
        k = top_rank.get(_top_index(rec, i), 0)
        y = rows - 1 - p.depth
        ax.broken_barh(
            [(p.start, max(p_end - p.start, 1e-9))],
            (y + 0.08, 0.84),
            facecolors=_PHASE_COLORS[k % 6],
            edgecolors=_PHASE_EDGES[k % 6],
            linewidth=0.7,
        )
        text = _fit_label(p.name, (p_end - p.start) * inches_per_s, 7.5)
        if text:
            ax.text(
                (p.start + p_end) / 2,
                y + 0.5,
                _plain(text),
                ha="center",
                va="center",
                fontsize=7.5,
                clip_on=True,
                gid=f"phase-{i}",
            )
        if p.error:
            ax.plot([p_end], [y + 0.5], marker="X", color=_FAIL, ms=7, clip_on=False)
    ax.set_ylim(0, rows)
    ax.set_yticks([rows - 0.5 - d for d in range(rows)])
    ax.set_yticklabels(["phases" if d == 0 else f"depth {d}" for d in range(rows)], fontsize=7)
    ax.tick_params(axis="y", length=0)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


# -- distributed: one lane per rank ----------------------------------------------------

_PSS = "#6a3d9a"
_RANK_SHADES = [
    "#08306b",
    "#2171b5",
    "#6baed6",
    "#9ecae1",
    "#4a1486",
    "#807dba",
    "#bcbddc",
    "#dadaeb",
]


def ranks(
    obj: Recording | RunResult,
    *,
    width: float = WIDTH,
    max_points: int = MAX_POINTS,
    max_lanes: int = 8,
    title: str | None = None,
) -> Figure:
    """Plot a distributed run: one lane per rank, then the node total.

    Every lane has the same RAM scale, so ranks compare at a glance: anonymous and
    file-backed memory stacked (and shared memory, RssShmem, when any), RSS as a thin
    line, the rank's PSS (shared pages split between the ranks that map them) as a purple
    step line, and the rank's own phases shaded and named. The last panel is the node:
    ``node.pss`` (Σ of the ranks' PSS, the honest node RAM when pages are shared) solid,
    and Σ RSS dashed, which counts a shared page once per rank: the gap between them is
    the double counting PSS avoids. For a RunResult the node panel also shows the
    baseline, the reported node PSS peak and the predicted peak; a failed rank is flagged
    in its lane.

    :func:`timeline` calls this for any recording with ``ranks``.

    Args:
        obj: a distributed RunResult or a Recording with ``ranks``.
        width: figure width in inches.
        max_points: points drawn per series at most.
        max_lanes: lanes drawn at most; beyond it rank 0, a failed rank and the ranks
            with the highest peaks are shown (the title says how many).
        title: overrides the automatic title.

    Returns:
        The figure; ``fig.axes[:-1]`` are the lanes (``gid`` ``"rank-N"``), the last the node.

    Raises:
        ConfigError: for anything but a Recording or RunResult, one without ranks, or
            ``max_lanes`` < 1.

    Example:
        >>> fig = ranks(distributed_result)  # doctest: +SKIP
    """
    rec, result = _as_recording(obj)
    if not rec.ranks:
        raise ConfigError(
            f"recording {rec.name!r} has no per-rank lanes (recording.ranks is empty); "
            "it is not a distributed run: use timeline()"
        )
    if isinstance(max_lanes, bool) or not isinstance(max_lanes, int) or max_lanes < 1:
        raise ConfigError(f"max_lanes={max_lanes!r} must be a whole number >= 1")
    dead = failed_rank(result)
    lanes = _pick_lanes(rec, max_lanes, dead)
    n = len(lanes)
    lane_h = max(0.95, min(1.55, 5.0 / n))
    heights = [lane_h] * n + [1.9]
    fig = _figure(width, sum(heights) + 1.0)
    axes = fig.subplots(n + 1, 1, sharex=True, height_ratios=heights, squeeze=False)[:, 0]
    end = max([_rec_end(rec)] + [_rec_end(lane) for lane in rec.ranks])
    colors = _phase_color_map(rec.ranks)

    tops = [1.0]
    for lane in lanes:
        for key in ("ram.rss", "ram.pss"):
            s = lane.series.get(key)
            if s is not None and s.v:
                tops.append(float(max(s.v)))
        tops += [float(p.ram_peak) for p in lane.phases if p.ram_peak is not None]
        anon, file = lane.series.get("ram.anon"), lane.series.get("ram.file")
        if anon is not None and anon.v and file is not None and file.v and anon.t == file.t:
            tops.append(float(max(a + f for a, f in zip(anon.v, file.v, strict=True))))
    node_snap, lane_snaps = pss_snapshots(result) if result is not None else (None, {})
    tops += [float(v) for _t, v in lane_snaps.values()]
    top = max(tops)
    div, unit = _unit(top)
    shmem_seen = False
    for k, (ax, lane) in enumerate(zip(axes[:n], lanes, strict=True)):
        rank = lane.rank if lane.rank is not None else k
        shmem_seen |= _draw_lane(ax, lane, rank, div, top, colors, max_points, width, end)
        if rank in lane_snaps:
            t_s, v_s = lane_snaps[rank]
            ax.plot([t_s], [v_s / div], marker="D", ms=5, color=_PSS, mec="white", mew=0.6)
        ax.set_gid(f"rank-{rank}")
        if rank == dead and result is not None:
            _flag_failed_lane(ax, lane, result)
        _draw_marks(ax, lane, label=False)
    _draw_node(axes[n], rec, result, max_points, node_snap)
    _draw_marks(axes[n], rec, label=False)

    handles = [
        Patch(color=_ANON, label="anonymous"),
        Patch(color=_FILE, label="file-backed (mmap, page cache)"),
        *([Patch(color=_SHMEM, label="shared (RssShmem)")] if shmem_seen else []),
        Line2D([], [], color="#1f2d3d", lw=0.8, label="RSS"),
        Line2D([], [], color=_PSS, lw=1.3, drawstyle="steps-post", label="PSS (sampled)"),
    ]
    if lane_snaps:
        handles.append(
            Line2D(
                [],
                [],
                color=_PSS,
                ls="none",
                marker="D",
                ms=5,
                mec="white",
                label="PSS snapshot (exact, all ranks loaded)",
            )
        )
    if any(p.ram_peak_exact for lane in lanes for p in lane.phases):
        handles.append(Line2D([], [], color="#111111", lw=1.3, label="phase peak (exact, VmHWM)"))
    axes[0].legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        fontsize=7.5,
        frameon=False,
        ncols=3,
        borderaxespad=0.2,
    )
    bottom = axes[-1]
    bottom.set_xlabel("time (s), one clock for every rank")
    bottom.set_xlim(0, end if end > 0 else 1.0)
    fig.supylabel(f"RAM per rank ({unit})", fontsize=9)
    nproc = len(rec.ranks)
    if title is None:
        if result is not None:
            title = f"{result.label} — {result.model or rec.name}"
            if "nproc" not in result.params:  # the label names the ranks when it knows them
                title += f" — {nproc} ranks"
            if result.outcome != "ok":
                title += f" — {OUTCOME_TEXT.get(result.outcome, result.outcome)}"
        else:
            title = f"{rec.name or 'recording'} — {nproc} ranks"
        if n < nproc:
            title += f" (showing {n} of {nproc} ranks: rank 0, any failed rank, highest peaks)"
    fig.suptitle(_plain(title), fontsize=11, x=0.01, ha="left")
    return fig


def _pick_lanes(rec: Recording, max_lanes: int, dead: int | None) -> list[Recording]:
    if len(rec.ranks) <= max_lanes:
        return list(rec.ranks)

    def peak(lane: Recording) -> int:
        s = lane.series.get("ram.rss")
        return max(s.v) if s is not None and s.v else 0

    chosen = [rec.ranks[0]]
    chosen += [lane for lane in rec.ranks if dead is not None and lane.rank == dead]
    for lane in sorted(rec.ranks, key=peak, reverse=True):
        if len(chosen) >= max_lanes:
            break
        if all(lane is not c for c in chosen):
            chosen.append(lane)
    order = {id(lane): i for i, lane in enumerate(rec.ranks)}
    return sorted(chosen[:max_lanes], key=lambda lane: order[id(lane)])


def _phase_color_map(lanes: Sequence[Recording]) -> dict[str, int]:
    """One colour per top-level phase name, the same in every lane."""
    names: dict[str, int] = {}
    for lane in lanes:
        for p in lane.phases:
            if p.depth == 0 and p.name not in names:
                names[p.name] = len(names)
    return names


def _draw_lane(
    ax: Axes,
    lane: Recording,
    rank: int,
    div: float,
    top: float,
    colors: dict[str, int],
    max_points: int,
    width: float,
    end: float,
) -> bool:
    """Draw one rank's lane; returns whether it has a shared-memory (RssShmem) layer."""
    inches_per_s = (width * 0.84) / (end or 1.0)
    for p in lane.phases:
        if p.depth != 0:
            continue
        k = colors.get(p.name, 0)
        p_end = _phase_end(p, lane)
        ax.axvspan(p.start, p_end, color=_PHASE_COLORS[k % 6], alpha=0.6, lw=0, zorder=0)
        ax.axvline(p.start, color="0.75", lw=0.5, zorder=0)
        text = _fit_label(p.name, (p_end - p.start) * inches_per_s, 6.5)
        if text:
            ax.text(
                (p.start + p_end) / 2,
                0.97,
                _plain(text),
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="top",
                fontsize=6.5,
                color="#333333",
                clip_on=True,
            )
        if p.error:
            ax.plot(
                [p_end],
                [0.5],
                marker="X",
                color=_FAIL,
                ms=6,
                clip_on=False,
                transform=ax.get_xaxis_transform(),
            )
    rss, pss = lane.series.get("ram.rss"), lane.series.get("ram.pss")
    layers = _ram_layers(lane, max_points)
    drawn = layers is not None
    if layers is not None:
        _fill_ram(ax, *layers, div, legend=False)
    if rss is not None and rss.v:
        t, v = downsample(rss.t, rss.v, max_points=max_points)
        if drawn:
            ax.plot(t, v / div, color="#1f2d3d", lw=0.8)
        else:
            ax.fill_between(t, 0, v / div, color=_ANON, lw=0)
            drawn = True
    if pss is not None and pss.v:
        t, v = downsample(pss.t, pss.v, max_points=max_points)
        few = len(t) <= 60
        ax.plot(
            t,
            v / div,
            color=_PSS,
            lw=1.3,
            drawstyle="steps-post",
            marker="o" if few else None,
            ms=2.5,
        )
    if not drawn:
        ax.text(0.5, 0.5, "no RAM samples", transform=ax.transAxes, ha="center", color="0.4")
    for p in lane.phases:
        if p.depth == 0 and p.ram_peak is not None:
            style: Literal["-", ":"] = "-" if p.ram_peak_exact else ":"
            ax.hlines(
                p.ram_peak / div,
                p.start,
                _phase_end(p, lane),
                colors="#111111",
                linestyles=style,
                lw=1.1,
            )
    # headroom for the phase names at the top of the lane
    ax.set_ylim(0, top / div * 1.3)
    ax.set_ylabel(f"rank {rank}", rotation=0, ha="right", va="center", fontsize=8.5)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    return layers is not None and len(layers[1]) > 2


def _flag_failed_lane(ax: Axes, lane: Recording, result: RunResult) -> None:
    last = _rec_end(lane)
    ax.axvline(last, color=_FAIL, lw=1.6)
    where = f" in {result.phase_reached}" if result.phase_reached else ""
    ax.annotate(
        _plain(f"✕ {OUTCOME_TEXT.get(result.outcome, result.outcome)}{where}"),
        xy=(last, 0.5),
        xycoords=("data", "axes fraction"),
        xytext=(-4, 0),
        textcoords="offset points",
        ha="right",
        va="center",
        color=_FAIL,
        fontsize=8,
        fontweight="bold",
        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": _FAIL, "lw": 0.8},
    )


def _draw_node(
    ax: Axes,
    rec: Recording,
    result: RunResult | None,
    max_points: int,
    snap: tuple[float, int] | None,
) -> None:
    pss, rss = rec.series.get("node.pss"), rec.series.get("node.rss")
    vals = [float(max(s.v)) for s in (pss, rss) if s is not None and s.v]
    if snap is not None:
        vals.append(float(snap[1]))
    reported: float | None = None
    pred: float | None = None
    if result is not None:
        vals.append(float(result.baseline))
        if result.ram_peak is not None:
            reported = float(result.baseline + result.ram_peak)
            vals.append(reported)
        if result.predicted is not None and result.predicted.ram_peak:
            pred = float(result.baseline + result.predicted.ram_peak)
            vals.append(pred)
    top = max(vals, default=1.0) or 1.0
    div, unit = _unit(top)
    handles: list[Any] = []
    if pss is not None and pss.v:
        t, v = downsample(pss.t, pss.v, max_points=max_points)
        ax.fill_between(t, 0, v / div, step="post", color=_PSS, alpha=0.15, lw=0)
        (line,) = ax.plot(
            t,
            v / div,
            color=_PSS,
            lw=1.8,
            drawstyle="steps-post",
            marker="o" if len(t) <= 60 else None,
            ms=3,
            label="node PSS (Σ ranks, shared pages once)",
        )
        handles.append(line)
    if rss is not None and rss.v:
        t, v = downsample(rss.t, rss.v, max_points=max_points)
        (line,) = ax.plot(
            t, v / div, color="#1f2d3d", lw=1.2, ls="--", label="Σ RSS (shared pages once per rank)"
        )
        handles.append(line)
    if result is not None:
        ax.axhline(result.baseline / div, color="0.45", lw=0.9, ls=(0, (1, 2)))
        handles.append(
            Line2D(
                [], [], color="0.45", lw=0.9, ls=(0, (1, 2)), label="baseline (Σ PSS after imports)"
            )
        )
        if reported is not None:
            ax.axhline(reported / div, color=_PSS, lw=0.9, ls="-.")
            handles.append(
                Line2D(
                    [],
                    [],
                    color=_PSS,
                    lw=0.9,
                    ls="-.",
                    label=f"node PSS peak, +{format_size(result.ram_peak)}",
                )
            )
        if pred is not None and result.predicted is not None:
            ax.axhline(pred / div, color=_PRED, lw=1.4, ls="--")
            handles.append(_predicted_handle(f"predicted ({result.predicted.formula})"))
    if snap is not None:
        (dot,) = ax.plot(
            [snap[0]],
            [snap[1] / div],
            ls="none",
            marker="D",
            ms=7,
            color=_PSS,
            mec="white",
            mew=0.8,
            label="node PSS snapshot (exact)",
        )
        handles.append(dot)
    if not (pss is not None and pss.v):
        ax.text(
            0.01,
            0.95,
            "no sampled node PSS (smaps_rollup too slow on this run)",
            transform=ax.transAxes,
            ha="left",
            va="top",
            color="0.4",
            fontsize=7.5,
        )
    ax.set_ylim(0, top / div * 1.18)
    ax.set_ylabel(f"node\n({unit})", rotation=0, ha="right", va="center", fontsize=8.5)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    ax.set_gid("node")
    if handles:
        # long prediction formulas get two columns so the key never runs off the figure
        wide = max(len(str(h.get_label())) for h in handles) > 40
        ax.legend(
            handles=handles,
            loc="lower left",
            bbox_to_anchor=(0.0, 1.0),
            fontsize=7.5,
            frameon=False,
            ncols=2 if wide else 3,
            borderaxespad=0.2,
        )


# -- peaks -----------------------------------------------------------------------------


def peaks(
    obj: Sweep | RunResult | Iterable[RunResult],
    *,
    width: float = WIDTH,
    title: str | None = None,
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

    Returns:
        The figure; ``fig.axes[0].containers`` holds one bar group per kind of bar.

    Raises:
        ConfigError: for anything that is not RunResults, or no runs at all.

    Example:
        >>> fig = peaks(sweep)  # doctest: +SKIP
    """
    results = _as_results(obj)
    if not results:
        raise ConfigError("peaks() got no runs; give a Sweep or a non-empty list of RunResults")
    if any(is_distributed(r) for r in results):
        return _dist_peaks(results, width=width, title=title)
    has_vram = any(r.vram_peak for r in results)
    has_split = any(r.ram_anon_peak is not None or r.ram_file_peak is not None for r in results)
    kinds: list[tuple[str, str, Any]] = []
    if has_split:
        kinds.append(("RAM anonymous", _ANON, lambda r: r.ram_anon_peak))
        kinds.append(("RAM file-backed", _FILE, lambda r: r.ram_file_peak))
    else:
        kinds.append(("RAM (RSS)", _ANON, lambda r: r.ram_peak))
    if has_vram:
        kinds.append(("VRAM", "C2", lambda r: sum(r.vram_peak.values()) if r.vram_peak else None))
    kinds.append(
        ("predicted RAM", "white", lambda r: r.predicted.ram_peak if r.predicted else None)
    )

    values = [[f(r) for r in results] for _n, _c, f in kinds]
    everything = [v for row in values for v in row if v is not None]
    everything += [r.ram_peak for r in results if r.ram_peak is not None]
    top = max(everything, default=1) or 1
    div, unit = _unit(top)

    height = 3.9
    fig = _figure(width, height)
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
            edgecolor=_PRED if pred else "none",
            hatch="///" if pred else None,
            linewidth=0.8 if pred else 0,
            label=name,
        )
    for i, r in enumerate(results):
        if r.ram_peak is not None:
            ax.hlines(r.ram_peak / div, i - group / 2, i + group / 2, colors="#111111", lw=1.6)
        _label_outcome(ax, i, r, div)
    handles, _labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="#111111", lw=1.6, label="RSS peak"))
    ax.legend(handles=handles, loc="upper right", fontsize=7.5, ncols=3, framealpha=0.9)
    _style_bars(ax, results, x, ylabel=f"peak above baseline ({unit})", ytop=top / div * 1.3)
    model = results[0].model
    if title is None:
        title = "Peak memory per run" + (f" — {model}" if model else "")
    ax.set_title(_plain(title), fontsize=11, loc="left")
    return fig


def _label_outcome(ax: Axes, x: float, r: RunResult, div: float) -> None:
    """Name a run's outcome above its bars when it did not finish."""
    if r.outcome == "ok":
        return
    ax.annotate(
        _plain(OUTCOME_TEXT.get(r.outcome, r.outcome)),
        xy=(x, (r.ram_peak or 0) / div),
        xytext=(0, 4),
        textcoords="offset points",
        ha="center",
        va="bottom",
        color=_FAIL,
        fontsize=8,
        fontweight="bold",
    )


def _style_bars(
    ax: Axes, results: Sequence[RunResult], x: Any, *, ylabel: str, ytop: float
) -> None:
    """Axis labels and grid shared by the per-run bar charts (labels slant when crowded)."""
    n = len(results)
    ax.set_xticks(x)
    labels = [_plain(lab) for lab in short_labels(results)]
    rotate = n > 4 or max(len(s) for s in labels) * n > 90
    ax.set_xticklabels(labels, rotation=25 if rotate else 0, ha="right" if rotate else "center")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, ytop)
    ax.grid(axis="y", color="0.9", lw=0.6)
    ax.set_axisbelow(True)


def _dist_peaks(results: Sequence[RunResult], *, width: float, title: str | None) -> Figure:
    """Node RAM per distributed run: PSS stacked by rank, Σ RSS beside it, prediction."""
    parts = [contributions(r) for r in results]
    rss_sums = [node_rss_sum(r) if is_distributed(r) else None for r in results]
    preds = [r.predicted.ram_peak if r.predicted else None for r in results]
    everything = [r.ram_peak for r in results if r.ram_peak is not None]
    everything += [v for v in (*rss_sums, *preds) if v is not None]
    everything += [sum(vals) for _rk, vals, _src in parts if vals]
    top = max(everything, default=1) or 1
    div, unit = _unit(top)
    fig = _figure(width, 4.1)
    ax = fig.add_subplot()
    n = len(results)
    x = np.arange(n)
    bar_w = 0.8 / 3
    max_rank = max((len(rk) for rk, _v, _s in parts), default=0)
    shade = [_RANK_SHADES[i % len(_RANK_SHADES)] for i in range(max(max_rank, 1))]
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
                    edgecolor="white",
                    linewidth=0.5,
                    label=f"rank {rank}" if k < 8 else None,
                    gid=f"pss-{i}-rank-{rank}",
                )
                bottom += v / div
        elif r.ram_peak is not None:
            ax.bar(xs, r.ram_peak / div, bar_w * 0.92, color=_ANON)
        if rss_sums[i] is not None:
            ax.bar(
                x[i],
                (rss_sums[i] or 0) / div,
                bar_w * 0.92,
                color="white",
                edgecolor="#1f2d3d",
                hatch="...",
                linewidth=0.8,
                ls="--",
            )
        if preds[i] is not None:
            ax.bar(
                x[i] + bar_w,
                (preds[i] or 0) / div,
                bar_w * 0.92,
                color="white",
                edgecolor=_PRED,
                hatch="///",
                linewidth=0.8,
            )
        if r.ram_peak is not None:
            ax.hlines(r.ram_peak / div, xs - bar_w / 2, xs + bar_w / 2, colors="#111111", lw=1.6)
        _label_outcome(ax, x[i], r, div)
    # one legend entry per rank, then the other bars
    handles, _labels = ax.get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for h, lab in zip(handles, _labels, strict=True):
        seen.setdefault(lab, h)
    handles = list(seen.values())
    handles.append(
        Patch(
            facecolor="white",
            edgecolor="#1f2d3d",
            hatch="...",
            label="Σ RSS (shared pages once per rank)",
        )
    )
    handles.append(Patch(facecolor="white", edgecolor=_PRED, hatch="///", label="predicted"))
    handles.append(Line2D([], [], color="#111111", lw=1.6, label="node PSS peak"))
    ax.legend(handles=handles, loc="upper right", fontsize=7.5, ncols=4, framealpha=0.9)
    _style_bars(ax, results, x, ylabel=f"node RAM above baseline ({unit})",
                ytop=top / div * 1.35)
    if title is None:
        model = results[0].model
        title = "Node RAM per run: PSS by rank" + (f" — {model}" if model else "")
    ax.set_title(_plain(title), fontsize=11, loc="left")
    return fig


# -- sweep curves ----------------------------------------------------------------------


def sweep_curves(
    sweep: Sweep | Iterable[RunResult],
    *,
    width: float = WIDTH,
    title: str | None = None,
) -> Figure:
    """Peak RAM vs shard size, one line per strategy (log x), one panel per device map.

    Solid lines with dots are measured peaks above baseline; thin dotted lines in the
    same colour the predictions; dashed lines VRAM peaks (device maps that use a GPU).
    Failed runs are red crosses. Runs without a shard size (single file) are left out.

    Args:
        sweep: a Sweep or RunResults.
        width: figure width in inches.
        title: overrides the automatic title.

    Returns:
        The figure (a message panel when no run has a shard size).

    Raises:
        ConfigError: for anything that is not RunResults.

    Example:
        >>> fig = sweep_curves(sweep)  # doctest: +SKIP
    """
    results = _as_results(sweep)
    sized = [r for r in results if r.shard_size is not None]
    maps: list[str] = []
    for r in sized:
        dm = r.device_map or "cpu"
        if dm not in maps:
            maps.append(dm)
    cols = max(1, min(len(maps), 3))
    rows = max(1, math.ceil(len(maps) / cols))
    fig = _figure(width, 3.4 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    if not sized:
        empty: Axes = axes[0][0]
        empty.text(0.5, 0.5, "no run in this sweep has a shard size", ha="center", va="center")
        empty.set_axis_off()
        return fig
    colors = _strategy_colors(results)
    values = [v for r in sized for v in (r.ram_peak, *r.vram_peak.values()) if v is not None]
    values += [r.predicted.ram_peak for r in sized if r.predicted]
    div, unit = _unit(max(values, default=1) or 1)
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
                label=_plain(strategy),
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
                    color=_FAIL,
                )
        ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels(
            [format_size(s, binary=False, precision=0).replace(" ", "") for s in sizes],
            fontsize=8,
        )
        ax.minorticks_off()
        ax.set_xlabel("shard size (log scale)")
        ax.set_title(_plain(f"device map: {dm}"), fontsize=9.5, loc="left")
        ax.grid(color="0.9", lw=0.6)
        ax.set_axisbelow(True)
        ax.set_ylim(bottom=0)
        if k % cols == 0:
            ax.set_ylabel(f"peak above baseline ({unit})")
    for k in range(len(maps), rows * cols):
        axes[k // cols][k % cols].set_axis_off()
    first = axes[0][0]
    handles, _labels = first.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="0.3", lw=0.9, ls=":", label="predicted"),
        Line2D([], [], ls="none", marker="X", color=_FAIL, label="failed run"),
    ]
    if any(r.vram_peak for r in sized):
        handles.append(Line2D([], [], color="0.3", lw=1.1, ls="--", marker="s", label="VRAM"))
    first.legend(handles=handles, fontsize=7.5, loc="best", framealpha=0.9)
    fig.suptitle(_plain(title or "Peak RAM vs shard size"), fontsize=11, x=0.01, ha="left")
    return fig


# -- overlay ---------------------------------------------------------------------------


def overlay(
    results: Sweep | Iterable[RunResult | Recording],
    *,
    series: str = "ram.rss",
    width: float = WIDTH,
    max_points: int = MAX_POINTS,
    title: str | None = None,
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

    Returns:
        The figure.

    Raises:
        ConfigError: for anything else, or no runs at all.

    Example:
        >>> fig = overlay([naive_result, meta_result])  # doctest: +SKIP
    """
    items = list(results.results) if isinstance(results, Sweep) else list(results)
    if not items:
        raise ConfigError("overlay() got no runs; give RunResults or Recordings")
    runs: list[tuple[str, Recording, float, RunResult | None]] = []
    only_results = [x for x in items if isinstance(x, RunResult)]
    short = dict(zip(map(id, only_results), short_labels(only_results), strict=True))
    for i, item in enumerate(items):
        rec, res = _as_recording(item)
        label = short[id(res)] if res is not None else (rec.name or f"recording {i + 1}")
        runs.append((label, rec, float(res.baseline) if res is not None else 0.0, res))
    any_baseline = any(r is not None for *_x, r in runs)
    has_vram = any(any(n.endswith(".allocated") for n in rec.series) for _l, rec, _b, _r in runs)
    fig = _figure(width, 5.6 if has_vram else 3.8)
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
    div, unit = _unit(top or 1.0)
    vtop = max(
        (float(v.max()) for _l, rec, _b, _r in runs if len(v := _vram_total(rec, max_points)[1])),
        default=1.0,
    )
    vdiv, vunit = _unit(vtop or 1.0)
    result_list = [r for *_x, r in runs if r is not None]
    colors = _strategy_colors(result_list)
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
        t, v = downsample(s.t, s.v, max_points=max_points)
        ram_ax.plot(t, (v - base) / div, color=color, lw=1.3, ls=ls, label=_plain(label))
        if res is not None and res.outcome in _FAILED:
            ram_ax.plot([t[-1]], [(v[-1] - base) / div], marker="X", color=_FAIL, ms=8)
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
    ram_ax.grid(color="0.9", lw=0.6)
    if ram_ax.get_legend_handles_labels()[0]:
        ram_ax.legend(fontsize=7.5, loc="upper left", ncols=2, framealpha=0.9)
    ram_ax.set_ylim(bottom=min(0.0, ram_ax.get_ylim()[0]))
    if has_vram:
        axes[1].set_ylabel(f"VRAM allocated ({vunit})")
        axes[1].grid(color="0.9", lw=0.6)
    axes[-1].set_xlabel("time since run start (s)")
    ram_ax.set_xlim(left=0)
    fig.suptitle(_plain(title or "Runs compared"), fontsize=11, x=0.01, ha="left")
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
    return downsample(grid, total, max_points=max_points)
