"""What every report format shares: object kinds, titles and environment facts, HTML
escaping, the one output-path check and atomic file writes.

The tables and findings themselves are :mod:`bigviz.tables`. No matplotlib here
(``import bigviz.report`` stays light)."""

from __future__ import annotations

import contextlib
import html
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from bigviz._errors import ConfigError, ReportError
from bigviz.data.recording import Recording
from bigviz.data.result import RunResult, Sweep
from bigviz.tables.findings import CELL_KEY, is_cell
from bigviz.tables.labels import short_labels
from bigviz.tables.runs import results_of
from bigviz.units import format_size

#: What a profiled cell's figures are above, as every report format says it.
CELL_NOTE = (
    "Each cell is measured from its own start: RSS at start is the kernel's RSS just before "
    "the cell's code ran (its baseline); peak RAM is the highest RSS above it, anonymous and "
    "file-backed are above their own values at that start. Cells run different code and are "
    "not compared with each other."
)

#: What a report can be made of.
Reportable = Recording | RunResult | Sweep | Sequence[RunResult]
Kind = Literal["recording", "run", "sweep", "runs"]


def kind_of(obj: Any) -> Kind:
    """The kind of a reportable object.

    Raises:
        ConfigError: for anything else.
    """
    if isinstance(obj, Recording):
        return "recording"
    if isinstance(obj, RunResult):
        return "run"
    if isinstance(obj, Sweep):
        return "sweep"
    if isinstance(obj, (list, tuple)) and all(isinstance(x, RunResult) for x in obj):
        return "runs"
    raise ConfigError(
        f"cannot report a {type(obj).__name__}; give a Recording, a RunResult, a Sweep "
        "or a list of RunResults"
    )


def recordings_of(obj: Reportable) -> list[tuple[str, Recording, RunResult | None]]:
    """``(label, recording, run or None)`` for every timeline in ``obj``."""
    if isinstance(obj, Recording):
        return [(obj.name or "recording", obj, None)]
    results = results_of(obj)
    labels = short_labels(results) if len(results) > 1 else [r.label for r in results]
    return [(lab, r.recording, r) for lab, r in zip(labels, results, strict=True)]


def environment(obj: Reportable) -> list[tuple[str, str]]:
    """``(key, value)`` pairs describing where the runs ran, from the meta dicts."""
    metas: list[dict[str, Any]] = []
    if isinstance(obj, Sweep):
        metas.append(obj.meta)
    for _l, rec, _r in recordings_of(obj)[:1]:
        metas.append(rec.meta)
    merged: dict[str, Any] = {}
    for m in metas:
        for k, v in m.items():
            # a cell's code and memory, a run's warnings: their own sections, not the machine's
            if k not in (CELL_KEY, "warnings"):
                merged.setdefault(k, v)
    out: list[tuple[str, str]] = []

    def add(key: str, value: Any) -> None:
        if isinstance(value, dict) and value and len(out) < 200:
            for k, v in value.items():
                add(f"{key}.{k}", v)
            return
        if isinstance(value, bool) or value is None:
            text = str(value)
        elif isinstance(value, int) and _is_size_key(key):
            text = f"{format_size(value)} ({value:,} bytes)"
        elif key == "gpus" and isinstance(value, list) and all(isinstance(g, dict) for g in value):
            text = "; ".join(_gpu_text(g) for g in value) or "none"
        elif isinstance(value, (list, dict)):
            text = json.dumps(value, ensure_ascii=False)
        else:
            text = str(value)
        out.append((key, text))

    for k, v in merged.items():
        add(str(k), v)
    return out


def _is_size_key(key: str) -> bool:
    """Does a meta key name a byte count (``ram_total``, ``memory_total``, ``x_bytes``)?"""
    last = key.rsplit(".", 1)[-1].lower()
    return last.endswith(("_bytes", "ram_total", "memory_total", "total_memory", "mem_total")) or (
        last in ("ram", "memory", "bytes", "total")
    )


def _gpu_text(gpu: dict[str, Any]) -> str:
    name = str(gpu.get("name", "GPU"))
    total = next((v for k, v in gpu.items() if "memory" in k or k == "total"), None)
    idx = gpu.get("index")
    head = f"{idx}: {name}" if idx is not None else name
    return f"{head} ({format_size(total)})" if isinstance(total, int) else head


def title_of(obj: Reportable) -> str:
    """A short title: the model and the number of runs, or the recording's name."""
    if isinstance(obj, Recording):
        return f"recording {obj.name}" if obj.name else "recording"
    results = results_of(obj)
    if results and all(map(is_cell, results)):
        n = len(results)
        return f"{n} profiled cell{'s' if n != 1 else ''}"
    models = sorted({r.model for r in results if r.model})
    what = ", ".join(models) if models else "runs"
    n = len(results)
    return f"{what} — {n} run{'s' if n != 1 else ''}"


# -- files -----------------------------------------------------------------------------


#: Report formats by file suffix.
FORMATS: tuple[str, ...] = (".json", ".html", ".md", ".csv")
#: Other suffixes people use for the same formats.
SUFFIX_ALIASES: dict[str, str] = {".htm": ".html", ".markdown": ".md"}


def format_of(path: Path, format: str | None = None, *, hint: str = "") -> str:
    """The report format (a suffix of :data:`FORMATS`) of ``path``, or of ``format``.

    Raises:
        ConfigError: an unknown format, naming the formats there are.

    Example:
        >>> format_of(Path("r.htm")), format_of(Path("r.txt"), "json")
        ('.html', '.json')
    """
    fmt = (format if format is not None else path.suffix).lower()
    if fmt and not fmt.startswith("."):
        fmt = "." + fmt
    fmt = SUFFIX_ALIASES.get(fmt, fmt)
    if fmt not in FORMATS:
        raise ConfigError(
            f"unknown report format {fmt or '(no suffix)'!r} for {str(path)!r}; "
            f"name the file with one of {', '.join(FORMATS)}{hint}"
        )
    return fmt


def check_target(path: Path, *, overwrite: bool) -> None:
    """Refuse, before any work, a path that cannot take a report.

    Raises:
        ReportError: naming the path and the fix.
    """
    parent = path.parent
    if not parent.is_dir():
        raise ReportError(
            f"cannot write report {str(path)!r}: folder {str(parent)!r} does not exist; "
            "create it first"
        )
    if path.is_dir():
        raise ReportError(f"cannot write report {str(path)!r}: it is a folder; give a file name")
    if path.exists() and not overwrite:
        raise ReportError(
            f"report {str(path)!r} already exists; pass overwrite=True or choose another name"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ReportError(
            f"cannot write report {str(path)!r}: folder {str(parent)!r} is not writable; "
            "choose a folder you can write to"
        )


def escape(value: Any) -> str:
    """HTML-escape anything (quotes too, so it is safe in attributes).

    Example:
        >>> escape('<a href="x">')
        '&lt;a href=&quot;x&quot;&gt;'
    """
    return html.escape(str(value), quote=True)


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    A reader never sees half a report, and a failure leaves no partial file.

    Raises:
        ReportError: naming the path and the operating system's reason.
    """
    atomic_write_all([(path, data)])
    return path


def atomic_write_all(files: Sequence[tuple[Path, bytes | str]]) -> None:
    """Write the files of one report (a Markdown file and its PNGs, a CSV and its
    siblings) all or none.

    Every file is first written in full to a temporary file beside its target; only when
    all of them are written are they renamed into place. A failure on the way (a full
    disk, a read-only folder) removes every temporary file and every target this call
    already renamed, so no PNG or CSV of a half-written report is left behind, and files
    of an earlier report that were not yet replaced stay as they were.

    Raises:
        ReportError: naming the file that failed and the operating system's reason.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> atomic_write_all([(d / "r.peaks.png", b"png"), (d / "r.md", "text")])
        >>> sorted(p.name for p in d.iterdir())
        ['r.md', 'r.peaks.png']
    """
    temps: list[tuple[str, Path]] = []
    placed: list[Path] = []
    current: Path | None = None
    try:
        for current, data in files:
            raw = data.encode("utf-8") if isinstance(data, str) else data
            fd, tmp = tempfile.mkstemp(
                dir=current.parent, prefix=f".{current.name}.", suffix=".tmp"
            )
            temps.append((tmp, current))
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
            # mkstemp makes 0600 files; a report is meant to be shared like any other file
            os.chmod(tmp, 0o644)
        for tmp, target in temps:
            current = target
            os.replace(tmp, target)
            placed.append(target)
    except OSError as exc:
        for tmp, _target in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        for target in placed:
            with contextlib.suppress(OSError):
                os.unlink(target)
        what = str(current) if current is not None else "?"
        raise ReportError(
            f"cannot write report {what!r}: {exc.strerror or exc}; "
            "check the folder exists, is writable and has space"
        ) from exc


def sibling(path: Path, suffix: str) -> Path:
    """``out.md`` → ``out<suffix>`` (e.g. ``out.peaks.png``), in the same folder."""
    return path.with_name(path.stem + suffix)
