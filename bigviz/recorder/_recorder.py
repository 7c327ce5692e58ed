"""The Recorder: phases, marks and exact per-phase peaks on top of the sources.

How exact nested peaks work. Each source with a resettable high-water mark (the
kernel's ``VmHWM`` via ``clear_refs``; the CUDA allocator's ``max_memory_allocated``)
is reset at every phase boundary. Before a reset, the mark reached since the previous
reset is *folded* into every open phase (the stretch just ended belongs to all of them)
and into the whole recording. A phase's peak is therefore the max over its own stretches
and its children's, with one reset per boundary and no lost spike.

The recorder's own memory is inside the RSS it measures. The recorder lives in the
measured process, so the samples it keeps are part of the ``ram.*`` figures and of the
phase peaks. They are kept compactly (:mod:`._store`: ``array("d")`` times, ``array("q")``
values, one time array shared by ``ram.rss``/``anon``/``file``): ~11–12 bytes per sample,
~38 bytes per 1 ms tick of the RAM source with its slower series, i.e. ~2.3 MB per minute
and ~140 MB per hour at 1 ms (plain Python lists held ~72 bytes per sample, ~230 per tick:
~0.8 GB per hour). ``Recording.meta["recorder_bytes"]`` is what the store held at the end
and ``meta["recorder_bytes_per_sample"]`` that divided by the samples, so a reader can
subtract it. The plain-list ``Series`` are built only when :attr:`Recorder.recording` is
read (on first access after the recording stopped, then the store is released), so code
that reads RSS right after ``with bigviz.record():`` does not see them either.
The sidecar process buffers what the pipe cannot take in its own memory, not in this
process's.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import importlib.metadata
import math
import operator
import os
import platform
import socket
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from bigviz._errors import ConfigError, RecorderError
from bigviz.data.recording import Mark, Phase, Recording, SourceInfo
from bigviz.data.serde import to_plain
from bigviz.recorder._sources import (
    SOURCE_NAMES,
    Clock,
    CudaSource,
    NvmlSource,
    ProcSource,
    SampleBatch,
    Source,
)
from bigviz.recorder._store import SampleStore, median

__all__ = ["Recorder", "record"]

EventCallback = Callable[[dict[str, Any]], None]

_ACTIVE: Recorder | None = None
_ACTIVE_LOCK = threading.Lock()
_MAX_ERRORS_PER_ORIGIN = 10


def _reset_after_fork() -> None:
    # a forked child has no sidecar and no collector thread: it is not recording, and may
    # start its own recorder (the lock may have been held by another thread at fork time)
    global _ACTIVE, _ACTIVE_LOCK
    _ACTIVE = None
    _ACTIVE_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_reset_after_fork)


@dataclass
class _Open:
    index: int
    phase: Phase
    peaks: dict[str, int] = field(default_factory=dict)
    thread: int = 0


def _check_interval(interval_ms: Any) -> float:
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, (int, float)):
        raise ConfigError(
            f"interval_ms must be a number of milliseconds such as 1.0, got {interval_ms!r} "
            f"({type(interval_ms).__name__})"
        )
    value = float(interval_ms)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"interval_ms must be a positive, finite number of milliseconds (e.g. 1.0), "
            f"got {interval_ms!r}"
        )
    return value


def _check_name(what: str, name: Any) -> str:
    if not isinstance(name, str):
        raise ConfigError(
            f"{what} name must be a string, got {name!r} ({type(name).__name__}); "
            f"e.g. rec.{what}('load weights')"
        )
    if not name.strip():
        raise ConfigError(f"{what} name must not be empty, got {name!r}")
    return name


def _plain_detail(value: Any) -> Any:
    """JSON-ready copy of a detail value that round-trips exactly (other objects -> str)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _plain_detail(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_detail(v) for v in value]
    return str(value)


def _build_sources(
    sources: Sequence[str | Source] | None, pid: int | None
) -> tuple[list[Source], list[str]]:
    """Source objects for ``record(sources=...)``; returns (sources, names requested)."""
    if sources is None:
        return [ProcSource(pid), CudaSource(), NvmlSource(pid)], list(SOURCE_NAMES)
    if isinstance(sources, str) or not isinstance(sources, Sequence):
        raise ConfigError(
            f"sources must be a list of source names from {list(SOURCE_NAMES)}, got {sources!r}"
        )
    names: list[str] = []
    objects: list[Source] = []
    for s in sources:
        if isinstance(s, Source):
            objects.append(s)
        elif isinstance(s, str) and s in SOURCE_NAMES:
            names.append(s)
        else:
            raise ConfigError(
                f"unknown source {s!r}; known sources are {list(SOURCE_NAMES)} "
                "(or a bigviz.recorder.Source instance)"
            )
    if "ram" in names or "sys" in names:
        objects.append(ProcSource(pid, proc="ram" in names, system="sys" in names))
    if "cuda" in names:
        objects.append(CudaSource())
    if "nvml" in names:
        objects.append(NvmlSource(pid))
    return objects, names


class Recorder:
    """Records RAM (and VRAM where a GPU is in use) with named phases and marks.

    Use :func:`record` to make one. The timeline is sampled by a sidecar process that
    reads ``/proc/PID/...`` (so a workload holding the GIL does not starve it); phases
    are marked in-process, and their RAM / VRAM peaks are exact (see the module docs).
    The timeline is kept compactly in this process, ~12 bytes per sample; the
    recording's ``meta["recorder_bytes"]`` says how much it held.

    Args:
        interval_ms: sampling interval of the RAM timeline, in milliseconds.
        instrument: while recording, turn calls to ``torch.load``, ``torch.save``,
            safetensors ``load_file``/``save_file``/``safe_open``,
            ``nn.Module.load_state_dict`` and ``nn.Module.to`` into automatic phases.
        sources: names from ``("ram", "sys", "cuda", "nvml")`` (default: all), or
            :class:`Source` objects such as :class:`bigviz.testing.FakeSource`.
        name: a name for the recording.
        on_event: called with small JSON-ready dicts while recording (samples every
            ``flush_ms``, phase start/end, marks); its exceptions are recorded in
            ``Recording.errors`` and never propagate.
        pid: the process whose RAM is sampled (default: this one).
        clock: monotonic clock in seconds (default ``time.monotonic``; tests pass a
            :class:`bigviz.testing.FakeClock`).
        background: run the ``bigviz-recorder`` thread that collects samples every
            ``flush_ms``; with ``False`` samples are collected at phase boundaries, marks
            and :meth:`poll` only (deterministic tests).
        flush_ms: how often samples are collected and streamed to ``on_event``.

    Raises:
        ConfigError: a bad interval, unknown source name or non-callable ``on_event``.

    Example:
        >>> import bigviz
        >>> with bigviz.record(interval_ms=1.0) as rec:
        ...     with rec.phase("allocate"):
        ...         buf = bytearray(64 << 20)
        >>> rec.recording.phase("allocate").ram_growth > 60 << 20
        True
    """

    def __init__(
        self,
        interval_ms: float = 1.0,
        *,
        instrument: bool = True,
        sources: Sequence[str | Source] | None = None,
        name: str = "",
        on_event: EventCallback | None = None,
        pid: int | None = None,
        clock: Clock | None = None,
        background: bool = True,
        flush_ms: float = 25.0,
    ) -> None:
        self.interval_ms = _check_interval(interval_ms)
        self.flush_ms = _check_interval(flush_ms)
        if not isinstance(name, str):
            raise ConfigError(f"name must be a string, got {name!r}")
        if on_event is not None and not callable(on_event):
            raise ConfigError(f"on_event must be a function taking a dict, got {on_event!r}")
        if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0):
            raise ConfigError(f"pid must be a positive process id, got {pid!r}")
        self._sources, self._names = _build_sources(sources, pid)
        self.instrument = bool(instrument)
        self.name = name
        self.on_event = on_event
        self._pid = os.getpid() if pid is None else pid
        self._clock: Clock = clock or time.monotonic
        self._background = background
        self._lock = threading.RLock()
        self._state = "new"  # new -> recording -> stopped
        self._rec = Recording(name=name, pid=self._pid, interval_ms=self.interval_ms)
        self._t0 = 0.0
        self._stack: list[_Open] = []
        self._root_peaks: dict[str, int] = {}
        self._alive: list[Source] = []
        # the timeline, compactly (see _store): plain Series lists only when a Recording
        # is asked for, so the recorder adds ~11 bytes per sample to the RSS it measures
        self._store: SampleStore | None = SampleStore()
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._error_counts: dict[str, int] = {}
        self._patches: Any = None
        self._infos: dict[str, SourceInfo] = {}

    # -- lifecycle -------------------------------------------------------------
    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # not stop(): the plain-list Recording is built when first asked for, so code
        # that reads RSS right after the block does not see it
        if self._state == "recording":
            self._teardown()

    def start(self) -> Recorder:
        """Start recording (``with`` does this for you).

        Raises:
            RecorderError: another recorder is recording in this process, or this one
                already ran.
        """
        global _ACTIVE
        if self._state != "new":
            raise RecorderError(
                f"this Recorder is {self._state}; a Recorder records once — "
                "make a new one with bigviz.record()"
            )
        with _ACTIVE_LOCK:
            if _ACTIVE is not None:
                other = _ACTIVE
                raise RecorderError(
                    "another bigviz recorder is already recording in this process "
                    f"(name={other.name!r}, started {other._rec.started_at}); two at once "
                    "would reset each other's exact peaks — stop it first (rec.stop() or "
                    "leave its `with` block), or use rec.phase(...) inside it"
                )
            _ACTIVE = self
        try:
            self._start()
        except BaseException:
            self._teardown()
            raise
        return self

    def _start(self) -> None:
        self._t0 = self._clock()
        t0_wall = time.time()
        self._rec.started_at = datetime.datetime.fromtimestamp(
            t0_wall, datetime.timezone.utc
        ).isoformat()
        self._rec.meta.update({"t0_monotonic": self._t0, "t0_wall": t0_wall})
        self._state = "recording"
        for src in self._sources:
            try:
                infos = src.start(clock=self._clock, interval_ms=self.interval_ms)
            except Exception as exc:
                infos = [
                    SourceInfo(n, False, f"failed to start: {type(exc).__name__}: {exc}")
                    for n in (src.names or (type(src).__name__,))
                ]
                self._error(type(src).__name__, f"source failed to start: {exc!r}")
                with contextlib.suppress(Exception):
                    src.stop()
            else:
                self._alive.append(src)
            for info in infos:
                self._infos[info.name] = info
                self._rec.sources.append(info)
        self._guard(lambda s: s.reset_peaks())
        self._root_peaks = self._read_now()
        if self.instrument:
            from bigviz.recorder import _instrument

            self._patches = _instrument.install(self)
        if self._background:
            self._thread = threading.Thread(target=self._run, name="bigviz-recorder", daemon=True)
            self._thread.start()

    def stop(self) -> Recording:
        """Stop recording and return the final :class:`Recording` (idempotent).

        Phases still open are closed at this moment with an ``error`` saying so.
        """
        if self._state == "new":
            raise RecorderError("stop() before start(): use `with bigviz.record() as rec:`")
        if self._state == "recording":
            self._teardown()
        return self.recording

    def _teardown(self) -> None:
        global _ACTIVE
        try:
            with self._lock:
                while self._stack:
                    op = self._stack[-1]
                    self._end(op, "still open when the recording stopped")
        finally:
            try:
                if self._patches is not None:
                    self._patches.remove()
                    self._patches = None
            finally:
                try:
                    self._stop_event.set()
                    if self._thread is not None:
                        self._thread.join()
                        self._thread = None
                    self._finish()
                finally:
                    with _ACTIVE_LOCK:
                        if _ACTIVE is self:
                            _ACTIVE = None

    def _finish(self) -> None:
        with self._lock:
            if self._state != "recording":
                return
            t_end = self._clock()
            self._poll()
            self._fold()
            for src in list(self._alive):
                try:
                    src.stop()
                except Exception as exc:
                    self._error(type(src).__name__, f"stopping failed: {exc!r}")
            for src in list(self._alive):
                self._poll_one(src)  # what the source flushed while stopping
            self._state = "stopped"
            self._rec.duration = t_end - self._t0
            for i, ph in enumerate(self._rec.phases):
                self._fill_sampled(i, ph)
            self._fill_meta()
            self._emit_samples()

    # -- phases and marks ------------------------------------------------------
    @property
    def recording(self) -> Recording:
        """The Recording: final after stop; a consistent copy while recording.

        The timeline's plain lists are built here, on first access after the recording
        stopped (the compact sample store is then released), or afresh for each copy
        taken while recording.
        """
        with self._lock:
            if self._state != "recording":
                if self._state == "stopped" and self._store is not None:
                    self._rec.series = self._store.to_series()
                    self._store = None
                return self._rec
            snap = copy.copy(self._rec)
            snap.series = self._store.to_series() if self._store is not None else {}
            snap.phases = copy.deepcopy(self._rec.phases)
            snap.marks = copy.deepcopy(self._rec.marks)
            snap.sources = copy.deepcopy(self._rec.sources)
            snap.meta = copy.deepcopy(self._rec.meta)
            snap.errors = list(self._rec.errors)
            snap.duration = self._clock() - self._t0
            return snap

    @property
    def current_phase(self) -> str | None:
        """Name of the innermost open phase, or ``None``."""
        with self._lock:
            return self._stack[-1].phase.name if self._stack else None

    @property
    def recording_active(self) -> bool:
        """True between start and stop."""
        return self._state == "recording"

    @contextlib.contextmanager
    def phase(self, name: str, **detail: Any) -> Iterator[Phase]:
        """Mark a named phase around a block; phases nest.

        Args:
            name: what the block does, e.g. ``"load shard 1"``.
            **detail: JSON-ready facts to keep with the phase (other values become str).

        Returns:
            A context manager yielding the :class:`Phase` being filled; its peaks are
            set when the block exits. If the block raises, ``Phase.error`` holds the
            exception text and the exception propagates.

        Raises:
            ConfigError: ``name`` is not a non-empty string.
            RecorderError: the recorder is not recording.

        Example:
            >>> import bigviz
            >>> with bigviz.record() as rec:
            ...     with rec.phase("outer"):
            ...         with rec.phase("inner", shard=1):
            ...             pass
            >>> [p.name for p in rec.recording.phases]
            ['outer', 'inner']
        """
        if self._patches is not None:
            self._patches.refresh()  # torch / safetensors imported since start
        op = self._begin(name, detail, auto=False)
        try:
            yield op.phase
        except BaseException as exc:
            self._end(op, f"{type(exc).__name__}: {exc}")
            raise
        else:
            self._end(op, None)

    def mark(self, name: str, **detail: Any) -> None:
        """Put an instant event on the timeline (a :class:`Mark` in the recording).

        Raises:
            ConfigError: ``name`` is not a non-empty string.
            RecorderError: the recorder is not recording.

        Example:
            >>> import bigviz
            >>> with bigviz.record() as rec:
            ...     rec.mark("checkpoint opened", files=3)
            >>> rec.recording.marks[0].detail
            {'files': 3}
        """
        _check_name("mark", name)
        if self._patches is not None:
            self._patches.refresh()
        with self._lock:
            self._require_recording("mark", name)
            m = Mark(name, self._clock() - self._t0, _plain_detail(detail))
            self._rec.marks.append(m)
            self._emit({"type": "mark", "name": m.name, "t": m.t, "detail": m.detail})

    def poll(self) -> None:
        """Collect the samples the sources gathered so far (the background thread does
        this every ``flush_ms``) and stream them to ``on_event``."""
        with self._lock:
            if self._state == "recording":
                self._poll()
                self._emit_samples()

    def _require_recording(self, what: str, name: str) -> None:
        if self._state != "recording":
            raise RecorderError(
                f"rec.{what}({name!r}) called while the recorder is {self._state}; "
                f"call it inside `with bigviz.record() as rec:`"
            )

    def _begin(self, name: str, detail: dict[str, Any], *, auto: bool) -> _Open:
        _check_name("phase", name)
        with self._lock:
            self._require_recording("phase", name)
            self._poll()
            self._fold()
            now = self._read_now()
            self._guard(lambda s: s.reset_peaks())
            t = self._clock() - self._t0
            parent = self._stack[-1].index if self._stack else None
            ph = Phase(
                name,
                start=t,
                parent=parent,
                depth=len(self._stack),
                auto=auto,
                detail=_plain_detail(detail),
                ram_start=now.get("ram"),
                vram_start={k: v for k, v in now.items() if k != "ram"},
            )
            index = len(self._rec.phases)
            self._rec.phases.append(ph)
            op = _Open(index, ph, dict(now), threading.get_ident())
            self._stack.append(op)
            event: dict[str, Any] = {
                "type": "phase_start",
                "index": index,
                "name": name,
                "t": t,
                "parent": parent,
                "auto": auto,
            }
            self._emit(event)
            return op

    def _end(self, op: _Open, error: str | None) -> None:
        with self._lock:
            if op not in self._stack:
                return  # already closed (stop() closed it)
            ph = op.phase
            ph.end = self._clock() - self._t0
            # collect samples before reading the high-water mark, so the little memory
            # that parsing them takes is inside this phase, not in whatever comes next
            self._poll()
            self._fold()
            now = self._read_now()
            for k, v in now.items():
                op.peaks[k] = max(op.peaks.get(k, v), v)
            ph.error = error
            ph.ram_end = now.get("ram")
            exact = self._exact_keys()
            if "ram" in exact and "ram" in op.peaks:
                ph.ram_peak = op.peaks["ram"]
                ph.ram_peak_exact = True
            ph.vram_peak = {k: v for k, v in op.peaks.items() if k != "ram" and k in exact}
            # a child may close after its parent when threads interleave: remove, not pop
            self._stack.remove(op)
            self._fill_sampled(op.index, ph)
            self._emit({"type": "phase_end", "index": op.index, "phase": to_plain(ph)})

    # -- peaks -----------------------------------------------------------------
    def _exact_keys(self) -> set[str]:
        keys: set[str] = set()
        for src in self._alive:
            with contextlib.suppress(Exception):
                keys |= src.exact_keys()
        return keys

    def _read_now(self) -> dict[str, int]:
        now: dict[str, int] = {}
        for part in self._guard(lambda s: s.read_now()):
            now.update(part)
        return now

    def _fold(self) -> None:
        """Fold the high-water marks reached since the last reset into every open phase
        and the whole recording."""
        for peaks in self._guard(lambda s: s.read_peaks()):
            for k, v in peaks.items():
                self._root_peaks[k] = max(self._root_peaks.get(k, v), v)
                for op in self._stack:
                    op.peaks[k] = max(op.peaks.get(k, v), v)

    def _fill_sampled(self, index: int, ph: Phase) -> None:
        """Figures that only the timeline gives (and the RAM peak when not exact)."""
        s = self._store.series if self._store is not None else {}
        start, end = ph.start, ph.end

        def smax(name: str) -> int | None:
            ser = s.get(name)
            return ser.max_between(start, end) if ser is not None else None

        ph.ram_anon_peak = smax("ram.anon")
        ph.ram_file_peak = smax("ram.file")
        if not ph.ram_peak_exact:
            vals = [v for v in (smax("ram.rss"), ph.ram_start, ph.ram_end) if v is not None]
            ph.ram_peak = max(vals) if vals else None
        nvml: dict[str, int] = {}
        for key in s:
            if key.startswith("nvml:") and key.endswith(".used"):
                v = smax(key)
                if v is not None:
                    nvml[key[: -len(".used")]] = v
        ph.nvml_peak = nvml

    # -- sources ---------------------------------------------------------------
    def _guard(self, fn: Callable[[Source], Any]) -> list[Any]:
        """Call ``fn`` on every live source; a source that raises is recorded in
        ``Recording.errors`` and dropped, and the rest carry on."""
        out = []
        for src in list(self._alive):
            try:
                out.append(fn(src))
            except Exception as exc:
                self._drop(src, exc)
        return out

    def _drop(self, src: Source, exc: BaseException) -> None:
        t = self._clock() - self._t0
        label = "/".join(src.names) or type(src).__name__
        self._error(label, f"source {label!r} failed at t={t:.3f}s and was stopped: {exc!r}")
        if src in self._alive:
            self._alive.remove(src)
        for n in src.names:
            info = self._infos.get(n)
            if info is not None and info.available:
                info.reason = f"failed at t={t:.3f}s: {type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            src.stop()

    def _poll(self) -> None:
        for src in list(self._alive):
            self._poll_one(src)

    def _poll_one(self, src: Source) -> None:
        try:
            samples: SampleBatch = src.poll()
        except Exception as exc:
            self._drop(src, exc)
            return
        finally:
            for msg in getattr(src, "errors", [])[:]:
                self._error("/".join(src.names), msg)
            if isinstance(getattr(src, "errors", None), list):
                src.errors.clear()  # type: ignore[attr-defined]
        if not samples or self._store is None:
            return
        label = "/".join(src.names) or type(src).__name__
        try:
            self._store.add(samples, t0=self._t0, source=label)
        except Exception as exc:  # e.g. a custom source giving a time that is no number
            self._drop(src, exc)

    def _run(self) -> None:
        period = self.flush_ms / 1000.0
        while not self._stop_event.wait(period):
            try:
                self.poll()
            except Exception as exc:  # never let the collector die silently
                self._error("recorder", f"collector thread: {exc!r}")

    # -- events and errors -----------------------------------------------------
    def _emit_samples(self) -> None:
        if self.on_event is None or self._store is None:
            return
        # the samples since the last batch are the tail of each series: no second copy
        series: dict[str, list[list[Any]]] = {}
        for k, st in self._store.series.items():
            n = len(st)
            if n > st.emitted:
                series[k] = [st.t[st.emitted : n].tolist(), st.values_list(st.emitted)]
                st.emitted = n
        if series:
            self._emit({"type": "samples", "series": series})

    def _emit(self, event: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception as exc:
            self._error(
                "on_event",
                f"on_event callback raised on a {event['type']!r} event: "
                f"{type(exc).__name__}: {exc}",
            )

    def _error(self, origin: str, message: str) -> None:
        n = self._error_counts.get(origin, 0) + 1
        self._error_counts[origin] = n
        if n <= _MAX_ERRORS_PER_ORIGIN:
            self._rec.errors.append(message)
        elif n == _MAX_ERRORS_PER_ORIGIN + 1:
            self._rec.errors.append(f"{origin}: more errors follow; not recorded")

    # -- metadata --------------------------------------------------------------
    def _fill_meta(self) -> None:
        m = self._rec.meta
        m["host"] = socket.gethostname()
        m["platform"] = platform.platform()
        m["cpu_count"] = os.cpu_count()
        try:
            m["ram_total"] = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            m["ram_total"] = None
        m["python"] = platform.python_version()
        torch = sys.modules.get("torch")
        if torch is not None:
            m["torch"] = str(torch.__version__)
            m["cuda"] = getattr(torch.version, "cuda", None)
        else:
            try:
                m["torch"] = importlib.metadata.version("torch")
            except importlib.metadata.PackageNotFoundError:
                m["torch"] = None
            m["cuda"] = None
        m["interval_requested_ms"] = self.interval_ms
        store = self._store if self._store is not None else SampleStore()
        rss = store.series.get("ram.rss")
        if rss is not None and len(rss) > 2:
            t = rss.t
            # gaps as an array, not a list of floats (an hour at 1 ms: 3.6 M of them)
            gaps = array("d", map(operator.sub, t[1:], t[:-1]))
            m["interval_achieved_ms"] = round(median(gaps) * 1000, 4)
            span = t[-1] - t[0]
            m["samples_per_s"] = round((len(t) - 1) / span, 1) if span > 0 else None
            m["max_gap_ms"] = round(max(gaps) * 1000, 3)
            del gaps
        else:
            m["interval_achieved_ms"] = None
        m["samples"] = {k: len(s) for k, s in store.series.items()}
        # what the timeline costs inside the measured process (in its RSS, too)
        n_samples = store.samples()
        m["recorder_bytes"] = store.nbytes()
        m["recorder_bytes_per_sample"] = (
            round(m["recorder_bytes"] / n_samples, 2) if n_samples else None
        )
        exact = self._exact_keys()
        exact_figs: list[str] = []
        sampled_figs = ["series", "ram_anon_peak", "ram_file_peak", "nvml_peak"]
        (exact_figs if "ram" in exact else sampled_figs).append("ram_peak")
        (exact_figs if any(k.startswith("cuda:") for k in exact) else sampled_figs).append(
            "vram_peak"
        )
        m["exact"] = exact_figs
        m["sampled"] = sampled_figs
        rp = self._root_peaks
        m["ram_peak"] = rp.get("ram") if "ram" in exact else (rss.max() if rss else None)
        m["ram_peak_exact"] = "ram" in exact
        m["vram_peak"] = {k: v for k, v in rp.items() if k.startswith("cuda:")}
        gpus: list[str] = []
        for src in self._sources:
            with contextlib.suppress(Exception):
                extra = src.meta()
                gpus = gpus or list(extra.get("gpu_names", []) or extra.get("cuda_devices", []))
                m.update(_plain_detail(extra))
        m["gpu_names"] = gpus
        m["sources_requested"] = list(self._names)


def record(
    interval_ms: float = 1.0,
    *,
    instrument: bool = True,
    sources: Sequence[str | Source] | None = None,
    name: str = "",
    on_event: EventCallback | None = None,
    **options: Any,
) -> Recorder:
    """Record RAM and VRAM over time, with named phases and exact per-phase peaks.

    Args:
        interval_ms: sampling interval of the timeline in milliseconds (default 1 ms).
        instrument: turn ``torch.load``/``torch.save``, safetensors ``load_file``/
            ``save_file``/``safe_open``, ``Module.load_state_dict`` and ``Module.to``
            calls into automatic phases while recording.
        sources: any of ``"ram"``, ``"sys"``, ``"cuda"``, ``"nvml"`` (default: all).
        name: a name for the recording.
        on_event: streaming callback (see :class:`Recorder`).
        **options: more :class:`Recorder` options (``pid``, ``clock``, ``background``,
            ``flush_ms``).

    Returns:
        A :class:`Recorder`; use it as a context manager (or ``start()``/``stop()``).

    Raises:
        ConfigError: bad interval, unknown source name.

    Example:
        >>> import bigviz
        >>> with bigviz.record(interval_ms=1.0) as rec:
        ...     with rec.phase("build"):
        ...         data = bytearray(32 << 20)
        ...     rec.mark("built")
        >>> rec.recording.phase("build").ram_peak_exact
        True
    """
    return Recorder(
        interval_ms,
        instrument=instrument,
        sources=sources,
        name=name,
        on_event=on_event,
        **options,
    )
