"""``%load_ext bigviz``: the ``%%bigviz`` cell magic and the ``%bigviz`` line magics.

Thin by design (the memray layout): each magic parses its arguments with ``argparse``
over ``shlex.split`` (the parsers: :mod:`bigviz._magic_args`), calls the core, and
displays what came back (a sweep's live bars: :mod:`bigviz.widgets._sweep_bars`).
``import bigviz`` never imports this module; ``%load_ext bigviz`` does.

Example (in a notebook)::

    %load_ext bigviz

    %%bigviz --name "load"
    model = transformers.AutoModel.from_pretrained(path)

    %bigviz compare
    %bigviz sweep --model gpt:100MB --strategies naive,meta --shard-sizes 20MB,50MB
    %bigviz dashboard --model gpt:100MB
    %bigviz export kernel.html
"""

from __future__ import annotations

import argparse
import ast
import functools
import html
import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython import display as _ipd
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from bigviz._errors import BigvizError, ConfigError, ReportError, StrategyError
from bigviz._magic_args import MagicParser, cell_parser, line_parser, parse_line
from bigviz.tables.findings import CELL_KEY, cell_meta
from bigviz.units import format_size

if TYPE_CHECKING:
    from bigviz.data.recording import Recording
    from bigviz.data.result import RunResult, Sweep
    from bigviz.progress import RunProgress, SweepProgress
    from bigviz.widgets._sweep_bars import SweepBars

__all__ = ["BigvizMagics", "load_ipython_extension", "parser"]

# IPython's display helpers are untyped; give them one typed name each
display: Any = _ipd.display
HTML: Any = _ipd.HTML
Image: Any = _ipd.Image


def _usage(exc: BigvizError) -> UsageError:
    return UsageError(str(exc))


def _cell_number(shell: Any) -> int:
    """The running cell's ``In [N]``: IPython 9 counts the cell before running it (its
    ``execution_count`` is then N + 1), IPython 8 after; its output prompt knows which."""
    count = getattr(getattr(shell, "displayhook", None), "prompt_count", None)
    return int(count) if isinstance(count, int) else int(shell.execution_count)


def _preimport(*names: str) -> None:
    import contextlib
    import importlib

    for name in names:
        with contextlib.suppress(ImportError):  # not installed: nothing to instrument
            importlib.import_module(name)


def _show_figure(fig: Any) -> None:
    from bigviz.plots import to_png

    display(Image(data=to_png(fig, dpi=100), format="png"))


def _show_timeline(run: RunResult, theme: str) -> None:
    """A run's (a profiled cell's) timeline: the interactive view (zoom, pan, hover
    readout) with the static PNG inside as its fallback where scripts do not run; the PNG
    alone for what the view cannot show (no RSS samples, ranks)."""
    from bigviz.plots.interactive import can_show
    from bigviz.report.notebook import interactive_timeline, timeline_figure

    if not can_show(run):
        _show_figure(timeline_figure(run.recording, run, theme=theme))
        return
    view = interactive_timeline(run, theme=theme)
    name = run.recording.name or run.label
    display({"text/html": view.html,
             "text/plain": f"<bigviz timeline of {name}: zoom and hover in Jupyter>"}, raw=True)


def _show_link(*paths: Path) -> None:
    from bigviz.report.notebook import link_html

    links = " · ".join(link_html(p) for p in paths)
    assets = sorted({str(_assets_of(p).name) + "/" for p in paths
                     if p.suffix == ".md" and _assets_of(p).is_dir()})
    extra = f" <small>(its PNGs in {html.escape(', '.join(assets))})</small>" if assets else ""
    display(HTML(f"<div>report written: {links}{extra}</div>"))


#: what ``%bigviz export BASE`` writes: one report set under one base name
EXPORT_SET = (".html", ".json", ".md")


def _assets_of(path: Path) -> Path:
    """The folder of a Markdown report's PNGs: ``k.md`` → ``k_files/`` beside it."""
    return path.with_name(path.stem + "_files")


def _report_paths(path: str) -> list[Path]:
    """The files one export writes: ``PATH`` itself, or for a base name without a suffix
    ``PATH.html``, ``PATH.json`` and ``PATH.md``; each checked before any work.

    Raises:
        UsageError: a path a report cannot be written at (one line, naming it and the fix).
    """
    from bigviz.report import check_output_path

    target = Path(path).expanduser()
    paths = [target] if target.suffix else [target.with_name(target.name + s)
                                            for s in EXPORT_SET]
    try:
        for p in paths:
            check_output_path(p)  # the one check of report.write and the CLI
    except BigvizError as exc:
        raise UsageError(str(exc)) from None
    return paths


def _write_reports(obj: Any, paths: list[Path]) -> list[Path]:
    """Write ``obj`` to each path (Markdown with its PNGs in ``NAME_files/``), show the
    links, return the paths.

    Raises:
        UsageError: a report could not be written (one line: the path and the reason).
    """
    from bigviz import report

    written = []
    try:
        for p in paths:
            md = p.suffix.lower() in (".md", ".markdown")
            written.append(report.write(obj, p, assets=_assets_of(p) if md else None))
    except BigvizError as exc:
        raise UsageError(str(exc)) from None
    _show_link(*written)
    return written


class _Interrupted(KeyboardInterrupt):
    """Interrupt kernel during a magic: one line, no traceback into this module, and the
    cell still stops as interrupted (Run All stops there)."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"KeyboardInterrupt: {self}"]


_ids = itertools.count(1)


@dataclass
class _Cell:
    """One profiled cell: its recording, whether it raised, its number in %bigviz list."""

    recording: Recording
    error: str | None = None
    id: int = field(default_factory=lambda: next(_ids))


def _cell_runs(cells: list[_Cell]) -> list[RunResult]:
    """Profiled cells as RunResults, so a report can table and plot them side by side;
    every peak is above the cell's own start (:func:`bigviz.tables.findings.cell_run`)."""
    from bigviz.tables.findings import cell_run

    return [cell_run(c.recording, c.error) for c in cells]


#: ``/proc/self/status`` fields read at a cell's start and end, by cell-facts key
_STATUS_FIELDS = {"rss": "VmRSS", "anon": "RssAnon", "file": "RssFile", "shmem": "RssShmem"}


def _memory_now() -> dict[str, int]:
    """This kernel's RSS now and its anonymous, file-backed and shared parts, bytes
    (one read of ``/proc/self/status``; where there is no ``/proc``, RSS from psutil;
    ``{}`` if neither answers, and the cell's first sample is its start)."""
    from bigviz.recorder.procfs import read_kib

    got = read_kib("self", tuple(_STATUS_FIELDS.values()))
    out = {k: got[f] for k, f in _STATUS_FIELDS.items() if f in got}
    if "rss" not in out:
        try:
            import psutil

            out = {"rss": int(psutil.Process().memory_info().rss)}
        except Exception:  # never the user's cell's problem: the first sample stands in
            out = {}
    return out


def _lazy_lines(rec: Recording) -> list[str]:
    """The cell's lazy loads and the lazily mapped weights that arrived during the cell."""
    from bigviz.tables.phases import lazy_lines

    return lazy_lines(rec, not_in_ram="is not in RAM yet; it arrives on first use (e.g. the "
                                      "first forward pass), as file-backed RAM")


@magics_class
class BigvizMagics(Magics):
    """The ``%bigviz`` / ``%%bigviz`` magics; keeps this kernel's profiled cells."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        _parsers()  # builds the parsers, and with them the help of `%bigviz?`
        self.cells: list[_Cell] = []
        self.sweeps: list[Sweep] = []
        self.dashboards: list[Any] = []
        #: the number %bigviz list shows for each sweep run, by the run's id()
        self._run_ids: dict[int, int] = {}
        #: the progress of the last %bigviz sweep, and its bars (None in a terminal)
        self.progress: SweepProgress | None = None
        self.bars: SweepBars | None = None

    @property
    def recordings(self) -> list[Recording]:
        """Recordings of the cells profiled with ``%%bigviz``, oldest first."""
        return [c.recording for c in self.cells]

    @line_cell_magic
    def bigviz(self, line: str, cell: str | None = None) -> Any:
        """Profile a cell (%%bigviz) or run a bigviz command (%bigviz COMMAND).

        (The magics' options follow here once the extension is loaded.)
        """
        __tracebackhide__ = True  # the user's traceback, not ours
        if cell is not None:
            return self._profile(line, cell)
        args = parse_line(parser("%bigviz"), line)
        if args is None:
            return None
        args.line = line
        try:
            return getattr(self, f"_{args.command}")(args)
        except (ConfigError, StrategyError, ReportError) as exc:  # a value the user can fix
            raise _usage(exc) from None
        except _Interrupted:
            raise
        except KeyboardInterrupt:
            raise _Interrupted(f"%bigviz {args.command} was interrupted") from None

    # -- %%bigviz -------------------------------------------------------------------------
    def _profile(self, line: str, cell: str) -> Any:
        __tracebackhide__ = True
        from bigviz.recorder import record

        args = parse_line(parser("%%bigviz"), line)
        if args is None:
            return None
        shell: Any = self.shell
        number = _cell_number(shell)
        name = args.name or f"cell [{number}]"
        try:
            recorder = record(args.interval, instrument=args.instrument, name=name)
        except BigvizError as exc:
            raise _usage(exc) from exc
        if args.report:
            _report_paths(args.report)  # before the cell runs, not after
        body, last = self._compile(cell)
        if args.instrument:
            # the recorder patches loaders of modules already imported: a cell that does
            # `import torch` itself would otherwise get no automatic phases
            _preimport("torch", "safetensors.torch")
        value, error = None, None
        with recorder as rec:
            # the cell's baseline: RSS right before its code, after the recorder started
            start = _memory_now()
            try:
                exec(body, shell.user_global_ns, shell.user_ns)
                if last is not None:
                    value = eval(last, shell.user_global_ns, shell.user_ns)
            except BaseException as exc:  # shown after the timeline, then re-raised
                error = exc
            end = _memory_now()
        recording = rec.recording
        recording.meta[CELL_KEY] = cell_meta(
            code=cell, execution_count=number, start=start, end=end)
        self.cells.append(_Cell(recording, None if error is None else repr(error)))
        try:
            self._show_recording(self.cells[-1], args.report, args.theme)
        except KeyboardInterrupt:
            if error is None:
                raise _Interrupted("interrupted while showing the cell's timeline; the "
                                   "recording is kept (%bigviz list)") from None
        if error is not None:
            # drop this frame from the traceback: the user's cell is where it happened
            raise error.with_traceback(error.__traceback__.tb_next if error.__traceback__
                                       else None)
        return value

    def _compile(self, cell: str) -> tuple[Any, Any]:
        """(body, last expression or None), compiled the way IPython runs a cell."""
        shell: Any = self.shell
        code = shell.transform_cell(cell)
        # a cached file name lets tracebacks show the cell's own lines
        filename = shell.compile.cache(code, _cell_number(shell), raw_code=cell)
        tree = shell.transform_ast(shell.compile.ast_parse(code, filename=filename))
        last = None
        quiet = shell.displayhook.semicolon_at_end_of_expression(code)
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            expr = tree.body.pop()
            if quiet:  # `x;` runs but shows nothing, as without the magic
                tree.body.append(expr)
            else:
                last = shell.compile(ast.Expression(expr.value), filename, "eval")
        return shell.compile(tree, filename, "exec"), last

    def _show_recording(self, cell: _Cell, report_path: str | None, theme: str) -> None:
        from bigviz.report.notebook import cell_summary_html, phase_table_html

        recording = cell.recording
        (run,) = _cell_runs([cell])
        try:
            # drawn as a run: the baseline line is RSS at the cell's start
            _show_timeline(run, theme)
        except Exception as exc:  # drawing must never cost the user's result
            print(f"bigviz: could not draw the timeline: {exc!r}", file=sys.stderr)
        # the cell's growth from its start, and that start: what the cell cost
        summary = cell_summary_html(recording)
        if summary:
            display(HTML(summary))
        display(HTML(phase_table_html(recording)))
        lazy = _lazy_lines(recording)
        if lazy:
            display(HTML('<p class="bigviz-lazy">' + "<br>".join(map(html.escape, lazy))
                         + "</p>"))
        if report_path:
            # the same report as `%bigviz export` of this one cell
            _write_reports([run], _report_paths(report_path))

    # -- %bigviz COMMAND ----------------------------------------------------------------
    def _dashboard(self, args: argparse.Namespace) -> None:
        from bigviz.widgets import Dashboard

        dash = Dashboard(args.model, theme=args.theme)
        self.dashboards.append(dash)
        display(dash)

    def _sweep(self, args: argparse.Namespace) -> None:
        from bigviz import options, plots, report
        from bigviz.report.notebook import results_table_html

        kwargs = options.from_namespace(args)
        paths = [_report_paths(p) for p in (args.out, args.md, args.json) if p and p != "-"]
        sweep, interrupted = self._sweep_interruptibly(kwargs.pop("model"), kwargs)
        sweep.command = f"%bigviz {args.line.strip()}"
        self.sweeps.append(sweep)
        for r in sweep.results:
            self._run_ids[id(r)] = next(_ids)
        if sweep.results:
            # for JupyterLab's active theme (no --theme: the flags are `bigviz sweep`'s)
            _show_figure(plots.peaks(sweep, theme="auto"))
            if len({r.shard_size for r in sweep.results}) > 1:
                _show_figure(plots.sweep_curves(sweep, theme="auto"))
            display(HTML(results_table_html(sweep.results)))
        finding = report.key_finding(sweep.results)
        if finding:
            display(HTML(f"<p><b>{html.escape(finding)}</b></p>"))
        if "-" in (args.out, args.md, args.json):
            print(report.dumps(sweep))
        for group in paths:
            _write_reports(sweep, group)
        if interrupted:  # finished runs are shown; "Run All" must still stop here
            done = len(sweep.results)
            raise _Interrupted(f"the sweep was interrupted; the {done} run"
                               f"{'s' if done != 1 else ''} above finished (or were cancelled)")

    def _sweep_interruptibly(self, model: str, kwargs: dict[str, Any]) -> tuple[Sweep, bool]:
        """Run bigviz.sweep on a helper thread so that Interrupt kernel cancels it cleanly,
        with a live progress bar per run (one line per finished run in a terminal).

        Returns the sweep (the runs that finished) and whether it was interrupted.
        """
        from bigviz.progress import SweepProgress
        from bigviz.runner import sweep_interruptibly
        from bigviz.widgets._sweep_bars import SweepBars

        self.bars = SweepBars.make(self.shell)
        listener = self.bars if self.bars is not None else _print_finished
        self.progress = progress = SweepProgress(listener=listener)
        if self.bars is not None:
            display(self.bars.box)
        try:
            return sweep_interruptibly(model, thread_name="bigviz-magic-sweep", **kwargs,
                                       on_progress=progress.on_progress,
                                       on_event=progress.on_event)
        finally:
            if self.bars is not None:
                self.bars.ended(progress)

    def _compare(self, args: argparse.Namespace) -> None:
        from bigviz import plots

        if not self.cells:
            raise UsageError("nothing to compare yet: profile a cell with %%bigviz first")
        if args.last < 1:
            raise UsageError(f"--last {args.last}: give a positive number of cells, e.g. --last 3")
        from bigviz.report.notebook import results_table_html

        # each cell from its own start: what it added, not what earlier cells left behind
        runs = _cell_runs(self.cells[-args.last:])
        _show_figure(legend_below(plots.overlay(runs, series=args.series, theme=args.theme)))
        display(HTML(results_table_html(runs)))

    def _export(self, args: argparse.Namespace) -> None:
        obj: Any
        paths = _report_paths(args.path)  # a bad path says so first, in one line
        if args.sweep:
            if not self.sweeps:
                raise UsageError("no sweep to export: run %bigviz sweep first")
            obj = self.sweeps[-1]
        elif not self.cells:
            raise UsageError("nothing to export yet: profile a cell with %%bigviz first "
                             "(or export the last sweep with --sweep)")
        else:
            # every cell as a run above its own start, its code with it (one cell too)
            obj = _cell_runs(self.cells)
        _write_reports(obj, paths)

    # -- list / clear -------------------------------------------------------------------
    def items(self) -> list[tuple[int, str, RunResult]]:
        """``(number, kind, run)`` for every profiled cell (kind ``"cell"``, the cell as a
        run above its own start) and sweep run (``"sweep N"``), in the order they came:
        what ``%bigviz list`` shows and ``%bigviz clear`` takes."""
        out: list[tuple[int, str, RunResult]] = []
        for c, run in zip(self.cells, _cell_runs(self.cells), strict=True):
            out.append((c.id, "cell", run))
        for n, sw in enumerate(self.sweeps, 1):
            out += [(self._run_ids.get(id(r), 0), f"sweep {n}", r) for r in sw.results]
        return sorted(out, key=lambda item: item[0])

    def _list(self, args: argparse.Namespace) -> None:
        rows = self.items()
        if not rows:
            print("nothing yet: profile a cell with %%bigviz or run %bigviz sweep")
            return
        print(_list_text(rows))

    def _clear(self, args: argparse.Namespace) -> None:
        rows = self.items()
        known = {n for n, _k, _r in rows}
        unknown = [n for n in args.ids if n not in known]
        if unknown:
            shown = ", ".join(map(str, sorted(known))) or "none"
            raise UsageError(f"%bigviz clear: no item {', '.join(map(str, unknown))}; "
                             f"the numbers are those of %bigviz list (now: {shown})")
        if args.ids:
            gone = set(args.ids)
        elif args.failed:
            gone = {n for n, _k, r in rows if not r.ok}
        else:
            gone = known
        self.cells = [c for c in self.cells if c.id not in gone]
        for sw in self.sweeps:
            sw.results = [r for r in sw.results if self._run_ids.get(id(r)) not in gone]
        self.sweeps = [sw for sw in self.sweeps if sw.results]
        what = "failed " if args.failed and not args.ids else ""
        cleared = [f"{n} {r.strategy}" for n, _k, r in rows if n in gone]
        print(f"cleared {len(cleared)} {what}item{'s' if len(cleared) != 1 else ''}"
              + (f": {', '.join(cleared)}" if cleared else "")
              + f"; {len(rows) - len(cleared)} left")


def _list_text(rows: list[tuple[int, str, RunResult]]) -> str:
    """The lines of ``%bigviz list``: number, kind, label, peak RSS, growth above the
    item's baseline (a cell's start, a run's worker after imports), outcome."""
    from bigviz.tables.labels import outcome_text

    table = [("#", "kind", "label", "peak RSS", "growth", "outcome")]
    for n, kind, r in rows:
        peak = None if r.ram_peak is None or not r.baseline else r.baseline + r.ram_peak
        outcome = outcome_text(r.outcome)
        if r.error and not r.ok:
            outcome += f": {r.error.splitlines()[0][:60]}"
        table.append((str(n), kind, r.label, format_size(peak),
                      "—" if r.ram_peak is None else f"+{format_size(r.ram_peak)}", outcome))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    return "\n".join(
        "  ".join(c.rjust(w) if i in (0, 3, 4) else c.ljust(w)
                  for i, (c, w) in enumerate(zip(row[:5], widths, strict=True)))
        + "  " + row[5] for row in table)


def legend_below(fig: Any) -> Any:
    """Move the legend of ``fig``'s first axes below the plot, so it never covers a line
    (the runs' lines rise from the top left, where the legend sat); returns ``fig``."""
    if not fig.axes:
        return fig
    ax = fig.axes[0]
    legend = ax.get_legend()
    if legend is None:
        return fig
    handles, labels = ax.get_legend_handles_labels()
    legend.remove()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)),
               fontsize=7.5, frameon=False)
    return fig


def _print_finished(kind: str, run: RunProgress) -> None:
    """One line per finished run of a sweep: the terminal's view of its progress."""
    r = run.result
    if kind == "done" and r is not None:
        peak = "" if r.ram_peak is None else f", peak {format_size(r.ram_peak)}"
        print(f"[{run.index + 1}/{run.total}] {run.label}: {r.outcome}{peak}", flush=True)


@functools.cache
def _parsers() -> dict[str, MagicParser]:
    # built on first use: the sweep's options spec lives in the runner, which importing
    # this module must not load
    line, commands = line_parser()
    parsers = {"%%bigviz": cell_parser(), "%bigviz": line, **commands}
    # `%bigviz?` shows the real options: the parsers' help follows the docstring
    BigvizMagics.bigviz.__doc__ = (
        "Profile a cell (%%bigviz) or run a bigviz command (%bigviz COMMAND).\n\n"
        + parsers["%%bigviz"].format_help() + "\n" + line.format_help() + "\n"
        + "\n".join(f"--- %bigviz {n} ---\n{p.format_help()}" for n, p in commands.items())
    )
    return parsers


def parser(name: str = "%bigviz") -> argparse.ArgumentParser:
    """The argument parser of a magic: ``"%%bigviz"``, ``"%bigviz"`` or one of its commands.

    Raises:
        KeyError: no such magic or command.

    Example:
        >>> parser("sweep").prog
        '%bigviz sweep'
    """
    return _parsers()[name]


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics (``%load_ext bigviz``) and begin starting the fork server in
    the background, so the first run finds it warm (``BIGVIZ_PRESTART=0``: not now).

    Example:
        >>> # %load_ext bigviz
    """
    ipython.register_magics(BigvizMagics)
    from bigviz.runner import forkserver

    forkserver.prestart()
