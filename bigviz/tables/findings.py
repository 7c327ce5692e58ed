"""The one-line findings a report leads with, computed from the runs: the key finding,
what did not finish, and where a bare recording peaked. No matplotlib here.
"""

from __future__ import annotations

from collections.abc import Sequence

from bigviz.data.recording import Phase, Recording
from bigviz.data.result import RunResult, Sweep
from bigviz.tables.labels import outcome_text, percent, short_labels
from bigviz.tables.ranks import is_distributed, node_rss_sum, nproc_of
from bigviz.tables.runs import results_of
from bigviz.units import format_size as size

__all__ = [
    "DIST_REFERENCE",
    "NOISE_BYTES",
    "NOISE_FRACTION",
    "beyond_noise",
    "failures",
    "headline",
    "key_finding",
    "phase_peak_sentence",
]



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
    Recording the phase where RSS peaked.

    Example:
        >>> headline(Recording()) is None
        True
    """
    results = results_of(obj)
    if results:
        return key_finding(results)
    return phase_peak_sentence(obj) if isinstance(obj, Recording) else None
