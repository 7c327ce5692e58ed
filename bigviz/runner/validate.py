"""Checks that run before any process starts, shared by :func:`~bigviz.runner.run`,
:func:`~bigviz.runner.sweep` and the distributed launcher: each error names the value
and the fix.

Example:
    >>> check_format("bin")
    'bin'
    >>> parse_budget("8GB")
    8000000000
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from bigviz._errors import ConfigError
from bigviz.models import ModelLike, spec_name
from bigviz.options import DTYPES, FORMATS
from bigviz.units import parse_size

__all__ = [
    "check_dtype",
    "check_format",
    "check_interval",
    "check_ranks",
    "check_ranks_options",
    "model_id",
    "parse_budget",
    "work_folder",
]


def work_folder(work_dir: str | os.PathLike[str] | None) -> Path:
    """The work folder (default ``$TMPDIR/bigviz-work``), created if missing."""
    p = Path(work_dir) if work_dir is not None else Path(tempfile.gettempdir()) / "bigviz-work"
    p.mkdir(parents=True, exist_ok=True)
    return p


def model_id(model: ModelLike) -> str:
    """The text that names a model in results: a spec, or a factory's import path."""
    if callable(model) and not isinstance(model, str):
        return spec_name(model)
    return str(model)


def check_format(fmt: str) -> str:
    """Raise ConfigError unless ``fmt`` is a checkpoint format bigviz writes."""
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r} is not supported; use 'safetensors' or 'bin'")
    return fmt


def check_dtype(dtype: str) -> str:
    """Raise ConfigError unless ``dtype`` is a dtype the model zoo builds."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not supported; use one of {list(DTYPES)}")
    return dtype


def parse_budget(ram_budget: int | str | None) -> int | None:
    """The RAM budget in bytes (``None``: no budget)."""
    if ram_budget is None:
        return None
    b = parse_size(ram_budget)
    if b <= 0:
        raise ConfigError(f"ram_budget {ram_budget!r} must be a positive size like '8GB'")
    return b


def check_interval(interval_ms: Any) -> float:
    """Raise ConfigError unless ``interval_ms`` is a positive number."""
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, (int, float)) \
            or interval_ms <= 0:
        raise ConfigError(f"interval_ms must be a positive number, got {interval_ms!r}")
    return float(interval_ms)


def check_ranks(nproc: Any, model: Any) -> None:
    """What every distributed launch needs: a rank count, and a model a rank can import."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"nproc {nproc!r} must be a whole number of ranks >= 1, e.g. nproc=2")
    if not isinstance(model, str):
        raise ConfigError(f"model {model!r}: distributed ranks are separate programs, so pass "
                          "a spec string ('gpt:1GB') or 'package.module:function'")


def check_ranks_options(nproc: Any, device_map: Any, max_memory: Any, model: Any) -> None:
    """:func:`check_ranks`, and no single-process options with ``nproc``."""
    check_ranks(nproc, model)
    if device_map not in ("cpu", None) or max_memory:
        raise ConfigError(
            f"device_map={device_map!r} / max_memory={max_memory!r} apply to single-process "
            "runs; distributed ranks load on CPU (gloo) or each on its own GPU (NCCL): "
            "leave them out with nproc"
        )
