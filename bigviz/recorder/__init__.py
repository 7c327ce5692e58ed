"""Record RAM and VRAM over time, with named phases and exact per-phase peaks.

Example:
    >>> import bigviz
    >>> with bigviz.record(interval_ms=1.0) as rec:
    ...     with rec.phase("build model"):
    ...         weights = bytearray(16 << 20)
    ...     rec.mark("checkpoint opened")
    >>> [p.name for p in rec.recording.phases]
    ['build model']

See :class:`Recorder` for the options, and :mod:`bigviz.data.recording` for the data.

The package, by concern: :mod:`._recorder` (the Recorder), :mod:`.phases` (open phases and
the fold of exact peaks, shared with the process-tree sampler), :mod:`.sources` (proc RAM
via the :mod:`.sidecar` process, CUDA, NVML; psutil where ``/proc`` is missing),
:mod:`.procfs` (the one ``/proc`` reader), :mod:`.hwm` (``VmHWM`` resets off the sampling
thread, and when a tree phase's peak is exact),
:mod:`._instrument` (automatic loader phases), :mod:`.tree` and :mod:`.markers` (the
process-tree sampler of ``bigviz profile``), :mod:`.profiler` (``profile_command``),
:mod:`.merge` (putting recordings on one clock).

The recorder's timeline lives in the measured process and so is part of the RSS it
reports: ~12 bytes per sample, ~2.3 MB per minute at 1 ms. ``Recording.meta`` says how
much exactly (``"recorder_bytes"``, ``"recorder_bytes_per_sample"``).
"""

from __future__ import annotations

from bigviz.data.recording import Mark, Phase, Recording, Series, SourceInfo
from bigviz.recorder._recorder import Recorder, record
from bigviz.recorder.sources import SOURCE_NAMES, CudaSource, NvmlSource, ProcSource, Source

__all__ = [
    "SOURCE_NAMES",
    "CudaSource",
    "Mark",
    "NvmlSource",
    "Phase",
    "ProcSource",
    "Recorder",
    "Recording",
    "Series",
    "Source",
    "SourceInfo",
    "record",
]

