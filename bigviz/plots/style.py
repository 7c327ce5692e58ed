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

import contextlib
import contextvars
import json
import os
import re
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bigviz._errors import ConfigError
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
    "AUTO",
    "DPI",
    "FAIL",
    "FAILED",
    "FILE",
    "LAB_THEME_SETTINGS",
    "LAYER_LABELS",
    "MIN_PX",
    "PHASE_COLORS",
    "PHASE_EDGES",
    "PRED",
    "PSS",
    "RANK_SHADES",
    "SHMEM",
    "THEMES",
    "WIDTH",
    "WIDTH_PX",
    "Theme",
    "active_theme",
    "axis_unit",
    "bands",
    "current",
    "draw_marks",
    "figure",
    "fill_ram",
    "finish",
    "fit_label",
    "flag",
    "grid_y",
    "legend_above",
    "plain",
    "predicted_handle",
    "resolve_theme",
    "side_label",
    "size_in",
    "strategy_colors",
    "themed",
    "vlines",
    "wrap_title",
    ]

#: Dots per inch of every figure: the smallest text (6.5 pt) is 9 px at this density.
DPI = 100
#: Default figure width in pixels: fits an ~850 px JupyterLab output without being scaled down.
WIDTH_PX = 840
#: Default figure width in inches (:data:`WIDTH_PX` at :data:`DPI`).
WIDTH = WIDTH_PX / DPI
#: The narrowest figure drawn, in pixels.
MIN_PX = 320

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


@dataclass(frozen=True)
class Theme:
    """The colours of one look (light for reports and JupyterLab Light, dark for
    JupyterLab Dark): background, text and every neutral the figures draw with. The data
    colours (anonymous, file-backed, predicted, failed) are the same in both.

    Example:
        >>> THEMES["dark"].background
        '#111111'
    """

    name: str
    background: str
    ink: str
    muted: str
    grid: str
    rss: str
    peak: str
    mark: str
    baseline: str
    divider: str
    phase_fills: tuple[str, ...]
    phase_edges: tuple[str, ...]

    def rc(self) -> dict[str, Any]:
        """matplotlib rcParams for this theme (read when artists are made)."""
        return {
            "figure.facecolor": self.background,
            "axes.facecolor": self.background,
            "savefig.facecolor": self.background,
            "text.color": self.ink,
            "axes.labelcolor": self.ink,
            "axes.edgecolor": self.muted,
            "axes.titlecolor": self.ink,
            "xtick.color": self.muted,
            "ytick.color": self.muted,
            "xtick.labelcolor": self.ink,
            "ytick.labelcolor": self.ink,
            "grid.color": self.grid,
            "legend.edgecolor": self.grid,
            "legend.facecolor": self.background,
            "hatch.color": self.ink,
        }


#: The looks a figure can take (``theme=`` of every figure function).
THEMES = {
    "light": Theme(
        "light", background="white", ink="#1f2933", muted="#555555", grid="0.9", rss="#1f2d3d",
        peak="#111111", mark="#555555", baseline="0.45", divider="0.75",
        phase_fills=tuple(PHASE_COLORS), phase_edges=tuple(PHASE_EDGES),
    ),
    "dark": Theme(
        "dark", background="#111111", ink="#e6e6e6", muted="#a0a0a0", grid="#333a42",
        rss="#e8eef5", peak="#f5f5f5", mark="#b0b0b0", baseline="0.65", divider="0.35",
        phase_fills=("#22324a", "#473523", "#23402a", "#41293f", "#403a1f", "#1f3c42"),
        phase_edges=("#7ea3d6", "#d9a06a", "#7cc17c", "#cc8fbf", "#d0bb52", "#72bcc6"),
    ),
}

#: ``theme=`` value that draws for JupyterLab's active theme (:func:`active_theme`)
AUTO = "auto"
#: where JupyterLab keeps the theme the user picked, under its user-settings folder
LAB_THEME_SETTINGS = Path("@jupyterlab", "apputils-extension", "themes.jupyterlab-settings")

# a JSON string, or a // or /* */ comment, or a trailing comma (JupyterLab's settings
# files are JSON5-ish: the comments of the defaults are often kept)
_JSON5_NOISE = re.compile(r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/|,(\s*[}\]])', re.S)


def _lab_settings(path: Path) -> dict[str, Any]:
    """A JupyterLab settings file as a dict; ``{}`` when missing or unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(_JSON5_NOISE.sub(lambda m: m.group(1) or m.group(2) or "", text))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _lab_theme_name(settings_dir: str | Path | None) -> str | None:
    """The theme name JupyterLab shows: the user's setting, else an administrator's
    ``overrides.json`` default, else ``None`` (JupyterLab's own default: Light)."""
    if settings_dir is None:
        env = os.environ.get("JUPYTERLAB_SETTINGS_DIR")
        config = os.environ.get("JUPYTER_CONFIG_DIR") or Path.home() / ".jupyter"
        settings_dir = env or Path(config, "lab", "user-settings")
    theme = _lab_settings(Path(settings_dir) / LAB_THEME_SETTINGS).get("theme")
    if isinstance(theme, str) and theme:
        return theme
    app = os.environ.get("JUPYTERLAB_DIR") or Path(sys.prefix, "share", "jupyter", "lab")
    overrides = _lab_settings(Path(app, "settings", "overrides.json"))
    section = overrides.get("@jupyterlab/apputils-extension:themes")
    theme = section.get("theme") if isinstance(section, dict) else None
    return theme if isinstance(theme, str) and theme else None


def active_theme(settings_dir: str | Path | None = None) -> str:
    """``"dark"`` when JupyterLab's active theme is a dark one (its name contains "Dark",
    as "JupyterLab Dark" does), else ``"light"``.

    Read from JupyterLab's user settings (``settings_dir``, default
    ``$JUPYTERLAB_SETTINGS_DIR``, else ``$JUPYTER_CONFIG_DIR/lab/user-settings``, else
    ``~/.jupyter/lab/user-settings``), file
    ``@jupyterlab/apputils-extension/themes.jupyterlab-settings``, comments allowed; without
    a choice there, an administrator's ``overrides.json`` default. Read at every call, so
    the next figure follows a theme switched in JupyterLab. A kernel not started by
    JupyterLab (VS Code, a script) finds no setting: ``"light"``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     f = Path(d) / LAB_THEME_SETTINGS
        ...     f.parent.mkdir(parents=True)
        ...     _ = f.write_text('{\\n  // picked in Settings\\n  "theme": "JupyterLab Dark"\\n}')
        ...     active_theme(d)
        'dark'
    """
    name = _lab_theme_name(settings_dir)
    return "dark" if name is not None and "dark" in name.lower() else "light"


def resolve_theme(name: str) -> str:
    """The theme ``name`` stands for: :data:`AUTO` becomes :func:`active_theme`.

    Raises:
        ConfigError: for a theme that is neither ``"auto"`` nor in :data:`THEMES`.

    Example:
        >>> resolve_theme("dark")
        'dark'
    """
    if name == AUTO:
        return active_theme()
    if not isinstance(name, str) or name not in THEMES:
        raise ConfigError(f"theme={name!r} is not known; use one of {AUTO}, {', '.join(THEMES)}")
    return name


_ACTIVE: contextvars.ContextVar[Theme] = contextvars.ContextVar(
    "bigviz_theme", default=THEMES["light"]
)


def current() -> Theme:
    """The theme being drawn (light outside :func:`themed`).

    Example:
        >>> current().name
        'light'
    """
    return _ACTIVE.get()


@contextlib.contextmanager
def themed(name: str) -> Iterator[Theme]:
    """Draw with theme ``name``: its rcParams and :func:`current` inside the block;
    :data:`AUTO` draws for JupyterLab's active theme (:func:`active_theme`).

    Raises:
        ConfigError: for a theme that is neither ``"auto"`` nor in :data:`THEMES`.

    Example:
        >>> with themed("dark") as t:
        ...     current() is t
        True
    """
    theme = THEMES[resolve_theme(name)]
    token = _ACTIVE.set(theme)
    try:
        rc: Any = theme.rc()  # matplotlib types its keys as a Literal
        with matplotlib.rc_context(rc):
            yield theme
    finally:
        _ACTIVE.reset(token)


def finish(fig: Figure) -> Figure:
    """Give ``fig``'s ticks the theme's colours (matplotlib makes ticks when drawing, after
    the theme's rcParams are gone) and return it.

    Example:
        >>> finish(figure(2, 1)).get_dpi()
        100
    """
    theme = current()
    for ax in fig.axes:
        ax.tick_params(colors=theme.muted, labelcolor=theme.ink, which="both")
    return fig


def size_in(width: float, px: int | None) -> float:
    """The figure width in inches: ``px`` pixels at :data:`DPI` when given, else ``width``.

    Raises:
        ConfigError: ``px`` below :data:`MIN_PX`, or a width that is not positive.

    Example:
        >>> size_in(9.0, 700)
        7.0
    """
    if px is None:
        if not width > 0:
            raise ConfigError(f"width={width!r} inches must be positive")
        return float(width)
    if isinstance(px, bool) or not isinstance(px, int) or px < MIN_PX:
        raise ConfigError(f"px={px!r} is too narrow to draw; give a whole number >= {MIN_PX}")
    return px / DPI


def figure(width: float, height: float) -> Figure:
    """A new constrained-layout figure at :data:`DPI` that pyplot does not keep.

    Example:
        >>> figure(2, 1).get_size_inches().tolist()
        [2.0, 1.0]
    """
    # pyplot gives the figure a canvas and Jupyter's display hook; closing it at once
    # keeps pyplot from holding figures (no leak in loops, no second auto-display).
    fig = plt.figure(figsize=(width, height), dpi=DPI, layout="constrained")
    plt.close(fig)
    return fig


def wrap_title(text: str, width_in: float, fontsize: float, *, lines: int = 2) -> str:
    """``text`` wrapped to ``width_in`` inches in at most ``lines`` lines (the last cut
    with "…"), so a long title never widens its axes or runs off the figure.

    Example:
        >>> len(wrap_title("a " * 100, 2.0, 11).splitlines())
        2
    """
    chars = max(8, int(width_in * 72 / (fontsize * 0.62)))
    if len(text) <= chars:
        return text
    wrapped = textwrap.wrap(text, chars, break_long_words=True, break_on_hyphens=False)
    if len(wrapped) > lines:
        last = " ".join(wrapped[lines - 1:])
        wrapped = [*wrapped[: lines - 1], last[: chars - 1].rstrip() + "…"]
    return "\n".join(wrapped)


def bands(ax: Axes, spans: Sequence[tuple[float, float]], colors: Sequence[Any], *,
          alpha: float = 0.6, edges: Sequence[Any] | None = None,
          y: tuple[float, float] = (0.0, 1.0), data_y: bool = False,
          lw: float = 0.0, zorder: float = 0) -> PolyCollection | None:
    """One collection of rectangles ``[start, end] × y`` (axes-fraction y unless
    ``data_y``): all phase bands of a panel in one artist, without autoscaling per band.

    Example:
        >>> bands(figure(2, 1).add_subplot(), [(0, 1), (2, 3)], ["C0", "C1"]) is not None
        True
    """
    if not spans:
        return None
    y0, y1 = y
    verts = [[(a, y0), (a, y1), (b, y1), (b, y0)] for a, b in spans]
    coll = PolyCollection(
        verts, facecolors=list(colors), edgecolors=list(edges) if edges is not None else "none",
        linewidths=lw, alpha=alpha, zorder=zorder,
        transform=ax.transData if data_y else ax.get_xaxis_transform(),
    )
    ax.add_collection(coll, autolim=False)
    return coll


def vlines(ax: Axes, xs: Sequence[float], color: Any, *, lw: float, ls: Any = "-",
           zorder: float = 0) -> LineCollection | None:
    """Vertical lines at ``xs`` over the panel's full height, as one collection.

    Example:
        >>> vlines(figure(2, 1).add_subplot(), [0.5], "0.5", lw=1) is not None
        True
    """
    if not len(xs):
        return None
    coll = LineCollection([[(x, 0.0), (x, 1.0)] for x in xs], colors=color, linewidths=lw,
                          linestyles=ls, zorder=zorder, transform=ax.get_xaxis_transform())
    ax.add_collection(coll, autolim=False)
    return coll


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
    ax.grid(axis="y", color=current().grid, lw=0.6)
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
    labels = [str(h.get_label()) for h in handles] if handles is not None else (
        ax.get_legend_handles_labels()[1])
    # as many columns as the panel's width holds, so a narrow figure never collapses its plot
    fig = ax.get_figure(root=True)
    width_in = fig.get_figwidth() * 0.9 if fig is not None else WIDTH
    col_in = max((len(t) for t in labels), default=10) * 7.5 * 0.55 / 72 + 0.45
    ncols = max(1, min(ncols, int(width_in // col_in)))
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
        bbox={"boxstyle": "round,pad=0.2", "fc": current().background, "ec": FAIL, "lw": 0.8},
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
    theme = current()
    vlines(ax, [m.t for m in rec.marks], theme.mark, lw=0.9, ls=(0, (2, 2)), zorder=2)
    for m in rec.marks:
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
                color=theme.muted,
            )
            ann.set_in_layout(False)
