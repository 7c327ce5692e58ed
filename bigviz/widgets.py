"""The bigviz dashboard: pick a model and a way of loading it, run, watch, compare, export.

A thin skin over :func:`bigviz.sweep` and :mod:`bigviz.plots` (the tqdm pattern): all the
logic lives in :class:`Dashboard`'s methods and properties (``plan``, ``settings()``,
``run()``, ``cancel()``, ``wait()``, ``sweep``, ``export()``), and the ipywidgets only
read and write them, so the dashboard is tested without a browser.

ipywidgets is imported when a :class:`Dashboard` is made, never before; without it that
call fails with an ImportError saying what to install. This module also holds the HTML
tables the magics show (:func:`phase_table_html`, :func:`results_table_html`), which need
no widgets at all.

Example:
    >>> from bigviz.widgets import Dashboard  # doctest: +SKIP
    >>> dash = Dashboard("gpt:30MB", shard_size="10MB")  # doctest: +SKIP
    >>> dash  # in a notebook: the dashboard  # doctest: +SKIP
    >>> dash.run(); sweep = dash.wait()  # or click Run  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigviz._errors import BigvizError, ConfigError
from bigviz.report._figures import png
from bigviz.report._html import e as _e
from bigviz.units import format_size, parse_size

if TYPE_CHECKING:
    from bigviz.checkpoint import ShardPlan
    from bigviz.data.recording import Recording
    from bigviz.data.result import RunResult, Sweep

__all__ = [
    "CUSTOM",
    "DEVICE_MAPS",
    "Dashboard",
    "figure_png",
    "phase_table_html",
    "results_table_html",
]

#: Device maps offered by the dashboard; :data:`CUSTOM` takes a JSON dict instead.
DEVICE_MAPS: tuple[str, ...] = (
    "cpu", "cuda", "cuda:0", "auto", "balanced", "sequential", "disk",
)
#: The device-map choice that reads the JSON text box.
CUSTOM = "custom JSON"

_DEFAULT_STRATEGIES = ("naive", "sharded", "meta", "mmap")
_REPORT_SUFFIX = {"html": ".html", "json": ".json", "markdown": ".md"}
_OUTCOME_STYLE = {"ok": "success", "cancelled": "warning", "budget_exceeded": "warning"}
# data: links are handy offline (Voila, a copied notebook) but not for huge files
_MAX_DATA_LINK = 8 * 2**20


def _ipywidgets() -> Any:
    """ipywidgets, or an ImportError that says what to install."""
    try:
        import ipywidgets
    except ImportError as exc:
        raise ImportError(
            "the bigviz dashboard needs ipywidgets, which is not installed; "
            "install it with `pip install ipywidgets` and restart the kernel"
        ) from exc
    return ipywidgets


# -- HTML tables and figures (no widgets needed) ------------------------------------------


def figure_png(fig: Any, *, dpi: int = 96) -> bytes:
    """PNG bytes of a matplotlib figure (no pyplot state touched).

    Example:
        >>> from matplotlib.figure import Figure
        >>> figure_png(Figure(figsize=(1, 1)))[:4]
        b'\\x89PNG'
    """
    return png(fig, dpi=dpi)


def _table(cls: str, headers: Sequence[str], rows: Sequence[tuple[dict[str, str], list[str]]],
           *, right: Sequence[int] = ()) -> str:
    """An HTML table; cells are pre-escaped HTML, ``rows`` carry ``data-*`` attributes."""
    style = ("border-collapse:collapse;font:12px/1.4 system-ui,sans-serif;"
             "margin:4px 0 8px 0")
    th = "padding:2px 8px;border-bottom:1px solid #999;text-align:{}"
    td = "padding:1px 8px;border-bottom:1px solid #e4e4e4;text-align:{};white-space:nowrap"
    head = "".join(
        f'<th style="{th.format("right" if i in right else "left")}">{_e(h)}</th>'
        for i, h in enumerate(headers)
    )
    body = []
    for attrs, cells in rows:
        attr = "".join(f' data-{k}="{_e(v)}"' for k, v in attrs.items())
        tds = "".join(
            f'<td style="{td.format("right" if i in right else "left")}">{c}</td>'
            for i, c in enumerate(cells)
        )
        body.append(f"<tr{attr}>{tds}</tr>")
    return (f'<table class="{cls}" style="{style}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def phase_table_html(rec: Recording) -> str:
    """An HTML table of a recording's phases: timing, RAM at start, peak and growth.

    Nested phases are indented under their parent. "exact" peaks come from the kernel's
    high-water mark reset per phase; "sampled" ones from the timeline's samples.

    Example:
        >>> from bigviz.data.recording import Phase, Recording
        >>> rec = Recording(phases=[Phase("load", 0.0, 1.0, ram_start=0, ram_peak=2**20)])
        >>> 'data-phase="load"' in phase_table_html(rec)
        True
    """
    has_vram = any(p.vram_peak for p in rec.phases)
    headers = ["phase", "start s", "duration s", "RAM at start", "peak", "growth",
               "anon peak", "file peak", "how"] + (["VRAM peak"] if has_vram else [])
    rows = []
    for p in rec.phases:
        pad = "&nbsp;" * 4 * p.depth
        name = pad + _e(p.name) + (" <i>(auto)</i>" if p.auto else "")
        if p.error:
            name += f' <span style="color:#c0392b">✗ {_e(p.error)}</span>'
        cells = [
            name,
            f"{p.start:.3f}",
            "open" if p.duration is None else f"{p.duration:.3f}",
            format_size(p.ram_start), format_size(p.ram_peak), format_size(p.ram_growth),
            format_size(p.ram_anon_peak), format_size(p.ram_file_peak),
            "exact" if p.ram_peak_exact else "sampled",
        ]
        if has_vram:
            cells.append(_e(", ".join(f"{d} {format_size(v)}" for d, v in p.vram_peak.items())
                            or "—"))
        rows.append(({"phase": p.name, "depth": str(p.depth)}, cells))
    if not rows:
        return ('<p class="bigviz-phases"><i>no phases: wrap steps in rec.phase("name"), or '
                "call torch.load / safetensors / load_state_dict with instrument on</i></p>")
    return _table("bigviz-phases", headers, rows, right=[1, 2, 3, 4, 5, 6, 7])


def results_table_html(results: Sequence[RunResult]) -> str:
    """An HTML table of runs: measured peaks (above baseline) beside the prediction.

    One row per run (``data-strategy`` names it); "agrees" says whether measurement and
    prediction agree within the runner's tolerance.

    Example:
        >>> from bigviz.data.result import RunResult
        >>> 'data-strategy="meta"' in results_table_html([RunResult("meta", "ok")])
        True
    """
    headers = ["run", "outcome", "peak RAM", "anon", "file", "VRAM", "predicted",
               "measured ÷ predicted", "agrees", "time s"]
    rows = []
    for r in results:
        pred = r.predicted
        check = r.checks.prediction
        ratio = check.ratio if check is not None else None
        agrees = "" if check is None else ("yes" if check.agrees else "<b>NO</b>")
        outcome = _e(r.outcome) if r.ok else (
            f'<span style="color:#c0392b" title="{_e(r.error or "")}">{_e(r.outcome)}'
            f"{' in ' + _e(r.phase_reached) if r.phase_reached else ''}</span>")
        cells = [
            _e(r.label), outcome, format_size(r.ram_peak), format_size(r.ram_anon_peak),
            format_size(r.ram_file_peak),
            _e(", ".join(f"{d} {format_size(v)}" for d, v in r.vram_peak.items()) or "—"),
            f"{format_size(pred.ram_peak)} ({_e(pred.formula)})" if pred else "—",
            "—" if ratio is None else f"{ratio:.2f}",
            agrees, f"{r.seconds:.2f}",
        ]
        rows.append(({"strategy": r.strategy, "outcome": r.outcome}, cells))
    return _table("bigviz-results", headers, rows, right=[2, 3, 4, 7, 9])


def _link_html(path: Path) -> str:
    """A link to a written report: a data: URL (works in Voila and offline) and the path."""
    name = _e(path.name)
    where = _e(str(path.resolve()))
    if path.stat().st_size <= _MAX_DATA_LINK:
        mime = {".html": "text/html", ".json": "application/json", ".md": "text/markdown"}.get(
            path.suffix, "application/octet-stream")
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return (f'<a class="bigviz-report-link" download="{name}" target="_blank" '
                f'href="data:{mime};base64,{data}">{name}</a> <small>({where})</small>')
    return f'<span class="bigviz-report-link">{name}</span> <small>({where})</small>'


def _more_gpus() -> list[str]:
    """``cuda:1`` … for the GPUs beyond the first (``cuda:0`` is always offered)."""
    import torch

    return [f"cuda:{i}" for i in range(1, torch.cuda.device_count())]


# -- the dashboard ------------------------------------------------------------------------


class Dashboard:
    """An ipywidgets dashboard over :func:`bigviz.sweep`.

    Inputs: the model (zoo spec or ``module:function``), the max shard size on a log
    slider with the resulting shard count and largest shard shown live (from the split
    plan of the model built on the meta device; nothing runs), format, device map (a
    named map or custom JSON) with ``max_memory``, strategies, and a RAM budget.

    Run starts :func:`bigviz.sweep` on a background thread and returns at once; each run
    gets a progress bar, the live timeline follows the streamed samples (redrawn a few
    times a second), and Cancel stops the running worker (its outcome is
    ``"cancelled"``). Results: peak-per-strategy chart, timelines, a measured-vs-
    predicted table, and export buttons that write an HTML, JSON or Markdown report and
    show a link to it.

    Args:
        model: zoo spec (``"gpt:100MB"``) or ``"package.module:function"``.
        shard_size: initial max shard size (bytes or ``"20MB"``).
        strategies: strategies selected at first.
        format: ``"safetensors"`` or ``"bin"``.
        device_map: one of :data:`DEVICE_MAPS`, or a dict (shown as custom JSON).
        max_memory: per-device caps as ``"cpu=2GB,0=10GB"`` (blank: none).
        ram_budget: kill a run above this RSS (``"8GB"``; blank: none).
        work_dir: where checkpoints are saved (default ``$TMPDIR/bigviz-work``).
        out_dir: where the export buttons write reports.
        redraw_s: minimum seconds between redraws of the live timeline.

    Raises:
        ImportError: ipywidgets is not installed (the message says what to install).

    Example:
        >>> dash = Dashboard("gpt:30MB", shard_size="10MB")  # doctest: +SKIP
        >>> dash.plan.n_shards  # doctest: +SKIP
        3
        >>> dash.run(); dash.wait().results[0].outcome  # doctest: +SKIP
        'ok'
    """

    def __init__(
        self,
        model: str = "gpt:100MB",
        *,
        shard_size: int | str = "20MB",
        strategies: Sequence[str] = _DEFAULT_STRATEGIES,
        format: str = "safetensors",
        device_map: str | dict[str, Any] = "cpu",
        max_memory: str = "",
        ram_budget: str = "",
        work_dir: str | Path | None = None,
        out_dir: str | Path = "bigviz-reports",
        redraw_s: float = 0.25,
    ) -> None:
        w = _ipywidgets()
        import bigviz.strategies as registry

        self.work_dir = work_dir
        self.out_dir = Path(out_dir)
        self.redraw_s = float(redraw_s)
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._sweep: Sweep | None = None
        self._error: BaseException | None = None
        self._runs: dict[int, dict[str, Any]] = {}
        self._last_draw = 0.0
        self._modules: dict[str, Any] = {}
        self._plan: ShardPlan | None = None
        self._plan_error: str | None = None
        self._expected_phases = 4
        self.exported: list[Path] = []

        custom = isinstance(device_map, dict)
        names = list(registry.names())
        full = {"description_width": "90px"}
        self.model_w = w.Text(value=model, description="model", continuous_update=False,
                              style=full, layout=w.Layout(width="340px"),
                              placeholder="gpt:1GB, mlp:500MB, bert-base, pkg.mod:fn")
        self.format_w = w.ToggleButtons(options=["safetensors", "bin"], value=format,
                                        style={"button_width": "90px"})
        self.shard_w = w.FloatLogSlider(value=float(parse_size(shard_size)), base=10, min=5,
                                        max=10, step=0.02, readout=False, description="max shard",
                                        style=full, layout=w.Layout(width="420px"))
        self.shard_info = w.HTML()
        maps = [*DEVICE_MAPS, *_more_gpus()]
        if isinstance(device_map, str) and device_map not in maps:
            maps.append(device_map)  # e.g. "cuda:3": the runner checks it exists
        self.device_map_w = w.Dropdown(options=[*maps, CUSTOM],
                                       value=CUSTOM if custom else device_map,
                                       description="device map", style=full)
        self.device_json_w = w.Textarea(
            value=json.dumps(device_map) if custom else "",
            placeholder='{"embed": "cpu", "blocks": "disk", "head": "cpu"}',
            layout=w.Layout(width="520px", height="60px",
                            display="flex" if custom else "none"))
        self.max_memory_w = w.Text(value=max_memory, description="max_memory",
                                   placeholder="cpu=2GB,0=10GB", style=full)
        self.strategies_w = w.SelectMultiple(
            options=names, value=[s for s in strategies if s in names], rows=min(len(names), 8),
            description="strategies", style=full)
        self.ram_budget_w = w.Text(value=ram_budget, description="RAM budget",
                                   placeholder="e.g. 8GB (blank: none)", style=full)
        self.run_w = w.Button(description="Run", button_style="primary", icon="play")
        self.cancel_w = w.Button(description="Cancel", icon="stop", disabled=True)
        self.status_w = w.HTML()
        self.progress_w = w.VBox()
        self.live_w = w.Image(format="png", layout=w.Layout(display="none", max_width="900px"))
        self.peaks_w = w.Image(format="png", layout=w.Layout(max_width="900px"))
        self.timelines_w = w.Image(format="png", layout=w.Layout(max_width="900px"))
        self.pick_w = w.Dropdown(description="run", options=[], style=full,
                                 layout=w.Layout(width="520px"))
        self.timeline_w = w.Image(format="png", layout=w.Layout(max_width="900px"))
        self.table_w = w.HTML()
        self.export_w = [w.Button(description=f"Export {k.upper() if k != 'markdown' else 'MD'}",
                                  icon="download", disabled=True) for k in _REPORT_SUFFIX]
        self.links_w = w.HTML()
        self.results_w = w.VBox(
            [w.HTML("<b>Peak per run</b> (above each run's baseline)"), self.peaks_w,
             w.HTML("<b>Timelines</b> (all runs, above baseline)"), self.timelines_w,
             w.HTML("<b>One run</b>: phases, exact peaks, prediction"), self.pick_w,
             self.timeline_w,
             w.HTML("<b>Measured vs predicted</b>"), self.table_w,
             w.HBox(self.export_w), self.links_w],
            layout=w.Layout(display="none"))
        # CSS classes the browser test (and user styling) can find
        for widget, cls in ((self.shard_w, "bigviz-shard-slider"), (self.shard_info,
                            "bigviz-shard-info"), (self.run_w, "bigviz-run"),
                            (self.cancel_w, "bigviz-cancel"), (self.peaks_w, "bigviz-peaks"),
                            (self.status_w, "bigviz-status"), (self.table_w, "bigviz-table"),
                            (self.live_w, "bigviz-live")):
            widget.add_class(cls)
        self.widget = w.VBox([
            w.HTML("<h3 style='margin:4px 0'>bigviz: what does loading this model cost?</h3>"),
            w.HBox([self.model_w, self.format_w]),
            w.HBox([self.shard_w, self.shard_info]),
            w.HBox([self.device_map_w, self.max_memory_w]),
            self.device_json_w,
            w.HBox([self.strategies_w,
                    w.VBox([self.ram_budget_w, w.HBox([self.run_w, self.cancel_w])])]),
            self.status_w, self.progress_w, self.live_w, self.results_w,
        ])
        self.widget.add_class("bigviz-dashboard")

        self.model_w.observe(lambda _c: self._model_changed(), names="value")
        self.shard_w.observe(lambda _c: self._update_plan(), names="value")
        self.device_map_w.observe(lambda _c: self._device_map_changed(), names="value")
        self.pick_w.observe(lambda _c: self._show_timeline(), names="value")
        self.run_w.on_click(lambda _b: self._clicked(self.run))
        self.cancel_w.on_click(lambda _b: self.cancel())
        for kind, button in zip(_REPORT_SUFFIX, self.export_w, strict=True):
            button.on_click(lambda _b, k=kind: self._clicked(lambda: self.export(k)))
        self._model_changed()

    # -- display ----------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- the split plan (live, no run) ---------------------------------------------------
    @property
    def shard_size(self) -> int:
        """The slider's max shard size in bytes, rounded to 3 significant digits."""
        return int(float(f"{self.shard_w.value:.3g}"))

    @property
    def plan(self) -> ShardPlan | None:
        """How the model splits at :attr:`shard_size` (``None`` when the spec is bad)."""
        return self._plan

    @property
    def plan_error(self) -> str | None:
        """Why there is no plan (a bad model spec), else ``None``."""
        return self._plan_error

    def _model_changed(self) -> None:
        from bigviz.models import build_model

        spec = self.model_w.value.strip()
        try:
            if spec not in self._modules:
                # meta device: shapes only, no memory; ties are seen by identity
                self._modules[spec] = build_model(spec, device="meta")
        except Exception as exc:  # a user's factory may raise anything: show it
            self._plan, self._plan_error = None, f"{spec}: {exc}"
            self.shard_info.value = f'<span style="color:#c0392b">{_e(exc)}</span>'
            self.run_w.disabled = True
            return
        from bigviz.checkpoint import plan_shards

        total = plan_shards(self._modules[spec], 2**62).total_size
        # from ~1/64 of the model (many shards) to past its size (a single file)
        lo = math.floor(math.log10(max(total / 64, 1e5)) * 10) / 10
        hi = math.ceil(math.log10(max(total * 2, 2e5)) * 10) / 10
        with self.shard_w.hold_trait_notifications():
            self.shard_w.max = max(hi, self.shard_w.min)
            self.shard_w.min = lo
            self.shard_w.max = hi
            self.shard_w.value = min(max(self.shard_w.value, 10**lo), 10**hi)
        self._update_plan()

    def _update_plan(self) -> None:
        from bigviz.checkpoint import plan_shards

        module = self._modules.get(self.model_w.value.strip())
        if module is None:
            return
        plan = plan_shards(module, self.shard_size)
        self._plan, self._plan_error = plan, None
        # naive-ish strategies load the largest shard on top; the count says how many files
        self._expected_phases = 3 + plan.n_shards
        self.shard_info.value = (
            f'<span class="bigviz-shards" data-n="{plan.n_shards}" data-size="{self.shard_size}" '
            f'data-largest="{plan.largest_shard}">'
            f"<b>{_e(format_size(self.shard_size, binary=False))}</b> → "
            f"<b>{plan.n_shards}</b> shard{'s' if plan.n_shards != 1 else ''}, largest "
            f"{_e(format_size(plan.largest_shard))} (model {_e(format_size(plan.total_size))})"
            "</span>")
        self.run_w.disabled = self.running

    def _device_map_changed(self) -> None:
        self.device_json_w.layout.display = "flex" if self.device_map_w.value == CUSTOM else "none"

    # -- settings -------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The keyword arguments :func:`bigviz.sweep` will get, checked.

        Raises:
            ConfigError: a bad model spec, empty strategy list, unreadable custom JSON,
                ``max_memory`` or RAM budget (the message names the value).
        """
        from bigviz.models import parse_spec
        from bigviz.units import parse_max_memory

        model = self.model_w.value.strip()
        parse_spec(model)
        strategies = list(self.strategies_w.value)
        if not strategies:
            raise ConfigError("no strategy selected; pick one or more, e.g. naive and meta")
        device_map: Any = self.device_map_w.value
        if device_map == CUSTOM:
            text = self.device_json_w.value.strip()
            try:
                device_map = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"custom device map {text[:60]!r} is not JSON ({exc.msg}); write e.g. "
                    '{"embed": "cpu", "blocks": "disk"}') from exc
            if not isinstance(device_map, dict):
                raise ConfigError(
                    f"custom device map must be a JSON object of module → device, got {text!r}")
        budget = self.ram_budget_w.value.strip() or None
        if budget is not None:
            parse_size(budget)
        return {
            "model": model, "strategies": strategies, "shard_sizes": [self.shard_size],
            "device_maps": [device_map], "formats": [self.format_w.value],
            "max_memory": parse_max_memory(self.max_memory_w.value.strip() or None),
            "ram_budget": budget, "work_dir": self.work_dir,
        }

    # -- running ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while a sweep runs in the background."""
        # an Event, not Thread.is_alive: a join interrupted by Ctrl-C can mark a live
        # thread as finished on Python 3.11
        return self._thread is not None and not self._done.is_set()

    @property
    def sweep(self) -> Sweep | None:
        """The last finished sweep (``None`` before the first one ends)."""
        return self._sweep

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the last sweep, if any."""
        return self._error

    @property
    def status(self) -> str:
        """The status line as plain text."""
        return re.sub(r"<[^>]+>", "", html.unescape(self.status_w.value))

    @property
    def progress(self) -> list[tuple[str, float, str]]:
        """``(label, fraction done, state)`` per run of the current or last sweep."""
        with self._lock:
            return [(r["label"], r["bar"].value, r["state"])
                    for _i, r in sorted(self._runs.items())]

    def run(self) -> None:
        """Start the sweep on a background thread and return at once.

        Raises:
            ConfigError, StrategyError: bad settings (also shown in the status line).
            RuntimeError: a sweep is already running.
        """
        if self.running:
            raise RuntimeError("a sweep is already running; Cancel it or wait() for it")
        try:
            kwargs = self.settings()
        except BigvizError as exc:
            self._set_status(f"✗ {_e(exc)}", error=True)
            raise
        w = _ipywidgets()
        self._cancel.clear()
        self._done.clear()
        self._sweep, self._error = None, None
        with self._lock:
            self._runs.clear()
        self.progress_w.children = ()
        self.results_w.layout.display = "none"
        self.live_w.layout.display = "none"
        self.links_w.value = ""
        self.run_w.disabled, self.cancel_w.disabled = True, False
        for b in self.export_w:
            b.disabled = True
        self._set_status(f"starting: {_e(kwargs['model'])}, max shard "
                         f"{format_size(self.shard_size, binary=False)} …")
        self._w = w
        self._thread = threading.Thread(target=self._work, args=(kwargs,),
                                        name="bigviz-dashboard", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Stop the running sweep: its worker is killed, the run reads ``"cancelled"``."""
        if self.running:
            self._cancel.set()
            self.cancel_w.disabled = True
            self._set_status("cancelling: stopping the worker …")

    def wait(self, timeout: float | None = None) -> Sweep | None:
        """Block until the sweep ends; returns it (``None`` if it could not start).

        Raises:
            TimeoutError: still running after ``timeout`` seconds.
            BigvizError: whatever stopped the sweep (a bad strategy for this device map…).
        """
        if self._thread is not None:
            if not self._done.wait(timeout):
                raise TimeoutError(f"the sweep is still running after {timeout} s")
            self._thread.join(5.0)
        if self._error is not None:
            raise self._error
        return self._sweep

    def _work(self, kwargs: dict[str, Any]) -> None:
        from bigviz.runner import sweep as run_sweep

        try:
            sweep = run_sweep(kwargs.pop("model"), **kwargs, on_progress=self._on_progress,
                                 on_event=self._on_event, cancel=self._cancel)
            self._sweep = sweep
            self._show_results(sweep)
        except Exception as exc:  # shown in the status line; wait() re-raises it
            self._error = exc
            self._set_status(f"✗ {type(exc).__name__}: {_e(exc)}", error=True)
        finally:
            self.run_w.disabled = self._plan is None
            self.cancel_w.disabled = True
            self._done.set()

    def _row(self, index: int) -> dict[str, Any]:
        w = self._w
        with self._lock:
            if index not in self._runs:
                bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info",
                                      layout=w.Layout(width="240px"))
                label = w.Label(f"run {index + 1}", layout=w.Layout(width="300px"))
                note = w.HTML()
                self._runs[index] = {"label": label.value, "label_w": label, "bar": bar,
                                     "note": note, "state": "waiting", "t": [], "v": [],
                                     "baseline": 0, "done": 0}
                box = w.HBox([label, bar, note])
                box.add_class("bigviz-run-row")
                self.progress_w.children = (*self.progress_w.children, box)
            return self._runs[index]

    def _on_progress(self, ev: dict[str, Any]) -> None:
        stage, index = ev.get("stage"), int(ev.get("index", 0))
        total = int(ev.get("total", 1))
        for i in range(total):  # one bar per run from the start
            self._row(i)
        row = self._row(index)
        if stage == "prepare":
            self._set_status(f"{_e(ev.get('label', 'saving the checkpoint'))} (once, reused) …")
        elif stage == "run":
            row["label"] = row["label_w"].value = str(ev.get("label", ""))
            row["state"] = "running"
            row["note"].value = "starting …"
            self._set_status(f"run {index + 1}/{total}: {_e(row['label'])}")
            self.live_w.layout.display = "block"
        elif stage == "done" and ev.get("result") is not None:
            r: RunResult = ev["result"]
            row["state"] = r.outcome
            row["bar"].value = 1.0
            row["bar"].bar_style = _OUTCOME_STYLE.get(r.outcome, "danger")
            row["note"].value = (f"{_e(r.outcome)}, peak {_e(format_size(r.ram_peak))}, "
                                 f"{r.seconds:.1f} s" if r.ok else
                                 f'<span style="color:#c0392b">{_e(r.outcome)}: '
                                 f"{_e((r.error or '').splitlines()[0][:90] if r.error else '')}"
                                 "</span>")
            self._draw_live(force=True)

    def _on_event(self, ev: dict[str, Any]) -> None:
        row = self._row(int(ev.get("index_in_sweep", 0)))
        kind = ev.get("type")
        with self._lock:
            if kind == "baseline":
                row["baseline"] = int(ev.get("rss") or 0)
            elif kind == "samples":
                rss = (ev.get("series") or {}).get("ram.rss")
                if rss:
                    row["t"].extend(rss[0])
                    row["v"].extend(rss[1])
            elif kind == "phase_start" and ev.get("parent") is None:
                row["note"].value = f"phase: {_e(ev.get('name', ''))}"
            elif kind == "phase_end" and (ev.get("phase") or {}).get("parent") is None:
                row["done"] += 1
                row["bar"].value = min(0.95, row["done"] / self._expected_phases)
        self._draw_live()

    def _draw_live(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self.redraw_s:
            return
        self._last_draw = now
        from matplotlib.figure import Figure

        with self._lock:
            lines = [(r["label"], list(r["t"]), [v - r["baseline"] for v in r["v"]], r["state"])
                     for _i, r in sorted(self._runs.items()) if r["t"]]
        if not lines:
            return
        fig = Figure(figsize=(9, 2.6), layout="constrained")
        ax = fig.subplots()
        top = max(max(v) for _l, _t, v, _s in lines) or 1
        div, unit = (2**30, "GiB") if top >= 2**30 else (2**20, "MiB")
        for label, t, v, state in lines:
            ax.plot(t, [x / div for x in v], lw=2.2 if state == "running" else 1.2,
                    label=label.replace("$", r"\$"))
        ax.set_xlabel("seconds since the run started")
        ax.set_ylabel(f"RSS above baseline ({unit})")
        ax.set_title("live: RAM of each run", fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        self.live_w.value = figure_png(fig)

    def _show_results(self, sweep: Sweep) -> None:
        from bigviz import plots

        done = sweep.results
        if not done:
            self._set_status("cancelled before any run finished")
            return
        self.peaks_w.value = figure_png(plots.peaks(sweep))
        self.timelines_w.value = figure_png(plots.overlay(sweep))
        # a new options list leaves nothing selected (ipywidgets 8): pick the first run
        self.pick_w.options = [(r.label, i) for i, r in enumerate(done)]
        if self.pick_w.value != 0:
            self.pick_w.value = 0  # the observer draws it
        else:
            self._show_timeline()
        self.table_w.value = results_table_html(done)
        self.results_w.layout.display = "flex"
        for b in self.export_w:
            b.disabled = False
        bad = [r for r in done if not r.ok]
        finding = ""
        try:
            from bigviz.report import key_finding

            finding = key_finding(done) or ""
        except Exception:  # a missing sentence must not hide the results
            finding = ""
        skipped = sweep.meta.get("skipped") or []
        self._set_status(f"done: {len(done)} run{'s' if len(done) != 1 else ''}"
                         + (f", {len(bad)} not ok" if bad else "")
                         + (f" — {_e(finding)}" if finding else "")
                         + "".join(f"<br>skipped: {_e(x)}" for x in skipped))

    def _show_timeline(self) -> None:
        from bigviz import plots

        index = self.pick_w.value
        if self._sweep is None or index is None or index >= len(self._sweep.results):
            return
        self.timeline_w.value = figure_png(plots.timeline(self._sweep.results[index]))

    # -- export -------------------------------------------------------------------------
    def export(self, kind: str = "html") -> Path:
        """Write a report of the last sweep into :attr:`out_dir` and show a link to it.

        Args:
            kind: ``"html"``, ``"json"`` or ``"markdown"``.

        Returns:
            The path written.

        Raises:
            ConfigError: an unknown kind, or no finished sweep yet.
        """
        from bigviz import report

        if kind not in _REPORT_SUFFIX:
            raise ConfigError(f"export kind {kind!r} is not one of {list(_REPORT_SUFFIX)}")
        if self._sweep is None:
            raise ConfigError("nothing to export yet: click Run (or call run()) first")
        safe = re.sub(r"[^A-Za-z0-9.]+", "-", self._sweep.config.get("model", "sweep"))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        name = f"bigviz-{safe}-{stamp}{_REPORT_SUFFIX[kind]}"
        path = report.write(self._sweep, self.out_dir / name)
        self.exported.append(path)
        self.links_w.value += f"<div>{_link_html(path)}</div>"
        return path

    # -- helpers ------------------------------------------------------------------------
    def _set_status(self, text: str, *, error: bool = False) -> None:
        color = "#c0392b" if error else "#333"
        self.status_w.value = f'<span style="color:{color}">{text}</span>'

    def _clicked(self, action: Any) -> None:
        # a button callback's exception would vanish into the kernel log: show it instead
        try:
            action()
        except Exception as exc:
            self._set_status(f"✗ {_e(exc)}", error=True)
