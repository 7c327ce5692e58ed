"""Reports for reviews: JSON, self-contained HTML, Markdown, CSV, and diffs.

``write(obj, path)`` picks the format from the suffix, ``load(path)`` reads a JSON report
back, ``diff(base, new)`` compares two sets of runs for CI.

Formats (``obj`` is a Recording, a RunResult, a Sweep or a list of RunResults):

=========  ================================================================================
``.json``  the object's data, versioned schema (docs/schema.md); ``load`` reads it back
``.html``  one file, opens offline: summary, key finding, inline SVG plots, phases,
           environment, the command that produced it; no network requests at all
``.md``    a pull-request comment: key finding, table, PNG plots beside it (``out.peaks.png``…)
``.csv``   ``out.csv`` summary, ``out.phases.csv`` phases, ``out.timeline.csv`` every sample
=========  ================================================================================

Importing this package does not import matplotlib; the first HTML or Markdown render does.

Example:
    >>> import bigviz.report as report  # doctest: +SKIP
    >>> report.write(sweep, "sweep.html")  # doctest: +SKIP
    >>> sweep = report.load("sweep.json")  # doctest: +SKIP
    >>> d = report.diff_files("base.json", "new.json", "5%")  # doctest: +SKIP
    >>> raise SystemExit(d.exit_code)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from bigviz._errors import ConfigError

from ._common import Reportable, atomic_write, check_target, key_finding, kind_of
from ._diff import Change, Diff, Regression, RunDiff, diff, diff_files, parse_threshold

__all__ = [
    "FORMATS",
    "Change",
    "Diff",
    "Regression",
    "RunDiff",
    "diff",
    "diff_files",
    "dumps",
    "key_finding",
    "load",
    "parse_threshold",
    "to_html",
    "write",
]

#: Report formats by file suffix.
FORMATS: tuple[str, ...] = (".json", ".html", ".md", ".csv")
_ALIASES = {".htm": ".html", ".markdown": ".md"}


def write(
    obj: Reportable,
    path: str | Path,
    *,
    format: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a report of ``obj``, in the format named by the suffix of ``path``.

    Every file is written through a temporary file and a rename, so a failure never leaves
    half a report. Markdown also writes its PNG plots beside ``path`` (``out.peaks.png``,
    ``out.timeline.png``…), CSV its ``out.phases.csv`` and ``out.timeline.csv``.

    Args:
        obj: a Recording, RunResult, Sweep or list of RunResults.
        path: the output file: ``.json``, ``.html``, ``.md`` or ``.csv``.
        format: overrides the suffix (``"html"``, ``".md"``…).
        overwrite: when false, an existing file is an error.

    Returns:
        The path written.

    Raises:
        ConfigError: an unknown format, or an object that cannot be reported.
        ReportError: the path cannot be written (missing or read-only folder, a folder
            in the way, an existing file with ``overwrite=False``); nothing is left behind.

    Example:
        >>> write(sweep, "reports/sweep.html")  # doctest: +SKIP
        PosixPath('reports/sweep.html')
    """
    target = Path(path)
    fmt = (format if format is not None else target.suffix).lower()
    if fmt and not fmt.startswith("."):
        fmt = "." + fmt
    fmt = _ALIASES.get(fmt, fmt)
    if fmt not in FORMATS:
        raise ConfigError(
            f"unknown report format {fmt or '(no suffix)'!r} for {str(target)!r}; "
            f"name the file with one of {', '.join(FORMATS)} or pass format="
        )
    kind_of(obj)  # a bad object fails before any file work
    check_target(target, overwrite=overwrite)
    if fmt == ".json":
        from ._json import dumps as _dumps

        return atomic_write(target, _dumps(obj))
    if fmt == ".html":
        from ._html import render

        return atomic_write(target, render(obj))
    if fmt == ".md":
        from ._markdown import write as _write_md

        return _write_md(obj, target)
    from ._csv import write as _write_csv

    return _write_csv(obj, target)


def load(path: str | Path) -> Reportable:
    """Read a JSON report back into its object.

    Args:
        path: a ``.json`` report written by :func:`write` (or ``Recording.save``/``Sweep.save``).

    Returns:
        The Recording, RunResult, Sweep or list of RunResults it holds.

    Raises:
        ReportError: a missing, truncated or foreign file, an unknown kind, or a schema
            newer than this bigviz reads (the message says to upgrade).

    Example:
        >>> sweep = load("sweep.json")  # doctest: +SKIP
    """
    from ._json import load as _load

    return _load(Path(path))


def dumps(obj: Reportable) -> str:
    """The JSON report text of ``obj`` (what ``write(obj, "x.json")`` writes).

    Example:
        >>> from bigviz.data.recording import Recording
        >>> dumps(Recording(name="r"))[:20]
        '{"kind":"recording",'
    """
    from ._json import dumps as _dumps

    return _dumps(obj)


def to_html(obj: Reportable) -> str:
    """The self-contained HTML report of ``obj`` as a string (for a notebook or a server).

    Raises:
        ConfigError: an object that cannot be reported.

    Example:
        >>> page = to_html(sweep)  # doctest: +SKIP
    """
    from ._html import render

    kind_of(obj)
    return render(obj)
