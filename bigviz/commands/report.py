"""``bigviz report IN.json --out OUT.{html,md,csv,json}``: re-render a saved report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bigviz._errors import BigvizError, ConfigError
from bigviz.commands._output import add_verb

__all__ = ["add_parser", "run"]

EXAMPLES = """\
  bigviz report sweep.json --out sweep.html      # one self-contained page, opens offline
  bigviz report sweep.json --out sweep.md        # for a pull request (PNG plots beside it)
  bigviz report sweep.json --out sweep.csv       # the summary table, for spreadsheets
  bigviz report load.json --out load.html        # a `bigviz profile` recording works too
"""


def add_parser(subparsers: Any) -> None:
    """Register ``bigviz report``."""
    p = add_verb(
        subparsers,
        "report",
        help="turn a JSON report (sweep, run or recording) into HTML, Markdown or CSV",
        description=(
            "Read a JSON file written by bigviz (a sweep, a run or a recording) and write it\n"
            "again in the format named by the --out suffix: .html, .md, .csv or .json."
        ),
        examples=EXAMPLES,
    )
    p.add_argument("input", metavar="IN.json", help="a JSON report written by bigviz")
    p.add_argument(
        "--out", required=True, metavar="OUT", help="output file: .html, .md, .csv or .json"
    )
    p.set_defaults(func=run)


def check_out(out: str, *, flag: str = "--out") -> Path:
    """Validate an output path before any work, with the one check of
    :func:`bigviz.report.check_output_path` (a known suffix; an existing, writable
    folder; not a folder itself), as a usage error that names the option.

    Raises:
        ConfigError: naming the option, the path and the fix.

    Example:
        >>> check_out("sweep.txt")
        Traceback (most recent call last):
        ...
        bigviz._errors.ConfigError: --out: unknown report format '.txt' for 'sweep.txt'; ...
    """
    from bigviz.report import check_output_path

    try:
        return check_output_path(out)
    except BigvizError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def check_in(path_text: str) -> Path:
    """An input JSON file that must exist.

    Raises:
        ConfigError: naming the path.
    """
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(
            f"input {path_text!r} is not a file; give a JSON report written by bigviz"
        )
    return path


def run(args: argparse.Namespace) -> int:
    """``bigviz report``: load IN.json, write OUT."""
    src = check_in(args.input)
    out = check_out(args.out)
    from bigviz import report

    obj = report.load(src)
    print(f"report written to {report.write(obj, out)}")
    return 0
