"""``bigviz sweep``: run loading strategies in fresh processes and compare them."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import TYPE_CHECKING, Any

from bigviz import options
from bigviz.commands._output import Progress, add_verb, format_table
from bigviz.units import format_size, parse_max_memory

if TYPE_CHECKING:
    from pathlib import Path
    from typing import TextIO

    from bigviz.data.result import RunResult, Sweep
    from bigviz.progress import RunProgress

__all__ = ["add_parser", "parse_max_memory", "run", "summary_table"]

EXAMPLES = """\
  bigviz sweep --model gpt:1GB --strategies naive,sharded,meta,mmap \\
      --shard-sizes 100MB,500MB,2GB --device-map cpu --format safetensors \\
      --ram-budget 8GB --out report.html
  bigviz sweep --model gpt:400MB --out r.html --json r.json --md r.md
  bigviz sweep --model mypkg.models:build --strategies meta,dispatch --device-map cpu,disk
  bigviz sweep --model gpt:100MB --json - > sweep.json   # JSON on stdout, table on stderr
  bigviz sweep --model gpt:200MB --nproc 2 --strategies every-rank-loads,shared-mmap
"""


def add_parser(subparsers: Any) -> None:
    """Register ``bigviz sweep``."""
    p = add_verb(
        subparsers,
        "sweep",
        help="run loading strategies, each in a fresh process, and compare their peaks",
        description=(
            "Save the model once per (shard size, format), then load it with every strategy,\n"
            "each in its own fresh process under the recorder, and compare measured peaks\n"
            "with what theory predicts. Progress goes to stderr; the summary table to stdout."
        ),
        examples=EXAMPLES,
    )
    options.add_arguments(p)  # the options spec the magic and the dashboard share too
    p.set_defaults(func=run)


def _run_text(r: RunResult) -> str:
    if r.outcome != "ok":
        return f"{r.outcome} in {r.phase_reached or 'start'}" + (
            f": {r.error.splitlines()[0][:80]}" if r.error else ""
        )
    pred = f" (predicted {format_size(r.predicted.ram_peak)})" if r.predicted else ""
    return f"ok, peak {format_size(r.ram_peak)}{pred}, {r.seconds:.1f} s"


def summary_table(results: list[RunResult]) -> str:
    """The end-of-sweep table: one row per run, peaks above baseline beside predicted
    ranges (the cells of :func:`bigviz.tables.run_rows`, written for a terminal), then one
    line per run outside its range saying which bound it crossed and what that means.

    Example:
        >>> print(summary_table([]).splitlines()[0].split()[:3])
        ['run', 'outcome', 'peak']
    """
    from bigviz.tables.labels import vram_text
    from bigviz.tables.runs import run_rows

    rows = [
        [
            r.full_label,
            r.outcome,
            format_size(r.ram_peak),
            format_size(r.ram_anon_peak),
            format_size(r.ram_file_peak),
            vram_text(r.vram),
            f"{r.predicted_range} ({_short_formula(r.range_formula or r.formula)})"
            if r.predicted is not None
            else "—",
            "" if r.agrees is None else ("yes" if r.agrees else "NO"),
            f"{r.seconds:.1f}",
        ]
        for r in run_rows(results)
    ]
    headers = ["run", "outcome", "peak RAM", "anon", "file", "VRAM", "predicted", "agrees", "s"]
    right = [2, 3, 4, 8]
    fixed = [r.fixed_cost for r in run_rows(results)]
    if any(v is not None for v in fixed):  # the worker's own cost, beside the growth
        for row, v in zip(rows, fixed, strict=True):
            row.insert(5, format_size(v))
        headers.insert(5, "fixed")
        right = [2, 3, 4, 5, 9]
    table = format_table(headers, rows, right=right)
    # the runner's verdict in words, for each run outside its predicted range
    off = [f"{r.full_label}: {r.verdict}" for r in run_rows(results)
           if r.off_prediction and r.verdict]
    return table + ("\n\n" + "\n".join(off) if off else "")


def _short_formula(formula: str, width: int = 24) -> str:
    """The formula's head for a table cell: the part before a comma (its explanation),
    cut at ``width`` characters; parentheses inside it ("N × (2 × M)") are kept."""
    head = formula.split(", ")[0]
    return head if len(head) <= width else head[: width - 1] + "…"


class _Terminal:
    """Shows a sweep's :class:`~bigviz.progress.SweepProgress` as text on stderr."""

    def __init__(self) -> None:
        self.bar: Progress | None = None

    def __call__(self, kind: str, run: RunProgress) -> None:
        if self.bar is None:
            self.bar = Progress(run.total)
        i = run.index + 1
        if kind == "prepare":
            self.bar.start(i, run.preparing)
        elif kind == "run":
            self.bar.start(i, run.label)
        elif kind == "done" and run.result is not None:
            self.bar.finish(i, run.label, _run_text(run.result))
        elif kind in ("phase_start", "baseline", "samples"):
            above = format_size(run.above_baseline)
            self.bar.update(f"{run.phase or 'starting'} · {above} above baseline")


def run(args: argparse.Namespace) -> int:
    """``bigviz sweep``: run, show progress on stderr, print the table, write the reports.

    The reports are written whatever happens to the runs: a run that crashed (its fork
    server killed under it, say) is in them, marked; an error that stops the sweep
    itself still gets the runs that finished written before it is reported.
    """
    from bigviz.commands.report import check_out

    kwargs = options.from_namespace(args)
    if options.nproc_note(kwargs.get("nproc")):  # more ranks than cores: say what it costs
        print(options.nproc_note(kwargs.get("nproc")), file=sys.stderr)
    outputs = [check_out(args.out)]
    json_stdout = args.json == "-"
    if args.json and not json_stdout:
        outputs.append(check_out(args.json, flag="--json"))
    if args.md:
        outputs.append(check_out(args.md, flag="--md"))
    # with JSON on stdout, everything for people goes to stderr
    human = sys.stderr if json_stdout else sys.stdout

    from bigviz.progress import SweepProgress
    from bigviz.runner import sweep_interruptibly
    from bigviz.runner.plan import partial_sweep

    progress = SweepProgress(listener=_Terminal())
    argv = getattr(args, "argv", None)
    # the sweep runs on a helper thread so that Ctrl-C cancels it cleanly: the running
    # worker is killed, finished runs are kept and reported
    try:
        sweep, interrupted = sweep_interruptibly(
            kwargs.pop("model"), thread_name="bigviz-cli-sweep", **kwargs,
            **progress.callbacks()
        )
    except Exception as exc:
        partial = partial_sweep(exc)
        if partial is not None and partial.results:  # what finished is reported first
            _write_out(partial, argv, outputs, json_stdout, human)
            print(f"the sweep stopped after {len(partial.results)} run(s): "
                  f"{partial.meta.get('stopped', '')}", file=human)
        raise
    _write_out(sweep, argv, outputs, json_stdout, human)
    from bigviz.commands.cache import summary as cache_summary  # the work folder's size

    print(cache_summary(kwargs.get("work_dir")) or "", file=human)
    if interrupted:
        return 130
    failed = [r for r in sweep.results if r.outcome in ("error", "crashed")]
    return 1 if failed else 0


def _write_out(sweep: Sweep, argv: list[str] | None, outputs: list[Path], json_stdout: bool,
               human: TextIO) -> None:
    """Print the table and the finding, write every report (and JSON on stdout)."""
    from bigviz import report

    if argv:
        sweep.command = "bigviz " + shlex.join(argv)
    print("\n" + summary_table(sweep.results), file=human)
    for skipped in sweep.meta.get("skipped", []):
        print(f"skipped: {skipped}", file=human)
    finding = report.key_finding(sweep.results)
    if finding:
        print(f"\n{finding}", file=human)
    for path in outputs:
        written = report.write(sweep, path)
        print(f"report written to {written}", file=human)
    if json_stdout:
        sys.stdout.write(report.dumps(sweep) + "\n")
        sys.stdout.flush()
