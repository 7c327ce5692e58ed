"""Put recordings on one clock: shift a recording's times, merge ranks into node totals.

Every recording's times are seconds since its own start (``meta["t0_monotonic"]``).
On one host ``CLOCK_MONOTONIC`` is system-wide, so the difference of two starts is the
exact shift; across hosts the ranks' exit from a common barrier aligns them. Used for
distributed ranks (:func:`merge_ranks`) and for ``bigviz profile`` folding the
instrumented process's phases into the process-tree timeline (:func:`merge_process`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bigviz._errors import ConfigError
from bigviz.data.recording import Mark, Phase, Recording, Series, SourceInfo

__all__ = [
    "NODE_SERIES",
    "SHARED_MAX_AGE_S",
    "clock_offsets",
    "merge_process",
    "merge_ranks",
    "node_series",
    "shift_recording",
]

#: the per-rank series summed into node totals (``ram.X`` → ``node.X``)
NODE_SERIES: tuple[str, ...] = ("pss", "uss", "anon", "rss")
#: node.pss / node.uss keep only instants where every rank's sample is this fresh (s)
SHARED_MAX_AGE_S = 0.02


def node_series(
    name: str, lanes: Sequence[Series], *, max_age: float | None = None
) -> Series | None:
    """Sum of several ranks' series on a common time grid (step-hold).

    The grid is the union of the sample times, limited to the stretch where every rank
    has been measured (from the latest first sample to the earliest last one), so the
    total never mixes in a rank that was not measured yet. ``None`` if a lane is empty.

    ``max_age`` (seconds) keeps only the grid points where every rank's held sample is
    at most that old. PSS needs it: when rank B maps a page rank A holds, A's share
    halves, and a stale sample of A (taken before) plus a fresh one of B would count
    the page one and a half times.

    Example:
        >>> a = Series("ram.pss", t=[0.0, 1.0, 2.0], v=[10, 20, 20])
        >>> b = Series("ram.pss", t=[0.5, 1.5], v=[5, 7])
        >>> s = node_series("node.pss", [a, b])
        >>> list(zip(s.t, s.v))
        [(0.5, 15), (1.0, 25), (1.5, 27)]
    """
    if not lanes or any(not s.t for s in lanes):
        return None
    start = max(s.t[0] for s in lanes)
    end = min(s.t[-1] for s in lanes)
    grid = sorted({t for s in lanes for t in s.t if start <= t <= end})
    idx = [0] * len(lanes)
    out = Series(name, unit=lanes[0].unit, source="node")
    for t in grid:
        total = 0
        fresh = True
        for j, s in enumerate(lanes):
            i = idx[j]
            while i + 1 < len(s.t) and s.t[i + 1] <= t:
                i += 1
            idx[j] = i
            total += s.v[i]
            if max_age is not None and t - s.t[i] > max_age:
                fresh = False
        if fresh:
            out.t.append(t)
            out.v.append(total)
    return out


def clock_offsets(parts: Sequence[Mapping[str, Any]]) -> tuple[list[float], str]:
    """Seconds to add to each rank's times to put them on rank 0's timeline, and how
    they were found (``"monotonic"`` on one host, ``"barrier"`` across hosts)."""
    hosts = {p.get("host") for p in parts}
    t0 = [float(p.get("t0_monotonic") or 0.0) for p in parts]
    sync = [p.get("t_sync") for p in parts]
    if len(hosts) <= 1 or any(s is None for s in sync):
        # one host: CLOCK_MONOTONIC is system-wide, the exact alignment
        return [t - t0[0] for t in t0], "monotonic"
    # several hosts: their monotonic clocks differ; all ranks left the barrier together
    rel = [t0[i] - float(sync[i]) for i in range(len(parts))]  # type: ignore[arg-type]
    return [r - rel[0] for r in rel], "barrier"


def shift_recording(rec: Recording, dt: float) -> Recording:
    """Move every time of ``rec`` (samples, phases, marks) by ``dt`` seconds, in place.

    Example:
        >>> shift_recording(Recording(marks=[Mark("m", 1.0)]), 0.5).marks[0].t
        1.5
    """
    if dt == 0.0:
        return rec
    for s in rec.series.values():
        s.t = [t + dt for t in s.t]
    for p in rec.phases:
        p.start += dt
        if p.end is not None:
            p.end += dt
    for m in rec.marks:
        m.t += dt
    return rec


def merge_ranks(parts: Sequence[Mapping[str, Any]], *, name: str = "") -> Recording:
    """One Recording from the ranks' recordings: per-rank lanes on one clock, node totals.

    Args:
        parts: one mapping per rank, in rank order, with ``"recording"`` (a Recording or
            its ``to_dict()``), ``"t0_monotonic"``, ``"host"`` and optionally ``"t_sync"``
            (monotonic time at the exit of the alignment barrier).
        name: the merged recording's name.

    Returns:
        A Recording whose ``ranks`` are the lanes (``rank`` set, times on rank 0's clock),
        whose series are ``node.pss``/``node.uss``/``node.anon``/``node.rss`` and whose
        phases are rank 0's.

    Example:
        >>> r = Recording(series={"ram.pss": Series("ram.pss", [0.0], [5])})
        >>> part = {"recording": r, "t0_monotonic": 1.0, "host": "h"}
        >>> merge_ranks([part, part]).series["node.pss"].v
        [10]
    """
    if not parts:
        raise ConfigError("merge_ranks needs at least one rank's recording")
    offsets, how = clock_offsets(parts)
    lanes: list[Recording] = []
    for r, (p, dt) in enumerate(zip(parts, offsets, strict=True)):
        rec = p["recording"]
        rec = Recording.from_dict(rec.to_dict() if isinstance(rec, Recording) else rec)
        rec = shift_recording(rec, dt)
        rec.rank = r
        rec.meta["clock_offset"] = dt
        lanes.append(rec)
    first = lanes[0]
    merged = Recording(
        name=name or first.name,
        pid=first.pid,
        interval_ms=first.interval_ms,
        started_at=first.started_at,
        duration=max(lane.duration + dt for lane, dt in zip(lanes, offsets, strict=True)),
        phases=[Phase(**vars(p)) for p in first.phases],
        marks=[Mark(m.name, m.t, dict(m.detail)) for m in first.marks],
        sources=list(first.sources),
        meta={
            "t0_monotonic": first.meta.get("t0_monotonic"),
            "t0_wall": first.meta.get("t0_wall"),
            "nproc": len(lanes),
            "hosts": sorted({str(p.get("host")) for p in parts}),
            "clock_alignment": how,
            "phases_from_rank": 0,
            "node_series": "Σ over ranks on a common time grid; node.pss is the honest "
                           "node RAM when ranks share pages",
        },
        errors=[f"rank {lane.rank}: {e}" for lane in lanes for e in lane.errors],
        ranks=lanes,
    )
    for key in NODE_SERIES:
        s = node_series(f"node.{key}", [lane.series.get(f"ram.{key}", Series("")) for lane
                                        in lanes],
                        max_age=SHARED_MAX_AGE_S if key in ("pss", "uss") else None)
        if s is not None:
            merged.series[s.name] = s
    return merged


def merge_process(rec: Recording, part: Recording, *, dt: float, pid: int) -> Recording:
    """Fold the recording made inside one process into ``rec`` (a process-tree recording),
    in place: its phases and marks on ``rec``'s clock, tagged with the process.

    Args:
        rec: the recording to add to.
        part: the process's own recording; it is consumed (shifted and moved into ``rec``).
        dt: seconds to add to ``part``'s times (its start minus ``rec``'s).
        pid: the process.

    Returns:
        ``rec``, with ``part``'s phases (``detail["pid"]``, ``"scope"``), marks, errors,
        sources and ``meta`` (as ``meta["instrumented"]``), and the series only the process
        itself sees (``cuda:*``, ``nvml:*``) as ``proc:PID.*``.

    Example:
        >>> tree = Recording(phases=[Phase("marker", start=0.0)])
        >>> inner = Recording(phases=[Phase("torch.load", start=1.0, end=2.0)])
        >>> merged = merge_process(tree, inner, dt=0.5, pid=42)
        >>> [(p.name, p.start, p.detail["pid"]) for p in merged.phases[1:]]
        [('torch.load', 1.5, 42)]
    """
    # RAM is what the tree samples itself; VRAM is only visible from inside the process
    # (torch's allocator) or via NVML. Drop the rest before shifting: it is not kept.
    part.series = {k: s for k, s in part.series.items() if k.startswith(("cuda:", "nvml:"))}
    shift_recording(part, dt)
    offset = len(rec.phases)
    for ph in part.phases:
        ph.parent = None if ph.parent is None else ph.parent + offset
        ph.detail = {**ph.detail, "pid": pid, "scope": f"process {pid}"}
        rec.phases.append(ph)
    for mk in part.marks:
        rec.marks.append(Mark(mk.name, mk.t, {**mk.detail, "pid": pid}))
    for name, s in part.series.items():
        lane = f"proc:{pid}.{name}"
        rec.series[lane] = Series(lane, list(s.t), list(s.v), s.unit, s.source)
    for src in part.sources:
        rec.sources.append(
            SourceInfo(f"proc:{pid}.{src.name}", src.available, src.reason, src.exact, src.series)
        )
    rec.errors.extend(f"process {pid}: {e}" for e in part.errors)
    rec.meta["instrumented"] = {"pid": pid, "meta": part.meta}
    return rec
