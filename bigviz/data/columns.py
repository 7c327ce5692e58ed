"""Packed timelines: the compact encoding of a Recording's series in JSON (schema 2).

A 1 ms timeline written as JSON lists costs ~90–110 bytes per tick (a 17-digit time
and a 10-digit value per series); a 30-minute recording ~200 MB. Schema 2 writes each
series' ``t`` and ``v`` as a *packed column*::

    {"encoding": "zlib+shuffle+delta-i64", "n": 1800000, "data": "<base64>"}

- ``v`` (integers): the differences ``v[i] - v[i-1]`` (``v[-1]`` = 0) as little-endian
  int64, byte-shuffled (all first bytes, then all second bytes, …) and zlib-compressed.
- ``t`` (float seconds), encoding ``zlib+shuffle+delta-ns-i64``: integer nanoseconds
  ``k[i] = round((t[i] + origin) * 1e9)``, delta-coded the same way; decoded as
  ``k[i] / 1e9 - origin``. ``origin`` (a float in the header, the recording's monotonic
  start) makes this exact for times the recorder took from a nanosecond clock; when a
  time is not, ``"fix": true`` and ``n`` more int64 follow: the difference between the
  IEEE-754 bit patterns of the true and the decoded time. Either way every float comes
  back bit for bit.
- ``{"encoding": "same-t", "as": "ram.rss"}``: the same times as an earlier series of the
  recording (``ram.rss``/``anon``/``file``/``shmem`` come from one read).

A series whose values are not all int64-sized integers, or whose times are not finite,
stays plain lists (schema 1's form), which a reader takes in either schema.

Example:
    >>> from bigviz.data.recording import Series
    >>> packed = pack_series({"ram.rss": Series("ram.rss", [0.5, 0.75], [10, 12])})
    >>> packed["ram.rss"]["v"]["encoding"], packed["ram.rss"]["v"]["n"]
    ('zlib+shuffle+delta-i64', 2)
    >>> unpack_series(packed, "r.json")["ram.rss"].v
    [10, 12]
"""

from __future__ import annotations

import base64
import binascii
import math
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bigviz._errors import ReportError
from bigviz.data.serde import to_plain

if TYPE_CHECKING:
    from bigviz.data.recording import Series

__all__ = [
    "ENC_SAME_T",
    "ENC_T",
    "ENC_V",
    "column_bytes",
    "pack_series",
    "unpack_series",
]

#: encoding of a column of integers (values)
ENC_V = "zlib+shuffle+delta-i64"
#: encoding of a column of times (float seconds via integer nanoseconds)
ENC_T = "zlib+shuffle+delta-ns-i64"
#: a time column that repeats an earlier series' times
ENC_SAME_T = "same-t"
#: largest magnitude packed: deltas of values within it always fit an int64
_LIMIT = 2**62
_NS = 1e9
#: zlib level: 1 compresses these columns within ~15 % of level 9, several times faster
_LEVEL = 1
_WIDTH = 8  # bytes per int64


def _np() -> Any:
    # numpy only when a timeline is written or read: `import bigviz.data` stays light
    import numpy

    return numpy


def _column(encoding: str, ints: Any, **extra: Any) -> dict[str, Any]:
    """A packed column of int64 ``ints``: little-endian, byte-shuffled, zlib, base64."""
    np = _np()
    raw = np.ascontiguousarray(ints, dtype="<i8").view(np.uint8).reshape(-1, _WIDTH)
    data = base64.b64encode(zlib.compress(raw.T.tobytes(), _LEVEL)).decode("ascii")
    return {"encoding": encoding, "n": len(ints), **extra, "data": data}


def _deltas(a: Any) -> Any:
    np = _np()
    return np.diff(a, prepend=np.zeros(1, dtype=a.dtype))


def _pack_values(v: list[int]) -> dict[str, Any] | None:
    np = _np()
    try:
        a = np.array(v)
    except (OverflowError, ValueError, TypeError):
        return None
    if a.dtype != np.int64 or a.ndim != 1 or a.min() <= -_LIMIT or a.max() >= _LIMIT:
        return None  # floats or huge ints: kept exactly as a plain list
    return _column(ENC_V, _deltas(a))


def _pack_times(t: list[float], origin: float) -> dict[str, Any] | None:
    np = _np()
    try:
        a = np.array(t, dtype=np.float64)
    except (OverflowError, ValueError, TypeError):
        return None
    if a.ndim != 1 or not math.isfinite(origin) or not np.isfinite(a).all():
        return None
    if float(np.abs(a + origin).max()) * _NS >= _LIMIT / 2:
        return None
    k = np.rint((a + origin) * _NS).astype(np.int64)
    back = _times_of(k, origin)
    have, got = a.view(np.int64), back.view(np.int64)
    if np.array_equal(have, got):
        return _column(ENC_T, _deltas(k), origin=origin, fix=False)
    # not whole nanoseconds after origin: keep the bit-pattern differences too
    both = np.concatenate([_deltas(k), have - got])
    col = _column(ENC_T, both, origin=origin, fix=True)
    col["n"] = len(t)
    return col


def _times_of(k: Any, origin: float) -> Any:
    return k / _NS - origin if origin else k / _NS


def pack_series(series: Mapping[str, Series], origin: float = 0.0) -> dict[str, Any]:
    """The ``series`` object of a schema-2 Recording: every series with packed columns.

    Args:
        series: name -> :class:`~bigviz.data.recording.Series`.
        origin: added to every time before it is counted in nanoseconds (the recording's
            monotonic start, ``meta["t0_monotonic"]``: then times pack exactly without
            correction bits).
    """
    out: dict[str, Any] = {}
    packed_t: list[tuple[str, list[float]]] = []
    for key, s in series.items():
        item: dict[str, Any] = {"name": s.name, "t": None, "v": None, "unit": s.unit,
                                "source": s.source}  # fmt: skip
        if s.t and len(s.t) == len(s.v):
            same = next((k for k, t in packed_t if len(t) == len(s.t) and t == s.t), None)
            if same is not None:
                item["t"] = {"encoding": ENC_SAME_T, "as": same}
            elif (tcol := _pack_times(s.t, origin)) is not None:
                item["t"] = tcol
                packed_t.append((key, s.t))
            vcol = _pack_values(s.v)
            if vcol is not None:
                item["v"] = vcol
        for f in ("t", "v"):  # not packed: plain lists (non-finite floats as strings)
            if item[f] is None:
                item[f] = to_plain(getattr(s, f))
        out[key] = item
    return out


def column_bytes(col: Mapping[str, Any]) -> int:
    """Bytes a well-formed packed column decompresses to (``n`` int64, twice with fix)."""
    n = col.get("n")
    n = n if isinstance(n, int) and not isinstance(n, bool) else 0
    return n * _WIDTH * (2 if col.get("fix") is True else 1)


def _raw(col: Mapping[str, Any], what: str) -> Any:
    """The int64 array of a column that :func:`bigviz.data.validate.check_columns`
    passed: never inflates more than the bytes its header declares."""
    want = column_bytes(col)
    try:
        blob = base64.b64decode(col["data"], validate=True)
        d = zlib.decompressobj()
        raw = d.decompress(blob, want)  # bounded: a zip bomb stops at the declared size
        complete = d.eof and not d.unconsumed_tail and not d.unused_data
    except (binascii.Error, zlib.error, ValueError) as exc:
        raise ReportError(f"{what}: the packed data is corrupt ({exc}); re-export it") from None
    if len(raw) != want or not complete:
        raise ReportError(
            f"{what}: the packed data does not hold the {col['n']} samples its header "
            "declares; the file is corrupt: re-export it"
        )
    np = _np()
    shuffled = np.frombuffer(raw, dtype=np.uint8).reshape(_WIDTH, -1)
    return np.ascontiguousarray(shuffled.T).view("<i8").reshape(-1).astype(np.int64, copy=False)


def _unpack_values(col: Any, what: str) -> list[int]:
    if isinstance(col, list):
        return col
    out: list[int] = _raw(col, what).cumsum().tolist()
    return out


def _unpack_times(col: Any, what: str, done: Mapping[str, list[float]]) -> list[float]:
    if isinstance(col, list):
        return col
    if col["encoding"] == ENC_SAME_T:
        ref = col.get("as")
        if not isinstance(ref, str) or ref not in done:
            raise ReportError(
                f"{what}: 'same-t' names {str(ref)[:40]!r}, not an earlier packed series; "
                "the file is corrupt: re-export it"
            )
        return list(done[ref])  # a list of its own; the float objects are shared
    ints = _raw(col, what)
    n, origin = col["n"], float(col["origin"])
    back = _times_of(ints[:n].cumsum(), origin)
    if col.get("fix"):
        back = (back.view(_np().int64) + ints[n:]).view(_np().float64)
    out: list[float] = back.tolist()
    return out


def unpack_series(data: Mapping[str, Any], where: str) -> dict[str, Series]:
    """Series objects from a Recording's ``series`` data (packed or plain lists).

    Plain lists are passed through as they are (the type checks of
    :func:`~bigviz.data.serde.from_plain` follow); packed columns must already have
    passed :func:`bigviz.data.validate.check_columns`.

    Raises:
        ReportError: corrupt packed data, naming the series.
    """
    from bigviz.data.recording import Series

    out: dict[str, Any] = {}
    times: dict[str, list[float]] = {}
    for key, item in data.items():
        what = f"{where}: series {key!r}"
        if not isinstance(item, dict) or not any(isinstance(item.get(f), dict) for f in ("t", "v")):
            out[key] = item  # schema-1 form: from_plain checks it
            continue
        tcol, vcol = item.get("t"), item.get("v")
        t = _unpack_times(tcol, f"{what}.t", times)
        v = _unpack_values(vcol, f"{what}.v")
        if isinstance(tcol, dict) and tcol.get("encoding") == ENC_T:
            times[key] = t
        fields = {"name": key, "unit": "bytes", "source": "", **item}
        # decoded columns are floats / ints in range by construction; a plain half, or a
        # field of the wrong type, goes through from_plain's checks
        if (
            all(isinstance(fields[f], str) for f in ("name", "unit", "source"))
            and isinstance(tcol, dict)
            and isinstance(vcol, dict)
        ):
            out[key] = Series(fields["name"], t, v, fields["unit"], fields["source"])
        else:
            out[key] = {**item, "t": t, "v": v}
    return out
