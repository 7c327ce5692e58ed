"""What a figure reads from a run: the argument checks, time extents, and series thinned
for drawing.

Long series are downsampled keeping each bucket's minimum and maximum, so no peak
disappears; the stacked RAM layers (anonymous, file-backed, shared memory) are thinned
together so that no layer loses its peak either. numpy only: no matplotlib here.

Example:
    >>> import numpy as np
    >>> t, v = downsample(range(10_000), np.arange(10_000.0), max_points=100)
    >>> float(v.max())
    9999.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from bigviz._errors import ConfigError
from bigviz.data.recording import Phase, Recording
from bigviz.data.result import RunResult, Sweep

__all__ = [
    "MAX_POINTS",
    "as_recording",
    "as_results",
    "downsample",
    "keep_indices",
    "phase_end",
    "ram_layers",
    "rec_end",
]

#: Points drawn per series at most; min and max of each bucket are kept.
MAX_POINTS = 3000


def keep_indices(values: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of a min/max-per-bucket subsample of ``values`` (first and last kept).

    Example:
        >>> import numpy as np
        >>> keep_indices(np.array([0.0, 5.0, 1.0]), 10).tolist()
        [0, 1, 2]
    """
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, max_points // 2)
    size = math.ceil(n / buckets)
    padded = np.concatenate([values, np.full(buckets * size - n, values[-1])])
    grid = padded.reshape(buckets, size)
    offsets = np.arange(buckets) * size
    idx = np.concatenate([grid.argmin(axis=1) + offsets, grid.argmax(axis=1) + offsets, [0, n - 1]])
    return np.unique(np.clip(idx, 0, n - 1))


def downsample(
    t: Sequence[float] | np.ndarray[Any, Any],
    v: Sequence[float] | np.ndarray[Any, Any],
    *,
    max_points: int = MAX_POINTS,
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce a series to about ``max_points`` points, keeping every bucket's min and max.

    Drawing 100,000 samples is slow and shows nothing more than this; the peak of the
    result equals the peak of the input, so no spike is hidden.

    Args:
        t: sample times.
        v: sample values (same length).
        max_points: the most points to return (at least 4).

    Returns:
        ``(t, v)`` as numpy arrays, in time order.

    Raises:
        ConfigError: if ``t`` and ``v`` differ in length or ``max_points`` < 4.

    Example:
        >>> import numpy as np
        >>> t, v = downsample(range(100_000), np.sin(np.arange(100_000)), max_points=1000)
        >>> len(t) <= 1002, float(v.max()) == float(np.sin(np.arange(100_000)).max())
        (True, True)
    """
    if len(t) != len(v):
        raise ConfigError(f"downsample: t has {len(t)} samples but v has {len(v)}")
    if max_points < 4:
        raise ConfigError(f"downsample: max_points={max_points} is too small; use >= 4")
    ta = np.asarray(t, dtype=float)
    va = np.asarray(v, dtype=float)
    if len(va) == 0:
        return ta, va
    idx = keep_indices(va, max_points)
    return ta[idx], va[idx]


def as_recording(obj: Recording | RunResult) -> tuple[Recording, RunResult | None]:
    """``(recording, result)`` of what a time-axis figure was given.

    Raises:
        ConfigError: for anything but a Recording or RunResult.

    Example:
        >>> as_recording(Recording())[1] is None
        True
    """
    if isinstance(obj, RunResult):
        return obj.recording, obj
    if isinstance(obj, Recording):
        return obj, None
    raise ConfigError(
        f"cannot plot a {type(obj).__name__}; give a Recording or a RunResult "
        "(for a Sweep use peaks() or sweep_curves())"
    )


def as_results(obj: Sweep | RunResult | Iterable[RunResult]) -> list[RunResult]:
    """The RunResults of what a per-run figure was given.

    Raises:
        ConfigError: for anything that is not a Sweep, a RunResult or RunResults.

    Example:
        >>> as_results([])
        []
    """
    if isinstance(obj, Sweep):
        return list(obj.results)
    if isinstance(obj, RunResult):
        return [obj]
    try:
        items = list(obj)
    except TypeError:
        raise ConfigError(
            f"cannot plot a {type(obj).__name__}; give a Sweep or a list of RunResults"
        ) from None
    for item in items:
        if not isinstance(item, RunResult):
            raise ConfigError(
                f"expected RunResults, got a {type(item).__name__}; give a Sweep or RunResults"
            )
    return items


def phase_end(p: Phase, rec: Recording) -> float:
    """When phase ``p`` ended; a phase still open runs to the end of the recording.

    Example:
        >>> from bigviz.data.recording import Phase
        >>> phase_end(Phase(name="load", start=1.0, end=2.5), Recording())
        2.5
    """
    if p.end is not None:
        return p.end
    last = max((s.t[-1] for s in rec.series.values() if s.t), default=p.start)
    return max(p.start, rec.duration, last)


def rec_end(rec: Recording) -> float:
    """The last moment of a recording: its duration or its last sample, whichever is later.

    Example:
        >>> rec_end(Recording())
        0.0
    """
    last = max((s.t[-1] for s in rec.series.values() if s.t), default=0.0)
    return max(last, rec.duration)


def ram_layers(rec: Recording, max_points: int) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """``(t, tops)``: the cumulative tops of the stacked RAM layers (anonymous, + file-backed,
    + shared memory when any), thinned so that no layer loses its peak; ``None`` without
    anonymous and file-backed samples.

    RSS is RssAnon + RssFile + RssShmem. Shared memory (a checkpoint mapped from tmpfs,
    e.g. ``/dev/shm`` or a tmpfs ``/tmp``; shared anonymous mappings) is neither anonymous
    nor file-backed, so without its own layer the stack ends below the RSS line by exactly
    that much. It is ``rss - anon - file`` on the shared clock: the RssShmem value the
    sampler split off (read every ``status_ms``, so the file/shared split may lag it by
    that long, while the stack's top is RSS at every sample).

    Example:
        >>> ram_layers(Recording(), 100) is None
        True
    """
    anon, file = rec.series.get("ram.anon"), rec.series.get("ram.file")
    if anon is None or not anon.v or file is None or not file.v:
        return None
    ta = np.asarray(anon.t, dtype=float)
    av = np.asarray(anon.v, dtype=float)
    fv = np.asarray(file.v, dtype=float)
    same_clock = file.t == anon.t
    if not same_clock:  # different clocks: bring file-backed onto the anon samples
        fv = np.interp(ta, np.asarray(file.t, dtype=float), fv)
    tops = [av, av + fv]
    rss = rec.series.get("ram.rss")
    if same_clock and rss is not None and rss.t == anon.t:
        shmem = np.maximum(0.0, np.asarray(rss.v, dtype=float) - tops[-1])
        if shmem.any():
            tops.append(tops[-1] + shmem)
    idx = np.unique(np.concatenate([keep_indices(v, max_points) for v in tops]))
    return ta[idx], [v[idx] for v in tops]
