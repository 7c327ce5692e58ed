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

from bigviz.data.recording import Series

__all__ = ["SampleStore", "SeriesStore", "median"]

#: above this many items, :func:`median` avoids sorting a list of Python floats
MEDIAN_SORT_MAX = 100_000


class _Times:
    """One time array and the series whose values are aligned with it."""

    __slots__ = ("arr", "owners")

    def __init__(self, arr: array[float] | None = None) -> None:
        self.arr: array[float] = array("d") if arr is None else arr
        self.owners: list[SeriesStore] = []


class SeriesStore:
    """Samples of one series: times (possibly shared) and values, compactly."""

    __slots__ = ("emitted", "name", "source", "times", "unit", "v")

    def __init__(self, name: str, *, unit: str = "bytes", source: str = "") -> None:
        self.name = name
        self.unit = unit
        self.source = source
        self.times = _Times()
        self.times.owners.append(self)
        self.v: array[int] | list[int] = array("q")
        #: how many samples were already streamed to ``on_event``
        self.emitted = 0

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


class SampleStore:
    """All series of one recording, appended batch by batch.

    Example:
        >>> store = SampleStore()
        >>> ts = [10.001, 10.002]
        >>> store.add({"ram.rss": (ts, [5, 6]), "ram.anon": (ts, [3, 4])}, t0=10.0, source="ram")
        >>> store.to_series()["ram.anon"].v, store.series["ram.rss"].t is store.series["ram.anon"].t
        ([3, 4], True)
    """

    def __init__(self) -> None:
        self.series: dict[str, SeriesStore] = {}

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
        if rel is not None:
            done.setdefault(id(st.times), (ts, len(st.times.arr), st.times))
            st.times.arr.extend(rel)

    def to_series(self) -> dict[str, Series]:
        """Plain-data :class:`Series` of every series."""
        return {k: s.to_series() for k, s in self.series.items()}

    def samples(self) -> int:
        """Number of samples held (all series)."""
        return sum(len(s) for s in self.series.values())

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
