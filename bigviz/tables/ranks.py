"""The rank table: per-rank figures of distributed runs, shared by plots and reports
(no matplotlib here).

A distributed run (``bigviz.runner.distributed``) is a RunResult whose ``recording.ranks``
holds one Recording per rank on one clock, and whose own series are node totals
(``node.pss``, ``node.rss``…). Its ``ram_peak`` is the node PSS above the sum of the
ranks' baseline PSS. This module turns that data into the numbers a reader compares:
one row per rank, and how much each rank holds of the node's PSS peak.

PSS and USS come from ``smaps_rollup``, which a busy process makes slow to read, so their
series are sparse (sometimes empty). The runner also takes an exact snapshot while every
rank holds its weights (``checks.ranks[i].loaded``); the figures here use the larger
of the sampled peak and that snapshot, as the runner does for the node total.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bigviz.data.recording import Recording, Series
from bigviz.data.result import RunResult
from bigviz.data.serde import to_plain

__all__ = [
    "RankRow",
    "contributions",
    "failed_rank",
    "is_distributed",
    "node_rss_sum",
    "nproc_of",
    "pss_snapshots",
    "rank_baseline",
    "rank_rows",
]


def is_distributed(obj: RunResult | Recording) -> bool:
    """Does ``obj`` hold per-rank lanes (a ``torch.distributed`` run)?

    Example:
        >>> is_distributed(Recording())
        False
    """
    rec = obj.recording if isinstance(obj, RunResult) else obj
    return bool(rec.ranks)


def nproc_of(r: RunResult) -> int | None:
    """The number of ranks of a run (``params["nproc"]``, else its lanes), ``None`` if not
    distributed.

    Example:
        >>> nproc_of(RunResult("meta", "ok"))
        >>> nproc_of(RunResult("shared-mmap", "ok", params={"nproc": 4}))
        4
    """
    n = r.params.get("nproc")
    if isinstance(n, int) and not isinstance(n, bool) and n >= 1:
        return n
    return len(r.recording.ranks) or None


def failed_rank(r: RunResult | None) -> int | None:
    """The rank that brought the run down (``checks.failed_rank``), if any."""
    if r is None or r.ok:
        return None
    return r.checks.failed_rank


def _rank_checks(r: RunResult | None) -> dict[int, Mapping[str, Any]]:
    out: dict[int, Mapping[str, Any]] = {}
    for item in r.checks.ranks if r is not None else []:
        if item.rank is not None:
            out[item.rank] = to_plain(item)
    return out


def _num(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _baseline_mark(lane: Recording) -> tuple[float, dict[str, Any]] | None:
    for m in lane.marks:
        if m.name == "baseline":
            return m.t, dict(m.detail)
    return None


def rank_baseline(lane: Recording, run: RunResult | None = None) -> tuple[float, dict[str, int]]:
    """When a rank's baseline was taken and its values (``rss``, ``anon``, ``file``,
    ``pss``, ``uss``; bytes, possibly partial).

    From the runner's per-rank checks when present, else the lane's ``baseline`` mark
    (the runner records its snapshot there), else the lane's first samples.

    Example:
        >>> from bigviz.data.recording import Mark
        >>> lane = Recording(rank=0, marks=[Mark("baseline", 0.2, {"pss": 100})])
        >>> rank_baseline(lane)
        (0.2, {'pss': 100})
    """
    mark = _baseline_mark(lane)
    t = mark[0] if mark else 0.0
    raw: Mapping[str, Any] = {}
    check = _rank_checks(run).get(lane.rank if lane.rank is not None else -1)
    if check is not None and isinstance(check.get("baseline"), Mapping):
        raw = check["baseline"]
    elif mark is not None:
        raw = mark[1]
    values = {k: n for k, v in raw.items() if (n := _num(v)) is not None}
    if not values:
        for key in ("rss", "anon", "file", "pss", "uss"):
            s = lane.series.get(f"ram.{key}")
            if s is not None and s.v:
                values[key] = s.v[0]
    return t, values


def _peak_after(s: Series | None, t: float) -> int | None:
    if s is None or not s.v:
        return None
    return s.max_between(t, None)


def _above(v: int | None, base: int | None) -> int | None:
    if v is None:
        return None
    return max(0, v - (base or 0))


@dataclass
class RankRow:
    """One rank of a distributed run; sizes in bytes above the rank's baseline.

    ``uss`` and ``pss`` are the larger of the sampled peak and the runner's snapshot
    while every rank holds its weights. ``ram_peak`` is the rank's RSS peak (exact, from
    ``VmHWM``, when ``ram_peak_exact``). ``status`` is ``"ok"``, a weight-check message,
    or how the rank ended when the run failed.
    """

    rank: int
    host: str
    ram_peak: int | None
    ram_peak_exact: bool
    anon: int | None
    file: int | None
    uss: int | None
    pss: int | None
    phase_reached: str | None
    status: str


def rank_rows(obj: RunResult | Recording) -> list[RankRow]:
    """One row per rank of a distributed run, in rank order (``[]`` when not distributed).

    Args:
        obj: a distributed RunResult (uses its per-rank checks too) or merged Recording.

    Returns:
        The rows; figures are above each rank's baseline.

    Example:
        >>> rank_rows(Recording())
        []
    """
    run = obj if isinstance(obj, RunResult) else None
    rec = obj.recording if isinstance(obj, RunResult) else obj
    checks = _rank_checks(run)
    dead = failed_rank(run)
    rows = []
    for i, lane in enumerate(rec.ranks):
        rank = lane.rank if lane.rank is not None else i
        c = checks.get(rank, {})
        t0, base = rank_baseline(lane, run)

        anon = _pick(c, "ram_anon_peak", lane, "anon", t0, base)
        file = _pick(c, "ram_file_peak", lane, "file", t0, base)
        loaded = c.get("loaded") if isinstance(c.get("loaded"), Mapping) else {}
        assert isinstance(loaded, Mapping)
        pss_vals = [
            v
            for v in (
                _pick(c, "pss_peak", lane, "pss", t0, base),
                _num(loaded.get("pss")),
            )
            if v is not None
        ]
        uss_vals = [
            v
            for v in (
                _above(_peak_after(lane.series.get("ram.uss"), t0), base.get("uss")),
                _num(loaded.get("uss")),
            )
            if v is not None
        ]
        exact_peaks = [p.ram_peak for p in lane.phases if p.ram_peak_exact and p.ram_peak]
        ram_peak = _num(c.get("ram_peak"))
        exact = bool(c.get("ram_peak_exact")) if ram_peak is not None else bool(exact_peaks)
        if ram_peak is None:
            peaks = exact_peaks or [
                v for v in (_peak_after(lane.series.get("ram.rss"), t0),) if v is not None
            ]
            ram_peak = _above(max(peaks), base.get("rss")) if peaks else None
        reached = c.get("phase_reached")
        if not isinstance(reached, str):
            reached = _phase_reached(lane)
        status = str(c.get("verify") or "ok")
        if run is not None and not run.ok:
            bad = next((p.error for p in reversed(lane.phases) if p.error), None)
            if rank == dead:
                status = f"failed: {bad}" if bad else "failed"
            else:
                status = f"stopped ({bad})" if bad else "stopped"
        host = c.get("host") or lane.meta.get("host") or ""
        rows.append(
            RankRow(
                rank=rank,
                host=str(host),
                ram_peak=ram_peak,
                ram_peak_exact=exact,
                anon=anon,
                file=file,
                uss=max(uss_vals) if uss_vals else None,
                pss=max(pss_vals) if pss_vals else None,
                phase_reached=reached,
                status=status,
            )
        )
    return rows


def _pick(
    check: Mapping[str, Any],
    key: str,
    lane: Recording,
    kind: str,
    t0: float,
    base: Mapping[str, int],
) -> int | None:
    """The runner's per-rank figure ``key``, else the lane's ``ram.<kind>`` peak after
    the baseline, above the baseline."""
    v = _num(check.get(key))
    if v is None:
        v = _above(_peak_after(lane.series.get(f"ram.{kind}"), t0), base.get(kind))
    return v


def _phase_reached(lane: Recording) -> str | None:
    """The phase a rank got to: the deepest failed one, else the last one started."""
    bad = [p for p in lane.phases if p.error]
    if bad:
        return max(bad, key=lambda p: (p.depth, p.start)).name
    tops = [p for p in lane.phases if p.depth == 0] or lane.phases
    return max(tops, key=lambda p: p.start).name if tops else None


def contributions(run: RunResult) -> tuple[list[int], list[int], str]:
    """How much each rank holds of the node PSS peak (bytes above its baseline PSS).

    The node peak is the larger of the sampled ``node.pss`` series and the runner's
    snapshot while every rank holds its weights; the split comes from the same source, so
    the parts add up to that peak.

    Returns:
        ``(ranks, bytes per rank, source)``; source is ``"snapshot"``, ``"sampled"`` or
        ``""`` when neither was measured (empty lists then).

    Example:
        >>> contributions(RunResult("meta", "ok"))
        ([], [], '')
    """
    rec = run.recording
    lanes = rec.ranks
    if not lanes:
        return [], [], ""
    ranks = [lane.rank if lane.rank is not None else i for i, lane in enumerate(lanes)]
    bases = [rank_baseline(lane, run) for lane in lanes]
    checks = _rank_checks(run)
    snap: list[int] | None = []
    for r in ranks:
        loaded = checks.get(r, {}).get("loaded")
        v = _num(loaded.get("pss")) if isinstance(loaded, Mapping) else None
        if v is None or snap is None:
            snap = None
            continue
        snap.append(v)
    sampled: list[int] | None = None
    node = rec.series.get("node.pss")
    t_all = max((t for t, _b in bases), default=0.0)
    if node is not None and node.v:
        pairs = [(t, v) for t, v in zip(node.t, node.v, strict=True) if t >= t_all]
        if pairs:
            t_star = max(pairs, key=lambda tv: tv[1])[0]
            got: list[int] = []
            for lane, (_t, b) in zip(lanes, bases, strict=True):
                s = lane.series.get("ram.pss")
                v = s.at(t_star) if s is not None else None
                if v is None:
                    break
                got.append(max(0, v - b.get("pss", 0)))
            else:
                sampled = got
    if snap and (sampled is None or sum(snap) >= sum(sampled)):
        return ranks, snap, "snapshot"
    if sampled is not None:
        return ranks, sampled, "sampled"
    return [], [], ""


def node_rss_sum(run: RunResult) -> int | None:
    """Σ RSS peak over the ranks above their summed baseline RSS: what adding up every
    rank's RSS would claim (shared pages counted once per rank)."""
    node = run.checks.node
    if node is not None and node.rss_peak_sum is not None:
        return node.rss_peak_sum
    s = run.recording.series.get("node.rss")
    if s is None or not s.v:
        return None
    bases = [rank_baseline(lane, run) for lane in run.recording.ranks]
    t_all = max((t for t, _b in bases), default=0.0)
    return _above(s.max_between(t_all, None), sum(b.get("rss", 0) for _t, b in bases))


def _loaded_time(rec: Recording) -> float | None:
    for p in rec.phases:
        if p.name == "loaded":
            return p.start if p.end is None else (p.start + p.end) / 2
    return None


def pss_snapshots(run: RunResult) -> tuple[tuple[float, int] | None, dict[int, tuple[float, int]]]:
    """The runner's exact PSS snapshots, taken while every rank holds its weights, as
    absolute bytes at the middle of the ``loaded`` phase: ``(node, {rank: (t, pss)})``.

    The sampled PSS series are sparse (``smaps_rollup`` is slow on a big process); these
    points are what the reported node peak is usually made of.

    Example:
        >>> pss_snapshots(RunResult("meta", "ok"))
        (None, {})
    """
    checks = _rank_checks(run)
    per: dict[int, tuple[float, int]] = {}
    for i, lane in enumerate(run.recording.ranks):
        rank = lane.rank if lane.rank is not None else i
        loaded = checks.get(rank, {}).get("loaded")
        t = _loaded_time(lane)
        v = _num(loaded.get("pss")) if isinstance(loaded, Mapping) else None
        if t is not None and v is not None:
            per[rank] = (t, v + rank_baseline(lane, run)[1].get("pss", 0))
    node: tuple[float, int] | None = None
    if per and len(per) == len(run.recording.ranks):
        t_node = _loaded_time(run.recording) or max(t for t, _v in per.values())
        node = (t_node, sum(v for _t, v in per.values()))
    return node, per
