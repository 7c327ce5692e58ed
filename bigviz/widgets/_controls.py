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

__all__ = [
    "CUSTOM", "FIGURE_DPI", "REPORT_SUFFIX", "TEXT", "build_controls", "ipywidgets",
    "strategy_picker",
]

#: The device-map choice that reads the JSON text box (the named ones are the options
#: spec's :data:`bigviz.options.DEVICE_MAPS`).
CUSTOM = "custom JSON"
#: export kinds and the file suffix each writes
REPORT_SUFFIX = {"html": ".html", "json": ".json", "markdown": ".md"}
#: PNG resolution of the dashboard's figures, encoded by :func:`bigviz.plots.to_png`
#: (a 9-inch figure is 864 px wide)
FIGURE_DPI = 96
#: JupyterLab's theme colours (light fallbacks): the widgets' HTML uses these, never a
#: fixed colour, so that it reads in JupyterLab Dark too
TEXT = {"text": "var(--jp-ui-font-color1, #333)", "muted": "var(--jp-ui-font-color2, #666)",
        "error": "var(--jp-error-color1, #c0392b)", "warn": "var(--jp-warn-color1, #b9770e)"}


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


def strategy_picker(w: Any, names: list[str], value: Any) -> Any:
    """One checkbox per strategy, whose ``value`` is the tuple of ticked names (like a
    SelectMultiple's) and where a strategy that cannot run is greyed out with a tooltip
    saying why (:meth:`set_reasons`). A ticked strategy that gets greyed out is unticked
    and ticked again when it fits once more.

    Example:
        >>> # picker = strategy_picker(ipywidgets(), ["naive", "dispatch"], ["naive"])
        >>> # picker.set_reasons({"naive": "loads into CPU RAM only", "dispatch": None})
    """
    import traitlets

    class StrategyPicker(w.VBox):  # type: ignore[misc, name-defined]
        value = traitlets.Tuple()

        def __init__(self) -> None:
            # ipywidgets shows a checkbox's tooltip only when it has no description: the
            # name is a separate label that carries the same tooltip
            self.boxes = {n: w.Checkbox(value=False, description="", indent=False, tooltip=n,
                                        layout=w.Layout(width="20px", margin="0 4px 0 0",
                                                        height="22px"))
                          for n in names}
            self.labels = {n: w.HTML(self._label(n, None), layout=w.Layout(margin="0"))
                           for n in names}
            rows = []
            for n in names:
                row = w.HBox([self.boxes[n], self.labels[n]],
                             layout=w.Layout(align_items="center", height="24px"))
                row.add_class(f"bigviz-strategy-{n}")
                rows.append(row)
            super().__init__(rows, layout=w.Layout(margin="0 12px 0 0", min_width="150px"))
            self.reasons: dict[str, str | None] = {}
            self._parked: set[str] = set()  # ticked, but greyed out for now
            self._auto: str | None = None  # ticked by set_reasons when all were greyed
            self._syncing = self._internal = False
            for box in self.boxes.values():
                box.observe(lambda _c: self._from_boxes(), names="value")
            self.observe(lambda c: self._to_boxes(c["new"]), names="value")
            self.value = tuple(n for n in names if n in value)

        @staticmethod
        def _label(name: str, why: str | None) -> str:
            from bigviz.report import escape

            tip = f"{name}: not available here: {why}" if why else name
            color = TEXT["muted"] if why else TEXT["text"]
            return (f'<span class="bigviz-strategy-name" title="{escape(tip)}" '
                    f'style="color:{color}">'
                    f"{escape(name)}</span>")

        @property
        def options(self) -> tuple[str, ...]:
            return tuple(self.boxes)

        def _from_boxes(self) -> None:
            if not self._syncing:
                self._internal = True  # a click keeps what is parked
                try:
                    self.value = tuple(n for n, b in self.boxes.items()
                                       if b.value and not b.disabled)
                finally:
                    self._internal = False

        def _to_boxes(self, new: tuple[str, ...]) -> None:
            unknown = [n for n in new if n not in self.boxes]
            if unknown:
                raise traitlets.TraitError(f"unknown strategies {unknown}; valid: {names}")
            greyed = {n for n in new if self.reasons.get(n)}
            if not (self._internal or self._syncing):
                self._parked, self._auto = greyed, None  # set from outside: a new pick
            if greyed:
                self._internal = True
                try:
                    self.value = tuple(n for n in new if n not in greyed)
                finally:
                    self._internal = False
                return
            was, self._syncing = self._syncing, True
            try:
                for n, box in self.boxes.items():
                    box.value = n in new
            finally:
                self._syncing = was

        def set_reasons(self, reasons: dict[str, str | None]) -> None:
            """Grey out the strategies with a reason (their tooltip), enable the rest."""
            self.reasons = dict(reasons)
            ticked = set(self.value)
            back = {n for n in self._parked if not reasons.get(n)}
            self._syncing = True
            try:
                for n, box in self.boxes.items():
                    why = reasons.get(n)
                    box.disabled = bool(why)
                    box.tooltip = f"{n}: not available here: {why}" if why else n
                    self.labels[n].value = self._label(n, why)
                    if why and n in ticked:
                        self._parked.add(n)
                self._parked -= back
                keep = (ticked | back) - {n for n in reasons if reasons.get(n)}
                if back and self._auto in keep:
                    keep.discard(self._auto)  # the user's own pick is back
                    self._auto = None
                if not keep and ticked:  # everything ticked is greyed: tick one that fits
                    fits = [n for n in self.boxes if not reasons.get(n)
                            and n not in ("save",)]
                    if fits:
                        self._auto = fits[0]
                        keep = {fits[0]}
                for n, box in self.boxes.items():
                    box.value = n in keep
                self.value = tuple(n for n in self.boxes if n in keep)
            finally:
                self._syncing = False

    return StrategyPicker()


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
    from bigviz.widgets._guidance import offered_device_maps

    custom = isinstance(device_map, dict)
    names = list(registry.names())
    full = {"description_width": "90px"}
    wrap = {"flex_flow": "row wrap", "max_width": "100%"}
    dash.model_w = w.Text(value=model, description="model", continuous_update=False,
                          style=full, layout=w.Layout(width="340px"),
                          placeholder="gpt:1GB, bert-base, pkg.mod:fn, ./folder, hf:org/name")
    # wide enough for "safetensors" (not "safetens…")
    dash.format_w = w.ToggleButtons(options=list(options.FORMATS), value=format,
                                    style={"button_width": "auto"})
    dash.shard_w = w.FloatLogSlider(value=float(parse_size(shard_size)), base=10, min=5,
                                    max=10, step=0.02, readout=False, description="max shard",
                                    style=full, layout=w.Layout(width="420px"))
    dash.shard_info = w.HTML(layout=w.Layout(max_width="100%"))
    maps = offered_device_maps()  # no cuda / cuda:N without a GPU
    if isinstance(device_map, str) and device_map not in maps:
        maps.append(device_map)  # as asked (e.g. "cuda:3"): Run says why it cannot be used
    dash.device_map_w = w.Dropdown(options=[*maps, CUSTOM],
                                   value=CUSTOM if custom else device_map,
                                   description="device map", style=full)
    dash.device_json_w = w.Textarea(
        value=json.dumps(device_map) if custom else "",
        placeholder='{"": "cpu"}',  # the model's own names once it is built
        layout=w.Layout(width="520px", max_width="100%", height="60px"))
    dash.device_json_hint = w.HTML()
    dash.device_json_box = w.VBox([dash.device_json_w, dash.device_json_hint],
                                  layout=w.Layout(display="flex" if custom else "none"))
    dash.max_memory_w = w.Text(value=max_memory, description="max_memory",
                               placeholder="cpu=2GB,0=10GB", style=full)
    dash.strategies_w = strategy_picker(w, names, [s for s in strategies if s in names])
    dash.strategies_hint = w.HTML(layout=w.Layout(max_width="100%"))
    # issue 17: the page cache of the checkpoint's files when each load starts
    dash.cache_w = w.ToggleButtons(
        options=list(options.CACHES), value=options.CACHES[0], description="page cache",
        tooltips=["as earlier runs left the files (measured and reported)",
                  "drop the files' pages first: a first load on a fresh node",
                  "read the files in first: every load after the first"],
        style={"button_width": "auto", "description_width": "90px"})
    dash.ram_budget_w = w.Text(value=ram_budget, description="RAM budget",
                               placeholder="e.g. 8GB (blank: none)", style=full)
    dash.baseline_w = w.HTML()
    dash.run_w = w.Button(description="Run", button_style="primary", icon="play")
    dash.cancel_w = w.Button(description="Cancel", icon="stop", disabled=True)
    # Advise: bigviz.advise for the typed RAM budget fills the inputs with its pick
    dash.advise_w = w.Button(description="Advise", icon="lightbulb-o",
                             tooltip="pick the fastest strategy, device map and shard size "
                                     "that fit the RAM budget")
    dash.advice_w = w.HTML(layout=w.Layout(max_width="100%", overflow="auto"))
    dash.status_w = w.HTML(layout=w.Layout(max_width="100%"))
    dash.progress_w = w.VBox(layout=w.Layout(max_width="100%"))
    # shown once it has a picture (an empty Image is a broken-image icon)
    dash.live_w = w.Image(format="png", layout=w.Layout(display="none", max_width="100%"))
    dash.peaks_w = w.Image(format="png", layout=w.Layout(max_width="100%"))
    dash.timelines_w = w.Image(format="png", layout=w.Layout(max_width="100%"))
    dash.timelines_box = w.VBox([w.HTML("<b>Timelines</b> (all runs, above baseline)"),
                                 dash.timelines_w])
    dash.pick_w = w.Dropdown(description="run", options=[], style=full,
                             layout=w.Layout(width="520px", max_width="100%"))
    dash.timeline_w = w.Image(format="png", layout=w.Layout(max_width="100%"))
    # a table wider than the output scrolls inside its own box instead of being cut off
    dash.table_w = w.HTML(layout=w.Layout(overflow="auto"))
    dash.export_w = [w.Button(description=f"Export {k.upper() if k != 'markdown' else 'MD'}",
                              icon="download", disabled=True) for k in REPORT_SUFFIX]
    dash.links_w = w.HTML()
    dash.results_w = w.VBox(
        [w.HTML("<b>Peak per run</b> (above each run's baseline)"), dash.peaks_w,
         dash.timelines_box,
         w.HTML("<b>One run</b>: phases, exact peaks, prediction"), dash.pick_w,
         dash.timeline_w,
         w.HTML("<b>Measured vs predicted</b>"), dash.table_w,
         w.HBox(dash.export_w, layout=w.Layout(**wrap)), dash.links_w],
        layout=w.Layout(display="none"))
    # CSS classes the browser test (and user styling) can find
    for widget, cls in ((dash.shard_w, "bigviz-shard-slider"), (dash.shard_info,
                        "bigviz-shard-info"), (dash.run_w, "bigviz-run"),
                        (dash.cancel_w, "bigviz-cancel"), (dash.peaks_w, "bigviz-peaks"),
                        (dash.status_w, "bigviz-status"), (dash.table_w, "bigviz-table"),
                        (dash.live_w, "bigviz-live"), (dash.advise_w, "bigviz-advise"),
                        (dash.advice_w, "bigviz-advice-out"),
                        (dash.device_map_w, "bigviz-device-map"),
                        (dash.device_json_w, "bigviz-device-json"),
                        (dash.device_json_hint, "bigviz-device-json-hint"),
                        (dash.strategies_w, "bigviz-strategies"),
                        (dash.strategies_hint, "bigviz-strategies-hint"),
                        (dash.baseline_w, "bigviz-baseline"),
                        (dash.format_w, "bigviz-format"), (dash.cache_w, "bigviz-cache"),
                        (dash.results_w, "bigviz-results"),
                        (dash.timelines_box, "bigviz-timelines"),
                        (dash.timeline_w, "bigviz-timeline")):
        widget.add_class(cls)
    dash.widget = w.VBox([
        w.HTML("<h3 style='margin:4px 0'>bigviz: what does loading this model cost?</h3>"),
        w.HBox([dash.model_w, dash.format_w], layout=w.Layout(**wrap)),
        w.HBox([dash.shard_w, dash.shard_info], layout=w.Layout(**wrap)),
        w.HBox([dash.device_map_w, dash.max_memory_w], layout=w.Layout(**wrap)),
        dash.cache_w,
        dash.device_json_box,
        w.HBox([w.Label("strategies", layout=w.Layout(width="90px")), dash.strategies_w,
                w.VBox([dash.ram_budget_w, dash.baseline_w,
                        w.HBox([dash.run_w, dash.cancel_w, dash.advise_w],
                               layout=w.Layout(**wrap))])],
               layout=w.Layout(**wrap)),
        dash.strategies_hint,
        dash.status_w, dash.advice_w, dash.progress_w, dash.live_w, dash.results_w,
    ], layout=w.Layout(max_width="100%"))
    dash.widget.add_class("bigviz-dashboard")
