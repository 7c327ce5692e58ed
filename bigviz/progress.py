"""The progress of a sweep as state, kept in one place (the tqdm pattern).

:class:`SweepProgress` consumes the ``on_progress`` and ``on_event`` callbacks of
:func:`bigviz.runner.sweep` and keeps, per run, what a person watching wants to see: which
run of how many, its label, the phase it is in, its RSS now and at its highest, the
seconds since it started and how it ended. The front ends only display it: the command
line as a redrawn text line, the dashboard as progress bars and a live figure, the
magic as one line per finished run. :class:`BackgroundSweep` runs a sweep on a thread
for a front end that must not block (the dashboard). Nothing here imports IPython or
ipywidgets.

Example:
    >>> progress = SweepProgress()
    >>> progress.on_progress({"stage": "run", "index": 0, "total": 2, "label": "meta"})
    >>> progress.on_event({"type": "baseline", "rss": 100, "index_in_sweep": 0})
    >>> progress.on_event({"type": "samples", "index_in_sweep": 0,
    ...                    "series": {"ram.rss": [[0.5], [300]]}})
    >>> run = progress.runs[0]
    >>> run.label, run.state, run.above_baseline, len(progress.runs)
    ('meta', 'running', 200, 2)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bigviz._errors import RunError

if TYPE_CHECKING:
    from bigviz.data.result import RunResult, Sweep

__all__ = ["BackgroundSweep", "ProgressListener", "RunProgress", "SweepProgress"]


@dataclass
class RunProgress:
    """What is known about one run of a sweep; front ends read it, never write it.

    Attributes:
        index: the run's place in the sweep, from 0.
        total: how many runs the sweep has.
        label: the run's label (``"run N"`` until it starts).
        state: ``"waiting"``, ``"running"``, then the outcome (``"ok"``, ``"cancelled"``…).
        preparing: what is saved before this run starts (its checkpoint), else ``""``.
        phase: the phase started last, at any depth (``""`` before the first).
        top_phase: the top-level phase started last.
        phases_done: how many top-level phases have ended.
        baseline: the worker's RSS before the strategy ran (bytes; 0: not yet known).
        rss: the RSS in the latest sample (0: no sample yet).
        rss_peak: the highest sampled RSS.
        elapsed: seconds since the run started (latest sample; the result's at the end).
        result: the finished run.
        t, v: the RSS timeline, when the :class:`SweepProgress` keeps series.

    Example:
        >>> RunProgress(0, 3).label
        'run 1'
    """

    index: int
    total: int
    label: str = ""
    state: str = "waiting"
    preparing: str = ""
    phase: str = ""
    top_phase: str = ""
    phases_done: int = 0
    baseline: int = 0
    rss: int = 0
    rss_peak: int = 0
    elapsed: float = 0.0
    result: RunResult | None = None
    t: list[float] = field(default_factory=list)
    v: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.label = self.label or f"run {self.index + 1}"

    @property
    def finished(self) -> bool:
        """True once the run has a result."""
        return self.result is not None

    @property
    def above_baseline(self) -> int:
        """The latest RSS above the baseline (0 before the first sample)."""
        return max(self.rss - self.baseline, 0) if self.rss else 0

    @property
    def peak_above_baseline(self) -> int:
        """The highest sampled RSS above the baseline (0 before the first sample)."""
        return max(self.rss_peak - self.baseline, 0) if self.rss_peak else 0

    def fraction(self, expected_phases: int) -> float:
        """How far the run is, from 0 to 1: ended top-level phases over ``expected_phases``,
        held below 1 until the run has finished.

        Example:
            >>> RunProgress(0, 1, phases_done=2).fraction(4)
            0.5
        """
        if self.finished:
            return 1.0
        return min(0.95, self.phases_done / max(expected_phases, 1))


#: Called after each change with its kind and the run it changed: the stage of
#: ``on_progress`` (``"prepare"``, ``"run"``, ``"done"``) or the event's ``type``
#: (``"phase_start"``, ``"samples"``…).
ProgressListener = Callable[[str, RunProgress], None]


class SweepProgress:
    """The state of a running sweep, fed by its callbacks, read by the front ends.

    Pass :meth:`on_progress` and :meth:`on_event` to :func:`bigviz.sweep` (or
    ``**progress.callbacks()``). Each change calls ``listener(kind, run)`` on the sweep's
    thread, one at a time; a front end's listener draws what it shows from the state.

    Args:
        listener: told about every change (see :data:`ProgressListener`).
        keep_series: also keep each run's RSS timeline (:attr:`RunProgress.t` and ``v``),
            for a live figure.

    Example:
        >>> seen = []
        >>> progress = SweepProgress(listener=lambda kind, run: seen.append((kind, run.label)))
        >>> progress.on_progress({"stage": "run", "index": 0, "total": 1, "label": "naive"})
        >>> seen
        [('run', 'naive')]
    """

    def __init__(
        self, *, listener: ProgressListener | None = None, keep_series: bool = False
    ) -> None:
        self._listener = listener
        self._keep = keep_series
        self._lock = threading.RLock()
        self._runs: list[RunProgress] = []
        self._current: int | None = None

    @property
    def runs(self) -> list[RunProgress]:
        """Every run of the sweep, in order (all of them once the first stage is known)."""
        with self._lock:
            return list(self._runs)

    @property
    def total(self) -> int:
        """How many runs the sweep has (0 before the first callback)."""
        with self._lock:
            return len(self._runs)

    @property
    def current(self) -> RunProgress | None:
        """The run started last (``None`` before the first)."""
        with self._lock:
            return None if self._current is None else self._runs[self._current]

    def callbacks(self) -> dict[str, Any]:
        """``on_progress`` and ``on_event``, to pass to :func:`bigviz.sweep` as keywords."""
        return {"on_progress": self.on_progress, "on_event": self.on_event}

    def _run(self, index: int, total: int = 0) -> RunProgress:
        total = max(total, index + 1)
        if total > len(self._runs):
            self._runs.extend(RunProgress(i, total) for i in range(len(self._runs), total))
            for run in self._runs:
                run.total = total
        return self._runs[index]

    def on_progress(self, ev: dict[str, Any]) -> None:
        """The sweep's ``on_progress`` callback: a checkpoint is saved, a run starts or ends."""
        stage = str(ev.get("stage"))
        with self._lock:
            run = self._run(int(ev.get("index", 0)), int(ev.get("total", 1)))
            if stage == "prepare":
                run.preparing = str(ev.get("label", ""))
            elif stage == "run":
                run.label = str(ev.get("label", "")) or run.label
                run.state, run.preparing = "running", ""
                self._current = run.index
            elif stage == "done" and ev.get("result") is not None:
                result: RunResult = ev["result"]
                run.label = str(ev.get("label", "")) or run.label
                run.result, run.state = result, result.outcome
                run.elapsed = float(result.seconds)
            else:
                return
            self._tell(stage, run)

    def on_event(self, ev: dict[str, Any]) -> None:
        """The sweep's ``on_event`` callback: phases, the baseline and RSS samples."""
        kind = str(ev.get("type"))
        with self._lock:
            index = ev.get("index_in_sweep", self._current or 0)
            run = self._run(int(index))
            if kind == "phase_start":
                run.phase = str(ev.get("name", ""))
                if ev.get("parent") is None:
                    run.top_phase = run.phase
            elif kind == "phase_end":
                if (ev.get("phase") or {}).get("parent") is None:
                    run.phases_done += 1
            elif kind == "baseline":
                run.baseline = int(ev.get("rss") or 0)
            elif kind == "samples":
                self._samples(run, (ev.get("series") or {}).get("ram.rss"))
            self._tell(kind, run)

    def _samples(self, run: RunProgress, rss: Any) -> None:
        if not rss:
            return
        times, values = rss
        if self._keep:
            run.t.extend(times)
            run.v.extend(values)
        if values:
            run.rss = int(values[-1])
            run.rss_peak = max(run.rss_peak, max(int(v) for v in values))
        if times:
            run.elapsed = float(times[-1])

    def _tell(self, kind: str, run: RunProgress) -> None:
        if self._listener is not None:
            self._listener(kind, run)


class BackgroundSweep:
    """:func:`bigviz.runner.sweep` on a background thread: start, cancel, wait, result.

    What a front end that must not block (the dashboard) needs; the running sweep feeds
    ``progress``. The callbacks run on the sweep's thread, before :meth:`wait` returns:
    ``on_result`` with the finished sweep, ``on_error`` with what stopped it (an exception
    of ``on_result`` too), then ``on_end`` whatever happened.

    Args:
        kwargs: the arguments of :func:`~bigviz.runner.sweep`, ``model`` included.
        progress: the state the sweep's callbacks feed.
        thread_name: the name of the background thread.

    Example:
        >>> job = BackgroundSweep({"model": "gpt:20MB", "strategies": ["meta"]},
        ...                       progress=SweepProgress())
        >>> job.running, job.sweep
        (False, None)
        >>> # job.start(); job.wait(timeout=120).results[0].outcome
    """

    def __init__(
        self,
        kwargs: dict[str, Any],
        *,
        progress: SweepProgress,
        thread_name: str = "bigviz-sweep",
        on_result: Callable[[Sweep], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self._kwargs = dict(kwargs)
        self._progress = progress
        self._name = thread_name
        self._on_result, self._on_error, self._on_end = on_result, on_error, on_end
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._sweep: Sweep | None = None
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the sweep and the callbacks have ended."""
        # an Event, not Thread.is_alive: a join interrupted by Ctrl-C can mark a live
        # thread as finished on Python 3.11
        return self._thread is not None and not self._done.is_set()

    @property
    def sweep(self) -> Sweep | None:
        """The finished sweep (``None`` until it ends, or when it failed)."""
        return self._sweep

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the sweep, if any."""
        return self._error

    def start(self) -> None:
        """Start the sweep and return at once.

        Raises:
            RuntimeError: it was started before.
        """
        if self._thread is not None:
            raise RuntimeError("this sweep was started already; make a new BackgroundSweep")
        self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Stop the sweep: the running worker is killed (outcome ``"cancelled"``), no more
        runs start."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> Sweep | None:
        """Block until the sweep (and its callbacks) ended; return the sweep.

        Raises:
            TimeoutError: still running after ``timeout`` seconds.
            BigvizError: whatever stopped the sweep (a bad strategy for this device map…).
        """
        if self._thread is not None:
            if not self._done.wait(timeout):
                raise TimeoutError(f"the sweep is still running after {timeout} s")
            self._thread.join(5.0)
        if self._error is not None:
            raise self._error
        return self._sweep

    def _work(self) -> None:
        from bigviz.runner import sweep

        kwargs = dict(self._kwargs)
        try:
            self._sweep = sweep(kwargs.pop("model"), **kwargs, **self._progress.callbacks(),
                                cancel=self._cancel)
            if self._on_result is not None:
                self._on_result(self._sweep)
        except (Exception, SystemExit) as exc:  # wait() re-raises it
            error: BaseException = exc
            if isinstance(exc, SystemExit):  # on_result's sys.exit(): a thread would end mute
                error = RunError(f"a callback of the sweep raised SystemExit({exc.code!r}); "
                                 "the sweep stopped there")
                error.__cause__ = exc
            self._error = error
            if self._on_error is not None:
                self._on_error(error)
        finally:
            try:
                if self._on_end is not None:
                    self._on_end()
            finally:
                self._done.set()
