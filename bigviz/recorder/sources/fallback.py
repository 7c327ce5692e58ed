"""Process RAM where Linux's ``/proc`` is missing (macOS, Windows): sampled by psutil.

Without ``/proc`` there is no sidecar reading ``statm``, no ``VmHWM`` and no
``clear_refs``: a thread in the measured process asks psutil for the RSS every interval
(and the USS, which is slower, every ``uss_ms``). Everything it gives is *sampled*: a
spike shorter than the interval can be missed, and the thread needs the GIL, so a
workload holding it for long is sampled less often. ``SourceInfo.reason`` and
``Recording.meta["ram_peak_method"]`` say so, and no phase claims an exact peak.

Example:
    >>> src = PsutilSource()
    >>> src.names
    ('ram', 'sys')
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from bigviz.data.recording import SourceInfo
from bigviz.recorder.sources.base import Clock, Samples, Source

__all__ = ["SAMPLED_WHY", "PsutilSource", "psutil_available"]

#: what every figure of this source is, in one sentence
SAMPLED_WHY = (
    "no Linux /proc here: RSS and USS are sampled by psutil on a thread in this process "
    "(peaks are the highest samples, not exact; a spike between samples is missed)"
)


def psutil_available() -> bool:
    """True when psutil can be imported.

    Example:
        >>> isinstance(psutil_available(), bool)
        True
    """
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


class PsutilSource(Source):
    """RSS/USS timeline and system available RAM from psutil, all sampled.

    Args:
        pid: process to measure (default: this one).
        proc: sample ``ram.rss`` / ``ram.uss``.
        system: sample ``sys.available``.
        uss_ms: how often the USS is read (it walks the memory map: slower than RSS).

    Example:
        >>> import time
        >>> src = PsutilSource()
        >>> infos = src.start(clock=time.monotonic, interval_ms=5.0)
        >>> infos[0].exact, "psutil" in (infos[0].reason or "")
        (False, True)
        >>> src.stop()
    """

    names = ("ram", "sys")
    peak_series = {"ram": "ram.rss"}  # noqa: RUF012

    def __init__(
        self, pid: int | None = None, *, proc: bool = True, system: bool = True,
        uss_ms: float = 200.0,
    ) -> None:  # fmt: skip
        self.pid = os.getpid() if pid is None else pid
        self.proc = proc
        self.system = system
        self.uss_s = uss_ms / 1000.0
        self.errors: list[str] = []
        self._samples: Samples = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: Any = None
        self._psutil: Any = None
        self._clock: Clock = time.monotonic

    def start(self, *, clock: Clock, interval_ms: float) -> list[SourceInfo]:
        try:
            import psutil
        except ImportError:
            why = "no Linux /proc and psutil is not installed (pip install psutil)"
            return [SourceInfo("ram", False, why), SourceInfo("sys", False, why)]
        self._psutil = psutil
        self._clock = clock
        try:
            self._process = psutil.Process(self.pid)
        except psutil.Error as exc:
            why = f"cannot read process {self.pid} with psutil: {exc}"
            return [SourceInfo("ram", False, why), SourceInfo("sys", False, why)]
        self._tick(uss=True)  # a first sample before the user's code runs
        self._thread = threading.Thread(
            target=self._run, args=(interval_ms / 1000.0,), name="bigviz-psutil", daemon=True
        )
        self._thread.start()
        infos = [
            SourceInfo("ram", True, SAMPLED_WHY, exact=False, series=["ram.rss", "ram.uss"])
            if self.proc
            else SourceInfo("ram", False, "not requested (sources=...)")
        ]
        infos.append(
            SourceInfo("sys", True, series=["sys.available"])
            if self.system
            else SourceInfo("sys", False, "not requested (sources=...)")
        )
        return infos

    def _put(self, name: str, t: float, v: int) -> None:
        ts, vs = self._samples.setdefault(name, ([], []))
        ts.append(t)
        vs.append(int(v))

    def _tick(self, *, uss: bool) -> None:
        t = self._clock()
        try:
            with self._lock:
                if self.proc:
                    if uss:
                        full = self._process.memory_full_info()
                        self._put("ram.rss", t, full.rss)
                        self._put("ram.uss", t, full.uss)
                    else:
                        self._put("ram.rss", t, self._process.memory_info().rss)
                if self.system:
                    self._put("sys.available", t, self._psutil.virtual_memory().available)
        except self._psutil.AccessDenied:
            if uss:  # USS needs more rights than RSS on some systems: keep the RSS
                self._tick(uss=False)
        except self._psutil.Error as exc:
            self.errors.append(f"psutil: {exc}")
            self._stop.set()

    def _run(self, interval: float) -> None:
        next_uss = self._clock() + self.uss_s
        while not self._stop.wait(interval):
            now = self._clock()
            self._tick(uss=now >= next_uss)
            if now >= next_uss:
                next_uss = now + self.uss_s

    def poll(self) -> Samples:
        with self._lock:
            out, self._samples = self._samples, {}
        return out

    def read_now(self) -> dict[str, int]:
        if not self.proc or self._process is None:
            return {}
        try:
            return {"ram": int(self._process.memory_info().rss)}
        except self._psutil.Error:
            return {}

    def meta(self) -> dict[str, Any]:
        return {"ram_peak_method": f"max of samples ({SAMPLED_WHY})"}

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
