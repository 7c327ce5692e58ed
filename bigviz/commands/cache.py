"""``bigviz cache list|clear``: what the per-user work folder holds, and freeing it."""

from __future__ import annotations

import argparse
import time
from typing import Any

from bigviz.commands._output import add_verb, format_table, print_json
from bigviz.units import format_size

__all__ = ["add_parser", "run", "summary"]

EXAMPLES = """\
  bigviz cache list                     # prepared checkpoints, their sizes, last use
  bigviz cache list --json
  bigviz cache clear                    # remove them all (a sweep saves them again)
  bigviz cache list --work-dir ./work   # a work folder given to `bigviz sweep --work-dir`

Every sweep saves its checkpoints (one per model, dtype, shard size and format) in the
work folder and reuses them; a folder model keeps its checksums and reshards there.
Nothing else in the folder is listed or removed.
"""


def add_parser(subparsers: Any) -> None:
    """Register ``bigviz cache``."""
    p = add_verb(
        subparsers,
        "cache",
        help="list or clear the checkpoints bigviz keeps in its work folder",
        description=(
            "The work folder (default ~/.cache/bigviz, or $XDG_CACHE_HOME/bigviz; private\n"
            "to you: a folder another user could write into is refused) keeps every\n"
            "checkpoint a sweep saved, to reuse it. `list` shows them with their sizes,\n"
            "`clear` removes them."
        ),
        examples=EXAMPLES,
    )
    p.add_argument("action", choices=("list", "clear"), metavar="{list,clear}",
                   help="list: show what is kept; clear: remove it")
    p.add_argument("--work-dir", metavar="DIR", default=None,
                   help="the work folder (default: ~/.cache/bigviz)")
    p.add_argument("--json", action="store_true", help="print the entries as JSON")
    p.set_defaults(func=run)


def _age(seconds: float) -> str:
    s = max(0.0, time.time() - seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.0f} {unit} ago"
    return "just now"


def run(args: argparse.Namespace) -> int:
    """``bigviz cache list|clear``."""
    from bigviz.runner.checkpoints import cache_entries, clear_cache
    from bigviz.runner.validate import work_folder

    folder = work_folder(args.work_dir)
    entries = clear_cache(args.work_dir) if args.action == "clear" else cache_entries(args.work_dir)
    total = sum(e.bytes for e in entries)
    if args.json:
        print_json({"work_dir": str(folder), "action": args.action, "bytes": total,
                    "entries": [{"name": e.name, "kind": e.kind, "bytes": e.bytes,
                                 "path": str(e.path), "last_used": e.last_used}
                                for e in entries]})
        return 0
    if args.action == "clear":
        print(f"removed {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} "
              f"({format_size(total)}) from {folder}")
        return 0
    if not entries:
        print(f"{folder}: empty")
        return 0
    rows = [[e.name, e.kind, format_size(e.bytes), _age(e.last_used)] for e in entries]
    print(format_table(["entry", "kind", "on disk", "last used"], rows, right=[2]))
    print(f"\n{folder}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, "
          f"{format_size(total)}; `bigviz cache clear` removes them")
    return 0


def summary(work_dir: str | None) -> str | None:
    """One line on how much the work folder holds, for the end of a sweep (``None`` when
    it cannot be read).

    Example:
        >>> # summary(None) -> 'cache: /home/me/.cache/bigviz holds 1.6 GB (…)'
    """
    from bigviz._errors import BigvizError
    from bigviz.runner.checkpoints import cache_entries
    from bigviz.runner.validate import work_folder

    try:
        entries = cache_entries(work_dir)
        folder = work_folder(work_dir)
    except (BigvizError, OSError):
        return None
    total = sum(e.bytes for e in entries)
    return (f"cache: {folder} holds {format_size(total)} in {len(entries)} "
            "entr" + ("y" if len(entries) == 1 else "ies")
            + " (`bigviz cache list` shows them, `bigviz cache clear` frees them)")
