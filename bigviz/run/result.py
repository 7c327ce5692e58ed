"""RunResult and Sweep: the plain-data outcome of running strategies.

Peaks in a RunResult are bytes **above the run's baseline** (the worker's RSS after its
imports, before the first phase), so they measure what the strategy needed, not what
Python and torch cost to import. The baseline is kept beside them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bigviz._serde import from_plain, to_plain
from bigviz.record.model import SCHEMA_VERSION, Recording, _loads, check_schema

__all__ = ["OUTCOMES", "Outcome", "Prediction", "RunResult", "Sweep"]

Outcome = Literal["ok", "oom", "budget_exceeded", "error", "crashed", "cancelled"]
#: Every outcome a run can have.
OUTCOMES: tuple[str, ...] = ("ok", "oom", "budget_exceeded", "error", "crashed", "cancelled")


@dataclass
class Prediction:
    """What theory expects of a strategy (DESIGN.md table), in bytes above baseline.

    Example:
        >>> Prediction(ram_peak=2 * 100, formula="2 × M").ram_peak
        200
    """

    ram_peak: int
    formula: str
    ram_anon: int | None = None
    ram_file: int | None = None
    vram: dict[str, int] = field(default_factory=dict)
    notes: str = ""


@dataclass
class RunResult:
    """One strategy run in its own process: outcome, peaks, prediction and timeline.

    Example:
        >>> r = RunResult(strategy="meta", outcome="ok", model="gpt:10MB", model_bytes=10)
        >>> RunResult.from_json(r.to_json()) == r
        True
    """

    strategy: str
    outcome: Outcome
    model: str = ""
    model_bytes: int = 0
    error: str | None = None
    phase_reached: str | None = None
    shard_size: int | None = None
    format: str | None = None
    device_map: str | None = None
    baseline: int = 0
    ram_peak: int | None = None
    ram_anon_peak: int | None = None
    ram_file_peak: int | None = None
    vram_peak: dict[str, int] = field(default_factory=dict)
    predicted: Prediction | None = None
    seconds: float = 0.0
    recording: Recording = field(default_factory=Recording)
    params: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    @property
    def ok(self) -> bool:
        """True when the run finished and its weights checked out."""
        return self.outcome == "ok"

    @property
    def label(self) -> str:
        """A short human label: strategy plus the options that vary in a sweep."""
        parts = [self.strategy]
        if self.shard_size is not None:
            from bigviz.units import format_size

            parts.append(format_size(self.shard_size, binary=False, precision=0).replace(" ", ""))
        if self.format:
            parts.append(self.format)
        if self.device_map and self.device_map != "cpu":
            parts.append(self.device_map)
        nproc = self.params.get("nproc")
        if isinstance(nproc, int) and not isinstance(nproc, bool):
            parts.append(f"{nproc} rank{'s' if nproc != 1 else ''}")
        return " · ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        data: dict[str, Any] = to_plain(self)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        """Rebuild from :meth:`to_dict` data; refuses a newer schema version."""
        check_schema(data, "RunResult")
        return from_plain(cls, data)

    def to_json(self, *, indent: int | None = None) -> str:
        """JSON text."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> RunResult:
        """Rebuild from :meth:`to_json` text."""
        return cls.from_dict(_loads(text, "RunResult"))


@dataclass
class Sweep:
    """Several RunResults from one comparison, with the settings that produced them.

    ``config`` records the call (model, strategies, shard sizes, ...) and ``command`` the
    exact command line or Python call, so a report says how to reproduce it.

    Example:
        >>> s = Sweep(config={"model": "gpt:10MB"})
        >>> Sweep.from_json(s.to_json()) == s
        True
    """

    results: list[RunResult] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    started_at: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        data: dict[str, Any] = to_plain(self)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sweep:
        """Rebuild from :meth:`to_dict` data; refuses a newer schema version."""
        check_schema(data, "Sweep")
        return from_plain(cls, data)

    def to_json(self, *, indent: int | None = None) -> str:
        """JSON text."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Sweep:
        """Rebuild from :meth:`to_json` text."""
        return cls.from_dict(_loads(text, "Sweep"))

    def save(self, path: str | Path) -> Path:
        """Write JSON to ``path``."""
        p = Path(path)
        p.write_text(self.to_json(), encoding="utf-8")
        return p
