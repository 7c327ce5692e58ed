"""The bigviz dashboard: pick a model and a way of loading it, run, watch, compare, export.

A thin skin over the core (the tqdm pattern): its inputs, defaults and checks come from
the options spec (:mod:`bigviz.options`), the sweep runs as a
:class:`~bigviz.progress.BackgroundSweep` and its progress is the core's
:class:`~bigviz.progress.SweepProgress`, which the bars and the live figure only
display. :class:`Dashboard`'s methods and properties (``plan``, ``settings()``, ``run()``,
``cancel()``, ``wait()``, ``sweep``, ``export()``) are what the ipywidgets read and write,
so the dashboard is tested without a browser.

ipywidgets is imported when a :class:`Dashboard` is made, never before; without it that
call fails with an ImportError saying what to install. The HTML tables the magics show
(:func:`phase_table_html`, :func:`results_table_html`) live in :mod:`bigviz.report.notebook`
and are re-exported here; they need no widgets at all.

Example:
    >>> from bigviz.widgets import Dashboard  # doctest: +SKIP
    >>> dash = Dashboard("gpt:30MB", shard_size="10MB")  # doctest: +SKIP
    >>> dash  # in a notebook: the dashboard  # doctest: +SKIP
    >>> dash.run(); sweep = dash.wait()  # or click Run  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from bigviz.report.notebook import phase_table_html, results_table_html
from bigviz.widgets._controls import CUSTOM
from bigviz.widgets._dashboard import Dashboard

__all__ = [
    "CUSTOM",
    "DEVICE_MAPS",
    "Dashboard",
    "phase_table_html",
    "results_table_html",
]


def __getattr__(name: str) -> Any:
    # the spec's device maps, loaded on first use: importing this package loads no runner
    if name == "DEVICE_MAPS":
        from bigviz.options import DEVICE_MAPS

        return DEVICE_MAPS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
