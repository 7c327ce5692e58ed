"""The Recorder: phases, marks and exact per-phase peaks on top of the sources.

Exact nested peaks come from folding each source's high-water mark into every open phase
at each phase boundary, then resetting it (see :mod:`bigviz.recorder.phases`, whose
:class:`~bigviz.recorder.phases.PhaseStack` holds this recorder's open phases).

The recorder's own memory is inside the RSS it measures: it lives in the measured
process, so the samples it keeps are part of the ``ram.*`` figures and of the phase peaks.
They are kept compactly (:mod:`._store`): ~11–12 bytes per sample, ~2.3 MB per minute and
~140 MB per hour at 1 ms. ``Recording.meta["recorder_bytes"]`` is what the store held at
the end and ``meta["recorder_bytes_per_sample"]`` that divided by the samples, so a reader
can subtract it. The plain-list ``Series`` are built only when :attr:`Recorder.recording`
is first read after the recording stopped (then the store is released). The sidecar
process buffers what the pipe cannot take in its own memory, not in this process's.

A recorder belongs to the process that started it. A child forked while it records
(``os.fork``, ``multiprocessing`` with fork) holds a copy of it that is inert: leaving the
``with`` block there (``sys.exit``, an exception), ``stop()``, phases and marks do nothing
to the parent's sampler, store or peaks, and the loader instrumentation stays quiet. The
child may start a recorder of its own. A sampler that ends while the recording runs is an
error in ``Recording.errors`` (when, and why), never silence.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from bigviz._errors import RecorderError
from bigviz.data.recording import Mark, Phase, Recording
from bigviz.data.serde import to_plain
from bigviz.recorder import _active
from bigviz.recorder._events import EventCallback, EventLog
from bigviz.recorder._figures import fill_meta, fill_sampled, snapshot
from bigviz.recorder._live import LiveSources
from bigviz.recorder._options import (
    build_sources,
    check_interval,
    check_name,
    check_options,
    plain_detail,
)
from bigviz.recorder._store import SampleStore, SeriesStore
from bigviz.recorder.phases import OpenPhase, PhaseStack, fold_max
from bigviz.recorder.sources import Clock, Source

__all__ = ["Recorder", "record"]


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
        clock: monotonic clock in seconds (tests pass a :class:`bigviz.testing.FakeClock`).
        background: collect samples every ``flush_ms`` on a ``bigviz-recorder`` thread;
            ``False``: at phase boundaries, marks and :meth:`poll` only (for tests).
        flush_ms: how often samples are collected and streamed to ``on_event`` (default
            100 ms: each collection wakes a thread of the measured process, and at 25 ms
            those wake-ups alone slowed a 1 GB load on a busy 2-core machine by ~1.5 %;
            phase boundaries and marks collect at once whatever this is; ``bigviz.run``'s
            workers use 25 ms, so an OOM kill loses little of the timeline).
        max_samples: keep at most this many samples per series, each bucket's lowest and
            highest when full, so no peak is lost (hours-long recordings: at most
            ``16 * max_samples`` bytes per series; see :mod:`bigviz.recorder._store`).

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
        flush_ms: float = 100.0,
        max_samples: int | None = None,
    ) -> None:
        self.interval_ms = check_interval(interval_ms)
        self.flush_ms = check_interval(flush_ms)
        check_options(name=name, on_event=on_event, pid=pid)
        built, self._names = build_sources(sources, pid)
        self.instrument = bool(instrument)
        self.name = name
        self._pid = os.getpid() if pid is None else pid
        self._clock: Clock = clock or time.monotonic
        self._background = background
        self._lock = threading.RLock()
        self._state = "new"  # new -> recording -> stopped
        self._rec = Recording(name=name, pid=self._pid, interval_ms=self.interval_ms)
        self._events = EventLog(on_event, self._rec.errors)
        self._live = LiveSources(built, clock=self._clock, on_error=self._events.error)
        self._t0 = 0.0
        # open phases, and the high-water marks folded into them and the whole recording
        self._stack: PhaseStack[str] = PhaseStack()
        # the timeline, compactly (see _store): plain Series lists only when a Recording
        # is asked for, so the recorder adds ~11 bytes per sample to the RSS it measures
        self._store: SampleStore | None = SampleStore(max_samples)
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._patches: Any = None
        # the process that started it: only that one may touch the sources (a forked
        # child's copy shares the sampler's pipes, and the lock may be held forever)
        self._owner_pid = os.getpid()

    @property
    def on_event(self) -> EventCallback | None:
        """The streaming callback (see the class docs)."""
        return self._events.on_event

    @on_event.setter
    def on_event(self, callback: EventCallback | None) -> None:
        self._events.on_event = callback

    # -- lifecycle -------------------------------------------------------------
    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # not stop(): the Recording is built when first asked for (not in RSS read after)
        if self._state == "recording" and not self._forked():
            self._teardown()

    def start(self) -> Recorder:
        """Start recording (``with`` does this for you).

        Raises:
            RecorderError: another recorder is recording in this process, or this one
                already ran.
        """
        if self._state != "new":
            raise RecorderError(
                f"this Recorder is {self._state}; a Recorder records once — "
                "make a new one with bigviz.record()"
            )
        _active.claim(self, lambda: f"name={self.name!r}, started {self._rec.started_at}")
        self._owner_pid = os.getpid()
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
        self._rec.sources.extend(self._live.start(t0=self._t0, interval_ms=self.interval_ms))
        self._live.reset_peaks()
        self._stack.root = self._live.read_now()
        if self.instrument:
            from bigviz.recorder import _instrument

            self._patches = _instrument.install(self)
        if self._background:
            self._thread = threading.Thread(target=self._run, name="bigviz-recorder", daemon=True)
            self._thread.start()

    def stop(self) -> Recording:
        """Stop recording and return the final :class:`Recording` (idempotent).

        Phases still open are closed at this moment with an ``error`` saying so. In a
        child forked while recording it stops nothing (the recording is the parent's) and
        returns the copy the child inherited.
        """
        if self._state == "new":
            raise RecorderError("stop() before start(): use `with bigviz.record() as rec:`")
        if self._forked():
            return self._rec
        if self._state == "recording":
            self._teardown()
        return self.recording

    def _teardown(self) -> None:
        try:
            with self._lock:
                while (op := self._stack.innermost) is not None:
                    self.close_phase(op, "still open when the recording stopped")
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
                    _active.release(self)

    def _finish(self) -> None:
        with self._lock:
            if self._state != "recording":
                return
            t_end = self._clock()
            self._poll()
            self._fold()
            self._live.stop(self._store)  # and collect what they flushed while stopping
            self._state = "stopped"
            self._rec.duration = t_end - self._t0
            for ph in self._rec.phases:
                fill_sampled(ph, self._series())
            fill_meta(
                self._rec.meta,
                interval_ms=self.interval_ms,
                store=self._store,
                exact=self._live.exact_keys(),
                root_peaks=self._stack.root,
                sources=self._live.sources,
                names=self._names,
            )
            if self._store is not None:  # a bounded store: its bound, the rate achieved
                self._rec.meta.update(self._store.meta())
            # the process's lifetime peak (what ru_maxrss said before the resets)
            if isinstance(peak := self._rec.meta.pop("ram_peak_process", None), int):
                self._rec.ram_peak_process = max(peak, self._stack.root.get("ram", 0))
            self._events.emit_samples(self._store)

    # -- phases and marks ------------------------------------------------------
    @property
    def recording(self) -> Recording:
        """The Recording: final after stop; a consistent copy while recording.

        The timeline's plain lists are built here, on first access after the recording
        stopped (the compact sample store is then released), or afresh for each copy
        taken while recording. In a child forked while recording: the copy inherited at
        the fork (the lock is not taken: another thread may have held it then).
        """
        if self._forked():
            return snapshot(self._rec, self._store, self._clock() - self._t0)
        with self._lock:
            if self._state != "recording":
                if self._state == "stopped" and self._store is not None:
                    self._rec.series = self._store.to_series()
                    self._store = None
                return self._rec
            return snapshot(self._rec, self._store, self._clock() - self._t0)

    @property
    def current_phase(self) -> str | None:
        """Name of the innermost open phase, or ``None``."""
        if self._forked():
            return None
        with self._lock:
            op = self._stack.innermost
            return op.phase.name if op is not None else None

    @property
    def recording_active(self) -> bool:
        """True between start and stop, in the process that started it (a forked child's
        copy is inert: the loader instrumentation makes no phases there)."""
        return self._state == "recording" and not self._forked()

    def _forked(self) -> bool:
        """Whether this is a forked child's copy of a recorder another process runs."""
        return os.getpid() != self._owner_pid

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
        if self._forked():  # a forked child's copy: the block runs, nothing is recorded
            yield Phase(name, start=0.0, detail=plain_detail(detail))
            return
        if self._patches is not None:
            self._patches.refresh()  # torch / safetensors imported since start
        op = self.open_phase(name, detail)
        try:
            yield op.phase
        except BaseException as exc:
            self.close_phase(op, f"{type(exc).__name__}: {exc}")
            raise
        else:
            self.close_phase(op, None)

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
        check_name("mark", name)
        if self._forked():
            return
        if self._patches is not None:
            self._patches.refresh()
        with self._lock:
            self._require_recording("mark", name)
            m = Mark(name, self._clock() - self._t0, plain_detail(detail))
            self._rec.marks.append(m)
            self._events.emit({"type": "mark", "name": m.name, "t": m.t, "detail": m.detail})

    def poll(self) -> None:
        """Collect the samples the sources gathered so far (the background thread does
        this every ``flush_ms``) and stream them to ``on_event``."""
        if self._forked():
            return
        with self._lock:
            if self._state == "recording":
                self._poll()
                self._events.emit_samples(self._store)

    def _require_recording(self, what: str, name: str) -> None:
        if self._state != "recording":
            raise RecorderError(
                f"rec.{what}({name!r}) called while the recorder is {self._state}; "
                f"call it inside `with bigviz.record() as rec:`"
            )

    def open_phase(
        self, name: str, detail: Mapping[str, Any] | None = None, *, auto: bool = False
    ) -> OpenPhase[str]:
        """Start a phase without a ``with`` block (as the loader instrumentation does);
        end it with :meth:`close_phase`.

        Args:
            name: what is starting, e.g. ``"torch.load model.bin"``.
            detail: JSON-ready facts to keep with the phase.
            auto: the phase was made by instrumentation, not by the user.

        Returns:
            The open phase, to pass to :meth:`close_phase`.

        Raises:
            ConfigError, RecorderError: as :meth:`phase`.

        Example:
            >>> import bigviz
            >>> with bigviz.record(instrument=False) as rec:
            ...     op = rec.open_phase("load", {"shard": 1})
            ...     rec.close_phase(op)
            >>> rec.recording.phase("load").detail
            {'shard': 1}
        """
        check_name("phase", name)
        if self._forked():  # a detached phase: the parent's recording is not touched
            return OpenPhase(-1, Phase(name, start=0.0, detail=plain_detail(dict(detail or {}))))
        with self._lock:
            self._require_recording("phase", name)
            self._poll()
            self._fold()
            now = self._live.read_now()
            self._live.reset_peaks()
            t = self._clock() - self._t0
            op = self._stack.open(
                self._rec.phases,
                name,
                start=t,
                peaks=now,
                thread=threading.get_ident(),
                auto=auto,
                detail=plain_detail(dict(detail or {})),
                ram_start=now.get("ram"),
                vram_start={k: v for k, v in now.items() if k != "ram"},
            )
            event: dict[str, Any] = {
                "type": "phase_start",
                "index": op.index,
                "name": name,
                "t": t,
                "parent": op.phase.parent,
                "auto": auto,
            }
            self._events.emit(event)
            return op

    def close_phase(self, op: OpenPhase[str], error: str | None = None) -> None:
        """End a phase started by :meth:`open_phase` (again: nothing happens).

        Args:
            op: what :meth:`open_phase` returned.
            error: why the phase's work failed, if it did (``Phase.error``).

        Example:
            >>> import bigviz
            >>> with bigviz.record(instrument=False) as rec:
            ...     op = rec.open_phase("load")
            ...     rec.close_phase(op, "OSError: disk full")
            >>> rec.recording.phase("load").error
            'OSError: disk full'
        """
        if self._forked():
            return
        with self._lock:
            if op not in self._stack:
                return  # already closed (stop() closed it)
            ph = op.phase
            ph.end = self._clock() - self._t0
            # collect samples before reading the high-water mark, so the little memory
            # that parsing them takes is inside this phase, not in whatever comes next
            self._poll()
            self._fold()
            now = self._live.read_now()
            fold_max(op.peaks, now)
            ph.error = error
            ph.ram_end = now.get("ram")
            exact = self._live.exact_keys()
            if "ram" in exact and "ram" in op.peaks:
                ph.ram_peak, ph.ram_peak_exact = op.peaks["ram"], True
            else:
                ph.ram_peak_why = self._live.why_sampled("ram")
            ph.vram_peak = {k: v for k, v in op.peaks.items() if k != "ram" and k in exact}
            self._stack.close(op)
            fill_sampled(ph, self._series())
            self._events.emit({"type": "phase_end", "index": op.index, "phase": to_plain(ph)})

    def _fold(self) -> None:  # marks since the last reset -> every open phase and the root
        for peaks in self._live.read_peaks():
            self._stack.fold(peaks)

    def _poll(self) -> None:
        self._live.poll(self._store)

    def _series(self) -> dict[str, SeriesStore]:  # the timeline so far ({} once released)
        return self._store.series if self._store is not None else {}

    def _run(self) -> None:
        period = self.flush_ms / 1000.0
        while not self._stop_event.wait(period):
            try:
                self.poll()
            except Exception as exc:  # never let the collector die silently
                self._events.error("recorder", f"collector thread: {exc!r}")


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
            ``flush_ms``, ``max_samples``).

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
        interval_ms, instrument=instrument, sources=sources, name=name, on_event=on_event,
        **options,
    )  # fmt: skip
