"""The ``bigviz`` command: ``sweep``, ``profile``, ``inspect``, ``reshard``, ``advise``,
``report``, ``diff``, ``cache``.

A thin front end on the core: each verb lives in its own module under
:mod:`bigviz.commands` (the memray layout) and only parses, calls the library and prints.
Nothing here imports IPython, ipywidgets or matplotlib; report rendering loads its own
plotting code when it needs it.

Exit codes:

* ``0`` — done (for ``diff``: no regression beyond the threshold);
* ``1`` — the work failed: a run errored or crashed, a file is corrupt, ``diff`` found a
  regression;
* ``2`` — a usage error: an unknown option, a bad size, a missing input file.

Errors are printed as one line on stderr, ``bigviz VERB: error: <what> ; <fix>``, never as a
traceback: ``--verbose`` prints the traceback behind it first (a worker's, or a model
factory's), ``BIGVIZ_DEBUG=1`` bigviz's own too.

Example:
    >>> from bigviz.cli import main
    >>> main(["--version"])  # doctest: +SKIP
    bigviz 0.1.0
    0
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn, TextIO

from bigviz._errors import BigvizError, ConfigError, StrategyError
from bigviz.units import printable

__all__ = ["UsageError", "build_parser", "main"]

PROG = "bigviz"

DESCRIPTION = """\
bigviz: how much RAM and VRAM does loading (or saving) a big PyTorch model take,
when, and which way of doing it is cheapest?
"""

EPILOG = """\
examples:
  bigviz sweep --model gpt:400MB --strategies naive,meta --out report.html
  bigviz profile --out load.json -- python load.py
  bigviz inspect ./checkpoint
  bigviz reshard ./checkpoint ./checkpoint-2GB --max-shard-size 2GB
  bigviz advise gpt:400MB --ram 2GB --verify
  bigviz report sweep.json --out sweep.md
  bigviz diff base.json new.json --threshold 5%
  bigviz cache list

Run `bigviz VERB --help` for each verb's options. Exit codes: 0 done, 1 failed, 2 usage error.
"""


class UsageError(ConfigError):
    """A command line bigviz cannot use (unknown option, missing argument, bad value)."""

    def __init__(self, message: str, *, prog: str = PROG) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become one-line :class:`UsageError`\\ s.

    argparse would print the whole usage block and exit; bigviz prints one line that
    names the problem and points at ``--help``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # `--shard-size` silently meaning `--shard-sizes` hides typos: no abbreviations
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see `{self.prog} --help`", prog=self.prog)

    def _parse_optional(self, arg_string: str) -> Any:
        # "-5MB", "-1GB", "-5%" are values (negative ones, refused with a message that
        # says so), not options: no bigviz option starts with a digit, and argparse alone
        # would answer "expected one argument"
        if _NEGATIVE_VALUE.match(arg_string):
            return None
        return super()._parse_optional(arg_string)  # type: ignore[misc]


_NEGATIVE_VALUE = re.compile(r"^-\.?[0-9]")


def build_parser() -> argparse.ArgumentParser:
    """The full ``bigviz`` argument parser, with one sub-parser per verb.

    Returns:
        The parser; ``parse_args`` gives a namespace whose ``func`` runs the verb.

    Example:
        >>> ns = build_parser().parse_args(["inspect", "ckpt/"])
        >>> ns.verb, ns.dir
        ('inspect', 'ckpt/')
    """
    from bigviz import __version__
    from bigviz.commands import advise, cache, diff, inspect, profile, report, reshard, sweep

    parser = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bigviz {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for module in (sweep, profile, inspect, reshard, advise, report, diff, cache):
        module.add_parser(sub)
    return parser


def _exit_code(exc: BigvizError) -> int:
    # A value the user can fix on the command line is a usage error (2); a failure of
    # the work itself (corrupt file, crashed worker, unreadable report) is 1.
    if isinstance(exc, (ConfigError, StrategyError)):
        return 2
    return 1


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _PrintableStream:
    """A text stream that writes :func:`printable` text to the stream it wraps."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(printable(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding, …
        return getattr(self._stream, name)


@contextlib.contextmanager
def _printable_streams() -> Iterator[None]:
    out, err = sys.stdout, sys.stderr
    sys.stdout = _PrintableStream(out)  # type: ignore[assignment]
    sys.stderr = _PrintableStream(err)  # type: ignore[assignment]
    try:
        yield
    finally:
        if isinstance(sys.stdout, _PrintableStream):
            sys.stdout = out
        if isinstance(sys.stderr, _PrintableStream):
            sys.stderr = err


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bigviz`` command line (nothing it prints carries control characters).

    Args:
        argv: the arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The exit code: 0 done, 1 failed, 2 usage error.

    Example:
        >>> main(["inspect", "/no/such/dir"])  # doctest: +SKIP
        bigviz inspect: error: checkpoint folder '/no/such/dir' does not exist; ...
        2
    """
    with _printable_streams():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    prog = PROG
    verbose = False
    try:
        parser = build_parser()
        if not args_list:
            parser.print_help(sys.stderr)
            return 2
        ns, extra = parser.parse_known_args(args_list)
        prog = f"{PROG} {ns.verb}" if ns.verb else PROG
        verbose = bool(getattr(ns, "verbose", False))
        if extra:
            raise UsageError(
                f"unrecognized arguments: {' '.join(extra)}; see `{prog} --help`", prog=prog
            )
        if ns.verb is None:
            parser.print_help(sys.stderr)
            return 2
        ns.argv = args_list  # the exact command line, recorded in reports
        code: int = ns.func(ns)
        return code
    except SystemExit as exc:  # --help and --version exit through argparse
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except UsageError as exc:
        _report_error(exc.prog, exc)
        return 2
    except BigvizError as exc:
        _report_error(prog, exc, verbose=verbose)
        return _exit_code(exc)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `bigviz ... | head`: the reader went away; that is not our failure.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0


def _report_error(prog: str, exc: BaseException, *, verbose: bool = False) -> None:
    details = getattr(exc, "details", None)  # a worker's or a factory's traceback
    if verbose and isinstance(details, str) and details.strip():
        print(details.rstrip(), file=sys.stderr)
    if os.environ.get("BIGVIZ_DEBUG"):
        traceback.print_exception(exc)
    print(f"{prog}: error: {_one_line(str(exc))}", file=sys.stderr)
