"""Memory sources the Recorder reads: process RAM (sidecar), CUDA allocator, NVML, and
psutil where Linux's ``/proc`` is missing (:mod:`.fallback`).

One module per source, and :mod:`.base` for the protocol they share (subclass
:class:`Source` to feed the recorder anything, as :class:`bigviz.testing.FakeSource` does).

Example:
    >>> from bigviz.recorder.sources import SOURCE_NAMES
    >>> SOURCE_NAMES
    ('ram', 'sys', 'cuda', 'nvml')
"""

from __future__ import annotations

from bigviz.recorder.sources.base import SOURCE_NAMES, Clock, SampleBatch, Samples, Source
from bigviz.recorder.sources.cuda import CudaSource
from bigviz.recorder.sources.fallback import PsutilSource
from bigviz.recorder.sources.nvml import NvmlSource
from bigviz.recorder.sources.proc import ProcSource, sidecar_command, sidecar_target

__all__ = [
    "SOURCE_NAMES",
    "Clock",
    "CudaSource",
    "NvmlSource",
    "ProcSource",
    "PsutilSource",
    "SampleBatch",
    "Samples",
    "Source",
    "sidecar_command",
    "sidecar_target",
]
