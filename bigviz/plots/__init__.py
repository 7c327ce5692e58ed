"""Matplotlib figures of Recordings, RunResults and Sweeps.

Five figures answer the questions people ask of a load:

* :func:`timeline` — one run over time: RAM (anonymous, file-backed and shared memory,
  stacked), VRAM per device, phases, each phase's exact peak, the predicted peak and events.
* :func:`ranks` — a distributed run: one lane per rank on one clock, and the node total
  (Σ PSS beside Σ RSS); :func:`timeline` uses it for any recording with ranks.
* :func:`peaks` — peak memory per run: anonymous vs file-backed vs VRAM, prediction beside.
* :func:`sweep_curves` — peak vs shard size per strategy (log x), one panel per device map.
* :func:`overlay` — several runs on one time axis.

(and :func:`live`, the dashboard's running view of each run's RSS).

Every function returns a :class:`matplotlib.figure.Figure` and never calls ``plt.show``;
in Jupyter the returned figure displays itself. Each takes ``px=`` (width in pixels at 100
dpi, so text stays >= 9 px; default :data:`WIDTH` inches = 840 px) and ``theme="light"`` or
``"dark"`` (JupyterLab Dark; colours in ``style.THEMES``); long titles wrap instead of
narrowing the plot. Sizes are in binary units (MiB/GiB,
chosen by magnitude) and the axis labels say which. Long series are downsampled for
drawing, keeping each bucket's minimum and maximum so no peak disappears.
:func:`to_svg` and :func:`to_png` are the one encoder of figures, for reports, the
dashboard and the magics.

This is the only core package that imports matplotlib (``import bigviz`` does not). One
module per figure, beside the shared pieces:

* ``timelines`` — :func:`timeline`
* ``lanes`` — :func:`ranks`
* ``bars`` — :func:`peaks` (single-process and distributed)
* ``curves`` — :func:`sweep_curves`
* ``overlays`` — :func:`overlay`
* ``live`` — :func:`live`, the dashboard's live RSS lines
* ``style`` — colours, figure size, units, text fitting, shared drawing
* ``sampling`` — argument checks, time extents, :func:`downsample`, the RAM layer stack
* ``encode`` — :func:`to_svg`, :func:`to_png`

Example:
    >>> from bigviz.plots import timeline  # doctest: +SKIP
    >>> fig = timeline(result)  # doctest: +SKIP
    >>> fig.savefig("run.png")  # doctest: +SKIP
"""

from __future__ import annotations

from bigviz.plots.bars import peaks
from bigviz.plots.curves import sweep_curves
from bigviz.plots.encode import to_png, to_svg
from bigviz.plots.lanes import ranks
from bigviz.plots.live import live
from bigviz.plots.overlays import overlay
from bigviz.plots.sampling import MAX_POINTS, downsample
from bigviz.plots.style import WIDTH
from bigviz.plots.timelines import SMALL_GROWTH, timeline
from bigviz.tables.labels import short_labels

__all__ = [
    "MAX_POINTS",
    "SMALL_GROWTH",
    "WIDTH",
    "downsample",
    "live",
    "overlay",
    "peaks",
    "ranks",
    "short_labels",
    "sweep_curves",
    "timeline",
    "to_png",
    "to_svg",
]
