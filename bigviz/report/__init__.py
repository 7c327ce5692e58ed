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

from bigviz.tables.findings import key_finding

from ._common import (
    FORMATS,
    SUFFIX_ALIASES,
    Reportable,
    atomic_write,
    check_target,
    escape,
    format_of,
    kind_of,
)
from ._diff import Change, Diff, Regression, RunDiff, diff, diff_files, parse_threshold

__all__ = [
    "FORMATS",
    "SUFFIX_ALIASES",
    "Change",
    "Diff",
    "Regression",
    "RunDiff",
    "check_output_path",
    "diff",
    "diff_files",
    "dumps",
    "escape",
    "key_finding",
    "load",
    "parse_threshold",
    "to_html",
    "write",
]


def write(
    obj: Reportable,
    path: str | Path,
    *,
    format: str | None = None,
    overwrite: bool = True,
    assets: str | Path | None = None,
) -> Path:
    """Write a report of ``obj``, in the format named by the suffix of ``path``.

    Every file is written through a temporary file and a rename, so a failure never leaves
    half a report. Markdown also writes its PNG plots beside ``path`` (``out.peaks.png``,
    ``out.timeline.png``…), CSV its ``out.phases.csv`` and ``out.timeline.csv``: all of a
    report's files or none (a disk that fills up leaves no PNG behind).

    Args:
        obj: a Recording, RunResult, Sweep or list of RunResults.
        path: the output file: ``.json``, ``.html``, ``.md`` or ``.csv``.
        format: overrides the suffix (``"html"``, ``".md"``…).
        overwrite: when false, an existing file is an error.
        assets: Markdown only: the folder for its PNGs (made when missing; links
            relative to it, e.g. ``out_files/peaks.png``) instead of beside ``path``.

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
    fmt = format_of(target, format, hint=" or pass format=")
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

        return _write_md(obj, target, assets=None if assets is None else Path(assets))
    from ._csv import write as _write_csv

    return _write_csv(obj, target)


def check_output_path(
    path: str | Path, *, overwrite: bool = True, format: str | None = None
) -> Path:
    """Check, before any work, that a report can be written at ``path``: the one check
    that :func:`write`, the CLI and the notebook magics make.

    The format comes from the suffix (``.json``, ``.html``/``.htm``, ``.md``/``.markdown``,
    ``.csv``) unless ``format`` names it; the folder must exist and be writable, the path
    must not be a folder, and an existing file is refused when ``overwrite`` is false.

    Args:
        path: the output file.
        overwrite: when false, an existing file is an error.
        format: overrides the suffix, as in :func:`write`.

    Returns:
        ``path`` as a Path.

    Raises:
        ConfigError: an unknown format.
        ReportError: a path that cannot take the report, naming it and the fix.

    Example:
        >>> check_output_path("/no/such/dir/r.html")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        bigviz._errors.ReportError: cannot write report ...: folder ... does not exist; ...
    """
    target = Path(path)
    format_of(target, format)
    check_target(target, overwrite=overwrite)
    return target


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
