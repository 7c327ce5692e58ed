"""bigviz's exceptions. Every message names the bad value and says how to fix it.

The tree::

    BigvizError                      base of everything bigviz raises on purpose
    ├── ConfigError (ValueError)     a bad argument: size string, interval, spec, option
    │   └── SizeError                a size string that does not parse
    ├── RecorderError (RuntimeError) recorder misuse: two recorders at once, phase outside recording
    ├── CheckpointError              a checkpoint that is missing, corrupt, unsafe or mismatched
    ├── StrategyError                unknown strategy, or one that cannot run with these options
    ├── RunError (RuntimeError)      the runner could not start or talk to its worker
    └── ReportError                  a report that cannot be read or written
"""

from __future__ import annotations

__all__ = [
    "BigvizError",
    "CheckpointError",
    "ConfigError",
    "RecorderError",
    "ReportError",
    "RunError",
    "SizeError",
    "StrategyError",
]


class BigvizError(Exception):
    """Base class of every error bigviz raises on purpose."""


class ConfigError(BigvizError, ValueError):
    """An argument or option has a value bigviz cannot use."""


class SizeError(ConfigError):
    """A size string such as ``"200MB"`` could not be parsed."""


class RecorderError(BigvizError, RuntimeError):
    """The recorder was used in a way it does not support."""


class CheckpointError(BigvizError):
    """A checkpoint is missing, corrupt, unsafe, or does not match the model."""


class StrategyError(BigvizError):
    """A strategy is unknown or cannot run with the given options."""


class RunError(BigvizError, RuntimeError):
    """The runner could not start or communicate with its worker process."""


class ReportError(BigvizError):
    """A report could not be read or written."""
