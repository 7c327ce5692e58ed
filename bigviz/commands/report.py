"""``bigviz report IN.json --out OUT.{html,md,csv,json}``: re-render a saved report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bigviz._errors import ConfigError
from bigviz.commands._output import add_verb

__all__ = ["add_parser", "run"]

SUFFIXES = (".html", ".md", ".csv", ".json")

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
    """Validate an output path before any work: a known suffix and an existing folder.

    Raises:
        ConfigError: naming the path and the fix.
    """
    path = Path(out)
    if path.suffix.lower() not in SUFFIXES:
        raise ConfigError(
            f"{flag} {out!r} has an unknown suffix {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(SUFFIXES)}"
        )
    if not path.parent.exists():
        raise ConfigError(
            f"{flag} {out!r}: folder {str(path.parent)!r} does not exist; create it first"
        )
    return path


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
