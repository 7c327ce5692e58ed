"""The run table: one :class:`RunRow` per run, the cells every front end formats.

The HTML, Markdown and CSV reports, the notebook tables and the terminal's end-of-sweep
table all read these rows and only choose how to write each cell. Sizes are bytes above
the run's baseline; "agrees with the prediction" is the runner's verdict
(``checks.prediction``, :meth:`PredictionCheck.judge`: inside the predicted range, give
or take a fixed allowance), never a rule of a front end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bigviz.data.recording import Recording
from bigviz.data.result import PredictionCheck, RunResult, Sweep
from bigviz.tables.labels import short_labels
from bigviz.tables.ranks import nproc_of
from bigviz.units import format_size

__all__ = ["RunRow", "results_of", "run_rows"]


def results_of(obj: Recording | RunResult | Sweep | Sequence[RunResult]) -> list[RunResult]:
    """The runs in ``obj``, in order (none for a bare Recording).

    Example:
        >>> results_of(Sweep(results=[RunResult("meta", "ok")]))[0].strategy
        'meta'
        >>> results_of(Recording())
        []
    """
    if isinstance(obj, Sweep):
        return list(obj.results)
    if isinstance(obj, RunResult):
        return [obj]
    if isinstance(obj, Recording):
        return []
    return list(obj)


@dataclass(frozen=True)
class RunRow:
    """One line of a run table; sizes in bytes above the run's baseline.

    ``label`` names only what differs between the runs shown together
    (:func:`~bigviz.tables.labels.short_labels`), ``full_label`` is the run's own
    :attr:`RunResult.label`. ``prediction`` is the runner's verdict, ``None`` when it gave
    none (then the row is not flagged).

    Example:
        >>> row = run_rows([RunResult("meta", "ok", ram_peak=90)])[0]
        >>> row.label, row.off_prediction, row.vs_predicted
        ('meta', False, None)
    """

    label: str
    full_label: str
    strategy: str
    model: str
    model_bytes: int | None
    shard_size: int | None
    format: str | None
    device_map: str | None
    nproc: int | None
    outcome: str
    phase_reached: str | None
    error: str | None
    baseline: int | None
    ram_peak: int | None
    ram_anon_peak: int | None
    ram_file_peak: int | None
    vram: dict[str, int] = field(default_factory=dict)
    predicted: int | None = None
    formula: str = ""
    prediction: PredictionCheck | None = None
    seconds: float = 0.0
    #: the predicted range (bytes above baseline) and its formulas, "M + S … M + 2 S"
    predicted_low: int | None = None
    predicted_high: int | None = None
    range_formula: str = ""
    as_saved: str | None = None  # a checkpoint folder's files as saved: how they are cut
    #: the worker's fixed cost to the machine before its first phase (bytes, see
    #: :attr:`RunResult.fixed_cost`): private pages + page tables; ``None``: not measured
    fixed_cost: int | None = None
    #: the RAM budget in bytes (absolute RSS of the worker, baseline included); ``None``
    ram_budget: int | None = None
    #: the page cache of the run's files at its start ("cold (0% cached)"); ``None``: not
    #: measured (a result from before issue 17, a distributed run)
    cache: str | None = None
    #: bytes the run's top-level phases read from storage (``/proc/PID/io`` read_bytes)
    #: and the seconds the phases that read took; ``None``: not measured
    read_bytes: int | None = None
    read_seconds: float | None = None

    @property
    def read_gbps(self) -> float | None:
        """Storage read throughput of the run's phases, GB/s (``None``: not measured).

        Example:
            >>> run_rows([RunResult("meta", "ok")])[0].read_gbps is None  # not measured
            True
        """
        if self.read_bytes is None or not self.read_seconds:
            return None
        return self.read_bytes / self.read_seconds / 1e9

    @property
    def read_text(self) -> str:
        """``"1.02 GB read, 1.10 GB/s"`` (``"0 B read"`` for a warm run); ``"—"`` when not
        measured."""
        if self.read_bytes is None:
            return "—"
        gbps = self.read_gbps
        done = f"{format_size(self.read_bytes, binary=False)} read"
        return done if gbps is None else f"{done}, {gbps:.2f} GB/s"

    @property
    def fixed_cost_text(self) -> str:
        """The fixed cost as a size with its meaning ("+61.2 MiB private + page tables"),
        ``"—"`` when not measured."""
        if self.fixed_cost is None:
            return "—"
        return f"+{format_size(self.fixed_cost)} private + page tables"

    @property
    def budget_text(self) -> str:
        """The budget and what it is compared with ("400.0 MB of RSS, baseline
        included"), ``""`` without one."""
        if self.ram_budget is None:
            return ""
        if self.nproc:
            return (f"{format_size(self.ram_budget, binary=False)} "
                    "(Σ anonymous + shmem of the ranks + largest file-backed share)")
        return f"{format_size(self.ram_budget, binary=False)} of RSS, baseline included"

    @property
    def ok(self) -> bool:
        """The run finished and its weights checked out."""
        return self.outcome == "ok"

    @property
    def vram_peak(self) -> int | None:
        """Peak VRAM summed over the devices (``None`` when no device was used)."""
        return sum(self.vram.values()) if self.vram else None

    @property
    def agrees(self) -> bool | None:
        """The runner's verdict on measured vs predicted (``None``: no verdict)."""
        return None if self.prediction is None else self.prediction.agrees

    @property
    def predicted_range(self) -> str:
        """The predicted range as sizes, ``"236.4 MiB … 282.1 MiB"`` (one size when the
        range is one value; ``"—"`` without a prediction)."""
        low, high = self.predicted_low, self.predicted_high
        if low is None or high is None or low == high:
            return format_size(self.predicted)
        return f"{format_size(low)} … {format_size(high)}"

    @property
    def verdict(self) -> str:
        """The runner's verdict in words (``"above M + 2 S by 120.0 MiB: more than one
        freed shard kept"``); ``""`` without one, or from a result written before ranges."""
        return "" if self.prediction is None else self.prediction.says

    @property
    def off_prediction(self) -> bool:
        """Measured and predicted disagree, by the runner's verdict (which allows for fixed
        overheads); a run without a verdict is not flagged."""
        return self.agrees is False

    @property
    def vs_predicted(self) -> float | None:
        """Measured peak divided by the predicted peak: the one ratio every table shows
        (dashboard, magics, HTML report). ``None`` when either is missing, and for a run
        that did not finish (cancelled, OOM, failed): its peak is of a partial load, and
        a prediction is for the whole one.

        Example:
            >>> run_rows([RunResult("meta", "cancelled", ram_peak=90)])[0].vs_predicted is None
            True
        """
        if self.ram_peak is None or not self.predicted or not self.ok:
            return None
        return self.ram_peak / self.predicted


def run_rows(results: Sequence[RunResult]) -> list[RunRow]:
    """The run table of ``results``, one row per run, in their order.

    Args:
        results: the runs shown together (their short labels depend on each other).

    Returns:
        The rows.

    Example:
        >>> rows = run_rows([RunResult("naive", "ok"), RunResult("meta", "oom")])
        >>> [(r.label, r.ok) for r in rows]
        [('naive', True), ('meta', False)]
    """
    labels = short_labels(results)
    return [
        RunRow(
            label=lab,
            full_label=r.label,
            strategy=r.strategy,
            model=r.model,
            model_bytes=r.model_bytes,
            shard_size=r.shard_size,
            format=r.format,
            device_map=r.device_map,
            nproc=nproc_of(r),
            outcome=r.outcome,
            phase_reached=r.phase_reached,
            error=r.error,
            baseline=r.baseline,
            ram_peak=r.ram_peak,
            ram_anon_peak=r.ram_anon_peak,
            ram_file_peak=r.ram_file_peak,
            vram=dict(r.vram_peak),
            predicted=r.predicted.ram_peak if r.predicted else None,
            formula=r.predicted.formula if r.predicted else "",
            prediction=r.checks.prediction,
            predicted_low=r.predicted.bounds[0] if r.predicted else None,
            predicted_high=r.predicted.bounds[1] if r.predicted else None,
            range_formula=r.predicted.range_formula if r.predicted else "",
            seconds=r.seconds,
            as_saved=r.params.get("as_saved") or None,
            fixed_cost=r.fixed_cost.get("total") if r.fixed_cost else None,
            ram_budget=_budget(r.params.get("ram_budget")),
            cache=_cache_text(r.params.get("cache")),
            read_bytes=_reads(r)[0],
            read_seconds=_reads(r)[1],
        )
        for lab, r in zip(labels, results, strict=True)
    ]


def _cache_text(note: object) -> str | None:
    if isinstance(note, dict) and note.get("text"):
        return str(note["text"])
    return None


def _reads(r: RunResult) -> tuple[int | None, float | None]:
    """Bytes the run's top-level phases read from storage, and the seconds the phases
    that read took (the rate is of the reading, not of building or checking)."""
    done = [p for p in r.recording.phases
            if p.parent is None and isinstance(p.detail.get("read_bytes"), int)
            and p.end is not None]
    if not done:
        return None, None
    return (sum(int(p.detail["read_bytes"]) for p in done),
            sum(float(p.end or 0.0) - p.start for p in done
                if int(p.detail["read_bytes"]) > 0))


def _budget(v: object) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else None
