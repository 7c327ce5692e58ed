"""``bigviz diff BASE.json NEW.json --threshold 5%``: gate a change on its peak RAM."""

from __future__ import annotations

import argparse
from typing import Any

from bigviz._errors import ConfigError
from bigviz.commands._output import add_verb, print_json
from bigviz.commands.report import check_in

__all__ = ["add_parser", "run"]

EXAMPLES = """\
  bigviz diff base.json new.json                   # fails (exit 1) if a peak grew by > 5%
  bigviz diff base.json new.json --threshold 10%
  bigviz diff base.json new.json --json            # machine-readable changes

In CI: save a sweep on main as base.json, run the same sweep on the branch, and let
`bigviz diff` decide. Exit codes: 0 no regression, 1 regression, 2 usage error.
"""


def add_parser(subparsers: Any) -> None:
    """Register ``bigviz diff``."""
    p = add_verb(
        subparsers,
        "diff",
        help="compare two JSON reports; exit 1 when a peak regresses beyond the threshold",
        description=(
            "Match the runs of two JSON reports (same strategy, shard size, format, device map)\n"
            "and show how each peak changed. A peak that grew by more than the threshold is a\n"
            "regression, and the exit code is then 1."
        ),
        examples=EXAMPLES,
    )
    p.add_argument("base", metavar="BASE.json", help="the reference report")
    p.add_argument("new", metavar="NEW.json", help="the report to check")
    p.add_argument(
        "--threshold",
        default="5%",
        metavar="PCT",
        help="allowed growth of a peak, e.g. 5%% or 0.05 (default: 5%%)",
    )
    p.add_argument("--json", action="store_true", help="print the changes as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``bigviz diff``: print the changes; exit 1 on a regression."""
    from bigviz import report

    if str(args.threshold).strip().startswith("-"):
        raise ConfigError(f"--threshold {args.threshold!r} must be positive (or 0: any growth "
                          "fails), e.g. --threshold 5%")
    threshold = report.parse_threshold(args.threshold)
    base = check_in(args.base)
    new = check_in(args.new)
    d = report.diff_files(base, new, threshold)
    if args.json:
        print_json(d.to_dict())
    else:
        print(d.to_text())
    code: int = d.exit_code
    return code
