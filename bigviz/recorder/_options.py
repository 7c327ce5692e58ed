"""Checking what ``record()`` is given: the interval, phase and mark names, detail values,
and the sources to build.

Example:
    >>> check_interval(2)
    2.0
    >>> plain_detail({"shard": 1, "ratio": float("inf"), "at": (1, 2)})
    {'shard': 1, 'ratio': 'inf', 'at': [1, 2]}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bigviz._errors import ConfigError
from bigviz.recorder.sources import (
    SOURCE_NAMES,
    CudaSource,
    NvmlSource,
    ProcSource,
    PsutilSource,
    Source,
)
from bigviz.recorder.sources import fallback as _fallback
from bigviz.recorder.sources import proc as _proc

__all__ = ["build_sources", "check_interval", "check_name", "check_options", "plain_detail"]


def check_interval(interval_ms: Any) -> float:
    """``interval_ms`` as a float of milliseconds; ConfigError unless positive and finite."""
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, (int, float)):
        raise ConfigError(
            f"interval_ms must be a number of milliseconds such as 1.0, got {interval_ms!r} "
            f"({type(interval_ms).__name__})"
        )
    value = float(interval_ms)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"interval_ms must be a positive, finite number of milliseconds (e.g. 1.0), "
            f"got {interval_ms!r}"
        )
    return value


def check_name(what: str, name: Any) -> str:
    """``name`` of a ``what`` (phase, mark); ConfigError unless a non-empty string."""
    if not isinstance(name, str):
        raise ConfigError(
            f"{what} name must be a string, got {name!r} ({type(name).__name__}); "
            f"e.g. rec.{what}('load weights')"
        )
    if not name.strip():
        raise ConfigError(f"{what} name must not be empty, got {name!r}")
    return name


def check_options(*, name: Any, on_event: Any, pid: Any) -> None:
    """ConfigError unless ``name`` is a string, ``on_event`` callable (or None) and
    ``pid`` a positive process id (or None)."""
    if not isinstance(name, str):
        raise ConfigError(f"name must be a string, got {name!r}")
    if on_event is not None and not callable(on_event):
        raise ConfigError(f"on_event must be a function taking a dict, got {on_event!r}")
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0):
        raise ConfigError(f"pid must be a positive process id, got {pid!r}")


def plain_detail(value: Any) -> Any:
    """JSON-ready copy of a detail value that round-trips exactly (other objects -> str)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): plain_detail(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_detail(v) for v in value]
    return str(value)


def build_sources(
    sources: Sequence[str | Source] | None, pid: int | None
) -> tuple[list[Source], list[str]]:
    """Source objects for ``record(sources=...)``; returns (sources, names requested)."""
    if sources is None:
        return [_ram_source(pid), CudaSource(), NvmlSource(pid)], list(SOURCE_NAMES)
    if isinstance(sources, str) or not isinstance(sources, Sequence):
        raise ConfigError(
            f"sources must be a list of source names from {list(SOURCE_NAMES)}, got {sources!r}"
        )
    names: list[str] = []
    objects: list[Source] = []
    for s in sources:
        if isinstance(s, Source):
            objects.append(s)
        elif isinstance(s, str) and s in SOURCE_NAMES:
            names.append(s)
        else:
            raise ConfigError(
                f"unknown source {s!r}; known sources are {list(SOURCE_NAMES)} "
                "(or a bigviz.recorder.Source instance)"
            )
    if "ram" in names or "sys" in names:
        objects.append(_ram_source(pid, proc="ram" in names, system="sys" in names))
    if "cuda" in names:
        objects.append(CudaSource())
    if "nvml" in names:
        objects.append(NvmlSource(pid))
    return objects, names


def _ram_source(pid: int | None, *, proc: bool = True, system: bool = True) -> Source:
    # Linux: the sidecar reading /proc (exact peaks); elsewhere psutil, all sampled.
    # Looked up through the modules, so a test can force the Linux source off.
    if _proc.proc_available() or not _fallback.psutil_available():
        return ProcSource(pid, proc=proc, system=system)
    return PsutilSource(pid, proc=proc, system=system)
