"""``bigviz profile [--interval MS] [--out FILE] -- CMD ARGS…``: the RAM timeline of any command.

A thin verb: the work is :func:`bigviz.recorder.profiler.profile_command` (the process-tree
sampler, marker phases, auto-instrumentation of Python programs); this module parses the
arguments, prints the summary and writes ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigviz.commands._output import add_verb, format_table
from bigviz.commands.report import check_out
from bigviz.units import format_size

if TYPE_CHECKING:
    from bigviz.recorder.profiler import ProfileResult

__all__ = ["add_parser", "run"]

EXAMPLES = """\
  bigviz profile -- python load.py --model gpt2          # a Python script, auto-instrumented
  bigviz profile --interval 5 --out load.html -- ./load.sh
  bigviz profile --out run.json -- torchrun --nproc-per-node 2 train.py

phases from any language: write lines to the file descriptor $BIGVIZ_PHASE_FD (or open
the FIFO $BIGVIZ_PHASE_FILE for writing):
  BIGVIZ_PHASE start NAME     open a phase (nested in the open one)
  BIGVIZ_PHASE end [NAME]     close the innermost open phase (or the one called NAME)
  BIGVIZ_MARK NAME            an instant event
e.g.
  bigviz profile -- bash -c 'echo "BIGVIZ_PHASE start load" >&$BIGVIZ_PHASE_FD; ./load;
                             echo "BIGVIZ_PHASE end" >&$BIGVIZ_PHASE_FD'

The summary goes to stderr (the command's own stdout is left alone). The exit code is
the command's own (128+N when killed by signal N), or 2 for a usage error.
"""


def add_parser(subparsers: Any) -> None:
    """Register ``bigviz profile``."""
    p = add_verb(
        subparsers,
        "profile",
        help="record the RAM timeline of any command, children included",
        description=(
            "Run CMD and record the RAM of its whole process tree (summed and per process,\n"
            "anonymous and file-backed apart), with phases from BIGVIZ_PHASE markers or,\n"
            "for Python programs, from bigviz's automatic loader instrumentation."
        ),
        examples=EXAMPLES,
    )
    p.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="MS",
        help="sampling interval in milliseconds (default: 2)",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="write the recording: .json, .html, .md or .csv (by suffix)",
    )
    p.add_argument(
        "--no-instrument",
        action="store_true",
        help="run a Python CMD as is, without the auto-instrumenting bootstrap",
    )
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command")
    p.set_defaults(func=run)


def _print_summary(res: ProfileResult, cmd: list[str], out_path: Path | None) -> None:
    from bigviz.tables.phases import phase_rows

    rec = res.recording
    err = sys.stderr
    n = rec.meta.get("samples", 0)
    achieved = rec.meta.get("interval_ms_achieved")
    ach = f"{achieved:.1f} ms" if achieved else "—"
    short = " ".join(cmd)
    short = short if len(short) <= 60 else short[:57] + "..."
    print(
        f"\nbigviz profile: `{short}` exited {res.returncode} after {rec.duration:.2f} s; "
        f"{n} samples (every {ach})",
        file=err,
    )
    rss = rec.series.get("ram.rss")
    if rss and rss.v:
        i = max(range(len(rss.v)), key=rss.v.__getitem__)
        anon = rec.series["ram.anon"].v[i]
        file = rec.series["ram.file"].v[i]
        print(
            f"peak RAM, all processes: {format_size(rss.v[i])} at {rss.t[i]:.2f} s "
            f"(anon {format_size(anon)}, file-backed {format_size(file)})",
            file=err,
        )
    procs = rec.meta.get("processes", {})
    if procs:
        rows = [
            [pid, format_size(p["ram_peak"]), (p["cmdline"] or "?")[:60]]
            for pid, p in sorted(procs.items(), key=lambda kv: -int(kv[1]["ram_peak"]))[:10]
        ]
        print("\n" + format_table(["pid", "peak RSS", "command"], rows, right=[1]), file=err)
        if len(procs) > 10:
            print(f"... and {len(procs) - 10} more processes", file=err)
    if rec.phases:
        rows = [
            [
                "  " * row.depth + row.name[:50],
                f"{row.start:.3f}",
                f"{row.duration:.3f}" if row.duration is not None else "—",
                format_size(row.ram_peak) + ("" if row.ram_peak_exact else " ~"),
                format_size(row.ram_growth),
                row.scope,
            ]
            for row in phase_rows(rec)
        ]
        headers = ["phase", "start s", "secs", "peak RAM", "growth", "scope"]
        print("\n" + format_table(headers, rows, right=[1, 2, 3, 4]), file=err)
        print("(~ = sampled peak; others are exact high-water marks)", file=err)
    for line in _lazy_lines(rec):
        print(line, file=err)
    for e in rec.errors[:5]:
        print(f"note: {e}", file=err)
    if out_path is not None:
        print(f"\nrecording written to {out_path}", file=err)


def _lazy_lines(rec: Any) -> list[str]:
    """Lazy loads and the lazily mapped weights that arrived later, after a blank line."""
    from bigviz.tables.phases import lazy_lines

    lines = lazy_lines(rec, not_in_ram="was not in RAM when it returned; it arrives on "
                                       "first use, as file-backed RAM")
    return (["", *lines]) if lines else []


def run(args: argparse.Namespace) -> int:
    """``bigviz profile``: run the command, print the summary, write ``--out``."""
    from bigviz import report
    from bigviz.recorder.profiler import profile_command

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if args.out:
        check_out(args.out)  # before running a possibly long command
    res = profile_command(cmd, interval_ms=args.interval, instrument=not args.no_instrument)
    out_path = report.write(res.recording, check_out(args.out)) if args.out else None
    _print_summary(res, cmd, out_path)
    return res.returncode
