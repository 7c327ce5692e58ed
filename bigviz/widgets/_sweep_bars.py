"""The live progress bars of ``%bigviz sweep``: one row per run, the tqdm.notebook way.

A thin skin over the core's :class:`~bigviz.progress.SweepProgress`, whose listener it
is; :mod:`bigviz.magics` makes one where widgets display. ipywidgets is handed in by
:meth:`SweepBars.make` (``None`` without it), so importing this module imports none.

Example:
    >>> bars = SweepBars.make(get_ipython())  # doctest: +SKIP
    >>> progress = SweepProgress(listener=bars)  # doctest: +SKIP
"""

from __future__ import annotations

import html
import re
import time
from typing import TYPE_CHECKING, Any

from bigviz.units import format_size

if TYPE_CHECKING:
    from bigviz.progress import RunProgress, SweepProgress

__all__ = ["SweepBars"]

#: a finished run's bar colour by outcome (anything else: "danger")
_BAR_STYLE = {"ok": "success", "cancelled": "warning"}


class SweepBars:
    """A live progress bar per run of a sweep, the tqdm.notebook way: one row per run with
    its number and label, a bar (top-level phases done, full and coloured by outcome at
    the end) and what it does now (phase, RSS above baseline, seconds). The listener of
    the sweep's :class:`~bigviz.progress.SweepProgress`; a thin skin over its state."""

    #: seconds between two redraws of a running row from its samples
    redraw_s = 0.25

    def __init__(self, w: Any) -> None:
        self._w = w
        self.box = w.VBox(layout=w.Layout(max_width="100%"))
        self.box.add_class("bigviz-sweep-progress")
        self.rows: list[tuple[Any, Any, Any]] = []
        self._labels: list[str] = []
        self._drawn: dict[int, float] = {}
        self._phases = 0  # top-level phases of the longest finished run: the bars' scale

    @classmethod
    def make(cls, shell: Any) -> SweepBars | None:
        """Bars where widgets display (a Jupyter kernel), ``None`` in a terminal or
        without ipywidgets (then one line per finished run is printed)."""
        if "Terminal" in type(shell).__name__:
            return None
        try:
            import ipywidgets
        except ImportError:
            return None
        return cls(ipywidgets)

    def lines(self) -> list[str]:
        """Each row as text: ``"[2/4] meta · 10MB | 100% | ok, peak 45.2 MiB, 3.1 s"``."""
        return [f"{_untag(label.value)} | {bar.value:.0%} | {_untag(note.value)}"
                for label, bar, note in self.rows]

    def __call__(self, kind: str, run: RunProgress) -> None:
        w = self._w
        while len(self.rows) < run.total:
            i = len(self.rows)
            label = w.HTML(layout=w.Layout(width="320px", min_width="120px"))
            bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info",
                                  layout=w.Layout(width="200px", min_width="80px"))
            note = w.HTML(layout=w.Layout(flex="1 1 0", min_width="0", overflow="hidden"))
            note.value = _tag("waiting")
            self.rows.append((label, bar, note))
            self._labels.append(f"run {i + 1}")
            row = w.HBox([label, bar, note], layout=w.Layout(flex_flow="row nowrap",
                                                             align_items="center"))
            self.box.children = (*self.box.children, row)
        if kind in ("run", "done"):
            self._labels[run.index] = run.label
        for i, (label, _bar, _note) in enumerate(self.rows):  # the total may have grown
            label.value = f"[{i + 1}/{run.total}] {html.escape(self._labels[i])}"
        label, bar, note = self.rows[run.index]
        if kind == "prepare":
            note.value = _tag(f"{run.preparing or 'saving the checkpoint'} (once) …")
        elif kind == "run":
            note.value = _tag("starting …")
        elif kind == "done" and run.result is not None:
            r = run.result
            phases = sum(1 for p in r.recording.phases if p.depth == 0)
            self._phases = max(self._phases, phases)
            bar.value, bar.bar_style = 1.0, _BAR_STYLE.get(r.outcome, "danger")
            if r.ok:
                note.value = _tag(f"ok, peak {format_size(r.ram_peak)} above baseline, "
                                  f"{r.seconds:.1f} s")
            else:
                first = (r.error or "").splitlines()[0] if r.error else ""
                note.value = _tag(f"{r.outcome}: {first}" if first else r.outcome)
        elif run.state == "running":
            now = time.monotonic()
            if kind == "samples" and now - self._drawn.get(run.index, 0.0) < self.redraw_s:
                return
            self._drawn[run.index] = now
            expected = self._phases or run.phases_done + 2
            bar.value = run.fraction(expected)
            what = run.top_phase or "starting"
            note.value = _tag(f"{what} · {format_size(run.above_baseline)} above baseline "
                              f"(peak {format_size(run.peak_above_baseline)}) · "
                              f"{run.elapsed:.1f} s")

    def ended(self, progress: SweepProgress) -> None:
        """After the sweep: the runs that never started say "skipped"."""
        for run in progress.runs:
            if run.index < len(self.rows) and not run.finished:
                _label, bar, note = self.rows[run.index]
                bar.bar_style = "" if run.state == "waiting" else "warning"
                note.value = _tag("skipped (not run)" if run.state == "waiting"
                                  else "stopped")


def _tag(text: str) -> str:
    """A progress note on one line, its full text in the tooltip: a row never wraps."""
    t = html.escape(text)
    return (f'<span class="bigviz-note" title="{t}" style="white-space:nowrap;'
            f'overflow:hidden;text-overflow:ellipsis;display:block">{t}</span>')


def _untag(value: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", value))
