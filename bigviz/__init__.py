"""bigviz: see how much RAM and VRAM loading and saving a big PyTorch model takes.

``import bigviz`` is cheap: torch, the runner and the report writers load on first use,
and IPython, ipywidgets and matplotlib are never imported by the core.

Example:
    >>> import bigviz
    >>> bigviz.parse_size("200MB")
    200000000
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it (loaded on first attribute access)
_LAZY: dict[str, str] = {
    # errors and units (cheap, but kept lazy for one mechanism)
    "BigvizError": "bigviz._errors",
    "CheckpointError": "bigviz._errors",
    "ConfigError": "bigviz._errors",
    "RecorderError": "bigviz._errors",
    "ReportError": "bigviz._errors",
    "RunError": "bigviz._errors",
    "SizeError": "bigviz._errors",
    "StrategyError": "bigviz._errors",
    "parse_size": "bigviz.units",
    "format_size": "bigviz.units",
    # recording
    "record": "bigviz.recorder",
    "Recorder": "bigviz.recorder",
    "Recording": "bigviz.data.recording",
    "Phase": "bigviz.data.recording",
    "Mark": "bigviz.data.recording",
    "Series": "bigviz.data.recording",
    "SourceInfo": "bigviz.data.recording",
    # checkpoints
    "save_sharded": "bigviz.checkpoint",
    "load_sharded": "bigviz.checkpoint",
    "inspect_checkpoint": "bigviz.checkpoint",
    "validate_checkpoint": "bigviz.checkpoint",
    "plan_shards": "bigviz.checkpoint",
    "reshard": "bigviz.checkpoint",
    "CheckpointInfo": "bigviz.checkpoint",
    "ShardInfo": "bigviz.checkpoint",
    "TensorInfo": "bigviz.checkpoint",
    "ShardPlan": "bigviz.checkpoint",
    "PlannedShard": "bigviz.checkpoint",
    "LoadReport": "bigviz.checkpoint",
    # models, strategies, runs
    "build_model": "bigviz.models",
    "strategies": "bigviz.strategies",
    "run": "bigviz.runner",
    "advise": "bigviz.advisor",
    "sweep": "bigviz.runner",
    "close": "bigviz.runner",
    "RunResult": "bigviz.data.result",
    "Sweep": "bigviz.data.result",
    "Prediction": "bigviz.data.result",
}

_SUBMODULES = {
    "report", "testing", "units", "checkpoint", "models", "strategies", "plots", "widgets",
    "data", "recorder", "runner", "options", "progress", "tables", "advisor",
}

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        # the package `strategies` is returned whole, so bigviz.strategies.get() works
        value = module if name == "strategies" else getattr(module, name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"bigviz.{name}")
    raise AttributeError(f"module 'bigviz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext bigviz``: register the ``%bigviz`` / ``%%bigviz`` magics."""
    from bigviz.magics import load_ipython_extension as _load

    _load(ipython)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    # ruff: noqa: F401
    from bigviz._errors import (
        BigvizError,
        CheckpointError,
        ConfigError,
        RecorderError,
        ReportError,
        RunError,
        SizeError,
        StrategyError,
    )
    from bigviz.advisor import advise as advise
    from bigviz.data.recording import Mark, Phase, Recording, Series, SourceInfo
    from bigviz.data.result import Prediction, RunResult, Sweep
    from bigviz.units import format_size, parse_size
