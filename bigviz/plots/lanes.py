"""A distributed run: one lane per rank on one clock, then the node total.

:func:`ranks` gives every rank a lane on the same RAM scale (anonymous, file-backed and
shared memory stacked, RSS, the rank's PSS, its phases) and ends with the node panel:
Σ PSS beside Σ RSS, the baseline, the reported peak and the prediction.

Example:
    >>> from bigviz.plots import ranks  # doctest: +SKIP
    >>> ranks(distributed_result).savefig("ranks.png")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bigviz._errors import ConfigError
from bigviz.data.recording import Recording
from bigviz.data.result import RunResult
from bigviz.plots import sampling, style
from bigviz.tables.labels import OUTCOME_TEXT
from bigviz.tables.ranks import failed_rank, pss_snapshots
from bigviz.units import format_size

__all__ = ["ranks"]


def ranks(
    obj: Recording | RunResult,
    *,
    width: float = style.WIDTH,
    max_points: int = sampling.MAX_POINTS,
    max_lanes: int = 8,
    title: str | None = None,
    px: int | None = None,
    theme: str = "light",
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
        px: figure width in pixels (at 100 dpi, so text stays >= 9 px); overrides ``width``.
        theme: ``"light"`` or ``"dark"`` (JupyterLab Dark).

    Returns:
        The figure; ``fig.axes[:-1]`` are the lanes (``gid`` ``"rank-N"``), the last the node.

    Raises:
        ConfigError: for anything but a Recording or RunResult, one without ranks, or
            ``max_lanes`` < 1.

    Example:
        >>> fig = ranks(distributed_result)  # doctest: +SKIP
    """
    width = style.size_in(width, px)
    with style.themed(theme):
        return style.finish(_ranks(obj, width=width, max_points=max_points, max_lanes=max_lanes,
                                   title=title))


def _ranks(
    obj: Recording | RunResult, *, width: float, max_points: int, max_lanes: int,
    title: str | None,
) -> Figure:
    rec, result = sampling.as_recording(obj)
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
    fig = style.figure(width, sum(heights) + 1.0)
    axes = fig.subplots(n + 1, 1, sharex=True, height_ratios=heights, squeeze=False)[:, 0]
    end = max([sampling.rec_end(rec)] + [sampling.rec_end(lane) for lane in rec.ranks])
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
    div, unit = style.axis_unit(top)
    shmem_seen = False
    for k, (ax, lane) in enumerate(zip(axes[:n], lanes, strict=True)):
        rank = lane.rank if lane.rank is not None else k
        shmem_seen |= _draw_lane(ax, lane, rank, div, top, colors, max_points, width, end)
        if rank in lane_snaps:
            t_s, v_s = lane_snaps[rank]
            ax.plot([t_s], [v_s / div], marker="D", ms=5, color=style.PSS, mec="white", mew=0.6)
        ax.set_gid(f"rank-{rank}")
        if rank == dead and result is not None:
            _flag_failed_lane(ax, lane, result)
        style.draw_marks(ax, lane, label=False)
    _draw_node(axes[n], rec, result, max_points, node_snap)
    style.draw_marks(axes[n], rec, label=False)

    handles = [
        Patch(color=style.ANON, label="anonymous"),
        Patch(color=style.FILE, label="file-backed (mmap, page cache)"),
        *([Patch(color=style.SHMEM, label="shared (RssShmem)")] if shmem_seen else []),
        Line2D([], [], color=style.current().rss, lw=0.8, label="RSS"),
        Line2D([], [], color=style.PSS, lw=1.3, drawstyle="steps-post", label="PSS (sampled)"),
    ]
    if lane_snaps:
        handles.append(
            Line2D(
                [],
                [],
                color=style.PSS,
                ls="none",
                marker="D",
                ms=5,
                mec="white",
                label="PSS snapshot (exact, all ranks loaded)",
            )
        )
    if any(p.ram_peak_exact for lane in lanes for p in lane.phases):
        handles.append(Line2D([], [], color=style.current().peak, lw=1.3,
                              label="phase peak (exact, VmHWM)"))
    style.legend_above(axes[0], handles)
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
        title = style.wrap_title(title, width * 0.97, 11, lines=1)
        if n < nproc:  # on a line of its own, so wrapping never splits it
            title += "\n" + style.wrap_title(
                f"(showing {n} of {nproc} ranks: rank 0, any failed rank, highest peaks)",
                width * 0.97, 11, lines=1)
    else:
        title = style.wrap_title(title, width * 0.97, 11)
    fig.suptitle(style.plain(title), fontsize=11, x=0.01, ha="left")
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
    theme = style.current()
    tops = [p for p in lane.phases if p.depth == 0]
    fills = theme.phase_fills
    style.bands(ax, [(p.start, sampling.phase_end(p, lane)) for p in tops],
                [fills[colors.get(p.name, 0) % len(fills)] for p in tops])
    style.vlines(ax, [p.start for p in tops], theme.divider, lw=0.5)
    for p in tops:
        p_end = sampling.phase_end(p, lane)
        text = style.fit_label(p.name, (p_end - p.start) * inches_per_s, 6.5)
        if text:
            ax.text(
                (p.start + p_end) / 2,
                0.97,
                style.plain(text),
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="top",
                fontsize=6.5,
                color=theme.muted,
                clip_on=True,
            )
        if p.error:
            ax.plot(
                [p_end],
                [0.5],
                marker="X",
                color=style.FAIL,
                ms=6,
                clip_on=False,
                transform=ax.get_xaxis_transform(),
            )
    rss, pss = lane.series.get("ram.rss"), lane.series.get("ram.pss")
    layers = sampling.ram_layers(lane, max_points)
    drawn = layers is not None
    if layers is not None:
        style.fill_ram(ax, *layers, div, legend=False)
    if rss is not None and rss.v:
        t, v = sampling.downsample(rss.t, rss.v, max_points=max_points)
        if drawn:
            ax.plot(t, v / div, color=theme.rss, lw=0.8)
        else:
            ax.fill_between(t, 0, v / div, color=style.ANON, lw=0)
            drawn = True
    if pss is not None and pss.v:
        t, v = sampling.downsample(pss.t, pss.v, max_points=max_points)
        few = len(t) <= 60
        ax.plot(
            t,
            v / div,
            color=style.PSS,
            lw=1.3,
            drawstyle="steps-post",
            marker="o" if few else None,
            ms=2.5,
        )
    if not drawn:
        ax.text(0.5, 0.5, "no RAM samples", transform=ax.transAxes, ha="center",
                color=theme.muted)
    for p in lane.phases:
        if p.depth == 0 and p.ram_peak is not None:
            dash: Literal["-", ":"] = "-" if p.ram_peak_exact else ":"
            ax.hlines(
                p.ram_peak / div,
                p.start,
                sampling.phase_end(p, lane),
                colors=theme.peak,
                linestyles=dash,
                lw=1.1,
            )
    # headroom for the phase names at the top of the lane
    ax.set_ylim(0, top / div * 1.3)
    node = lane.meta.get("node")  # a multi-node run: lanes come grouped by node
    style.side_label(ax, f"rank {rank}" if node is None else f"node {node}\nrank {rank}")
    return layers is not None and len(layers[1]) > 2


def _flag_failed_lane(ax: Axes, lane: Recording, result: RunResult) -> None:
    last = sampling.rec_end(lane)
    ax.axvline(last, color=style.FAIL, lw=1.6)
    where = f" in {result.phase_reached}" if result.phase_reached else ""
    style.flag(ax, f"✕ {OUTCOME_TEXT.get(result.outcome, result.outcome)}{where}", (last, 0.5),
         (-4, 0), va="center", fontsize=8)


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
    div, unit = style.axis_unit(top)
    handles: list[Any] = []
    if pss is not None and pss.v:
        t, v = sampling.downsample(pss.t, pss.v, max_points=max_points)
        ax.fill_between(t, 0, v / div, step="post", color=style.PSS, alpha=0.15, lw=0)
        (line,) = ax.plot(
            t,
            v / div,
            color=style.PSS,
            lw=1.8,
            drawstyle="steps-post",
            marker="o" if len(t) <= 60 else None,
            ms=3,
            label="node PSS (Σ ranks, shared pages once)",
        )
        handles.append(line)
    if rss is not None and rss.v:
        t, v = sampling.downsample(rss.t, rss.v, max_points=max_points)
        (line,) = ax.plot(
            t, v / div, color=style.current().rss, lw=1.2, ls="--",
            label="Σ RSS (shared pages once per rank)"
        )
        handles.append(line)
    if result is not None:
        ax.axhline(result.baseline / div, color=style.current().baseline, lw=0.9, ls=(0, (1, 2)))
        handles.append(
            Line2D(
                [], [], color=style.current().baseline, lw=0.9, ls=(0, (1, 2)),
                label="baseline (Σ PSS after imports)"
            )
        )
        if reported is not None:
            ax.axhline(reported / div, color=style.PSS, lw=0.9, ls="-.")
            handles.append(
                Line2D(
                    [],
                    [],
                    color=style.PSS,
                    lw=0.9,
                    ls="-.",
                    label=f"node PSS peak, +{format_size(result.ram_peak)}",
                )
            )
        if pred is not None and result.predicted is not None:
            ax.axhline(pred / div, color=style.PRED, lw=1.4, ls="--")
            handles.append(style.predicted_handle(f"predicted ({result.predicted.formula})"))
    if snap is not None:
        (dot,) = ax.plot(
            [snap[0]],
            [snap[1] / div],
            ls="none",
            marker="D",
            ms=7,
            color=style.PSS,
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
            color=style.current().muted,
            fontsize=7.5,
        )
    ax.set_ylim(0, top / div * 1.18)
    style.side_label(ax, f"node\n({unit})")
    ax.set_gid("node")
    if handles:
        # long prediction formulas get two columns so the key never runs off the figure
        wide = max(len(str(h.get_label())) for h in handles) > 40
        style.legend_above(ax, handles, ncols=2 if wide else 3)
