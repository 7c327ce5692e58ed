"""Test stand-ins shipped with bigviz: a fake clock and a fake memory source.

Like httpx's ``MockTransport``: plug them into a real :class:`bigviz.recorder.Recorder`
and its logic (nested phases, folded exact peaks, sampled fallbacks, marks, the event
stream, a source failing mid-run) runs deterministically, without timing luck and
without a sidecar process.

Example:
    >>> from bigviz.recorder import record
    >>> from bigviz.testing import FakeClock, FakeSource
    >>> clock = FakeClock()
    >>> ram = FakeSource(clock, rss=100)
    >>> with record(sources=[ram], clock=clock, background=False, instrument=False) as rec:
    ...     with rec.phase("load"):
    ...         clock.advance(0.010)
    ...         ram.spike(900)       # a spike no sample saw; the exact peak still has it
    ...         ram.set(rss=300)
    >>> p = rec.recording.phase("load")
    >>> (p.ram_start, p.ram_peak, p.ram_end, p.ram_peak_exact)
    (100, 900, 300, True)
"""

from __future__ import annotations

import builtins
from typing import Any

from bigviz.data.recording import SourceInfo
from bigviz.recorder.sources import Clock, Samples, Source

__all__ = ["FakeChild", "FakeClock", "FakeSource"]


class FakeClock:
    """A monotonic clock that only moves when told to.

    Args:
        start: the initial reading, in seconds.

    Example:
        >>> c = FakeClock(10.0)
        >>> c.advance(0.5)
        >>> c()
        10.5
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds!r} s)")
        self.now += seconds


class FakeSource(Source):
    """A RAM (and optionally VRAM) source whose values the test sets.

    Every :meth:`set` is one sample at the clock's current time; :meth:`spike` moves the
    exact high-water mark without a sample (the short spike a sampler misses). The
    peak key ``"ram"`` is driven by the ``rss`` value and ``"cuda:N"`` keys by
    ``cuda_N_allocated`` values, mirroring the real sources.

    Args:
        clock: the clock that stamps samples (usually a :class:`FakeClock`).
        exact: whether the source has a resettable exact high-water mark (like
            ``clear_refs``); ``False`` makes the recorder fall back to sampled peaks.
        available: ``False`` makes the source report itself unavailable.
        reason: the reason given when unavailable.
        name: the source name (``"ram"``).
        **values: initial values, e.g. ``rss=100, anon=60, file=40``; a name ``x``
            becomes series ``ram.x`` unless it contains a dot or colon already.

    Example:
        >>> clock = FakeClock()
        >>> src = FakeSource(clock, rss=10)
        >>> src.set(rss=20)
        >>> src.poll()["ram.rss"]
        ([1000.0], [20])
    """

    def __init__(
        self,
        clock: Clock,
        *,
        exact: bool = True,
        available: bool = True,
        reason: str | None = None,
        name: str = "ram",
        **values: int,
    ) -> None:
        self.clock = clock
        self.exact = exact
        self.available = available
        self.reason = reason
        self.names = (name,)
        self.peak_series = {"ram": "ram.rss"}
        self.values: dict[str, int] = {}
        self.hwm: dict[str, int] = {}
        self._pending: Samples = {}
        self._fail: BaseException | None = None
        self._fail_on: str = "poll"
        self.started = False
        self.stopped = False
        self.resets = 0
        self.errors: list[str] = []
        self._update(values, sample=False)

    @staticmethod
    def series_name(key: str) -> str:
        """``"rss"`` → ``"ram.rss"``; ``"cuda_0_allocated"`` → ``"cuda:0.allocated"``."""
        if key.startswith("cuda_"):
            _, dev, what = key.split("_", 2)
            return f"cuda:{dev}.{what}"
        return key if ("." in key or ":" in key) else f"ram.{key}"

    @staticmethod
    def _peak_key(series: str) -> str | None:
        if series == "ram.rss":
            return "ram"
        if series.startswith("cuda:") and series.endswith(".allocated"):
            return series[: -len(".allocated")]
        return None

    def _update(self, values: dict[str, int], *, sample: bool) -> None:
        t = self.clock()
        for key, v in values.items():
            series = self.series_name(key)
            self.values[series] = int(v)
            pk = self._peak_key(series)
            if pk is not None:
                self.hwm[pk] = max(self.hwm.get(pk, int(v)), int(v))
            if sample:
                ts, vs = self._pending.setdefault(series, ([], []))
                ts.append(t)
                vs.append(int(v))

    # -- driving it from a test ------------------------------------------------
    def set(self, **values: int) -> None:
        """Set current values and record one sample of each at the current time."""
        self._update(values, sample=True)

    def spike(self, rss: int | None = None, **values: int) -> None:
        """Raise the exact high-water mark to ``rss`` (and cuda keys) without a sample;
        the current value is unchanged afterwards (the spike came and went)."""
        if rss is not None:
            values["rss"] = rss
        for key, v in values.items():
            pk = self._peak_key(self.series_name(key))
            if pk is not None:
                self.hwm[pk] = max(self.hwm.get(pk, int(v)), int(v))

    def fail(self, exc: BaseException | None = None, *, on: str = "poll") -> None:
        """Make the next call of ``on`` (``"poll"``, ``"read_now"``, ``"read_peaks"``,
        ``"reset_peaks"``, ``"start"``) raise ``exc`` (default ``OSError``)."""
        self._fail = exc or OSError("fake source failure")
        self._fail_on = on

    def _maybe_fail(self, what: str) -> None:
        if self._fail is not None and self._fail_on == what:
            exc, self._fail = self._fail, None
            raise exc

    # -- the Source protocol ---------------------------------------------------
    def start(self, *, clock: Clock, interval_ms: float) -> list[SourceInfo]:
        self._maybe_fail("start")
        self.started = True
        if not self.available:
            return [SourceInfo(self.names[0], False, self.reason or "fake: unavailable")]
        return [SourceInfo(self.names[0], True, exact=self.exact, series=sorted(self.values))]

    def poll(self) -> Samples:
        self._maybe_fail("poll")
        if not self.available:
            return {}
        out, self._pending = self._pending, {}
        return out

    def read_now(self) -> dict[str, int]:
        self._maybe_fail("read_now")
        if not self.available:
            return {}
        out = {}
        for series, v in self.values.items():
            pk = self._peak_key(series)
            if pk is not None:
                out[pk] = v
        return out

    def read_peaks(self) -> dict[str, int]:
        self._maybe_fail("read_peaks")
        if not self.available or not self.exact:
            return {}
        return dict(self.hwm)

    def reset_peaks(self) -> None:
        self._maybe_fail("reset_peaks")
        self.resets += 1
        self.hwm = {k: v for k, v in self.read_now().items()}

    def exact_keys(self) -> builtins.set[str]:
        return set(self.hwm) if (self.exact and self.available) else set()

    def meta(self) -> dict[str, Any]:
        return {"fake_source": True}

    def stop(self) -> None:
        self.stopped = True

    def sample_now(self) -> None:
        """Record one sample of every current value (a sampler tick)."""
        self._update(dict(self.values), sample=True)


class FakeChild:
    """A scripted process for :func:`bigviz.runner.supervisor.supervise`: it sends events,
    holds memory and exits at set times of a :class:`FakeClock`, and dies of SIGKILL
    (exit code ``-9``) when killed. Pass ``sleep=clock.advance`` to the supervisor.

    Args:
        clock: the fake clock the supervisor also reads.
        pid: the process id it claims.

    Example:
        >>> clock = FakeClock()
        >>> child = FakeChild(clock)
        >>> child.memory_at(0.0, rss=100)
        >>> child.exit_at(1.0, 0)
        >>> (child.poll(), child.memory()["rss"])
        (None, 100)
    """

    def __init__(self, clock: FakeClock, *, pid: int = 4242) -> None:
        self.clock = clock
        self.pid = pid
        self.t0 = clock()
        self.killed = False
        self._events: list[tuple[float, dict[str, Any]]] = []
        self._memory: list[tuple[float, dict[str, int]]] = []
        self._exit: tuple[float, int] | None = None
        self._code: int | None = None

    def send_at(self, t: float, *events: dict[str, Any]) -> None:
        """Send ``events`` ``t`` seconds after the child was made."""
        self._events.extend((t, ev) for ev in events)
        self._events.sort(key=lambda p: p[0])

    def memory_at(self, t: float, **values: int) -> None:
        """From ``t`` on, :meth:`memory` reads ``values`` (``rss``, ``anon``, ``file``,
        ``shmem``)."""
        self._memory.append((t, dict(values)))
        self._memory.sort(key=lambda p: p[0])

    def exit_at(self, t: float, code: int) -> None:
        """Exit with ``code`` (negative: that signal) at ``t``."""
        self._exit = (t, code)

    def _now(self) -> float:
        return self.clock() - self.t0

    def fileno(self) -> int | None:
        """No descriptor: the supervisor polls :meth:`read`."""
        return None

    def read(self) -> bytes | None:
        """The frames of every event due by now; ``None`` once it exited and sent all."""
        from bigviz.runner.events import encode

        due = [ev for t, ev in self._events if t <= self._now()]
        self._events = [(t, ev) for t, ev in self._events if t > self._now()]
        if self.poll() is not None:
            self._events.clear()  # a dead process sends nothing more
            if not due:
                return None
        return b"".join(encode(ev) for ev in due)

    def poll(self) -> int | None:
        """The exit code once it exited."""
        if self._code is None and self._exit is not None and self._now() >= self._exit[0]:
            self._code = self._exit[1]
        return self._code

    def kill(self) -> None:
        """Die of SIGKILL now (if still running)."""
        self.killed = True
        if self.poll() is None:
            self._code = -9

    def memory(self) -> dict[str, int]:
        """The memory set by :meth:`memory_at` for now; ``{}`` once it exited."""
        if self.poll() is not None:
            return {}
        now = [v for t, v in self._memory if t <= self._now()]
        return dict(now[-1]) if now else {}
