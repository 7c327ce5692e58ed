"""RunResult and Sweep: the plain-data outcome of running strategies.

Peaks in a RunResult are bytes **above the run's baseline** (the worker's RSS after its
imports, before the first phase), so they measure what the strategy needed, not what
Python and torch cost to import. The baseline is kept beside them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from bigviz.data.recording import Recording
from bigviz.data.serde import SCHEMA_VERSION, Document, to_plain

__all__ = [
    "OUTCOMES",
    "TOLERANCE",
    "Checks",
    "NodeFigures",
    "Outcome",
    "Prediction",
    "PredictionCheck",
    "RankFigures",
    "RunResult",
    "Sweep",
]

Outcome = Literal["ok", "oom", "budget_exceeded", "error", "crashed", "cancelled"]
#: Every outcome a run can have.
OUTCOMES: tuple[str, ...] = ("ok", "oom", "budget_exceeded", "error", "crashed", "cancelled")


#: How far a measured peak may sit from its prediction and still "agree": ``frac × M +
#: abs`` bytes, once per rank. The one rule: every table, report and finding reads the
#: verdict :meth:`PredictionCheck.judge` wrote, never a rule of its own.
TOLERANCE: dict[str, float] = {"frac": 0.25, "abs": 48_000_000}


@dataclass
class PredictionCheck:
    """Whether a measured peak agrees with its prediction (:data:`TOLERANCE`).

    Example:
        >>> c = PredictionCheck.judge(110, 100, m_bytes=100)
        >>> c.agrees, c.ratio
        (True, 1.1)
    """

    agrees: bool
    measured: int
    predicted: int
    ratio: float | None = None
    tolerance: int = 0

    @classmethod
    def judge(cls, measured: int, predicted: int, m_bytes: int, *, nproc: int = 1
              ) -> PredictionCheck:
        """The verdict for ``measured`` against ``predicted`` for a model of ``m_bytes``
        (the slack grows once per rank for ``nproc`` ranks)."""
        slack = (TOLERANCE["frac"] * m_bytes + TOLERANCE["abs"]) * nproc
        return cls(
            agrees=abs(measured - predicted) <= slack,
            measured=measured,
            predicted=predicted,
            ratio=round(measured / predicted, 3) if predicted else None,
            tolerance=int(slack),
        )


@dataclass
class RankFigures:
    """One rank of a distributed run, in bytes above that rank's own baseline.

    ``ram_peak`` is exact (``VmHWM``) when ``ram_peak_exact``; ``loaded`` is the rank's
    memory while every rank holds its weights (a barrier snapshot: rss, pss, uss, anon).

    Example:
        >>> RankFigures(rank=1, ram_peak=10).verify
        'ok'
    """

    rank: int | None = None
    host: str | None = None
    pid: int | None = None
    device: str | None = None
    baseline: dict[str, int] = field(default_factory=dict)
    ram_peak: int | None = None
    ram_peak_exact: bool = False
    ram_anon_peak: int | None = None
    ram_file_peak: int | None = None
    pss_peak: int | None = None
    loaded: dict[str, int] = field(default_factory=dict)
    vram_peak: dict[str, int] = field(default_factory=dict)
    verify: str = "ok"
    phase_reached: str | None = None
    predicted: int | None = None
    formula: str = ""


@dataclass
class NodeFigures:
    """The node's figures of a distributed run: sums over its ranks, above their baselines.

    ``ram_peak`` is the larger of ``pss_peak`` and ``anon_peak``; ``rss_loaded_sum`` is
    what adding the ranks' RSS would claim (shared pages counted once per rank).

    Example:
        >>> NodeFigures(ram_peak=5).pss_peak is None
        True
    """

    baseline: dict[str, int] = field(default_factory=dict)
    ram_peak: int | None = None
    pss_peak: int | None = None
    pss_loaded: int | None = None
    uss_loaded: int | None = None
    rss_loaded_sum: int | None = None
    anon_peak: int | None = None
    rss_peak_sum: int | None = None


@dataclass
class Checks:
    """What the runner checked and measured beside the peaks of a :class:`RunResult`.

    Single-process runs fill the first block; distributed runs add ``ranks``, ``node``
    and, when they failed, ``failed_rank``, ``rank_phases``, ``exit_codes``, ``log_tail``.

    Example:
        >>> Checks(weights="ok").prediction is None
        True
    """

    weights: str = "unchecked"
    prediction: PredictionCheck | None = None
    exit_code: int | None = None
    spawn_to_first_phase_s: float | None = None
    after_first_use: dict[str, int] = field(default_factory=dict)
    baseline_anon: int | None = None
    baseline_file: int | None = None
    device_map: dict[str, str] | None = None
    placement: dict[str, int] | None = None
    traceback: str | None = None
    ranks: list[RankFigures] = field(default_factory=list)
    node: NodeFigures | None = None
    clock_alignment: str | None = None
    backend: str | None = None
    failed_rank: int | None = None
    rank_phases: dict[str, str | None] = field(default_factory=dict)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    log_tail: str | None = None

    def present(self) -> dict[str, Any]:
        """The checks that hold a value, as plain data (for a report's details)."""
        data: dict[str, Any] = to_plain(self)
        return {k: v for k, v in data.items() if v not in (None, {}, [])}


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
class RunResult(Document):
    """One strategy run in its own process: outcome, peaks, prediction and timeline.

    Example:
        >>> r = RunResult(strategy="meta", outcome="ok", model="gpt:10MB", model_bytes=10)
        >>> RunResult.from_json(r.to_json()) == r
        True
    """

    KIND: ClassVar[str] = "run"

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
    checks: Checks = field(default_factory=Checks)
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

@dataclass
class Sweep(Document):
    """Several RunResults from one comparison, with the settings that produced them.

    ``config`` records the call (model, strategies, shard sizes, ...) and ``command`` the
    exact command line or Python call, so a report says how to reproduce it.

    Example:
        >>> s = Sweep(config={"model": "gpt:10MB"})
        >>> Sweep.from_json(s.to_json()) == s
        True
    """

    KIND: ClassVar[str] = "sweep"

    results: list[RunResult] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    started_at: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION
