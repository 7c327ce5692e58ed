"""The one-line findings a report leads with, computed from the runs: the key finding,
what did not finish, and where a bare recording peaked. No matplotlib here.

It also reads a ``%%bigviz`` cell as data (:class:`CellFacts`): what the magic keeps in
``Recording.meta["cell"]``. A cell's growth is measured from **the cell's start**: the magic
reads the kernel's RSS (anonymous, file-backed and shared parts too) just before the cell's
code runs, after the recorder started, and again when it ends. That start is the cell's
baseline, whatever the cell does before its first automatic phase (building a model is no
phase, saving it is). Cells run different code: they are shown side by side, never ranked
as strategies (:func:`cells_finding`).

Example:
    >>> rec = Recording(name="build", meta={"cell": cell_meta(
    ...     code="w = torch.ones(2**26)", execution_count=3,
    ...     start={"rss": 300 * 2**20}, end={"rss": 556 * 2**20})})
    >>> rec.series["ram.rss"] = Series("ram.rss", [0.0, 0.5], [300 * 2**20, 557 * 2**20])
    >>> facts = cell_of(rec)
    >>> facts.baseline == 300 * 2**20, facts.growth == 257 * 2**20
    (True, True)
    >>> print(cell_sentence(rec))  # doctest: +NORMALIZE_WHITESPACE
    RSS 300.0 MiB at the cell's start (its baseline); peak 557.0 MiB, +257.0 MiB
    above it (sampled); 556.0 MiB at the end, +256.0 MiB kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bigviz.data.recording import Phase, Recording, Series
from bigviz.data.result import Checks, RunResult, Sweep
from bigviz.tables.labels import outcome_text, percent, short_labels
from bigviz.tables.ranks import is_distributed, node_rss_sum, nproc_of
from bigviz.tables.runs import results_of
from bigviz.units import format_size as size

__all__ = [
    "CELL_KEY",
    "DIST_REFERENCE",
    "MEMORY_KEYS",
    "NOISE_BYTES",
    "NOISE_FRACTION",
    "CellFacts",
    "beyond_noise",
    "cell_meta",
    "cell_of",
    "cell_run",
    "cell_sentence",
    "cells_finding",
    "failures",
    "headline",
    "is_cell",
    "key_finding",
    "phase_peak_sentence",
]



# -- profiled cells --------------------------------------------------------------------

#: The key of ``Recording.meta`` that holds a profiled cell's facts.
CELL_KEY = "cell"
#: What is read at a cell's start and end: RSS and its anonymous, file-backed and shared
#: (RssShmem) parts, bytes (``rss`` always; the parts where the platform gives them).
MEMORY_KEYS: tuple[str, ...] = ("rss", "anon", "file", "shmem")


def _int(value: Any) -> int | None:
    """An int from a (possibly forged) report field; anything else is unknown."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _memory(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    out = {k: v for k in MEMORY_KEYS if (v := _int(value.get(k))) is not None}
    return out if "rss" in out else {}


def cell_meta(
    *,
    code: str,
    execution_count: int | None,
    start: Mapping[str, int],
    end: Mapping[str, int],
) -> dict[str, Any]:
    """The plain-data facts of a cell, to keep in ``Recording.meta[CELL_KEY]``.

    Args:
        code: the cell's source, as typed (without the ``%%bigviz`` line).
        execution_count: its ``In [N]`` number, if any.
        start: memory at the cell's start (:data:`MEMORY_KEYS`, bytes).
        end: memory when its code finished.

    Example:
        >>> cell_meta(code="x = 1", execution_count=None, start={"rss": 5}, end={"rss": 6})
        {'code': 'x = 1', 'execution_count': None, 'start': {'rss': 5}, 'end': {'rss': 6}}
    """
    return {
        "code": code,
        "execution_count": execution_count,
        "start": _memory(start),
        "end": _memory(end),
    }


@dataclass(frozen=True)
class CellFacts:
    """What a profiled cell did to the kernel's memory, from its recording.

    ``start``/``end`` are absolute bytes (:data:`MEMORY_KEYS`) read at the cell's start and
    end; ``peak`` is the highest RSS of the recording (the kernel's high-water mark when
    ``peak_exact``, else the highest sample or phase peak).
    """

    code: str
    execution_count: int | None
    start: dict[str, int] = field(default_factory=dict)
    end: dict[str, int] = field(default_factory=dict)
    peak: int | None = None
    peak_exact: bool = False
    anon_peak: int | None = None
    file_peak: int | None = None

    @property
    def baseline(self) -> int | None:
        """RSS at the cell's start (what its growth is measured from)."""
        return self.start.get("rss")

    @property
    def growth(self) -> int | None:
        """Peak RSS above the cell's start."""
        if self.peak is None or self.baseline is None:
            return None
        return max(0, self.peak - self.baseline)

    @property
    def kept(self) -> int | None:
        """RSS at the end above the cell's start (negative: the cell freed memory)."""
        if self.end.get("rss") is None or self.baseline is None:
            return None
        return self.end["rss"] - self.baseline

    def above_start(self, key: str, peak: int | None) -> int | None:
        """``peak`` of part ``key`` (``"anon"``, ``"file"``) above its value at the start."""
        base = self.start.get(key)
        return None if peak is None or base is None else max(0, peak - base)


def _series_max(s: Series | None) -> int | None:
    return max(s.v) if s is not None and s.v else None


def cell_of(rec: Recording) -> CellFacts | None:
    """The cell facts of ``rec``, or ``None`` when it is not a profiled cell.

    Example:
        >>> cell_of(Recording()) is None
        True
    """
    raw = rec.meta.get(CELL_KEY)
    if not isinstance(raw, Mapping):
        return None
    code = raw.get("code")
    count = _int(raw.get("execution_count"))
    start = _memory(raw.get("start"))
    if not start:
        # a cell recorded without a start reading (or a forged one): its first sample
        first = rec.series.get("ram.rss")
        if first is not None and first.v:
            start = {"rss": int(first.v[0])}
    # the peak: the highest of the recording's high-water mark, the samples and the
    # phases' peaks (none of them is ever above the truth); exact when a high-water mark
    # (the recording's, or an exact phase's) gives it
    exact = [v for v in [_int(rec.meta.get("ram_peak")) if rec.meta.get("ram_peak_exact") is True
                         else None, *(p.ram_peak for p in rec.phases if p.ram_peak_exact)]
             if v is not None]
    sampled = [v for v in [_series_max(rec.series.get("ram.rss")),
                           *(p.ram_peak for p in rec.phases if not p.ram_peak_exact)]
               if v is not None]
    peak = max(exact + sampled) if exact or sampled else None
    peak_exact = bool(exact) and peak == max(exact)

    def part_peak(key: str) -> int | None:
        vals = [v for v in [_series_max(rec.series.get(f"ram.{key}")),
                            *(getattr(p, f"ram_{key}_peak") for p in rec.phases)]
                if v is not None]
        return max(vals) if vals else None

    return CellFacts(
        code=code if isinstance(code, str) else "",
        execution_count=count,
        start=start,
        end=_memory(raw.get("end")),
        peak=peak,
        peak_exact=peak_exact,
        anon_peak=part_peak("anon"),
        file_peak=part_peak("file"),
    )


def is_cell(run: RunResult) -> bool:
    """Whether ``run`` is a profiled cell (not a strategy run).

    Example:
        >>> is_cell(RunResult("meta", "ok"))
        False
    """
    return isinstance(run.recording.meta.get(CELL_KEY), Mapping)


def cell_run(rec: Recording, error: str | None = None) -> RunResult:
    """A profiled cell as a :class:`RunResult`, so that reports table and plot cells side by
    side: every peak is above **the cell's start** (``baseline``), anonymous and
    file-backed ones above their own values at that start.

    Args:
        rec: the cell's recording (``meta[CELL_KEY]`` from :func:`cell_meta`).
        error: what the cell raised, if it did (its outcome is then ``"error"``).

    Example:
        >>> run = cell_run(Recording(name="c", meta={CELL_KEY: cell_meta(
        ...     code="", execution_count=1, start={"rss": 100, "anon": 60, "file": 40},
        ...     end={"rss": 150})}, series={"ram.rss": Series("ram.rss", [0.0], [180]),
        ...     "ram.anon": Series("ram.anon", [0.0], [130])}))
        >>> run.baseline, run.ram_peak, run.ram_anon_peak, run.ram_file_peak
        (100, 80, 70, None)
    """
    facts = cell_of(rec) or CellFacts(code="", execution_count=None)
    vram: dict[str, int] = {}
    for p in rec.phases:
        for dev, v in p.vram_peak.items():
            vram[dev] = max(vram.get(dev, 0), int(v))
    return RunResult(
        strategy=rec.name or "cell",
        outcome="error" if error else "ok",
        error=error,
        baseline=facts.baseline or 0,
        ram_peak=facts.growth,
        ram_anon_peak=facts.above_start("anon", facts.anon_peak),
        ram_file_peak=facts.above_start("file", facts.file_peak),
        vram_peak=vram,
        seconds=rec.duration,
        recording=rec,
        checks=Checks(baseline_anon=facts.start.get("anon"),
                      baseline_file=facts.start.get("file")),
    )


def cell_sentence(rec: Recording) -> str | None:
    """One line on a cell's memory, from its start: the baseline, the peak above it, and
    what the cell kept; ``None`` when ``rec`` is not a cell or has no RSS figures.

    Example:
        >>> cell_sentence(Recording()) is None
        True
    """
    facts = cell_of(rec)
    if facts is None or facts.baseline is None or facts.peak is None:
        return None
    how = "exact" if facts.peak_exact else "sampled"
    text = (f"RSS {size(facts.baseline)} at the cell's start (its baseline); peak "
            f"{size(facts.peak)}, +{size(facts.growth)} above it ({how})")
    kept = facts.kept
    if kept is not None:
        sign = "+" if kept >= 0 else "−"
        text += (f"; {size(facts.end['rss'])} at the end, {sign}{size(abs(kept))} "
                 f"{'kept' if kept >= 0 else 'freed'}")
    return text + "."


# -- key findings -----------------------------------------------------------------------

#: A difference in peak RAM is stated only when it is at least this fraction of the
#: larger peak **and** at least :data:`NOISE_BYTES`: run-to-run noise of one strategy is
#: a few MiB (docs/strategies.md), and a 1 % "cut" is not a finding.
NOISE_FRACTION = 0.05
NOISE_BYTES = 16 * 2**20

# what must be equal for two runs to be compared, unless it is the axis being compared
_AXES = ("strategy", "shard_size", "format", "device_map")


def beyond_noise(low: int, high: int) -> bool:
    """Whether ``high`` exceeds ``low`` by at least 5 % of ``high`` and 16 MiB.

    Example:
        >>> beyond_noise(194 * 2**20, 196 * 2**20), beyond_noise(2**29, 2**30)
        (False, True)
    """
    diff = high - low
    return diff >= NOISE_BYTES and diff >= NOISE_FRACTION * high


def _axis(done: Sequence[RunResult]) -> str:
    """The option being compared: strategies when several ran, else the one that varies."""
    for axis in _AXES:
        if len({getattr(r, axis) for r in done}) > 1:
            return axis
    return "strategy"


def _cheapest(runs: Sequence[RunResult]) -> RunResult:
    """The lowest peak; runs within noise of it are a tie, broken by lower anonymous memory
    (file-backed pages are reclaimable), then by time."""
    low = min(r.ram_peak or 0 for r in runs)
    tied = [r for r in runs if not beyond_noise(low, r.ram_peak or 0)]
    return min(tied, key=lambda r: (r.ram_anon_peak if r.ram_anon_peak is not None
                                    else r.ram_peak or 0, r.seconds))


def key_finding(results: Sequence[RunResult]) -> str | None:
    """The one sentence a reviewer needs, computed from the runs, true or not said.

    Only comparable runs are compared: the same shard size, format and device map, unless
    that is what varies (a sweep of one strategy over shard sizes compares the sizes). In
    each such group the cheapest run (ties within noise: lower anonymous memory, then less
    time) is compared with ``naive``, or with the most expensive run when ``naive`` is
    absent; a difference is stated only beyond noise (:func:`beyond_noise`), e.g.
    ``"meta cuts peak RAM from 1.6 GiB (naive) to 800.0 MiB (−49%)."``, otherwise
    ``"No strategy differs beyond noise: …"``. Of several groups, the largest cut is told.

    Profiled cells (``%%bigviz``) run different code: they are never compared, see
    :func:`cells_finding`.

    Distributed runs are compared by node RAM (Σ PSS over ranks) with ``every-rank-loads``
    on the same number of ranks (the largest rank count with two finished runs), e.g.
    ``"rank0-broadcast cuts node RAM on 2 ranks from 1.6 GiB (every-rank-loads) to
    800.0 MiB (−50%)."``; when summing RSS would overstate it, the sentence says so.

    Returns:
        The sentence, or ``None`` when fewer than two runs finished with a known peak
        (one run gets a sentence about itself).

    Example:
        >>> runs = [RunResult("naive", "ok", ram_peak=2 * 2**30), RunResult("meta", "ok",
        ...         ram_peak=2**30)]
        >>> key_finding(runs)
        'meta cuts peak RAM from 2.0 GiB (naive) to 1.0 GiB (−50%).'
        >>> key_finding([RunResult("meta", "ok", ram_peak=2**30),
        ...              RunResult("mmap", "ok", ram_peak=2**30 + 2**20)])[:33]
        'No strategy differs beyond noise:'
    """
    cells = [r for r in results if is_cell(r)]
    if cells:
        return cells_finding(cells)
    dist = [r for r in results if is_distributed(r) or nproc_of(r) is not None]
    if dist:
        return _distributed_finding(dist)
    labels = dict(zip(map(id, results), short_labels(results), strict=True))
    done = [r for r in results if r.ok and r.ram_peak is not None]
    if len(done) == 1:
        r = done[0]
        return f"{labels[id(r)]} peaked at {size(r.ram_peak)} of RAM above its baseline."
    if len(done) < 2:
        return None
    axis = _axis(done)
    others = [a for a in _AXES if a != axis]
    groups: dict[tuple[object, ...], list[RunResult]] = {}
    for r in results:
        groups.setdefault(tuple(getattr(r, a) for a in others), []).append(r)
    cuts: list[tuple[int, str]] = []
    failed: list[str] = []
    flat: list[tuple[int, str]] = []
    for group in groups.values():
        ok = [r for r in group if r.ok and r.ram_peak is not None]
        if len(ok) < 2:
            continue
        best = _cheapest(ok)
        naive = [r for r in ok if r.strategy == "naive"] if axis == "strategy" else []
        lost = [r for r in group if r.strategy == "naive" and not r.ok]
        worst = max(naive or ok, key=lambda r: r.ram_peak or 0)
        b, w = best.ram_peak or 0, worst.ram_peak or 0
        if beyond_noise(b, w):
            text = (f"{labels[id(best)]} cuts peak RAM from {size(w)} ({labels[id(worst)]}) "
                    f"to {size(b)} ({percent((b - w) / w)})")
            anon, file = best.ram_anon_peak, best.ram_file_peak
            if anon is not None and file is not None and file > anon:
                # an mmap strategy's peak is mostly page cache the kernel can drop: say so
                text += f", of which {size(file)} is file-backed and reclaimable"
            cuts.append((w - b, text + "."))
        elif axis == "strategy" and lost and not naive:
            # naive could not even finish: that, not a 3% gap to the next-worst, is the news
            failed.append(
                f"naive did not finish ({outcome_text(lost[0].outcome)}); "
                f"{labels[id(best)]} has the lowest peak RAM, {size(b)}."
            )
        else:
            low = min(ok, key=lambda r: r.ram_peak or 0)
            high = max(ok, key=lambda r: r.ram_peak or 0)
            what = "strategy" if axis == "strategy" else axis.replace("_", " ")
            flat.append((len(ok), (
                f"No {what} differs beyond noise: peak RAM {size(low.ram_peak)} "
                f"({labels[id(low)]}) to {size(high.ram_peak)} ({labels[id(high)]}), under "
                f"{percent(NOISE_FRACTION).lstrip('+')} or {size(NOISE_BYTES)} apart.")))
    if cuts:
        return max(cuts, key=lambda c: c[0])[1]
    if failed:
        return failed[0]
    if flat:
        return max(flat, key=lambda f: f[0])[1]
    # no two comparable runs finished: say so rather than compare unlike runs
    return (f"No two comparable runs finished (same shard size, format and device map); "
            f"the lowest peak RAM is {size(min(r.ram_peak or 0 for r in done))}.")


def cells_finding(cells: Sequence[RunResult]) -> str | None:
    """The sentence for profiled cells: each cell's growth is above its own start and cells
    run unrelated code, so no cell "cuts" another's peak; the sentence names the cell that
    grew the most, with its baseline, and says they are not compared.

    Returns:
        The sentence, or ``None`` when no cell has a known growth.

    Example:
        >>> from bigviz.data.recording import Recording
        >>> def cell(name: str, base: int, peak: int) -> RunResult:
        ...     rec = Recording(name=name, meta={"cell": {"start": {"rss": base}}})
        ...     return RunResult(name, "ok", baseline=base, ram_peak=peak, recording=rec)
        >>> print(cells_finding([cell("build", 2**29, 2**28), cell("load", 2**30, 2**20)]))
        ... # doctest: +NORMALIZE_WHITESPACE
        build grew the most: +256.0 MiB above its start (512.0 MiB RSS); cells run
        different code, so they are not compared with each other.
    """
    labels = dict(zip(map(id, cells), short_labels(cells), strict=True))
    known = [r for r in cells if r.ram_peak is not None]
    if not known:
        return None
    top = max(known, key=lambda r: r.ram_peak or 0)
    start = f" ({size(top.baseline)} RSS)" if top.baseline else ""
    if len(cells) == 1:
        return f"{labels[id(top)]} grew by +{size(top.ram_peak)} above its start{start}."
    return (f"{labels[id(top)]} grew the most: +{size(top.ram_peak)} above its start{start}; "
            "cells run different code, so they are not compared with each other.")


#: the distributed strategy every remedy is measured against (DESIGN.md)
DIST_REFERENCE = "every-rank-loads"


def _distributed_finding(results: Sequence[RunResult]) -> str | None:
    """The key finding among distributed runs: node RAM (Σ PSS over ranks), compared
    with ``every-rank-loads`` on the same number of ranks."""
    groups: dict[int | None, list[RunResult]] = {}
    for r in results:
        groups.setdefault(nproc_of(r), []).append(r)

    def done_in(rs: list[RunResult]) -> list[RunResult]:
        return [r for r in rs if r.ok and r.ram_peak is not None]

    # the most ranks that still give a comparison: that is where the choice matters most
    n, group = max(groups.items(), key=lambda kv: (len(done_in(kv[1])) >= 2, kv[0] or 0))
    labels = dict(zip(map(id, group), short_labels(group), strict=True))
    done = done_in(group)
    on = f"{n} ranks" if n is not None else "all ranks"
    if len(done) == 1:
        r = done[0]
        return (
            f"{labels[id(r)]} on {on}: node RAM (Σ PSS over ranks) peaked at "
            f"{size(r.ram_peak)} above baseline{_double_count(r)}."
        )
    if len(done) < 2:
        return None
    best = _cheapest(done)
    refs = [r for r in done if r.strategy == DIST_REFERENCE]
    if refs:
        ref = max(refs, key=lambda r: r.ram_peak or 0)
    else:
        failed = [r for r in group if r.strategy == DIST_REFERENCE and not r.ok]
        if failed:
            why = outcome_text(failed[0].outcome)
            return (
                f"{DIST_REFERENCE} did not finish on {on} ({why}); {labels[id(best)]} has the "
                f"lowest node RAM, {size(best.ram_peak)}{_double_count(best)}."
            )
        ref = max(done, key=lambda r: r.ram_peak or 0)
    b, w = best.ram_peak or 0, ref.ram_peak or 0
    if ref is best or not beyond_noise(b, w):
        high = max(done, key=lambda r: r.ram_peak or 0)
        return (
            f"No strategy differs beyond noise on {on}: node RAM {size(b)} "
            f"({labels[id(best)]}) to {size(high.ram_peak)} ({labels[id(high)]}), under "
            f"{percent(NOISE_FRACTION).lstrip('+')} or {size(NOISE_BYTES)} apart."
        )
    return (
        f"{labels[id(best)]} cuts node RAM on {on} from {size(w)} ({labels[id(ref)]}) to "
        f"{size(b)} ({percent((b - w) / w)}){_double_count(best)}."
    )


def _double_count(r: RunResult) -> str:
    """The RSS sum's claim when it would overstate node RAM by more than a quarter."""
    rss = node_rss_sum(r)
    if rss is None or r.ram_peak is None or rss <= 1.25 * r.ram_peak:
        return ""
    return f"; summing the ranks' RSS would claim {size(rss)}, counting shared pages once per rank"


def failures(results: Sequence[RunResult]) -> list[str]:
    """One line per run that did not finish, e.g. ``naive · 1GB: OOM-killed in load``.

    Example:
        >>> failures([RunResult("naive", "oom", phase_reached="load"), RunResult("meta", "ok")])
        ['naive: OOM-killed in load']
    """
    labels = short_labels(results)
    out = []
    for lab, r in zip(labels, results, strict=True):
        if r.ok:
            continue
        where = f" in {r.phase_reached}" if r.phase_reached else ""
        why = f" ({r.error})" if r.error else ""
        out.append(f"{lab}: {outcome_text(r.outcome)}{where}{why}")
    return out


def phase_peak_sentence(rec: Recording) -> str | None:
    """``"Peak RSS 1.5 GiB, in phase 'load'."`` for a bare Recording.

    Example:
        >>> phase_peak_sentence(Recording(phases=[Phase("load", 0.0, 1.0, ram_peak=2**30)]))
        "Peak RSS 1.0 GiB, in phase 'load'."
    """
    best: Phase | None = None
    for p in rec.phases:
        if (
            p.ram_peak is not None
            and p.depth == 0
            and (best is None or p.ram_peak > (best.ram_peak or 0))
        ):
            best = p
    if best is not None:
        return f"Peak RSS {size(best.ram_peak)}, in phase {best.name!r}."
    peak = rec.peak("ram.rss")
    return None if peak is None else f"Peak RSS {size(peak)}."


def headline(obj: Recording | RunResult | Sweep | Sequence[RunResult]) -> str | None:
    """The sentence a report leads with: the key finding of its runs, or for a bare
    Recording the phase where RSS peaked (for a profiled cell: its growth from its start).

    Example:
        >>> headline(Recording()) is None
        True
    """
    results = results_of(obj)
    if results:
        return key_finding(results)
    if not isinstance(obj, Recording):
        return None
    cell = cell_sentence(obj)
    if cell is not None:
        return f"{obj.name}: {cell}" if obj.name else cell
    return phase_peak_sentence(obj)
