"""How runs read in tables, figures and sentences: outcome names, run labels, cell words.

No matplotlib here: reports, widgets and the terminal use it too. A run's full label is
:attr:`RunResult.label` (plain data); :func:`short_labels` names only what differs between
the runs shown together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from bigviz.data.result import RunResult
from bigviz.tables.ranks import nproc_of
from bigviz.units import format_size

__all__ = [
    "OUTCOME_TEXT",
    "outcome_text",
    "percent",
    "shard_text",
    "short_labels",
    "vram_text",
]

#: How a run's outcome reads in figures, tables and sentences.
OUTCOME_TEXT = {
    "ok": "ok",
    "oom": "OOM-killed",
    "budget_exceeded": "RAM budget exceeded",
    "error": "error",
    "crashed": "crashed",
    "cancelled": "cancelled",
}


def outcome_text(outcome: str) -> str:
    """An outcome in words (an unknown one as it is).

    Example:
        >>> outcome_text("oom"), outcome_text("odd")
        ('OOM-killed', 'odd')
    """
    return OUTCOME_TEXT.get(outcome, outcome)


def shard_text(n: int | None, as_saved: str | None = None) -> str:
    """A shard size the way people typed it (decimal units), or ``one file``; a checkpoint
    folder loaded as saved reads ``as saved (3 × ≤ 9.8 MB)``.

    Example:
        >>> shard_text(200_000_000), shard_text(None), shard_text(None, "3 × ≤ 9.8 MB")
        ('200 MB', 'one file', 'as saved (3 × ≤ 9.8 MB)')
    """
    if as_saved:
        return f"as saved ({as_saved})"
    return "one file" if n is None else format_size(n, binary=False, precision=0)


def percent(delta: float) -> str:
    """A relative change with a real minus sign, rounded to a whole percent.

    Example:
        >>> percent(-0.49), percent(0.12), percent(0.001)
        ('−49%', '+12%', '±0%')
    """
    p = round(delta * 100)
    if p == 0:
        return "±0%"
    return f"+{p}%" if p > 0 else f"−{-p}%"


def vram_text(vram: Mapping[str, int], *, sep: str = " ") -> str:
    """Peak VRAM per device for one cell, ``—`` when none was used.

    Example:
        >>> vram_text({"cuda:0": 2**30}), vram_text({})
        ('cuda:0 1.0 GiB', '—')
    """
    return ", ".join(f"{d}{sep}{format_size(v)}" for d, v in vram.items()) or "—"


def _shard(r: RunResult) -> str:
    if r.shard_size is None:
        return "as saved" if r.params.get("as_saved") else "1 file"
    return format_size(r.shard_size, binary=False, precision=0).replace(" ", "")


def _ranks(r: RunResult) -> str:
    n = nproc_of(r)
    return "" if n is None else f"{n} rank{'s' if n != 1 else ''}"


def _cache(r: RunResult) -> str:
    """``cold`` / ``warm`` when the run asked for that page-cache state (issue 17)."""
    note = r.params.get("cache")
    asked = note.get("asked") if isinstance(note, dict) else None
    return str(asked) if asked in ("cold", "warm") else ""


_PARTS: list[Callable[[RunResult], str]] = [
    lambda r: r.model,
    _shard,
    lambda r: r.format or "",
    lambda r: r.device_map or "cpu",
    _ranks,
    _cache,
]


def short_labels(results: Sequence[RunResult]) -> list[str]:
    """Labels naming only what differs between the runs (the strategy always).

    ``naive · 200MB · safetensors`` on every bar says nothing after the first one, so
    model, shard size, format, device map and rank count appear only when they vary.

    Args:
        results: the runs, in display order.

    Returns:
        One label per run, e.g. ``"meta · 50MB"``.

    Example:
        >>> runs = [RunResult("naive", "ok", format="bin"), RunResult("meta", "ok", format="bin")]
        >>> short_labels(runs)
        ['naive', 'meta']
    """
    labels = [[r.strategy] for r in results]
    for part in _PARTS:
        values = [part(r) for r in results]
        if len(set(values)) > 1:
            for label, value in zip(labels, values, strict=True):
                if value:
                    label.append(value)
    return [" · ".join(label) for label in labels]
