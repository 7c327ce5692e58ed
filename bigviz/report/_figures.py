"""Which figures a report shows, made at report resolution.

Drawing and encoding (:func:`bigviz.plots.to_svg`, :func:`bigviz.plots.to_png`) go through
:mod:`bigviz.plots`, the one package that imports matplotlib, loaded on first render, so
``import bigviz.report`` stays light (DESIGN.md: report sits below plots and loads it lazily).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bigviz.data.recording import Recording
from bigviz.data.result import RunResult
from bigviz.tables.findings import cell_of, cell_run
from bigviz.tables.runs import results_of

from ._common import Reportable

#: Points per series in report figures: plenty for ~900 px, keeps files small.
REPORT_POINTS = 1500


def overview_figures(obj: Reportable) -> list[tuple[str, str, Callable[[], Any]]]:
    """``(slug, caption, make_figure)`` for the figures that summarise ``obj``.

    A sweep gets peaks, the shard-size curves when it varies shard size, and an
    overlay when it has a few runs; one run or recording gets its timeline (a distributed
    run: its per-rank lanes, and its node RAM split by rank).
    """
    from bigviz import plots

    results = results_of(obj)
    figs: list[tuple[str, str, Callable[[], Any]]] = []
    if isinstance(obj, Recording):
        rec = obj
        figs.append(("timeline", "Timeline", lambda: timeline_figure(rec, None)))
        return figs
    if len(results) == 1:
        run = results[0]
        if run.recording.ranks:
            figs.append(
                (
                    "timeline",
                    "Per-rank lanes and node total",
                    lambda: plots.timeline(run, max_points=REPORT_POINTS),
                )
            )
            figs.append(
                (
                    "peaks",
                    "Node RAM: each rank's share of the PSS peak, Σ RSS and the prediction",
                    lambda: plots.peaks([run]),
                )
            )
            return figs
        figs.append(("timeline", "Timeline", lambda: timeline_figure(run.recording, run)))
        return figs
    if not results:
        return figs
    if all(cell_of(r.recording) is not None for r in results):
        # profiled cells run unrelated code: no bars to rank them, no prediction to draw;
        # their timelines side by side, each above its own start
        if len(results) <= 8:
            figs.append(("overlay", "All cells on one time axis, each above RSS at its start",
                         lambda: plots.overlay(results, max_points=REPORT_POINTS)))
        return figs
    if any(r.recording.ranks for r in results):
        caption = "Node RAM per run: the ranks' PSS stacked, Σ RSS beside it, the prediction"
    else:
        caption = "Peak memory per run, above each run's baseline"
    figs.append(("peaks", caption, lambda: plots.peaks(results)))
    if len({r.shard_size for r in results if r.shard_size is not None}) > 1:
        figs.append(("sweep", "Peak RAM vs shard size", lambda: plots.sweep_curves(results)))
    if len(results) <= 8:
        figs.append(
            (
                "overlay",
                "All runs on one time axis",
                lambda: plots.overlay(results, max_points=REPORT_POINTS),
            )
        )
    return figs


#: the timeline's key for a profiled cell's baseline (a run's: "baseline (after imports)")
CELL_BASELINE = "baseline (RSS at the cell's start)"


def timeline_figure(
    rec: Recording, run: RunResult | None, *, max_points: int | None = REPORT_POINTS,
    theme: str = "light",
) -> Any:
    """The timeline of one run (at report resolution unless ``max_points`` says otherwise).

    A profiled cell is drawn as the run it is (:func:`~bigviz.tables.findings.cell_run`): its
    baseline, RSS at the cell's start, is a line with that name in the key, and the growth
    the figure may write on it is measured from there, not from the first phase.
    ``theme``: as :func:`bigviz.plots.timeline`'s.
    """
    from bigviz import plots

    kwargs: dict[str, Any] = {"theme": theme}
    if max_points is not None:
        kwargs["max_points"] = max_points
    if cell_of(rec) is None:
        return plots.timeline(run if run is not None else rec, **kwargs)
    return plots.timeline(run if run is not None else cell_run(rec), title=rec.name or "cell",
                          baseline_label=CELL_BASELINE, **kwargs)


__all__ = ["CELL_BASELINE", "overview_figures", "timeline_figure"]
