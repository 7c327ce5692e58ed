"""Compact sample storage for the Recorder, inside the measured process.

The recorder lives in the process it measures, so every byte it keeps for its timeline
is in the RSS it reports. Python lists of ``float``/``int`` objects cost ~72 bytes per
sample (a 24-byte float, a 28–32-byte int and two 8-byte list slots), ~230 bytes per 1 ms
tick of the RAM source (``ram.rss``/``anon``/``file``): ~0.8 GB per hour at 1 ms.

Here each series keeps its values in an ``array("q")`` (8 bytes each) and its times in an
``array("d")`` (8 bytes each, exact IEEE doubles). Series that always arrive together
with the same time list (``ram.rss``, ``ram.anon`` and ``ram.file`` from one statm read)
share one time array for as long as they stay in lockstep, so a 1 ms tick of the RAM
source costs 32 bytes (+1/16 array over-allocation), ~11 bytes per sample. The plain
``Series(t: list[float], v: list[int])`` data model is built only when a
:class:`~bigviz.data.recording.Recording` is asked for; the floats and ints are the same
ones the lists would have held, so the Recording is identical.

Values that do not fit an ``int64`` (floats or huge ints from a custom source) switch
that one series to a plain list, so nothing is ever lost or rounded.

**Bounded** (opt-in, ``bigviz.record(max_samples=N)``, for hours-long recordings): each
series keeps at most ``N`` samples. When one fills up it is cut into time buckets of
``w`` seconds (a power of two) and only the lowest and the highest sample of each bucket
are kept, at their own times; ``w`` doubles until at most ``N/2`` samples remain. A
bucket's extremes are samples, and a bucket of ``2w`` holds the extremes of its two
halves, so the series' maximum and minimum are always the true ones: no peak is lost.
Memory: at most ``16 * N`` bytes per series (8 for the time, 8 for the value; twice
that for the moment a series is compacted), e.g. ``N = 1_000_000``: 16 MB per series,
~112 MB for the seven series of the RAM and system sources — instead of ~40 MB per
*hour* unbounded. A compaction costs ~0.5 µs per kept sample in the recording thread.
Sampled per-phase figures (``ram_anon_peak``…) are then the extremes within whole
buckets around the phase; the exact ``VmHWM`` peaks do not come from the timeline and
are unchanged.
"""

from __future__ import annotations

import bisect
import math
import operator
import statistics
import sys
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import compress, repeat
from typing import Any

from bigviz.data.recording import Series

__all__ = ["MIN_MAX_SAMPLES", "SampleStore", "SeriesStore", "check_max_samples", "median"]

#: above this many items, :func:`median` avoids sorting a list of Python floats
MEDIAN_SORT_MAX = 100_000
#: the smallest ``max_samples`` a bounded store takes
MIN_MAX_SAMPLES = 64
#: bytes a bounded store holds per kept sample (a time and a value, 8 bytes each)
BYTES_PER_KEPT = 16


def check_max_samples(max_samples: object) -> int | None:
    """``max_samples`` of ``record()``: ``None`` (keep every sample) or an int >= 64.

    Raises:
        ConfigError: anything else, naming the value.

    Example:
        >>> check_max_samples(1_000_000)
        1000000
    """
    from bigviz._errors import ConfigError

    if max_samples is None:
        return None
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) \
            or max_samples < MIN_MAX_SAMPLES:  # fmt: skip
        raise ConfigError(
            f"max_samples must be None (keep every sample) or a whole number of samples per "
            f"series >= {MIN_MAX_SAMPLES}, e.g. 1_000_000 (16 MB per series), "
            f"got {max_samples!r}"
        )
    return max_samples


class _Times:
    """One time array and the series whose values are aligned with it."""

    __slots__ = ("arr", "owners")

    def __init__(self, arr: array[float] | None = None) -> None:
        self.arr: array[float] = array("d") if arr is None else arr
        self.owners: list[SeriesStore] = []


class SeriesStore:
    """Samples of one series: times (possibly shared) and values, compactly."""

    __slots__ = ("bucket", "emitted", "name", "source", "stats", "times", "unit", "v")

    def __init__(self, name: str, *, unit: str = "bytes", source: str = "") -> None:
        self.name = name
        self.unit = unit
        self.source = source
        self.times = _Times()
        self.times.owners.append(self)
        self.v: array[int] | list[int] = array("q")
        #: how many samples were already streamed to ``on_event``
        self.emitted = 0
        #: bounded stores: the bucket width in seconds (0.0: every sample still kept)
        self.bucket = 0.0
        #: bounded stores: [samples received, first time, last time, largest gap]
        self.stats: list[float] = [0, 0.0, 0.0, 0.0]

    @property
    def t(self) -> array[float]:
        """Times, seconds since the recording started."""
        return self.times.arr

    def __len__(self) -> int:
        return len(self.v)

    def _join(self, times: _Times) -> None:
        self.times.owners.remove(self)
        self.times = times
        times.owners.append(self)

    def _unshare(self, n: int) -> None:
        """Give this series its own copy of the first ``n`` shared times."""
        old = self.times
        if len(old.owners) == 1:
            del old.arr[n:]
            return
        old.owners.remove(self)
        self.times = _Times(old.arr[:n])
        self.times.owners.append(self)

    def _extend_values(self, vs: Sequence[int]) -> None:
        v = self.v
        if isinstance(v, list):
            v.extend(vs)
            return
        n = len(v)
        try:
            v.extend(vs)
        except (TypeError, OverflowError):
            # a float or an int beyond int64: keep this series exact as a plain list
            del v[n:]
            self.v = v.tolist()
            self.v.extend(vs)

    def values_list(self, start: int = 0) -> list[int]:
        """Values from ``start`` on, as a plain list."""
        v = self.v
        return v[start:] if isinstance(v, list) else v[start:].tolist()

    def to_series(self) -> Series:
        """The plain-data :class:`Series` (fresh lists)."""
        return Series(self.name, self.t.tolist(), self.values_list(), self.unit, self.source)

    def max(self) -> int | None:
        """Largest value, or ``None`` when empty."""
        return max(self.v) if len(self.v) else None

    def max_between(self, start: float, end: float | None) -> int | None:
        """Largest value sampled in ``[start, end]`` (``end=None``: to the last sample)."""
        t = self.t
        # samples arrive in time order: bisect instead of scanning a long recording
        lo = bisect.bisect_left(t, start)
        hi = len(t) if end is None else bisect.bisect_right(t, end)
        return max(self.v[lo:hi]) if hi > lo else None

    def _count(self, rel: Sequence[float]) -> None:
        """Bounded stores: fold one batch of times into the sampling statistics."""
        st = self.stats
        gaps = list(map(operator.sub, rel[1:], rel[:-1]))
        if st[0]:
            gaps.append(rel[0] - st[2])
        else:
            st[1] = rel[0]
        st[0] += len(rel)
        st[2] = rel[-1]
        st[3] = max([st[3], *gaps])

    def compact(self, max_samples: int) -> None:
        """Keep each bucket's lowest and highest sample until at most ``max_samples / 2``
        remain (see the module docs); the streaming position follows."""
        if len(self.times.owners) > 1:
            self._unshare(len(self.times.arr))
        t = self.times.arr
        last_sent = t[self.emitted - 1] if self.emitted else None
        if not self.bucket:
            span = max(t[-1] - t[0], 1e-9)
            self.bucket = 2.0 ** math.floor(math.log2(span / (max_samples // 4)))
        nt, nv = _min_max(t, self.v, self.bucket)
        while len(nt) > max_samples // 2:
            self.bucket *= 2
            nt, nv = _min_max(nt, nv, self.bucket)
        self.times.arr, self.v = nt, nv
        self.emitted = 0 if last_sent is None else bisect.bisect_right(nt, last_sent)


def _min_max(
    t: array[float], v: array[int] | list[int], w: float
) -> tuple[array[float], array[int] | list[int]]:
    """The lowest and the highest sample of each bucket ``[k*w, (k+1)*w)``, in time order."""
    out_t: array[float] = array("d")
    out_v: array[int] | list[int] = array("q") if isinstance(v, array) else []
    add_t, add_v = out_t.append, out_v.append
    cur = None
    lo_i = hi_i = 0
    lo_v = hi_v = 0
    floor = math.floor
    for i, (ti, vi) in enumerate(zip(t, v, strict=True)):
        b = floor(ti / w)
        if b == cur:
            if vi < lo_v:
                lo_i, lo_v = i, vi
            elif vi > hi_v:
                hi_i, hi_v = i, vi
            continue
        if cur is not None:
            for j in sorted({lo_i, hi_i}):
                add_t(t[j])
                add_v(v[j])
        cur, lo_i, hi_i, lo_v, hi_v = b, i, i, vi, vi
    if cur is not None:
        for j in sorted({lo_i, hi_i}):
            add_t(t[j])
            add_v(v[j])
    return out_t, out_v


class SampleStore:
    """All series of one recording, appended batch by batch.

    Example:
        >>> store = SampleStore()
        >>> ts = [10.001, 10.002]
        >>> store.add({"ram.rss": (ts, [5, 6]), "ram.anon": (ts, [3, 4])}, t0=10.0, source="ram")
        >>> store.to_series()["ram.anon"].v, store.series["ram.rss"].t is store.series["ram.anon"].t
        ([3, 4], True)
    """

    def __init__(self, max_samples: int | None = None) -> None:
        self.series: dict[str, SeriesStore] = {}
        #: bounded: at most this many samples per series (``None``: every sample)
        self.max_samples = check_max_samples(max_samples)

    def add(
        self,
        samples: Mapping[str, tuple[Sequence[float], Sequence[int]]],
        *,
        t0: float,
        source: str,
    ) -> None:
        """Append one batch ``{name: (times, values)}``; times are made relative to ``t0``.

        Series given the same time list object share one time array while they keep
        arriving together; one that falls out of step gets its own copy.

        Raises:
            TypeError: a time is not a number (the batch's earlier series are kept).
        """
        # id(_Times) -> (the time list it was extended from in this batch, length before)
        done: dict[int, tuple[object, int, _Times]] = {}
        try:
            for name, (ts, vs) in samples.items():
                self._add_one(name, ts, vs, t0=t0, source=source, done=done)
        finally:
            # a series sharing a time array extended in this batch but not given these
            # samples (or whose values failed) must not see them: it gets its own copy
            for _ts, before, times in done.values():
                for owner in list(times.owners):
                    if len(owner.v) != len(times.arr):
                        owner._unshare(before)
            if self.max_samples is not None:
                for name in samples:
                    st = self.series.get(name)
                    if st is not None and len(st) > self.max_samples:
                        st.compact(self.max_samples)

    def _add_one(
        self,
        name: str,
        ts: Sequence[float],
        vs: Sequence[int],
        *,
        t0: float,
        source: str,
        done: dict[int, tuple[object, int, _Times]],
    ) -> None:
        if not len(ts):
            return
        if len(vs) != len(ts):  # v[i] belongs to t[i]: never let one run ahead
            n = min(len(ts), len(vs))
            ts, vs = ts[:n], vs[:n]
        st = self.series.get(name)
        if st is None:
            st = self.series[name] = SeriesStore(name, source=source)
            for ts_seen, before, times in done.values():
                if ts_seen is ts and before == 0:
                    st._join(times)  # a new series arriving with an empty timeline
                    break
        seen = done.get(id(st.times))
        rel: array[float] | None = None
        if seen is None or seen[0] is not ts:
            # the times as plain lists held them: t - t0, computed in C
            rel = array("d", map(operator.sub, ts, repeat(t0)))
            if seen is not None:
                st._unshare(seen[1])  # its partner got other times in this batch
        st._extend_values(vs)
        if self.max_samples is not None:
            mine = rel if rel is not None else array("d", map(operator.sub, ts, repeat(t0)))
            st._count(mine)
        if rel is not None:
            done.setdefault(id(st.times), (ts, len(st.times.arr), st.times))
            st.times.arr.extend(rel)

    def to_series(self) -> dict[str, Series]:
        """Plain-data :class:`Series` of every series."""
        return {k: s.to_series() for k, s in self.series.items()}

    def samples(self) -> int:
        """Number of samples held (all series)."""
        return sum(len(s) for s in self.series.values())

    def meta(self) -> dict[str, Any]:
        """Facts a bounded store adds to ``Recording.meta`` (``{}`` when unbounded):
        ``store`` (its bound, bucket widths, samples received, the most it can hold in
        bytes) and the sampling rate achieved, from every sample received."""
        if self.max_samples is None:
            return {}
        out: dict[str, Any] = {
            "store": {
                "kind": "bounded",
                "max_samples": self.max_samples,
                "bytes_max": BYTES_PER_KEPT * self.max_samples * len(self.series),
                "bucket_ms": {k: s.bucket * 1000 for k, s in self.series.items()},
                "received": {k: int(s.stats[0]) for k, s in self.series.items()},
            }
        }
        rss = self.series.get("ram.rss")
        if rss is not None and rss.stats[0] > 2 and rss.stats[2] > rss.stats[1]:
            n, first, last, gap = rss.stats
            out["samples_per_s"] = round((n - 1) / (last - first), 1)
            out["interval_achieved_ms"] = round((last - first) / (n - 1) * 1000, 4)
            out["max_gap_ms"] = round(gap * 1000, 3)
        return out

    def nbytes(self) -> int:
        """Bytes this store holds in the process, over-allocation included."""
        total = sys.getsizeof(self.series)
        times: dict[int, _Times] = {}
        for s in self.series.values():
            times[id(s.times)] = s.times
            total += sys.getsizeof(s)
            if isinstance(s.v, list):
                total += sys.getsizeof(s.v) + sum(map(sys.getsizeof, s.v))
            else:
                total += sys.getsizeof(s.v)
        return total + sum(sys.getsizeof(tm.arr) for tm in times.values())


def median(xs: array[float]) -> float:
    """``statistics.median(xs)``, exactly, without a list of ``len(xs)`` floats.

    Sorting an hour of 1 ms gaps would build ~115 MB of float objects in the measured
    process; instead values are counted per microsecond bucket (an order-preserving
    key), and only the bucket(s) holding the middle are sorted.

    Example:
        >>> median(array("d", [3.0, 1.0, 2.0, 10.0]))
        2.5
    """
    n = len(xs)
    if n <= MEDIAN_SORT_MAX:
        return statistics.median(xs)
    key_of = (1e6).__mul__
    counts = Counter(map(math.floor, map(key_of, xs)))
    want = {(n - 1) // 2, n // 2}
    below = 0
    lo_key = hi_key = None
    lo_rank = 0
    for key in sorted(counts):
        c = counts[key]
        if lo_key is None and below + c > min(want):
            lo_key, lo_rank = key, below
        if below + c > max(want):
            hi_key = key
            break
        below += c
    assert lo_key is not None and hi_key is not None
    # lo_key <= floor(k) <= hi_key  <=>  lo_key <= k < hi_key + 1, tested in C
    low, high = float(lo_key).__le__, float(hi_key + 1).__gt__
    keep = map(operator.and_, map(low, map(key_of, xs)), map(high, map(key_of, xs)))
    middle = sorted(compress(xs, keep))
    a = middle[(n - 1) // 2 - lo_rank]
    b = middle[n // 2 - lo_rank]
    return a if n % 2 else (a + b) / 2
