"""The argument parsers of ``%%bigviz`` and ``%bigviz COMMAND`` (argparse over ``shlex``).

Apart from :mod:`bigviz.magics` so that the magics read as parse, call the core, display
(the memray layout). A parser's errors are IPython ``UsageError``\\ s, never ``sys.exit``,
so this module belongs to the magics' layer: the core never imports it.

Example:
    >>> line, commands = line_parser()  # doctest: +SKIP
    >>> commands["sweep"].prog  # doctest: +SKIP
    '%bigviz sweep'
"""

from __future__ import annotations

import argparse
import functools
import re
import shlex
from typing import Any, NoReturn

__all__ = ["HelpShown", "MagicParser", "cell_parser", "line_parser", "parse_line"]


class HelpShown(Exception):
    """``-h`` was given: argparse printed the help; nothing else to do."""


_NEGATIVE_VALUE = re.compile(r"^-\.?[0-9]")


def _usage_error(message: str) -> Exception:
    """IPython's ``UsageError`` for ``message``; imported here, when a magic's arguments
    are refused, so that importing this module loads no IPython (DESIGN.md's layering)."""
    from IPython.core.error import UsageError

    return UsageError(message)


class MagicParser(argparse.ArgumentParser):
    """argparse whose errors are IPython ``UsageError``\\ s instead of ``sys.exit``."""

    def __init__(self, *args: Any, family: set[str] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --shard-size must not mean --shard-sizes
        #: every option string of this parser and its sub-commands (shared with them)
        self.family: set[str] = set() if family is None else family
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        self.family.update(a for a in args if isinstance(a, str) and a.startswith("-"))
        return super().add_argument(*args, **kwargs)

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        group = super().add_argument_group(*args, **kwargs)
        add = group.add_argument

        def add_and_note(*names: Any, **kw: Any) -> argparse.Action:
            self.family.update(a for a in names if isinstance(a, str) and a.startswith("-"))
            return add(*names, **kw)

        setattr(group, "add_argument", add_and_note)  # noqa: B010 (an instance's method)
        return group

    def add_subparsers(self, **kwargs: Any) -> Any:
        if kwargs.get("parser_class", MagicParser) is MagicParser:  # sub-commands share the family
            kwargs["parser_class"] = functools.partial(MagicParser, family=self.family)
        return super().add_subparsers(**kwargs)

    def error(self, message: str) -> NoReturn:
        raise _usage_error(f"{self.prog}: {message}{self._did_you_mean(message)}\n"
                         f"{self.format_usage()}Run `%bigviz?` (or add -h) for all options.")

    def _did_you_mean(self, message: str) -> str:
        """"; did you mean --shard-sizes?" for a mistyped option (abbreviations are off:
        ``--shard-size`` must not silently mean ``--shard-sizes``)."""
        import difflib

        if "unrecognized arguments" not in message:
            return ""
        hints = []
        for word in re.findall(r"(?<!\S)(--?[\w-]+)", message.split(":", 1)[-1]):
            close = difflib.get_close_matches(word.split("=")[0], sorted(self.family), n=1,
                                              cutoff=0.75)
            if close:
                hints.append(f"{word} → did you mean {close[0]}?")
        return "; " + "; ".join(hints) if hints else ""

    def _parse_optional(self, arg_string: str) -> Any:
        # "-5MB", "-1GB", "-5%" are values (refused as "must be positive" by the option's
        # own check), not options: argparse alone would answer "expected one argument"
        if _NEGATIVE_VALUE.match(arg_string):
            return None
        return super()._parse_optional(arg_string)  # type: ignore[misc]

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise _usage_error(message)
        raise HelpShown


def cell_parser() -> MagicParser:
    """The parser of the ``%%bigviz`` cell magic."""
    p = MagicParser(prog="%%bigviz", description=(
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
    _theme_option(p)
    return p


def _theme_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--theme", default="auto", choices=["auto", "light", "dark"],
                   help="the figures' colours (default auto: JupyterLab's active theme, "
                        "read from its settings)")


#: each ``%bigviz`` command's one-line help and its ``-h`` description (``None``: the help)
_COMMANDS: dict[str, tuple[str, str | None]] = {
    "dashboard": ("the interactive dashboard (model, shard size, run)", None),
    "sweep": (
        "run loading strategies, each in a fresh process, and compare their peaks",
        "Save the model once per (shard size, format), then load it with every\n"
        "strategy, each in its own fresh process under the recorder; show the peaks,\n"
        "peak vs shard size, and measured vs predicted. The same options as\n"
        "`bigviz sweep`; no report file unless --out/--json/--md is given."),
    "compare": ("the last profiled cells on one time axis", None),
    "export": (
        "a report of this kernel's profiled cells",
        "Write a report of this kernel's profiled cells (or of the last sweep).\n"
        "PATH without a suffix writes one set under that base name: PATH.html,\n"
        "PATH.json and PATH.md, the Markdown's PNGs in PATH_files/."),
    "list": ("this kernel's profiled cells and sweep runs, one a line", None),
    "clear": (
        "forget profiled cells and sweep runs (all, failed ones, or by #)",
        "Forget profiled cells and sweep runs: compare and export leave them out.\n"
        "Without arguments all of them; the numbers are those of %bigviz list."),
}


def _command(sub: Any, name: str, **kwargs: Any) -> MagicParser:
    """Add the ``%bigviz NAME`` sub-command, its help and description from the table."""
    help_, description = _COMMANDS[name]
    if description is not None:
        kwargs["description"] = description
    parser: MagicParser = sub.add_parser(name, help=help_, **kwargs)
    return parser


def line_parser() -> tuple[MagicParser, dict[str, MagicParser]]:
    """``%bigviz`` and its commands' parsers, by command name."""
    from bigviz import options

    p = MagicParser(prog="%bigviz",
                    description="bigviz line magics (the cell magic is %%bigviz).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=MagicParser,
                           required=True)
    d = _command(sub, "dashboard")
    d.add_argument("--model", default=options.NOTEBOOK_DEFAULTS["model"], metavar="SPEC",
                   help="gpt:SIZE, mlp:SIZE, bert-base or package.module:function")
    _theme_option(d)
    s = _command(
        sub, "sweep",
        epilog=("examples:\n  %bigviz sweep --model gpt:100MB --strategies naive,meta "
                "--shard-sizes 20MB,50MB\n  %bigviz sweep --model gpt:1GB --ram-budget 8GB "
                "--out sweep.html"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    # the same options as `bigviz sweep`, from the one spec; in a notebook the figures are
    # the output, so a report file only on request
    options.add_arguments(s, report=None)
    c = _command(sub, "compare")
    c.add_argument("--last", type=int, default=5, metavar="N", help="how many cells (default 5)")
    c.add_argument("--series", default="ram.rss", choices=["ram.rss", "ram.anon", "ram.file"],
                   help="which RAM series to draw (default: ram.rss)")
    _theme_option(c)
    e = _command(sub, "export")
    e.add_argument("path", metavar="PATH",
                   help="output file (.html, .json, .md or .csv), or a base name for all three")
    e.add_argument("--sweep", action="store_true", help="export the last %%bigviz sweep instead")
    ls = _command(sub, "list")
    ls.set_defaults(ids=[], failed=False)
    cl = _command(sub, "clear")
    cl.add_argument("ids", nargs="*", type=int, metavar="N",
                    help="the numbers %%bigviz list shows")
    cl.add_argument("--failed", action="store_true",
                    help="the cells that raised and the runs that did not finish ok")
    return p, {"dashboard": d, "sweep": s, "compare": c, "export": e, "list": ls, "clear": cl}


def parse_line(parser: argparse.ArgumentParser, line: str) -> argparse.Namespace | None:
    """``line`` split as a shell would and parsed; ``None`` when ``-h`` showed the help.

    Raises:
        UsageError: an unclosed quote, or arguments the parser refuses (one message
            with the usage and, for a mistyped option, the one meant).
    """
    try:
        argv = shlex.split(line)
    except ValueError as exc:  # an unclosed quote
        raise _usage_error(f"{parser.prog}: cannot split {line!r}: {exc}") from exc
    try:
        return parser.parse_args(argv)
    except HelpShown:
        return None
