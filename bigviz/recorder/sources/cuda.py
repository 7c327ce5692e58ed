"""The torch CUDA caching allocator as a memory source: ``cuda:N.allocated`` / ``.reserved``.

bigviz never imports torch to look: the source stays off until torch is imported and
CUDA initialised in the measured process.

Example:
    >>> CudaSource().names
    ('cuda',)
"""

from __future__ import annotations

import sys
import time
from typing import Any

from bigviz.data.recording import SourceInfo
from bigviz.recorder.sources.base import Clock, Samples, Source

__all__ = ["CudaSource"]


def _torch() -> Any:
    """torch if it is already imported, else None (bigviz never imports torch to check).

    A torch still being imported (by the user's thread while the background poll runs) is
    treated as not imported yet: its attributes, ``torch.version`` among them, may not
    exist until the import finishes.
    """
    torch = sys.modules.get("torch")
    if torch is None or getattr(getattr(torch, "__spec__", None), "_initializing", False):
        return None
    return torch


class CudaSource(Source):
    """The torch CUDA caching allocator, per device: ``cuda:N.allocated`` / ``.reserved``.

    Only used when torch is already imported and CUDA is initialised; if CUDA initialises
    during the recording (the first ``.to("cuda")``), the source switches itself on then.
    Exact per-phase peaks come from ``max_memory_allocated`` / ``reset_peak_memory_stats``.
    """

    names = ("cuda",)

    def __init__(self, *, every_ms: float = 10.0) -> None:
        self.every = every_ms / 1000.0
        self._devices: list[int] = []
        self._info = SourceInfo("cuda", False, "not started")
        self._clock: Clock = time.monotonic
        self._next = 0.0
        self._why_not = ""

    def _activate(self) -> bool:
        if self._devices:
            return True
        torch = _torch()
        if torch is None:
            self._why_not = (
                "torch is not imported in this process, so there are no CUDA tensors to measure"
            )
            return False
        if getattr(torch.version, "cuda", None) is None:
            self._why_not = (
                f"this torch build ({torch.__version__}) has no CUDA support "
                "(torch.version.cuda is None)"
            )
            return False
        if not torch.cuda.is_initialized():
            self._why_not = (
                "CUDA is not initialised in this process yet (no tensor on a GPU); "
                "the source turns on when it is"
            )
            return False
        self._devices = list(range(torch.cuda.device_count()))
        if not self._devices:
            self._why_not = "torch.cuda.device_count() is 0: no GPU visible"
            return False
        self._info.available = True
        self._info.reason = None
        self._info.exact = True
        self._info.series = [
            f"cuda:{i}.{k}" for i in self._devices for k in ("allocated", "reserved")
        ]
        for i in self._devices:
            torch.cuda.reset_peak_memory_stats(i)
        return True

    def start(self, *, clock: Clock, interval_ms: float) -> list[SourceInfo]:
        self._clock = clock
        if not self._activate():
            self._info = SourceInfo("cuda", False, self._why_not)
        return [self._info]

    def poll(self) -> Samples:
        now = self._clock()
        if now < self._next or not self._activate():
            return {}
        self._next = now + self.every
        cuda = _torch().cuda
        out: Samples = {}
        for i in self._devices:
            out[f"cuda:{i}.allocated"] = ([now], [int(cuda.memory_allocated(i))])
            out[f"cuda:{i}.reserved"] = ([now], [int(cuda.memory_reserved(i))])
        return out

    def read_now(self) -> dict[str, int]:
        if not self._activate():
            return {}
        cuda = _torch().cuda
        return {f"cuda:{i}": int(cuda.memory_allocated(i)) for i in self._devices}

    def read_peaks(self) -> dict[str, int]:
        if not self._devices:
            return {}
        cuda = _torch().cuda
        return {f"cuda:{i}": int(cuda.max_memory_allocated(i)) for i in self._devices}

    def reset_peaks(self) -> None:
        if self._devices:
            for i in self._devices:
                _torch().cuda.reset_peak_memory_stats(i)

    def exact_keys(self) -> set[str]:
        return {f"cuda:{i}" for i in self._devices}

    def meta(self) -> dict[str, Any]:
        torch = _torch()
        if torch is None:
            return {}
        m: dict[str, Any] = {"cuda_version": getattr(torch.version, "cuda", None)}
        if self._devices:
            m["cuda_devices"] = [torch.cuda.get_device_name(i) for i in self._devices]
        elif self._why_not:
            m["cuda_unavailable"] = self._why_not
        return m
