"""Run labels and outcome names shared by plots and reports (no matplotlib here: reports
use it too)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bigviz._ranks import nproc_of
from bigviz.data.result import RunResult
from bigviz.units import format_size

__all__ = ["OUTCOME_TEXT", "short_labels"]

#: How a run's outcome reads in figures, tables and sentences.
OUTCOME_TEXT = {
    "ok": "ok",
    "oom": "OOM-killed",
    "budget_exceeded": "RAM budget exceeded",
    "error": "error",
    "crashed": "crashed",
    "cancelled": "cancelled",
}


def _shard(r: RunResult) -> str:
    if r.shard_size is None:
        return "1 file"
    return format_size(r.shard_size, binary=False, precision=0).replace(" ", "")


def _ranks(r: RunResult) -> str:
    n = nproc_of(r)
    return "" if n is None else f"{n} rank{'s' if n != 1 else ''}"


_PARTS: list[Callable[[RunResult], str]] = [
    lambda r: r.model,
    _shard,
    lambda r: r.format or "",
    lambda r: r.device_map or "cpu",
    _ranks,
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
