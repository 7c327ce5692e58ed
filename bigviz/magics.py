"""``%load_ext bigviz``: the ``%%bigviz`` cell magic and the ``%bigviz`` line magics.

Thin by design (the memray layout): each magic parses its arguments with ``argparse``
over ``shlex.split``, calls the core, and displays what came back. ``import bigviz``
never imports this module; ``%load_ext bigviz`` does.

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
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from IPython import display as _ipd
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from bigviz._errors import BigvizError, ConfigError, StrategyError
from bigviz.tables.findings import CELL_KEY, cell_meta
from bigviz.units import format_size

if TYPE_CHECKING:
    from bigviz.data.recording import Recording
    from bigviz.data.result import RunResult, Sweep
    from bigviz.progress import RunProgress

__all__ = ["BigvizMagics", "load_ipython_extension", "parser"]

# IPython's display helpers are untyped; give them one typed name each
display: Any = _ipd.display
HTML: Any = _ipd.HTML
Image: Any = _ipd.Image


class _HelpShown(Exception):
    """``-h`` was given: argparse printed the help; nothing else to do."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are IPython ``UsageError``\\ s instead of ``sys.exit``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --shard-size must not mean --shard-sizes
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage()}"
                         "Run `%bigviz?` (or add -h) for all options.")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise UsageError(message)
        raise _HelpShown


def _cell_parser() -> _Parser:
    p = _Parser(prog="%%bigviz", description=(
        "Profile the cell in this kernel: RAM (and VRAM) over time, with an exact peak per\n"
        "phase. torch.load, safetensors, load_state_dict and Module.to become phases by\n"
        "themselves (torch and safetensors are imported before recording starts so\n"
        "that a cell importing them still gets those phases). Shows the timeline and a\n"
        "phase table; the cell's result and exceptions are as without the magic.\n\n"
        "The cell's growth is measured from its start: the kernel's RSS read just before\n"
        "the cell's code runs is its baseline (a line on the timeline, and the line under\n"
        "it: RSS at the start, peak and growth above it, what the cell kept).\n\n"
        "Exact peaks come from resetting the kernel's high-water mark (VmHWM) at each\n"
        "phase: afterwards this kernel's getrusage().ru_maxrss (resource module) and\n"
        "/usr/bin/time -v report only the peak since the last reset. The recording keeps\n"
        "the kernel process's whole-life peak: rec.ram_peak_process."),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default=None, help="name of the recording (default: cell [N])")
    p.add_argument("--interval", type=float, default=1.0, metavar="MS",
                   help="sampling interval in milliseconds (default: 1.0)")
    p.add_argument("--no-instrument", dest="instrument", action="store_false",
                   help="do not turn torch/safetensors loader calls into phases")
    p.add_argument("--report", default=None, metavar="PATH",
                   help="also write a report of this cell (.html, .json, .md, .csv)")
    return p


def _line_parser() -> tuple[_Parser, dict[str, _Parser]]:
    """``%bigviz`` and its commands' parsers, by command name."""
    from bigviz import options

    p = _Parser(prog="%bigviz", description="bigviz line magics (the cell magic is %%bigviz).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, required=True)
    d = sub.add_parser("dashboard", help="the interactive dashboard (model, shard size, run)")
    d.add_argument("--model", default=options.NOTEBOOK_DEFAULTS["model"], metavar="SPEC",
                   help="gpt:SIZE, mlp:SIZE, bert-base or package.module:function")
    s = sub.add_parser(
        "sweep", help="run loading strategies, each in a fresh process, and compare their peaks",
        description=("Save the model once per (shard size, format), then load it with every\n"
                     "strategy, each in its own fresh process under the recorder; show the peaks,\n"
                     "peak vs shard size, and measured vs predicted. The same options as\n"
                     "`bigviz sweep`; no report file unless --out/--json/--md is given."),
        epilog=("examples:\n  %bigviz sweep --model gpt:100MB --strategies naive,meta "
                "--shard-sizes 20MB,50MB\n  %bigviz sweep --model gpt:1GB --ram-budget 8GB "
                "--out sweep.html"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    # the same options as `bigviz sweep`, from the one spec; in a notebook the figures are
    # the output, so a report file only on request
    options.add_arguments(s, report=None)
    c = sub.add_parser("compare", help="the last profiled cells on one time axis")
    c.add_argument("--last", type=int, default=5, metavar="N", help="how many cells (default 5)")
    c.add_argument("--series", default="ram.rss", choices=["ram.rss", "ram.anon", "ram.file"],
                   help="which RAM series to draw (default: ram.rss)")
    e = sub.add_parser("export", help="a report of this kernel's profiled cells")
    e.add_argument("path", metavar="PATH", help="output file: .html, .json, .md or .csv")
    e.add_argument("--sweep", action="store_true", help="export the last %%bigviz sweep instead")
    return p, {"dashboard": d, "sweep": s, "compare": c, "export": e}


def _parse(parser: argparse.ArgumentParser, line: str) -> argparse.Namespace | None:
    try:
        argv = shlex.split(line)
    except ValueError as exc:  # an unclosed quote
        raise UsageError(f"{parser.prog}: cannot split {line!r}: {exc}") from exc
    try:
        return parser.parse_args(argv)
    except _HelpShown:
        return None


def _usage(exc: BigvizError) -> UsageError:
    return UsageError(str(exc))


def _preimport(*names: str) -> None:
    import contextlib
    import importlib

    for name in names:
        with contextlib.suppress(ImportError):  # not installed: nothing to instrument
            importlib.import_module(name)


def _check_report_path(path: str) -> None:
    from bigviz.report import check_output_path

    try:
        check_output_path(path)  # the one check of report.write and the CLI
    except BigvizError as exc:
        raise UsageError(f"--report: {exc}") from None


def _show_figure(fig: Any) -> None:
    from bigviz.plots import to_png

    display(Image(data=to_png(fig, dpi=100), format="png"))


def _show_link(path: Path) -> None:
    from bigviz.report.notebook import link_html

    display(HTML(f"<div>report written: {link_html(path)}</div>"))


@dataclass
class _Cell:
    """One profiled cell: its recording and whether it raised."""

    recording: Recording
    error: str | None = None


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
    """The cell's lazy loads (phases that mapped weights not yet in RAM, outermost only)
    and the lazily mapped weights that arrived during the cell (the instrumentation's
    "arrived on first use" marks)."""
    lines = []
    for p in rec.phases:
        lazy = p.detail.get("lazy_bytes")
        parent = rec.phases[p.parent] if p.parent is not None else None
        if lazy and not (parent is not None and parent.detail.get("lazy_bytes")):
            lines.append(f"lazy load: {p.name} — {format_size(lazy)} of the mapped weights "
                         "is not in RAM yet; it arrives on first use (e.g. the first forward "
                         "pass), as file-backed RAM")
    lines += [m.name for m in rec.marks if m.name.startswith("arrived on first use")]
    return lines


@magics_class
class BigvizMagics(Magics):
    """The ``%bigviz`` / ``%%bigviz`` magics; keeps this kernel's profiled cells."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        _parsers()  # builds the parsers, and with them the help of `%bigviz?`
        self.cells: list[_Cell] = []
        self.sweeps: list[Sweep] = []
        self.dashboards: list[Any] = []

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
        args = _parse(parser("%bigviz"), line)
        if args is None:
            return None
        args.line = line
        try:
            return getattr(self, f"_{args.command}")(args)
        except (ConfigError, StrategyError) as exc:  # a value the user can fix
            raise _usage(exc) from exc

    # -- %%bigviz -------------------------------------------------------------------------
    def _profile(self, line: str, cell: str) -> Any:
        __tracebackhide__ = True
        from bigviz.recorder import record

        args = _parse(parser("%%bigviz"), line)
        if args is None:
            return None
        shell: Any = self.shell
        name = args.name or f"cell [{shell.execution_count}]"
        try:
            recorder = record(args.interval, instrument=args.instrument, name=name)
        except BigvizError as exc:
            raise _usage(exc) from exc
        if args.report:
            _check_report_path(args.report)  # before the cell runs, not after
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
            code=cell, execution_count=shell.execution_count, start=start, end=end)
        self.cells.append(_Cell(recording, None if error is None else repr(error)))
        self._show_recording(self.cells[-1], args.report)
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
        filename = shell.compile.cache(code, shell.execution_count, raw_code=cell)
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

    def _show_recording(self, cell: _Cell, report_path: str | None) -> None:
        from bigviz import report
        from bigviz.report.notebook import cell_summary_html, phase_table_html, timeline_figure

        recording = cell.recording
        (run,) = _cell_runs([cell])
        try:
            # drawn as a run: the baseline line is RSS at the cell's start
            _show_figure(timeline_figure(recording, run))
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
            _show_link(report.write([run], report_path))

    # -- %bigviz COMMAND ----------------------------------------------------------------
    def _dashboard(self, args: argparse.Namespace) -> None:
        from bigviz.widgets import Dashboard

        dash = Dashboard(args.model)
        self.dashboards.append(dash)
        display(dash)

    def _sweep(self, args: argparse.Namespace) -> None:
        from bigviz import options, plots, report
        from bigviz.report.notebook import results_table_html

        kwargs = options.from_namespace(args)
        sweep, interrupted = _sweep_interruptibly(kwargs.pop("model"), kwargs)
        sweep.command = f"%bigviz {args.line.strip()}"
        self.sweeps.append(sweep)
        if sweep.results:
            _show_figure(plots.peaks(sweep))
            if len({r.shard_size for r in sweep.results}) > 1:
                _show_figure(plots.sweep_curves(sweep))
            display(HTML(results_table_html(sweep.results)))
        finding = report.key_finding(sweep.results)
        if finding:
            display(HTML(f"<p><b>{html.escape(finding)}</b></p>"))
        for path in (args.out, args.md, args.json):
            if path == "-":
                print(report.dumps(sweep))
            elif path:
                _show_link(report.write(sweep, path))
        if interrupted:  # finished runs are shown; "Run All" must still stop here
            raise KeyboardInterrupt

    def _compare(self, args: argparse.Namespace) -> None:
        from bigviz import plots

        if not self.cells:
            raise UsageError("nothing to compare yet: profile a cell with %%bigviz first")
        if args.last < 1:
            raise UsageError(f"--last {args.last}: give a positive number of cells, e.g. --last 3")
        from bigviz.report.notebook import results_table_html

        # each cell from its own start: what it added, not what earlier cells left behind
        runs = _cell_runs(self.cells[-args.last:])
        _show_figure(plots.overlay(runs, series=args.series))
        display(HTML(results_table_html(runs)))

    def _export(self, args: argparse.Namespace) -> None:
        from bigviz import report

        obj: Any
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
        _show_link(report.write(obj, args.path))


def _print_finished(kind: str, run: RunProgress) -> None:
    """One line per finished run of a sweep: the magic's view of its progress."""
    r = run.result
    if kind == "done" and r is not None:
        peak = "" if r.ram_peak is None else f", peak {format_size(r.ram_peak)}"
        print(f"[{run.index + 1}/{run.total}] {run.label}: {r.outcome}{peak}", flush=True)


def _sweep_interruptibly(model: str, kwargs: dict[str, Any]) -> tuple[Sweep, bool]:
    """Run bigviz.sweep on a helper thread so that Interrupt kernel cancels it cleanly.

    Returns the sweep (the runs that finished) and whether it was interrupted.
    """
    from bigviz.progress import SweepProgress
    from bigviz.runner import sweep_interruptibly

    progress = SweepProgress(listener=_print_finished)
    return sweep_interruptibly(model, thread_name="bigviz-magic-sweep", **kwargs,
                               on_progress=progress.on_progress)


@functools.cache
def _parsers() -> dict[str, _Parser]:
    # built on first use: the sweep's options spec lives in the runner, which importing
    # this module must not load
    line, commands = _line_parser()
    parsers = {"%%bigviz": _cell_parser(), "%bigviz": line, **commands}
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
    """Register the magics (``%load_ext bigviz``).

    Example:
        >>> # %load_ext bigviz
    """
    ipython.register_magics(BigvizMagics)
