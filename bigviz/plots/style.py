"""The look every bigviz figure shares: colours, sizes, units, text and common drawing.

One palette, so "anonymous", "file-backed", "predicted" and "failed" read the same in every
figure; one way to make a figure (pyplot-free afterwards, so loops never leak); binary
units chosen by magnitude; user text made safe for matplotlib; and the drawing pieces that
more than one figure uses (the stacked RAM layers, marks, the legend above a panel).

Importing this module picks the headless Agg backend when nobody chose one.

Example:
    >>> from bigviz.plots.style import axis_unit
    >>> axis_unit(3 * 2**30)
    (1073741824.0, 'GiB')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bigviz.data.recording import Recording
from bigviz.data.result import RunResult

# Choose Agg only when nobody chose a backend (Jupyter's inline backend arrives through
# MPLBACKEND, a user's through matplotlib.use): figures must render on headless machines.
# pyplot resolves its backend lazily, so switching after the import is safe.
_backend_or_none = getattr(matplotlib.rcParams, "_get_backend_or_none", None)
if _backend_or_none is not None and _backend_or_none() is None:  # pragma: no branch
    matplotlib.use("Agg")

__all__ = [
    "ANON",
    "FAIL",
    "FAILED",
    "FILE",
    "LAYER_LABELS",
    "PHASE_COLORS",
    "PHASE_EDGES",
    "PRED",
    "PSS",
    "RANK_SHADES",
    "SHMEM",
    "WIDTH",
    "axis_unit",
    "draw_marks",
    "figure",
    "fill_ram",
    "fit_label",
    "flag",
    "grid_y",
    "legend_above",
    "plain",
    "predicted_handle",
    "side_label",
    "strategy_colors",
    ]

#: Default figure width in inches: a Jupyter notebook's output cell.
WIDTH = 9.0

#: Outcomes drawn as failures (red flag, cross).
FAILED = ("oom", "budget_exceeded", "error", "crashed", "cancelled")
#: anonymous RAM
ANON = "#3b75af"
#: file-backed RAM (mmap, page cache)
FILE = "#9ecae9"
#: shared memory (RssShmem)
SHMEM = "#d9c3e6"
#: the predicted peak
PRED = "#c0392b"
#: a failed run or phase
FAIL = "#c0392b"
#: the RAM budget line (absolute RSS)
BUDGET = "#e67e22"
#: PSS (proportional set size) of a rank and of the node
PSS = "#6a3d9a"
#: phase bands (fill), cycled
PHASE_COLORS = ["#e8eef7", "#f6eadf", "#e6f2e6", "#f3e5f1", "#f7f2d9", "#e4f1f3"]
#: phase bands (edge), cycled with :data:`PHASE_COLORS`
PHASE_EDGES = ["#6d8fbf", "#c98d55", "#6aa56a", "#b675a8", "#b8a23a", "#5ea3ad"]
#: one shade per rank in stacked node bars
RANK_SHADES = [
    "#08306b",
    "#2171b5",
    "#6baed6",
    "#9ecae1",
    "#4a1486",
    "#807dba",
    "#bcbddc",
    "#dadaeb",
]
#: legend text of the stacked RAM layers, bottom to top
LAYER_LABELS = (
    "RAM anonymous",
    "RAM file-backed (mmap, page cache)",
    "RAM shared (RssShmem: tmpfs, /dev/shm)",
)


def figure(width: float, height: float) -> Figure:
    """A new constrained-layout figure that pyplot does not keep.

    Example:
        >>> figure(2, 1).get_size_inches().tolist()
        [2.0, 1.0]
    """
    # pyplot gives the figure a canvas and Jupyter's display hook; closing it at once
    # keeps pyplot from holding figures (no leak in loops, no second auto-display).
    fig = plt.figure(figsize=(width, height), layout="constrained")
    plt.close(fig)
    return fig


def axis_unit(max_bytes: float) -> tuple[float, str]:
    """A binary unit ``(divisor, name)`` for an axis whose largest value is ``max_bytes``.

    Example:
        >>> axis_unit(5 * 2**20)
        (1048576.0, 'MiB')
    """
    m = abs(max_bytes)
    for div, name in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if m >= div:
            return float(div), name
    return 1.0, "bytes"


def plain(text: str) -> str:
    """User text for matplotlib: ``$`` would start mathtext, so escape it.

    Example:
        >>> plain("cost $5")
        'cost \\\\$5'
    """
    return text.replace("$", r"\$")


def fit_label(text: str, width_in: float, fontsize: float) -> str:
    """``text`` cut to fit ``width_in`` inches (empty when not even 3 characters fit).

    Example:
        >>> fit_label("load shards", 0.5, 7.5)
        'load sh…'
    """
    chars = int(width_in * 72 / (fontsize * 0.6))
    if chars >= len(text):
        return text
    if chars < 4:
        return ""
    return text[: chars - 1] + "…"


def predicted_handle(label: str) -> Line2D:
    """Legend entry for the dashed predicted-peak line (timelines and the node panel).

    Example:
        >>> predicted_handle("predicted (2 × M)").get_linestyle()
        '--'
    """
    return Line2D([], [], color=PRED, lw=1.4, ls="--", label=plain(label))


def strategy_colors(results: Sequence[RunResult]) -> dict[str, str]:
    """One matplotlib cycle colour per strategy, in order of first appearance.

    Example:
        >>> strategy_colors([])
        {}
    """
    names: list[str] = []
    for r in results:
        if r.strategy not in names:
            names.append(r.strategy)
    palette = [f"C{i}" for i in range(10)]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def grid_y(ax: Axes) -> None:
    """Light horizontal grid lines behind the data.

    Example:
        >>> grid_y(figure(2, 1).add_subplot())
    """
    ax.grid(axis="y", color="0.9", lw=0.6)
    ax.set_axisbelow(True)


def side_label(ax: Axes, text: str) -> None:
    """A lane's name written level at its left, with small tick labels (the rank lanes).

    Example:
        >>> side_label(figure(2, 1).add_subplot(), "rank 0")
    """
    ax.set_ylabel(text, rotation=0, ha="right", va="center", fontsize=8.5)
    ax.tick_params(axis="y", labelsize=7)
    grid_y(ax)


def legend_above(ax: Axes, handles: Sequence[Any] | None = None, *, ncols: int = 3) -> None:
    """The panel's key in a frameless row just above it, so it never hides marks or flags.

    Example:
        >>> ax = figure(2, 1).add_subplot()
        >>> _ = ax.plot([0, 1], label="RSS")
        >>> legend_above(ax)
    """
    kwargs: dict[str, Any] = {} if handles is None else {"handles": handles}
    ax.legend(
        **kwargs,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        fontsize=7.5,
        frameon=False,
        ncols=ncols,
        borderaxespad=0.2,
    )


def flag(ax: Axes, text: str, xy: tuple[float, float], offset: tuple[float, float], *,
         va: str, fontsize: float) -> None:
    """A bold red boxed note ending at ``xy`` (data x, axes-fraction y): a kill or failure.

    Example:
        >>> flag(figure(2, 1).add_subplot(), "✕ OOM", (0.5, 1.0), (-4, -4), va="top", fontsize=8)
    """
    ax.annotate(
        plain(text),
        xy=xy,
        xycoords=("data", "axes fraction"),
        xytext=offset,
        textcoords="offset points",
        ha="right",
        va=va,
        color=FAIL,
        fontsize=fontsize,
        fontweight="bold",
        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": FAIL, "lw": 0.8},
    )


def fill_ram(ax: Axes, t: np.ndarray, tops: list[np.ndarray], div: float, *, legend: bool) -> None:
    """Stack the layers of :func:`bigviz.plots.sampling.ram_layers` (labelled when ``legend``).

    Example:
        >>> import numpy as np
        >>> fill_ram(figure(2, 1).add_subplot(), np.arange(2.0), [np.ones(2)], 1.0, legend=True)
    """
    colors = (ANON, FILE, SHMEM)
    low: Any = 0
    for top, color, label in zip(tops, colors, LAYER_LABELS, strict=False):
        ax.fill_between(t, low, top / div, color=color, lw=0, label=label if legend else None)
        low = top / div


def draw_marks(ax: Axes, rec: Recording, *, label: bool) -> None:
    """The recording's marks as dotted vertical lines (named at the top when ``label``).

    Example:
        >>> draw_marks(figure(2, 1).add_subplot(), Recording(), label=True)
    """
    # a label runs down from the top of the axes: fit it to the axes' height (the
    # recorder's marks can be long: "arrived on first use: 39.6 MiB mapped by …"), and
    # keep it out of the layout so a long one can never squeeze the plot to nothing
    fig = ax.get_figure(root=True)
    height_in = ax.get_position().height * (fig.get_figheight() if fig is not None else 3.0)
    last_t: float | None = None
    for m in rec.marks:
        ax.axvline(m.t, color="#555555", lw=0.9, ls=(0, (2, 2)))
        if label and (last_t is None or m.t - last_t > 1e-3):  # one label per instant
            last_t = m.t
            ann = ax.annotate(
                fit_label(plain(m.name), height_in * 0.9, 7),
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
            ann.set_in_layout(False)
