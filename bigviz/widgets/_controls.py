"""The dashboard's controls: every ipywidget it shows, built and laid out in one place.

Separate from :mod:`bigviz.widgets._dashboard` (what the controls do) so the behaviour
reads without 130 lines of layout in the way. Class names such as ``bigviz-run`` are
what the browser test (and a user's CSS) find.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from bigviz.units import parse_size

if TYPE_CHECKING:
    from bigviz.widgets._dashboard import Dashboard

__all__ = ["CUSTOM", "FIGURE_DPI", "REPORT_SUFFIX", "build_controls", "ipywidgets"]

#: The device-map choice that reads the JSON text box (the named ones are the options
#: spec's :data:`bigviz.options.DEVICE_MAPS`).
CUSTOM = "custom JSON"
#: export kinds and the file suffix each writes
REPORT_SUFFIX = {"html": ".html", "json": ".json", "markdown": ".md"}
#: PNG resolution of the dashboard's figures, encoded by :func:`bigviz.plots.to_png`
#: (a 9-inch figure is 864 px wide)
FIGURE_DPI = 96


def ipywidgets() -> Any:
    """ipywidgets, or an ImportError that says what to install.

    Example:
        >>> ipywidgets().__name__  # doctest: +SKIP
        'ipywidgets'
    """
    try:
        import ipywidgets
    except ImportError as exc:
        raise ImportError(
            "the bigviz dashboard needs ipywidgets, which is not installed; "
            "install it with `pip install ipywidgets` and restart the kernel"
        ) from exc
    return ipywidgets


def build_controls(
    dash: Dashboard, w: Any, *, model: str, shard_size: int | str, strategies: Any,
    format: str, device_map: str | dict[str, Any], max_memory: str, ram_budget: str,
) -> None:
    """Make the dashboard's widgets as its attributes (``model_w``, ``shard_w``, …) and
    lay them out in ``dash.widget``.

    Example:
        >>> # build_controls(dash, ipywidgets(), model="gpt:30MB", ...)  (Dashboard does it)
    """
    import bigviz.strategies as registry
    from bigviz import options

    custom = isinstance(device_map, dict)
    names = list(registry.names())
    full = {"description_width": "90px"}
    dash.model_w = w.Text(value=model, description="model", continuous_update=False,
                          style=full, layout=w.Layout(width="340px"),
                          placeholder="gpt:1GB, bert-base, pkg.mod:fn, ./folder, hf:org/name")
    dash.format_w = w.ToggleButtons(options=list(options.FORMATS), value=format,
                                    style={"button_width": "90px"})
    dash.shard_w = w.FloatLogSlider(value=float(parse_size(shard_size)), base=10, min=5,
                                    max=10, step=0.02, readout=False, description="max shard",
                                    style=full, layout=w.Layout(width="420px"))
    dash.shard_info = w.HTML()
    maps = list(options.device_map_choices())
    if isinstance(device_map, str) and device_map not in maps:
        maps.append(device_map)  # e.g. "cuda:3": the runner checks it exists
    dash.device_map_w = w.Dropdown(options=[*maps, CUSTOM],
                                   value=CUSTOM if custom else device_map,
                                   description="device map", style=full)
    dash.device_json_w = w.Textarea(
        value=json.dumps(device_map) if custom else "",
        placeholder='{"embed": "cpu", "blocks": "disk", "head": "cpu"}',
        layout=w.Layout(width="520px", height="60px",
                        display="flex" if custom else "none"))
    dash.max_memory_w = w.Text(value=max_memory, description="max_memory",
                               placeholder="cpu=2GB,0=10GB", style=full)
    dash.strategies_w = w.SelectMultiple(
        options=names, value=[s for s in strategies if s in names], rows=min(len(names), 8),
        description="strategies", style=full)
    dash.ram_budget_w = w.Text(value=ram_budget, description="RAM budget",
                               placeholder="e.g. 8GB (blank: none)", style=full)
    dash.run_w = w.Button(description="Run", button_style="primary", icon="play")
    dash.cancel_w = w.Button(description="Cancel", icon="stop", disabled=True)
    # Advise: bigviz.advise for the typed RAM budget fills the inputs with its pick
    dash.advise_w = w.Button(description="Advise", icon="lightbulb-o",
                             tooltip="pick the fastest strategy, device map and shard size "
                                     "that fit the RAM budget")
    dash.advice_w = w.HTML()
    dash.status_w = w.HTML()
    dash.progress_w = w.VBox()
    dash.live_w = w.Image(format="png", layout=w.Layout(display="none", max_width="900px"))
    dash.peaks_w = w.Image(format="png", layout=w.Layout(max_width="900px"))
    dash.timelines_w = w.Image(format="png", layout=w.Layout(max_width="900px"))
    dash.pick_w = w.Dropdown(description="run", options=[], style=full,
                             layout=w.Layout(width="520px"))
    dash.timeline_w = w.Image(format="png", layout=w.Layout(max_width="900px"))
    dash.table_w = w.HTML()
    dash.export_w = [w.Button(description=f"Export {k.upper() if k != 'markdown' else 'MD'}",
                              icon="download", disabled=True) for k in REPORT_SUFFIX]
    dash.links_w = w.HTML()
    dash.results_w = w.VBox(
        [w.HTML("<b>Peak per run</b> (above each run's baseline)"), dash.peaks_w,
         w.HTML("<b>Timelines</b> (all runs, above baseline)"), dash.timelines_w,
         w.HTML("<b>One run</b>: phases, exact peaks, prediction"), dash.pick_w,
         dash.timeline_w,
         w.HTML("<b>Measured vs predicted</b>"), dash.table_w,
         w.HBox(dash.export_w), dash.links_w],
        layout=w.Layout(display="none"))
    # CSS classes the browser test (and user styling) can find
    for widget, cls in ((dash.shard_w, "bigviz-shard-slider"), (dash.shard_info,
                        "bigviz-shard-info"), (dash.run_w, "bigviz-run"),
                        (dash.cancel_w, "bigviz-cancel"), (dash.peaks_w, "bigviz-peaks"),
                        (dash.status_w, "bigviz-status"), (dash.table_w, "bigviz-table"),
                        (dash.live_w, "bigviz-live"), (dash.advise_w, "bigviz-advise"),
                        (dash.advice_w, "bigviz-advice-out")):
        widget.add_class(cls)
    dash.widget = w.VBox([
        w.HTML("<h3 style='margin:4px 0'>bigviz: what does loading this model cost?</h3>"),
        w.HBox([dash.model_w, dash.format_w]),
        w.HBox([dash.shard_w, dash.shard_info]),
        w.HBox([dash.device_map_w, dash.max_memory_w]),
        dash.device_json_w,
        w.HBox([dash.strategies_w,
                w.VBox([dash.ram_budget_w,
                        w.HBox([dash.run_w, dash.cancel_w, dash.advise_w])])]),
        dash.status_w, dash.advice_w, dash.progress_w, dash.live_w, dash.results_w,
    ])
    dash.widget.add_class("bigviz-dashboard")
