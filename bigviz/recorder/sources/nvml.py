"""NVML (``pynvml`` from nvidia-ml-py) as a memory source: the device's view of GPU memory.

Example:
    >>> NvmlSource(pid=1).names
    ('nvml',)
"""

from __future__ import annotations

import os
import time
from typing import Any

from bigviz.data.recording import SourceInfo
from bigviz.recorder.sources.base import Clock, Samples, Source

__all__ = ["NvmlSource"]


class NvmlSource(Source):
    """NVML (``pynvml`` from nvidia-ml-py): device memory used by everyone
    (``nvml:N.used``, CUDA contexts included) and by this process (``nvml:N.process``).
    Sampled, never exact."""

    names = ("nvml",)

    def __init__(self, pid: int | None = None, *, every_ms: float = 20.0) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.every = every_ms / 1000.0
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._names: list[str] = []
        self._clock: Clock = time.monotonic
        self._next = 0.0
        self._driver = ""

    def start(self, *, clock: Clock, interval_ms: float) -> list[SourceInfo]:
        self._clock = clock
        try:
            import pynvml
        except ImportError as exc:
            return [
                SourceInfo(
                    "nvml", False, f"pynvml is not installed ({exc}); pip install nvidia-ml-py"
                )
            ]
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            return [
                SourceInfo(
                    "nvml",
                    False,
                    f"NVML could not start ({type(exc).__name__}: {exc}): "
                    "no NVIDIA driver or GPU visible to this process",
                )
            ]
        self._nvml = pynvml
        try:
            n = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
            self._names = [str(pynvml.nvmlDeviceGetName(h)) for h in self._handles]
            self._driver = str(pynvml.nvmlSystemGetDriverVersion())
        except Exception as exc:
            self.stop()
            return [SourceInfo("nvml", False, f"NVML started but listing GPUs failed: {exc}")]
        if not self._handles:
            self.stop()
            return [SourceInfo("nvml", False, "NVML sees no GPU (nvmlDeviceGetCount() is 0)")]
        series = [f"nvml:{i}.{k}" for i in range(len(self._handles)) for k in ("used", "process")]
        return [SourceInfo("nvml", True, series=series)]

    def poll(self) -> Samples:
        if self._nvml is None:
            return {}
        now = self._clock()
        if now < self._next:
            return {}
        self._next = now + self.every
        nv = self._nvml
        out: Samples = {}
        for i, h in enumerate(self._handles):
            out[f"nvml:{i}.used"] = ([now], [int(nv.nvmlDeviceGetMemoryInfo(h).used)])
            mine = 0
            for p in nv.nvmlDeviceGetComputeRunningProcesses(h):
                if p.pid == self.pid and p.usedGpuMemory is not None:
                    mine += int(p.usedGpuMemory)
            out[f"nvml:{i}.process"] = ([now], [mine])
        return out

    def meta(self) -> dict[str, Any]:
        if not self._names:
            return {}
        return {"gpu_names": self._names, "nvidia_driver": self._driver}

    def stop(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            finally:
                self._nvml = None
