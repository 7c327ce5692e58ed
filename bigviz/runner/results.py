"""One path from what the parent saw to a :class:`~bigviz.data.result.RunResult`: one
worker (:func:`single_result`), the ranks' gathered parts (:func:`rank_result`, built in
rank 0) and a job that did not finish (:func:`failed_ranks_result`). Every verdict on a
prediction is :meth:`PredictionCheck.judge <bigviz.data.result.PredictionCheck.judge>`.

Example:
    >>> dmap_label({"": "cpu"})
    '{"": "cpu"}'
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bigviz.strategies as strategies
from bigviz.data.recording import Phase, Recording, Series
from bigviz.data.result import (
    Checks,
    NodeFigures,
    Prediction,
    PredictionCheck,
    RankFigures,
    RunResult,
)
from bigviz.recorder.merge import NODE_SERIES, merge_ranks
from bigviz.runner.supervisor import Supervision, budget_meaning, exit_verdict, innermost_at
from bigviz.units import format_size

if TYPE_CHECKING:
    from bigviz.runner.single import Outcome

__all__ = [
    "above",
    "add_barrier_points",
    "dmap_label",
    "failed_ranks_result",
    "max_after",
    "measured_from",
    "predict_safely",
    "rank_result",
    "single_result",
    "vram_peaks",
]


def predict_safely(strat: Any, info: Any, device_map: Any = "cpu", **options: Any) -> Prediction:
    """``strat.predict(...)``, or an ``"unavailable"`` Prediction saying why it failed: a
    prediction must never cost the measurement.

    Example:
        >>> predict_safely(None, None).formula
        'unavailable'
    """
    try:
        pred: Prediction = strat.predict(info, device_map, **options)
    except Exception as exc:
        return Prediction(ram_peak=0, formula="unavailable", notes=f"predict failed: {exc}")
    return pred


def vram_peaks(phases: Iterable[Phase]) -> dict[str, int]:
    """Each device's largest VRAM peak over ``phases`` (nested ones too: in a killed run
    the enclosing phase never ended).

    Example:
        >>> vram_peaks([Phase("a", 0.0, vram_peak={"cuda:0": 5})])
        {'cuda:0': 5}
    """
    out: dict[str, int] = {}
    for p in phases:
        for dev, v in p.vram_peak.items():
            out[dev] = max(out.get(dev, 0), int(v))
    return out


def dmap_label(dmap: Any) -> str:
    """A device map as the one string a RunResult keeps."""
    return dmap if isinstance(dmap, str) else json.dumps(dmap, sort_keys=True)


# -- one worker ------------------------------------------------------------------------


def single_result(
    strat: Any, out: Outcome, *, info: Any, model: str, m_bytes: int, shard: int | None,
    format: str, dmap: Any, mm: dict[int | str, int] | None, budget: int | None,
    params: dict[str, Any],
) -> RunResult:
    """The RunResult of one worker: peaks above its baseline (the exact phase peaks, the
    samples and the watchdog's readings), the budget, the prediction and its check.

    Example:
        >>> # single_result(strategies.get("meta"), execute(job), info=info, ...)
    """
    rec = out.recording
    base = out.baseline
    baseline = int(base.get("rss", 0))
    notes = (out.result or {}).get("notes", {}) or {}
    # measured peaks above baseline: exact phase peaks (VmHWM), the samples, the watchdog
    # every phase, nested ones too: in a killed run the enclosing phase never ended
    exact = [p.ram_peak for p in rec.phases if p.ram_peak is not None]
    # samples inside phases only: every byte of the run's peak sits in a named phase
    sampled = _in_phases(rec, "ram.rss")
    candidates = [*exact, out.watch_peak] + ([sampled] if sampled is not None else [])
    ram_abs = max(candidates) if candidates and baseline else None
    anon = _peak(rec, "ram.anon", [p.ram_anon_peak for p in rec.phases])
    file_ = _peak(rec, "ram.file", [p.ram_file_peak for p in rec.phases])
    vram = vram_peaks(rec.phases)
    placement = notes.get("placement")
    pred = predict_safely(strat, info, dmap, max_memory=mm, placement=placement)
    outcome, error = out.outcome, out.error
    ram_peak = None if ram_abs is None else max(0, ram_abs - baseline)
    if outcome == "ok" and budget is not None and ram_abs is not None and ram_abs > budget:
        worst = _phase_of_peak(rec, ram_abs)
        outcome = "budget_exceeded"
        error = (f"would not fit in {format_size(budget, binary=False)} "
                 f"({budget_meaning()}): reached {format_size(ram_abs, binary=False)}"
                 + (f" in phase {worst!r}" if worst else ""))
    tb = (out.result or {}).get("traceback") or out.traceback
    checks = Checks(
        weights="ok" if outcome == "ok" else ((out.result or {}).get("verify") or "unchecked"),
        exit_code=out.exit_code,
        spawn_to_first_phase_s=_overhead(out),
        after_first_use={k: max(0, int(v) - int(base.get(k, 0)))
                         for k, v in ((out.result or {}).get("after") or {}).items()},
        baseline_anon=int(base.get("anon", 0)),
        baseline_file=int(base.get("file", 0)),
        device_map=notes.get("device_map") or None,
        placement=placement or None,
        traceback=tb or None,
    )
    if outcome == "ok" and pred is not None and ram_peak is not None and pred.ram_peak:
        checks.prediction = PredictionCheck.judge(ram_peak, pred)
    return RunResult(
        strategy=strat.name,
        outcome=outcome,  # type: ignore[arg-type]
        model=model,
        model_bytes=m_bytes,
        error=error,
        phase_reached=out.phase_reached,
        shard_size=shard,
        format=format,
        device_map=dmap_label(dmap),
        baseline=baseline,
        ram_peak=ram_peak,
        ram_anon_peak=None if anon is None else max(0, anon - int(base.get("anon", 0))),
        ram_file_peak=None if file_ is None else max(0, file_ - int(base.get("file", 0))),
        vram_peak=vram,
        predicted=pred,
        seconds=round(out.seconds, 6),
        recording=rec,
        params=params,
        checks=checks,
        fixed_cost={k: int(v) for k, v in (base.get("fixed_cost") or {}).items()},
    )


def _phase_of_peak(rec: Recording, peak: int) -> str | None:
    """The innermost phase holding ``peak``: the deepest phase whose exact peak it is,
    else the innermost phase open at the first sample that reached it."""
    exact = [p for p in rec.phases if p.ram_peak is not None and p.ram_peak >= peak]
    if exact:
        return max(exact, key=lambda p: (p.depth, p.start)).name
    rss = rec.series.get("ram.rss")
    if rss is not None:
        for t, v in zip(rss.t, rss.v, strict=True):
            if v >= peak:
                p = innermost_at(rec.phases, t)
                return None if p is None else p.name
    return None


def _in_phases(rec: Recording, series: str) -> int | None:
    """The largest sample of ``series`` taken while a phase was open (a recording
    without phases: the largest sample)."""
    s = rec.series.get(series)
    if s is None or not s.v:
        return None
    if not rec.phases:
        return max(s.v)
    vals = [v for p in rec.phases if p.depth == 0
            if (v := s.max_between(p.start, p.end)) is not None]
    return max(vals) if vals else None


def _peak(rec: Any, series: str, phase_vals: list[int | None]) -> int | None:
    vals = [v for v in phase_vals if v is not None]
    s = _in_phases(rec, series)
    if s is not None:
        vals.append(s)
    return max(vals) if vals else None


def _overhead(out: Outcome) -> float | None:
    """Seconds from asking for a worker to the start of its first phase."""
    rec = out.recording
    t0 = rec.meta.get("t0_monotonic")
    if isinstance(t0, (int, float)) and rec.phases:
        return round(float(t0) + rec.phases[0].start - out.t_spawn, 4)
    if out.t_first_phase is not None:
        return round(out.t_first_phase - out.t_spawn, 4)
    return None



# -- the ranks of a distributed job ---------------------------------------------


def above(v: int | None, base: int) -> int | None:
    return None if v is None else max(0, int(v) - int(base))


def max_after(s: Series | None, t: float) -> int | None:
    return None if s is None else s.max_between(t, None)


def _baseline_t(lane: Recording) -> float:
    """When the rank took its baseline (its ``baseline`` mark; 0 without one)."""
    return next((mk.t for mk in lane.marks if mk.name == "baseline"), 0.0)


def measured_from(lanes: Sequence[Recording]) -> float:
    """When every rank had its baseline: node figures count from there."""
    return max((_baseline_t(lane) for lane in lanes), default=0.0)


def _rank_figures(part: Mapping[str, Any], lane: Recording, t_base: float) -> RankFigures:
    base = part.get("baseline") or {}
    loaded = part.get("loaded") or {}
    exact = [p.ram_peak for p in lane.phases if p.ram_peak_exact and p.ram_peak is not None
             and p.start >= t_base]
    device = part.get("device")
    return RankFigures(
        rank=part.get("rank"), host=part.get("host"), pid=part.get("pid"),
        device=None if device is None else str(device),
        baseline={k: int(v) for k, v in base.items()},
        ram_peak=above(max(exact), base.get("rss", 0)) if exact else None,
        ram_peak_exact=bool(exact),
        ram_anon_peak=above(max_after(lane.series.get("ram.anon"), t_base),
                             base.get("anon", 0)),
        ram_file_peak=above(max_after(lane.series.get("ram.file"), t_base),
                             base.get("file", 0)),
        pss_peak=above(max_after(lane.series.get("ram.pss"), t_base), base.get("pss", 0)),
        loaded={k: int(v) - int(base.get(k, 0)) for k, v in loaded.items()},
        vram_peak=vram_peaks(lane.phases),
        verify=part.get("verify") or "ok",
        phase_reached=lane.phases[-1].name if lane.phases else None,
    )


def add_barrier_points(rec: Recording, totals: Mapping[str, int]) -> None:
    """Put the node PSS of the barrier snapshots into ``node.pss``.

    Every rank reads its PSS right after the same barrier (at the ``baseline`` and
    ``loaded`` marks), so their sum is a node-wide reading at that moment, placed at
    rank 0's mark.
    """
    if not rec.ranks:
        return
    points = [(mk.t, int(totals[mk.name])) for mk in rec.ranks[0].marks
              if totals.get(mk.name)]
    if not points:
        return
    s = rec.series.get("node.pss") or Series("node.pss", source="node")
    pairs = sorted([*zip(s.t, s.v, strict=True), *points])
    s.t = [t for t, _ in pairs]
    s.v = [v for _, v in pairs]
    rec.series["node.pss"] = s


def rank_result(
    strategy: str,
    parts: Sequence[Mapping[str, Any]],
    *,
    info: Any,
    model: str,
    nproc: int,
    per_rank: str = "naive",
    backend: str = "gloo",
    shard_size: int | None = None,
    params: Mapping[str, Any] | None = None,
) -> RunResult:
    """The job's RunResult from the gathered per-rank parts (see :func:`merge_ranks`).

    Node figures (``ram_peak``, ``ram_anon_peak``, ``baseline``) are sums over the
    ranks: ``ram_peak`` is the node RAM peak above the sum of the ranks' baseline PSS —
    the largest of the sampled ``node.pss`` series, the exact PSS snapshot taken while
    every rank holds its weights, and the ``node.anon`` peak (sampled every
    ``interval_ms``; anonymous pages are private, so always part of PSS).
    ``checks.node.pss_peak`` is the PSS figure alone. ``ram_file_peak`` is the
    largest rank's file-backed
    growth (the ranks of a node map the same files). Per-rank figures are in
    ``checks.ranks``; the rank's ``ram_peak`` there is exact (``VmHWM``).
    """
    strat = strategies.get(strategy, kind="distributed")
    merged = merge_ranks(parts, name=f"{strategy} · {model} · {nproc} ranks")
    m_bytes = int(info.total_size)
    gpu = backend == "nccl"
    ranks: list[RankFigures] = []
    for part, lane in zip(parts, merged.ranks, strict=True):
        fig = _rank_figures(part, lane, _baseline_t(lane))
        pred = strat.predict_rank(info, int(part.get("rank") or 0), str(part.get("device")),
                                  nproc=nproc, per_rank=per_rank)
        fig.predicted = pred.ram_peak
        fig.formula = pred.formula
        ranks.append(fig)
    bases = [p.get("baseline") or {} for p in parts]
    node_base = {k: sum(int(b.get(k, 0)) for b in bases) for k in NODE_SERIES}
    t_all = measured_from(merged.ranks)
    loaded_pss = sum(int((p.get("loaded") or {}).get("pss", 0)) for p in parts)
    add_barrier_points(merged, {"baseline": node_base["pss"], "loaded": loaded_pss})
    pss_abs = [v for v in (max_after(merged.series.get("node.pss"), t_all), loaded_pss) if v]
    anon_peak = above(max_after(merged.series.get("node.anon"), t_all), node_base["anon"])
    pss_peak = above(max(pss_abs), node_base["pss"]) if pss_abs else None
    # PSS is sampled every ≥ 20 ms (smaps_rollup walks page tables) and can miss a short
    # spike; anonymous pages are private to a rank, hence part of its PSS at every
    # instant, and node.anon is sampled every interval_ms: the larger is the better bound
    ram_peak = max((v for v in (pss_peak, anon_peak) if v is not None), default=None)
    node = NodeFigures(
        baseline=node_base,
        ram_peak=ram_peak,
        pss_peak=pss_peak,
        pss_loaded=loaded_pss - node_base["pss"] if loaded_pss else None,
        uss_loaded=sum(int((p.get("loaded") or {}).get("uss", 0)) for p in parts)
                   - node_base["uss"],
        rss_loaded_sum=sum(int((p.get("loaded") or {}).get("rss", 0)) for p in parts)
                       - node_base["rss"],
        anon_peak=anon_peak,
        rss_peak_sum=above(max_after(merged.series.get("node.rss"), t_all),
                            node_base["rss"]),
    )
    predicted = predict_safely(strat, info, "cuda" if gpu else "cpu", nproc=nproc,
                               per_rank=per_rank)
    wrong = [f"rank {f.rank}: {f.verify}" for f in ranks if f.verify != "ok"]
    outcome = "ok" if not wrong else "error"
    align = merged.meta.get("clock_alignment")
    checks = Checks(
        weights="ok" if not wrong else "; ".join(wrong),
        ranks=ranks,
        node=node,
        clock_alignment=None if align is None else str(align),
        backend=backend,
    )
    measured = node.ram_peak
    if measured is not None and predicted.formula != "unavailable":
        checks.prediction = PredictionCheck.judge(measured, predicted, nproc=nproc)
    vram: dict[str, int] = {}
    hosts = {str(f.host) for f in ranks}
    for f in ranks:
        for dev, v in f.vram_peak.items():
            key = dev if len(hosts) == 1 else f"{f.host}/{dev}"
            vram[key] = max(vram.get(key, 0), int(v))
    files = [f.ram_file_peak for f in ranks if f.ram_file_peak is not None]
    seconds = max((lane.duration + float(lane.meta.get("clock_offset", 0.0))
                   for lane in merged.ranks), default=0.0)
    return RunResult(
        strategy=strategy,
        outcome=outcome,  # type: ignore[arg-type]
        model=model,
        model_bytes=m_bytes,
        error=None if not wrong else "wrong weights: " + "; ".join(wrong),
        phase_reached=merged.phases[-1].name if merged.phases else None,
        shard_size=shard_size,
        format=str(info.format),
        device_map="cuda" if gpu else "cpu",
        baseline=node_base["pss"],
        ram_peak=node.ram_peak,
        ram_anon_peak=node.anon_peak,
        ram_file_peak=max(files) if files else None,
        vram_peak=vram,
        predicted=predicted,
        seconds=round(seconds, 6),
        recording=merged,
        params={"model": model, "nproc": nproc, "per_rank": per_rank, "backend": backend,
                "max_shard_size": shard_size, "format": str(info.format),
                **dict(params or {})},
        checks=checks,
    )


def failed_ranks_result(
    strategy: str, seen: Supervision, *, pids: Sequence[int], logs: Sequence[str],
    interval_ms: float, model: str, shard: int | None, format: str, nproc: int, per_rank: str,
    folder: Path, budget: int | None, backend: str | None,
) -> RunResult:
    """A RunResult for a job that did not finish: who failed, where, and how; the
    timelines the launcher saw of every rank, merged.

    Example:
        >>> # failed_ranks_result("shared-mmap", seen, pids=[…], logs=[…], …).checks.failed_rank
    """
    from bigviz.checkpoint import inspect_checkpoint

    ranks, stop, seconds = seen.watched, seen.stop, seen.seconds
    phases = {str(w.rank): w.phase() for w in ranks}  # str keys: JSON round-trips
    codes = {str(w.rank): w.exit_code for w in ranks}
    culprit: Any = None
    if stop is not None:
        outcome, error = stop.outcome, stop.error
        culprit = stop.culprit
    else:
        culprit = seen.first_failed() or ranks[0]
        code = culprit.exit_code
        cerr = culprit.kept.get("error")
        phase = (cerr or {}).get("phase") or culprit.phase()
        who = f"rank {culprit.rank} (pid {pids[culprit.rank]})"
        if cerr is not None and (code or 0) >= 0:
            outcome = "error"
            error = f"{who} failed in phase {phase!r}: {cerr.get('message')}"
        elif code is not None and code != 0:
            outcome, error = exit_verdict(code, who, phase, seen.oom_before)
            error += "; the other ranks were stopped"
        else:
            outcome = "crashed"
            error = "rank 0 exited without writing the gathered result"
    parts = [{"recording": w.timeline.recording(f"rank {w.rank} (partial)", pids[w.rank],
                                                 interval_ms, None),
              "t0_monotonic": w.kept.get("hello", {}).get("t0_monotonic", 0.0),
              "t_sync": w.kept.get("hello", {}).get("t_sync"),
              "host": w.kept.get("hello", {}).get("host", "")} for w in ranks]
    try:
        recording = merge_ranks(parts, name=f"{strategy} · {model} · {nproc} ranks (partial)")
    except Exception as exc:  # a partial timeline must never hide the failure itself
        recording = Recording(name=f"{strategy} (partial)", errors=[f"merge failed: {exc!r}"])
    recording.meta["partial"] = True
    m_bytes = 0
    predicted: Prediction | None = None
    with contextlib.suppress(Exception):
        info = inspect_checkpoint(folder / "checkpoint")
        m_bytes = int(info.total_size)
        predicted = strategies.get(strategy).predict(info, "cpu", nproc=nproc,
                                                     per_rank=per_rank)
    checks = Checks(
        weights="unchecked",
        failed_rank=culprit.rank if culprit is not None else None,
        rank_phases=phases,
        exit_codes=codes,
    )
    if culprit is not None:
        cerr = culprit.kept.get("error")
        if cerr and cerr.get("traceback"):
            checks.traceback = str(cerr["traceback"])
        checks.log_tail = logs[culprit.rank] or None
    return RunResult(
        strategy=strategy,
        outcome=outcome,  # type: ignore[arg-type]
        model=model,
        model_bytes=m_bytes,
        error=error,
        phase_reached=phases.get(str(culprit.rank)) if culprit is not None else None,
        shard_size=shard,
        format=format,
        device_map="cpu",
        predicted=predicted,
        seconds=round(seconds, 6),
        recording=recording,
        params={"model": model, "nproc": nproc, "per_rank": per_rank, "backend": backend,
                "max_shard_size": shard, "format": format, "ram_budget": budget},
        checks=checks,
    )


