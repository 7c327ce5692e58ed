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
    "ALLOWANCE",
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
    "Verdict",
]

Outcome = Literal["ok", "oom", "budget_exceeded", "error", "crashed", "cancelled"]
#: Every outcome a run can have.
OUTCOMES: tuple[str, ...] = ("ok", "oom", "budget_exceeded", "error", "crashed", "cancelled")


#: Bytes per process a measured peak may sit outside its predicted range and still agree:
#: what every run pays beside the formula's terms (allocator arenas and page rounding, the
#: Python objects of state dicts and modules, the recorder's in-process buffers). Measured
#: on the 2-core reference machine: 1.1–4.1 MiB above the formula in 24 runs of 95–381 MiB
#: models (every strategy, both formats, docs/strategies.md), up to 9.7 MiB in the README's
#: 400 MB demo; 16 MiB covers that with room. It does not grow with the model: a shard of
#: 50 MB is never mistaken for noise (shards under 16 MiB are not told apart).
ALLOWANCE: int = 16 * 2**20

#: The one rule's constants, as the sweep records them (``Sweep.meta["tolerance"]``).
TOLERANCE: dict[str, float] = {"allowance": ALLOWANCE}

Verdict = Literal["within", "above", "below"]


@dataclass
class PredictionCheck:
    """Whether a measured peak agrees with its predicted range, and if not which bound it
    crossed, by how much and what that means. Written by :meth:`judge` only: every table,
    report and finding reads this verdict, never a rule of its own.

    Example:
        >>> p = Prediction(ram_peak=100, formula="M + S", low=100, high=150,
        ...                high_formula="M + 2 S", above="more than one freed shard kept")
        >>> PredictionCheck.judge(110, p).agrees
        True
        >>> c = PredictionCheck.judge(150 + ALLOWANCE + 1, p)
        >>> c.verdict, c.bound, c.off_by
        ('above', 'M + 2 S', 16777217)
        >>> c.says
        'above M + 2 S by 16.0 MiB: more than one freed shard kept'
    """

    agrees: bool
    measured: int
    predicted: int
    ratio: float | None = None
    #: the allowance applied on both sides of the range, bytes (:data:`ALLOWANCE` per rank)
    tolerance: int = 0
    low: int | None = None
    high: int | None = None
    #: "within", "above" or "below" the range ("" in results written before ranges)
    verdict: str = ""
    #: bytes beyond the bound crossed (0 within the range)
    off_by: int = 0
    #: the formula of the bound crossed, e.g. "M + 2 S"
    bound: str = ""
    #: the verdict in words, e.g. "above M + 2 S by 120.0 MiB: more than one shard kept"
    says: str = ""

    @classmethod
    def judge(cls, measured: int, prediction: Prediction | int, *, nproc: int = 1
              ) -> PredictionCheck:
        """The verdict for a ``measured`` peak (bytes above baseline) against a
        prediction's range, allowing :data:`ALLOWANCE` once per process (``nproc``
        ranks of a node). A bare number is a range of one value.

        Example:
            >>> PredictionCheck.judge(2**30, 2**29).says
            'above 512.0 MiB by 512.0 MiB: more than the formula accounts for'
        """
        from bigviz.units import format_size

        if not isinstance(prediction, Prediction):
            prediction = Prediction(ram_peak=int(prediction), formula=format_size(prediction))
        low, high = prediction.bounds
        allow = ALLOWANCE * max(1, nproc)
        verdict: Verdict
        if measured > high + allow:
            verdict, off, bound = "above", measured - high, prediction.high_formula
            why = prediction.above or "more than the formula accounts for"
        elif measured < low - allow:
            verdict, off, bound = "below", low - measured, prediction.low_formula
            why = prediction.below or "less than the formula says the strategy must hold"
        else:
            verdict, off, bound, why = "within", 0, "", ""
        span = prediction.range_formula
        says = (f"within {span}" if verdict == "within" else
                f"{verdict} {bound} by {format_size(off)}: {why}")
        return cls(
            agrees=verdict == "within",
            measured=measured,
            predicted=prediction.ram_peak,
            ratio=round(measured / prediction.ram_peak, 3) if prediction.ram_peak else None,
            tolerance=allow,
            low=low,
            high=high,
            verdict=verdict,
            off_by=off,
            bound=bound,
            says=says,
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
    node: int | None = None


@dataclass
class NodeFigures:
    """The node's figures of a distributed run: sums over its ranks, above their baselines.

    ``ram_peak`` is the larger of ``pss_peak`` and ``anon_peak``; ``rss_loaded_sum`` is
    what adding the ranks' RSS would claim (shared pages counted once per rank).

    A multi-node run has one of these per node in ``Checks.nodes`` (``node``, ``host``
    and the global ``ranks`` set; ``sampled`` says where its PSS peak came from) and
    the cluster total in ``Checks.node``.

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
    node: int | None = None
    host: str | None = None
    ranks: list[int] = field(default_factory=list)
    sampled: str | None = None


@dataclass
class Checks:
    """What the runner checked and measured beside the peaks of a :class:`RunResult`.

    Single-process runs fill the first block; distributed runs add ``ranks``, ``node``
    (the cluster total on several nodes, with each node's in ``nodes``) and, when they
    failed, ``failed_rank``, ``rank_phases``, ``exit_codes``, ``log_tail``.

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
    nodes: list[NodeFigures] = field(default_factory=list)
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
    """What a strategy is expected to cost, in bytes above baseline: a range
    ``low … high`` with the reason for its width, and what a peak outside it means.

    ``ram_peak``/``formula`` are the nominal figure (the DESIGN.md formula); ``low`` and
    ``high`` (``None``: the nominal figure) bound what a correct run measures, give or take
    :data:`ALLOWANCE`; ``width`` says why they differ; ``above`` and ``below`` say which
    term is off when a measurement falls outside (read by :meth:`PredictionCheck.judge`).

    Example:
        >>> p = Prediction(ram_peak=300, formula="M + S", low=300, high=350,
        ...                high_formula="M + 2 S")
        >>> p.bounds, p.range_formula
        ((300, 350), 'M + S … M + 2 S')
        >>> Prediction(ram_peak=2 * 100, formula="2 × M").range_formula
        '2 × M'
    """

    ram_peak: int
    formula: str
    ram_anon: int | None = None
    ram_file: int | None = None
    vram: dict[str, int] = field(default_factory=dict)
    notes: str = ""
    low: int | None = None
    high: int | None = None
    #: the formulas of the bounds ("": ``formula``)
    low_formula: str = ""
    high_formula: str = ""
    #: why the range is as wide as it is
    width: str = ""
    #: what a peak above ``high`` / below ``low`` means: the term that is off
    above: str = ""
    below: str = ""

    def __post_init__(self) -> None:
        self.low_formula = self.low_formula or self.formula
        self.high_formula = self.high_formula or self.formula

    @property
    def bounds(self) -> tuple[int, int]:
        """``(low, high)`` in bytes; the nominal figure where a bound is not set."""
        low = self.ram_peak if self.low is None else self.low
        high = self.ram_peak if self.high is None else self.high
        return min(low, high), max(low, high)

    @property
    def range_formula(self) -> str:
        """``"M + S … M + 2 S"``, or the one formula when the range is one value."""
        low, high = self.bounds
        if low == high or self.low_formula == self.high_formula:
            return self.low_formula
        return f"{self.low_formula} … {self.high_formula}"


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
    #: what the worker costs the machine before its first phase, beside the growth above
    #: its baseline (bytes): ``total`` = ``private`` (USS: pages only this worker holds —
    #: the fork server's pages it wrote to, copied on write, and all it imported or
    #: allocated after the fork) + ``page_tables`` (``VmPTE``, kernel memory in no RSS);
    #: ``after_fork``: the private bytes that appeared in the worker before its baseline
    #: (imports and warm-up). The machine held about ``fixed_cost["total"] + ram_peak``
    #: for the run. Empty where not measured (distributed runs, results from before).
    fixed_cost: dict[str, int] = field(default_factory=dict)
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
        elif self.params.get("as_saved"):  # a checkpoint folder's files as they are
            parts.append("as saved")
        if self.format:
            parts.append(self.format)
        if self.device_map and self.device_map != "cpu":
            parts.append(self.device_map)
        cache = self.params.get("cache")  # a page-cache state asked for (issue 17)
        if isinstance(cache, dict) and cache.get("asked") in ("cold", "warm"):
            parts.append(str(cache["asked"]))
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
