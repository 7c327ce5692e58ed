"""The sources of one recording while it runs: started, guarded, collected into the store.

A source that raises is never fatal: the failure goes to the recorder's error list (with
the time, and the source's ``SourceInfo.reason``), the source is stopped and dropped,
and the others carry on. A source whose sampler process ended while recording (killed,
or stopped by someone else: its ``ended()`` says why) is an error too, said once, with
the time after which the timeline has no samples from it; its exact peaks, read by this
process, carry on.

Example:
    >>> from bigviz.testing import FakeClock, FakeSource
    >>> clock = FakeClock()
    >>> live = LiveSources([FakeSource(clock, rss=10)], clock=clock, on_error=print)
    >>> [info.name for info in live.start(t0=clock(), interval_ms=1.0)]
    ['ram']
    >>> live.read_now()
    {'ram': 10}
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from bigviz.data.recording import SourceInfo
from bigviz.recorder._store import SampleStore
from bigviz.recorder.sources import Clock, SampleBatch, Source

__all__ = ["LiveSources"]

#: ``on_error(origin, message)``
ErrorCallback = Callable[[str, str], None]


class LiveSources:
    """Sources being recorded from, and the ones still alive.

    Args:
        sources: every source of the recording (alive or not, for :meth:`meta`).
        clock: the recorder's clock.
        on_error: called with ``(origin, message)`` for each failure.
    """

    def __init__(self, sources: list[Source], *, clock: Clock, on_error: ErrorCallback) -> None:
        self.sources = sources
        self.alive: list[Source] = []
        self.infos: dict[str, SourceInfo] = {}
        self.t0 = 0.0
        self._clock = clock
        self._error = on_error
        self._ended: set[int] = set()  # id() of sources whose sampler's end was reported

    def start(self, *, t0: float, interval_ms: float) -> list[SourceInfo]:
        """Start every source for a recording that began at ``t0`` (on the clock);
        returns their SourceInfos (failures say why)."""
        self.t0 = t0
        out: list[SourceInfo] = []
        for src in self.sources:
            try:
                infos = src.start(clock=self._clock, interval_ms=interval_ms)
            except Exception as exc:
                infos = [
                    SourceInfo(n, False, f"failed to start: {type(exc).__name__}: {exc}")
                    for n in (src.names or (type(src).__name__,))
                ]
                self._error(type(src).__name__, f"source failed to start: {exc!r}")
                with contextlib.suppress(Exception):
                    src.stop()
            else:
                self.alive.append(src)
            for info in infos:
                self.infos[info.name] = info
                out.append(info)
        return out

    def stop(self, store: SampleStore | None) -> None:
        """Stop every live source, then collect what each flushed while stopping."""
        for src in list(self.alive):
            try:
                src.stop()
            except Exception as exc:
                self._error(type(src).__name__, f"stopping failed: {exc!r}")
        for src in list(self.alive):
            self.poll_one(src, store)

    # -- exact peaks -------------------------------------------------------------
    def exact_keys(self) -> set[str]:
        """Peak keys with an exact (kernel or allocator) high-water mark."""
        keys: set[str] = set()
        for src in self.alive:
            with contextlib.suppress(Exception):
                keys |= src.exact_keys()
        return keys

    def why_sampled(self, key: str) -> str:
        """Why peak ``key`` (``"ram"``) is the highest sample, not an exact mark."""
        info = self.infos.get(key)
        if info is not None and info.reason:
            return info.reason
        return f"no source gives an exact high-water mark of {key!r}; the highest sample"

    def read_now(self) -> dict[str, int]:
        """The current value of every peak key."""
        now: dict[str, int] = {}
        for part in self.guard(lambda s: s.read_now()):
            now.update(part)
        return now

    def read_peaks(self) -> list[dict[str, int]]:
        """Each source's high-water marks since its last reset."""
        return self.guard(lambda s: s.read_peaks())

    def reset_peaks(self) -> None:
        """Restart every high-water mark at the current value."""
        self.guard(lambda s: s.reset_peaks())

    # -- timeline ----------------------------------------------------------------
    def poll(self, store: SampleStore | None) -> None:
        """Collect every live source's samples into ``store``."""
        for src in list(self.alive):
            self.poll_one(src, store)

    def poll_one(self, src: Source, store: SampleStore | None) -> None:
        """Collect one source's samples (and its error messages)."""
        try:
            samples: SampleBatch = src.poll()
        except Exception as exc:
            self.drop(src, exc)
            return
        finally:
            for msg in getattr(src, "errors", [])[:]:
                self._error("/".join(src.names), msg)
            if isinstance(getattr(src, "errors", None), list):
                src.errors.clear()  # type: ignore[attr-defined]
        self.check_ended(src)
        if not samples or store is None:
            return
        label = "/".join(src.names) or type(src).__name__
        try:
            store.add(samples, t0=self.t0, source=label)
        except Exception as exc:  # e.g. a custom source giving a time that is no number
            self.drop(src, exc)

    # -- failures ----------------------------------------------------------------
    def check_ended(self, src: Source) -> None:
        """Report (once) that ``src``'s sampler ended while recording, if it did."""
        ended = getattr(src, "ended", None)
        if not callable(ended) or id(src) in self._ended:
            return
        try:
            why = ended()
        except Exception as exc:  # a custom source's check that fails says so
            why = f"its liveness check failed: {exc!r}"
        if not why:
            return
        self._ended.add(id(src))
        t = self._clock() - self.t0
        label = "/".join(src.names) or type(src).__name__
        self._error(label, f"sampler of {label!r} ended at t~{t:.3f}s while recording: {why}; "
                           "the timeline has no samples from it after that")
        for n in src.names:
            info = self.infos.get(n)
            if info is not None and info.available:
                info.reason = f"sampler ended at t~{t:.3f}s: {why}"

    def guard(self, fn: Callable[[Source], Any]) -> list[Any]:
        """Call ``fn`` on every live source; a source that raises is recorded in
        ``Recording.errors`` and dropped, and the rest carry on."""
        out = []
        for src in list(self.alive):
            try:
                out.append(fn(src))
            except Exception as exc:
                self.drop(src, exc)
        return out

    def drop(self, src: Source, exc: BaseException) -> None:
        """Stop ``src`` after it failed, and say when and why."""
        t = self._clock() - self.t0
        label = "/".join(src.names) or type(src).__name__
        self._error(label, f"source {label!r} failed at t={t:.3f}s and was stopped: {exc!r}")
        if src in self.alive:
            self.alive.remove(src)
        for n in src.names:
            info = self.infos.get(n)
            if info is not None and info.available:
                info.reason = f"failed at t={t:.3f}s: {type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            src.stop()
