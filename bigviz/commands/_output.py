"""Plain-text output for the command line: tables and progress bars (no dependencies)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from bigviz.units import printable

__all__ = [
    "Progress",
    "add_verb",
    "format_table",
    "print_json",
]


def add_verb(
    subparsers: Any, name: str, *, help: str, description: str, examples: str
) -> argparse.ArgumentParser:
    """Register a verb with its one-line help, description and an examples epilog."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--verbose", action="store_true",
                        help="on an error, also print the traceback behind it (a worker's "
                        "or a model factory's)")
    return parser


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()
) -> str:
    """A plain-text table; columns in ``right`` are right-aligned (numbers).

    Example:
        >>> print(format_table(["a", "b"], [["x", "1"], ["yy", "22"]], right=[1]))
        a    b
        --  --
        x    1
        yy  22
    """
    # cells may hold names from files (tensor, phase names): escape control characters
    # before measuring, so the columns line up with what the terminal shows
    rows = [[printable(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    parts = [line(headers), "  ".join("-" * w for w in widths)]
    parts.extend(line(r) for r in rows)
    return "\n".join(parts)


def print_json(data: Any, stream: TextIO | None = None) -> None:
    """Print ``data`` as indented strict JSON (for ``--json``)."""
    out = stream or sys.stdout
    out.write(json.dumps(data, indent=2, allow_nan=False) + "\n")
    out.flush()


class Progress:
    """Text progress on stderr: a redrawn ``\\r`` bar on a terminal, one line per step otherwise.

    Example:
        >>> import io
        >>> buf = io.StringIO()
        >>> p = Progress(2, stream=buf)
        >>> p.start(1, "meta")
        >>> p.finish(1, "meta", "ok, 120.0 MiB")
        >>> "[1/2] meta" in buf.getvalue()
        True
    """

    def __init__(self, total: int, *, stream: TextIO | None = None, width: int = 24) -> None:
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._line_len = 0
        self._label = ""
        self._index = 0

    def _bar(self, done: float) -> str:
        frac = min(max(done / self.total, 0.0), 1.0)
        filled = round(frac * self.width)
        return "[" + "#" * filled + "." * (self.width - filled) + f"] {frac * 100:3.0f}%"

    def _draw(self, text: str) -> None:
        # a line longer than the terminal wraps, and `\r` then redraws only its tail
        cols = shutil.get_terminal_size((100, 24)).columns
        text = text[: max(cols - 1, 20)]
        pad = max(self._line_len - len(text), 0)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._line_len = len(text)

    def start(self, index: int, label: str) -> None:
        """Run ``index`` (1-based) called ``label`` has started."""
        self._label, self._index = label, index
        if self.tty:
            self._draw(f"{self._bar(index - 1)} [{index}/{self.total}] {label}")
        else:
            self.stream.write(f"[{index}/{self.total}] {label} ...\n")
            self.stream.flush()

    def update(self, detail: str) -> None:
        """Live detail for the current run (phase, RAM); redrawn at most 10 times a second."""
        if not self.tty:
            return
        now = time.monotonic()
        if now - self._last_draw < 0.1:
            return
        self._last_draw = now
        bar = self._bar(self._index - 1)
        self._draw(f"{bar} [{self._index}/{self.total}] {self._label}: {detail}")

    def finish(self, index: int, label: str, result: str) -> None:
        """Run ``index`` has ended with ``result`` (a short text)."""
        line = f"[{index}/{self.total}] {label}: {result}"
        if self.tty:
            self._draw(f"{self._bar(index)} {line}")
            self.stream.write("\n")
            self._line_len = 0
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
