"""The :class:`Dashboard`: what its controls do (they are built in ``_controls``); the
inputs, their live split plan and guidance, and the checked settings are its base,
:class:`~bigviz.widgets._form.DashboardForm`."""
from __future__ import annotations

import contextlib
import html
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigviz._errors import BigvizError, ConfigError
from bigviz.report import escape as _e
from bigviz.report.notebook import link_html as _link_html
from bigviz.report.notebook import results_table_html
from bigviz.units import format_size
from bigviz.widgets._controls import REPORT_SUFFIX, TEXT, build_controls, ipywidgets
from bigviz.widgets._form import DashboardForm

if TYPE_CHECKING:
    from bigviz.checkpoint import ShardPlan
    from bigviz.data.result import Sweep
    from bigviz.progress import BackgroundSweep, RunProgress

__all__ = ["Dashboard"]

_OUTCOME_STYLE = {"ok": "success", "cancelled": "warning", "budget_exceeded": "warning"}


# -- the dashboard ------------------------------------------------------------------------


class Dashboard(DashboardForm):
    """An ipywidgets dashboard over :func:`bigviz.sweep`.

    Inputs: the model (zoo spec or ``module:function``), the max shard size on a log
    slider with the resulting shard count and largest shard shown live (from the split
    plan of the model built on the meta device; nothing runs), format, device map (a
    named map or custom JSON) with ``max_memory``, strategies, and a RAM budget.

    Guidance before anything runs: strategies that cannot run with the chosen model,
    format and device map are greyed out, with a tooltip and one line saying why (each
    strategy's own ``incompatible()``); ``cuda``/``cuda:N`` are offered only with a GPU;
    the custom-JSON map lists the model's own module names (from its meta skeleton) and
    is checked against them when Run is clicked, before any worker starts. Errors name
    the box they came from (``RAM budget: …``); the worker baseline, which the budget
    counts, is shown beside it.

    Run starts :func:`bigviz.sweep` on a background thread and returns at once; each run
    gets a progress bar (one line each; runs never started after Cancel say "skipped"),
    the live timeline follows the streamed samples (redrawn a few times a second), and
    Cancel stops the running worker (its outcome is ``"cancelled"``). Results, where the
    live chart was: peak-per-strategy chart, the runs' timelines overlaid (with several
    runs), the picked run's timeline, a measured-vs-predicted table (scrolling sideways
    in a narrow output), and export buttons that write an HTML, JSON or Markdown report
    and show a link to it. Colours are JupyterLab's theme variables (Light and Dark).

    Defaults left as ``None`` come from the options spec (:mod:`bigviz.options`).

    Args:
        model: zoo spec (``"gpt:100MB"``, the default) or ``"package.module:function"``.
        shard_size: initial max shard size (bytes or ``"20MB"``, the default).
        strategies: strategies selected at first (default: naive, sharded, meta, mmap).
        format: ``"safetensors"`` (the default) or ``"bin"``.
        device_map: a named map (``DEVICE_MAPS``), or a dict (shown as custom JSON).
        max_memory: per-device caps as ``"cpu=2GB,0=10GB"`` (blank: none).
        ram_budget: kill a run above this RSS (``"8GB"``; blank: none).
        work_dir: where checkpoints are saved (default ``$TMPDIR/bigviz-work``).
        out_dir: where the export buttons write reports.
        redraw_s: minimum seconds between redraws of the live timeline.
        theme: the figures' colours: ``"auto"`` (the default) draws each figure for
            JupyterLab's active theme, read from its settings when the figure is drawn
            (:func:`bigviz.plots.style.active_theme`); ``"light"`` or ``"dark"`` force one
            (light figures in JupyterLab Dark are glaring white blocks).
        figure_px: the figures' width in pixels (default 840, an ~850 px output): give the
            output's width so the PNGs are shown unscaled and their text stays >= 9 px.

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
        model: str | None = None,
        *,
        shard_size: int | str | None = None,
        strategies: Sequence[str] | None = None,
        format: str | None = None,
        device_map: str | dict[str, Any] = "cpu",
        max_memory: str = "",
        ram_budget: str = "",
        work_dir: str | Path | None = None,
        out_dir: str | Path = "bigviz-reports",
        redraw_s: float = 0.25,
        theme: str = "auto",
        figure_px: int | None = None,
    ) -> None:
        w = ipywidgets()
        from bigviz import options
        from bigviz.progress import SweepProgress

        # what is not given comes from the options spec (a notebook's smaller defaults)
        model = options.NOTEBOOK_DEFAULTS["model"] if model is None else model
        if shard_size is None:
            shard_size = options.NOTEBOOK_DEFAULTS["shard_size"]
        strategies = options.default_strategies() if strategies is None else strategies
        format = options.FORMATS[0] if format is None else format

        self.work_dir = work_dir
        self.out_dir = Path(out_dir)
        self.redraw_s = float(redraw_s)
        if theme not in ("auto", "light", "dark"):  # plots.style's, without matplotlib
            raise ConfigError(f"theme={theme!r} is not known; use 'auto', 'light' or 'dark'")
        #: what every figure of the dashboard is drawn with (issue 15: theme and width)
        self.figure_style: dict[str, Any] = {"theme": theme, "px": figure_px}
        self._progress = SweepProgress()
        self._job: BackgroundSweep | None = None
        self._rows: list[Any] = []  # (label, bar, note) widgets, one per run
        self._last_draw = 0.0
        self._modules: dict[str, Any] = {}
        self._plan: ShardPlan | None = None
        self._plan_error: str | None = None
        self._expected_phases = 4
        self._baseline: tuple[int, str] | None = None  # (bytes, where it was measured)
        self.exported: list[Path] = []

        build_controls(self, w, model=model, shard_size=shard_size, strategies=strategies,
                       format=format, device_map=device_map, max_memory=max_memory,
                       ram_budget=ram_budget)
        self.model_w.observe(lambda _c: self._model_changed(), names="value")
        self.shard_w.observe(lambda _c: self._update_plan(), names="value")
        self.device_map_w.observe(lambda _c: self._device_map_changed(), names="value")
        self.device_json_w.observe(lambda _c: self._update_guidance(), names="value")
        self.format_w.observe(lambda _c: self._update_guidance(), names="value")
        self.pick_w.observe(lambda _c: self._show_timeline(), names="value")
        self.run_w.on_click(lambda _b: self._clicked(self.run))
        self.cancel_w.on_click(lambda _b: self.cancel())
        self.advise_w.on_click(lambda _b: self._clicked(self.advise))
        self.advice: Any = None  # the last bigviz.advise result (an Advice)
        for kind, button in zip(REPORT_SUFFIX, self.export_w, strict=True):
            button.on_click(lambda _b, k=kind: self._clicked(lambda: self.export(k)))
        self._model_changed()
        self._show_baseline()
        # issue 17 item 4: the fork server starts now, in the background, with what the
        # selected strategies import, so the first Run's first sample comes fast
        self.strategies_w.observe(lambda _c: self._prestart(), names="value")
        self._prestart()

    def _prestart(self) -> None:
        """Begin starting the fork server (never waits), with the libraries the selected
        strategies import (Transformers for ``transformers``) preloaded in it."""
        import bigviz.strategies as registry
        from bigviz.models import parse_spec
        from bigviz.runner import forkserver

        modules: list[str] = []
        for name in self.strategies_w.value:
            with contextlib.suppress(BigvizError):
                modules += [m for m in registry.get(name).preload if m not in modules]
        with contextlib.suppress(BigvizError):  # a checkpoint folder builds with Transformers
            if parse_spec(self.model_w.value.strip()).kind == "folder" \
                    and "transformers" not in modules:
                modules.append("transformers")
        forkserver.prestart(modules)

    # -- display ----------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- running ------------------------------------------------------------------------
    @property
    def sweep(self) -> Sweep | None:
        """The last finished sweep (``None`` before the first one ends)."""
        return None if self._job is None else self._job.sweep

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the last sweep, if any."""
        return None if self._job is None else self._job.error

    @property
    def status(self) -> str:
        """The status line as plain text."""
        return re.sub(r"<[^>]+>", "", html.unescape(self.status_w.value))

    @property
    def progress(self) -> list[tuple[str, float, str]]:
        """``(label, fraction done, state)`` per run of the current or last sweep."""
        return [(r.label, r.fraction(self._expected_phases), r.state)
                for r in self._progress.runs]

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
        self._w = ipywidgets()
        from bigviz.progress import BackgroundSweep, SweepProgress

        self._progress = SweepProgress(listener=self._show_progress, keep_series=True)
        self._rows = []
        self.progress_w.children = ()
        self.results_w.layout.display = "none"
        self.live_w.layout.display = "none"
        self.links_w.value = ""
        self.run_w.disabled, self.cancel_w.disabled = True, False
        for b in self.export_w:
            b.disabled = True
        self._set_status(f"starting: {_e(kwargs['model'])}, max shard "
                         f"{format_size(self.shard_size, binary=False)} …")
        self._job = BackgroundSweep(kwargs, progress=self._progress, thread_name="bigviz-dashboard",
                                    on_result=self._show_results, on_error=self._show_error,
                                    on_end=self._ended)
        self._job.start()

    def cancel(self) -> None:
        """Stop the running sweep: its worker is killed, the run reads ``"cancelled"``."""
        if self._job is not None and self.running:
            self._job.cancel()
            self.cancel_w.disabled = True
            self._set_status("cancelling: stopping the worker …")

    def wait(self, timeout: float | None = None) -> Sweep | None:
        """Block until the sweep ends; returns it (``None`` if it could not start).

        Raises:
            TimeoutError: still running after ``timeout`` seconds.
            BigvizError: whatever stopped the sweep (a bad strategy for this device map…).
        """
        return None if self._job is None else self._job.wait(timeout)

    def _show_error(self, exc: BaseException) -> None:
        self._set_status(f"✗ {type(exc).__name__}: {_e(exc)}", error=True)

    def _ended(self) -> None:
        # runs that never started (after Cancel, or a run that stopped the sweep) say so
        for run in self._progress.runs:
            if run.state == "waiting" and run.index < len(self._rows):
                _label, bar, note = self._rows[run.index]
                bar.bar_style = ""
                note.value = self._note("skipped", "skipped (not run)", muted=True)
        measured = [r.baseline for r in self._progress.runs if r.baseline]
        if measured:
            self._baseline = (max(measured), "measured by the last run")
            self._show_baseline()
        self.run_w.disabled = self._plan is None
        self.cancel_w.disabled = True

    @staticmethod
    def _note(cls: str, text: str, *, html_text: str | None = None, color: str = "",
              muted: bool = False) -> str:
        """A progress note on one line (full text in its tooltip): a row never wraps."""
        color = TEXT["muted"] if muted else color
        style = "white-space:nowrap;overflow:hidden;text-overflow:ellipsis;display:block" + (
            f";color:{color}" if color else "")
        return (f'<span class="bigviz-note bigviz-{cls}" title="{_e(text)}" style="{style}">'
                f"{html_text if html_text is not None else _e(text)}</span>")

    def _show_baseline(self) -> None:
        """The worker baseline beside the RAM budget: the budget counts it."""
        if self._baseline is None:
            text = ("worker baseline (Python + torch, counted in the budget): "
                    "measured by the first run or Advise")
        else:
            size, where = self._baseline
            text = (f"worker baseline {format_size(size, binary=False)} ({where}): "
                    "counted in the budget; peaks are shown above it")
        self.baseline_w.value = (f'<span style="color:{TEXT["muted"]};font-size:90%">'
                                 f"{_e(text)}</span>")

    def _show_progress(self, kind: str, run: RunProgress) -> None:
        """Draw what changed in the sweep's progress (the listener of its SweepProgress)."""
        w = self._w
        for i in range(len(self._rows), run.total):  # one bar per run from the start
            label = w.Label(f"run {i + 1}", layout=w.Layout(width="300px", min_width="120px"))
            bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info",
                                  layout=w.Layout(width="240px", min_width="80px"))
            # the note takes the rest of the row, on one line: a long one never wraps
            self._rows.append((label, bar, w.HTML(layout=w.Layout(flex="1 1 0", min_width="0",
                                                                  overflow="hidden"))))
            box = w.HBox(self._rows[-1], layout=w.Layout(flex_flow="row nowrap",
                                                         align_items="center",
                                                         max_width="100%"))
            box.add_class("bigviz-run-row")
            self.progress_w.children = (*self.progress_w.children, box)
        label_w, bar, note = self._rows[run.index]
        if kind == "prepare":
            self._set_status(f"{_e(run.preparing or 'saving the checkpoint')} (once, reused) …")
        elif kind == "run":
            label_w.value, note.value = run.label, self._note("running", "starting …")
            self._set_status(f"run {run.index + 1}/{run.total}: {_e(run.label)}")
        elif kind == "done" and run.result is not None:
            r = run.result
            bar.value, bar.bar_style = 1.0, _OUTCOME_STYLE.get(r.outcome, "danger")
            if r.ok:
                note.value = self._note("done", f"{r.outcome}, peak "
                                        f"{format_size(r.ram_peak, binary=False)}, "
                                        f"{r.seconds:.1f} s")
            else:
                first = (r.error or "").splitlines()[0] if r.error else ""
                note.value = self._note(
                    "failed", f"{r.outcome}: {first}" if first else r.outcome,
                    color=TEXT["error"] if r.outcome != "cancelled" else TEXT["warn"])
            self._draw_live(force=True)
        elif kind in ("phase_start", "phase_end", "baseline", "samples"):
            if kind == "phase_start" and run.top_phase and run.top_phase == run.phase:
                note.value = self._note("running", f"phase: {run.top_phase}")
            elif kind == "phase_end":
                bar.value = run.fraction(self._expected_phases)
            self._draw_live()

    def _draw_live(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self.redraw_s:
            return
        self._last_draw = now
        from bigviz.plots import live, to_png

        lines = [(r.label, list(r.t), [v - r.baseline for v in r.v], r.state == "running")
                 for r in self._progress.runs if r.t]
        if lines:
            self.live_w.value = to_png(live(lines, **self.figure_style))
            self.live_w.layout.display = "block"  # only now: it has a picture

    def _show_results(self, sweep: Sweep) -> None:
        from bigviz import plots

        done = sweep.results
        if not done:
            self._set_status("cancelled before any run finished")
            return
        self.peaks_w.value = plots.to_png(plots.peaks(sweep, **self.figure_style))
        # each run's timeline is drawn once: the live chart gives way to the results, the
        # overlay is there only to compare several runs, "One run" shows the picked one
        self.live_w.layout.display = "none"
        if len(done) > 1:
            self.timelines_w.value = plots.to_png(plots.overlay(sweep, **self.figure_style))
            self.timelines_box.layout.display = "flex"
        else:
            self.timelines_box.layout.display = "none"
        self.pick_w.layout.display = "flex" if len(done) > 1 else "none"
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
        sweep = self.sweep
        if sweep is None or index is None or index >= len(sweep.results):
            return
        self.timeline_w.value = plots.to_png(plots.timeline(sweep.results[index],
                                                            **self.figure_style))

    # -- advise -------------------------------------------------------------------------
    def advise(self, **options: Any) -> Any:
        """:func:`bigviz.advise` for the typed RAM budget (``options``: more of its
        keywords, e.g. ``disk=True``); fills the inputs with the pick, shows the table and
        returns the Advice.

        Raises:
            ConfigError: no or a bad RAM budget, or a bad model spec.
        """
        from bigviz.advisor import advise

        budget = self.ram_budget_w.value.strip()
        if not budget:
            raise ConfigError("type a RAM budget (e.g. 8GB) in the 'RAM budget' box, "
                              "then click Advise")
        options.setdefault("work_dir", self.work_dir)
        self.advice = found = advise(self.model_w.value.strip(), ram=budget, **options)
        pick = found.pick
        if pick is not None:
            self.strategies_w.value = (pick.strategy,)
            if pick.device_map not in self.device_map_w.options:
                self.device_map_w.options = (*self.device_map_w.options, pick.device_map)
            self.device_map_w.value = pick.device_map
            self.max_memory_w.value = ",".join(f"{k}={v}"
                                               for k, v in (pick.max_memory or {}).items())
            if pick.shard_size is not None:  # past the slider's end is one file too
                self.shard_w.value = float(min(max(pick.shard_size, 10**self.shard_w.min),
                                               10**self.shard_w.max))
        if found.budgets.baseline:
            self._baseline = (int(found.budgets.baseline), found.baseline_source)
            self._show_baseline()
        self.advice_w.value = found.html()
        self._set_status(_e(found.reason), error=pick is None)
        return found

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

        if kind not in REPORT_SUFFIX:
            raise ConfigError(f"export kind {kind!r} is not one of {list(REPORT_SUFFIX)}")
        sweep = self.sweep
        if sweep is None:
            raise ConfigError("nothing to export yet: click Run (or call run()) first")
        safe = re.sub(r"[^A-Za-z0-9.]+", "-", sweep.config.get("model", "sweep"))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        name = f"bigviz-{safe}-{stamp}{REPORT_SUFFIX[kind]}"
        path = report.write(sweep, self.out_dir / name)
        self.exported.append(path)
        self.links_w.value += f"<div>{_link_html(path)}</div>"
        return path

    # -- helpers ------------------------------------------------------------------------
    def _set_status(self, text: str, *, error: bool = False) -> None:
        # JupyterLab's theme variables: readable in Light and Dark alike
        color = TEXT["error"] if error else TEXT["text"]
        self.status_w.value = (f'<span class="bigviz-status-text" style="color:{color}">'
                               f"{text}</span>")

    def _clicked(self, action: Any) -> None:
        # a button callback's exception would vanish into the kernel log: show it instead
        try:
            action()
        except Exception as exc:
            self._set_status(f"✗ {_e(exc)}", error=True)
