"""Where a recording's events and errors go: the ``on_event`` stream and ``Recording.errors``.

``on_event`` gets small JSON-ready dicts while recording; a callback that raises is
recorded as an error, never propagated into the measured code. Errors are capped per
origin, so a source failing at every tick cannot fill the recording.

Example:
    >>> errors: list[str] = []
    >>> log = EventLog(None, errors)
    >>> for _ in range(12):
    ...     log.error("ram", "read failed")
    >>> len(errors), errors[-1]
    (11, 'ram: more errors follow; not recorded')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bigviz.recorder._store import SampleStore

__all__ = ["MAX_ERRORS_PER_ORIGIN", "EventCallback", "EventLog"]

#: ``on_event(event)``
EventCallback = Callable[[dict[str, Any]], None]

#: errors kept per origin; one more line says that more followed
MAX_ERRORS_PER_ORIGIN = 10


class EventLog:
    """The event stream and the error list of one recording.

    Args:
        on_event: the streaming callback, or ``None``.
        errors: the list errors are appended to (``Recording.errors``).
    """

    def __init__(self, on_event: EventCallback | None, errors: list[str]) -> None:
        self.on_event = on_event
        self.errors = errors
        self._counts: dict[str, int] = {}

    def emit(self, event: dict[str, Any]) -> None:
        """Send ``event`` to ``on_event``; what it raises becomes an error."""
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception as exc:
            self.error(
                "on_event",
                f"on_event callback raised on a {event['type']!r} event: "
                f"{type(exc).__name__}: {exc}",
            )

    def emit_samples(self, store: SampleStore | None) -> None:
        """Send the samples gathered since the last call as one ``samples`` event."""
        if self.on_event is None or store is None:
            return
        # the samples since the last batch are the tail of each series: no second copy
        series: dict[str, list[list[Any]]] = {}
        for k, st in store.series.items():
            n = len(st)
            if n > st.emitted:
                series[k] = [st.t[st.emitted : n].tolist(), st.values_list(st.emitted)]
                st.emitted = n
        if series:
            self.emit({"type": "samples", "series": series})

    def error(self, origin: str, message: str) -> None:
        """Record ``message`` (from ``origin``: a source, the callback …), capped per origin."""
        n = self._counts.get(origin, 0) + 1
        self._counts[origin] = n
        if n <= MAX_ERRORS_PER_ORIGIN:
            self.errors.append(message)
        elif n == MAX_ERRORS_PER_ORIGIN + 1:
            self.errors.append(f"{origin}: more errors follow; not recorded")
