"""The one event framing between a measured process and the parent that watches it, and
the :class:`Timeline` that rebuilds a Recording from those events.

A message is length-prefixed JSON (4-byte big-endian length, then the UTF-8 body). The
single-process worker sends them over its socket, every rank of a distributed job over a
pipe: ``baseline`` / ``hello``, the recorder's own events (``samples``, ``phase_start``,
``phase_end``, ``mark``) as they happen, and a final ``result`` / ``error``.

Example:
    >>> buf = bytearray(encode({"type": "mark", "name": "a"}) + encode({"type": "x"}))
    >>> [m["type"] for m in recv_messages(buf)], bytes(buf)
    (['mark', 'x'], b'')
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
from typing import Any

from bigviz.data.recording import Mark, Phase, Recording, Series
from bigviz.data.serde import from_plain

__all__ = ["Channel", "Timeline", "encode", "recv_messages"]


def encode(msg: dict[str, Any]) -> bytes:
    """One message as its frame: length prefix and JSON body."""
    data = json.dumps(msg, allow_nan=False, default=str).encode()
    return struct.pack(">I", len(data)) + data


def recv_messages(buf: bytearray) -> list[dict[str, Any]]:
    """Pop every complete message from ``buf`` (the parent's side of :class:`Channel`)."""
    out = []
    while len(buf) >= 4:
        (n,) = struct.unpack(">I", buf[:4])
        if len(buf) < 4 + n:
            break
        out.append(json.loads(bytes(buf[4 : 4 + n])))
        del buf[: 4 + n]
    return out


class Channel:
    """Thread-safe sender of framed messages (the recorder emits from its own thread) to
    a socket or a file descriptor; ``stamp`` is added to every message (a rank's number).

    Once the parent is gone, sending is a no-op: the measured process finishes quietly.

    Example:
        >>> a, b = socket.socketpair()
        >>> Channel(a, rank=1).send({"type": "mark"})
        >>> recv_messages(bytearray(b.recv(100)))
        [{'type': 'mark', 'rank': 1}]
        >>> a.close(); b.close()
    """

    def __init__(self, target: socket.socket | int | None, **stamp: Any) -> None:
        self._target = target
        self._stamp = stamp
        self._lock = threading.Lock()
        self.broken = target is None

    def send(self, msg: dict[str, Any]) -> None:
        """Frame and send ``msg`` (plus the stamp)."""
        if self.broken:
            return
        data = encode({**msg, **self._stamp} if self._stamp else msg)
        with self._lock:
            try:
                if isinstance(self._target, socket.socket):
                    self._target.sendall(data)
                elif self._target is not None:
                    _write_all(self._target, data)
            except OSError:
                self.broken = True  # the parent is gone; finish quietly


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class Timeline:
    """Rebuilds a Recording from a recorder's streamed events, for a process that never
    sent its final result (killed, crashed): one per worker or rank.

    Example:
        >>> tl = Timeline()
        >>> tl.feed({"type": "phase_start", "index": 0, "name": "load", "t": 0.5})
        >>> tl.current()
        'load'
    """

    def __init__(self) -> None:
        self.series: dict[str, Series] = {}
        self.phases: dict[int, Phase] = {}
        self.open: list[int] = []
        self.marks: list[dict[str, Any]] = []

    def feed(self, ev: dict[str, Any]) -> None:
        """Take one recorder event (others are ignored)."""
        kind = ev.get("type")
        if kind == "samples":
            for name, (ts, vs) in ev.get("series", {}).items():
                s = self.series.setdefault(name, Series(name))
                s.t.extend(float(t) for t in ts)
                s.v.extend(int(v) for v in vs)
        elif kind == "phase_start":
            i = int(ev["index"])
            parent = ev.get("parent")
            depth = self.phases[parent].depth + 1 if parent in self.phases else 0
            self.phases[i] = Phase(str(ev["name"]), start=float(ev["t"]), parent=parent,
                                   depth=depth, detail=dict(ev.get("detail") or {}))
            self.open.append(i)
        elif kind == "phase_end":
            i = int(ev["index"])
            # a malformed event must not lose the rest of the run
            with contextlib.suppress(Exception):
                self.phases[i] = from_plain(Phase, ev["phase"])
            if i in self.open:
                self.open.remove(i)
        elif kind == "mark":
            self.marks.append(ev)

    def current(self) -> str | None:
        """The innermost open phase."""
        if self.open:
            return self.phases[self.open[-1]].name
        return None

    def last_started(self) -> str | None:
        """The phase started last (open or not)."""
        if not self.phases:
            return None
        return self.phases[max(self.phases)].name

    def phase(self) -> str | None:
        """Where the process is: the innermost open phase, else the last one started."""
        return self.current() or self.last_started()

    def recording(self, name: str, pid: int, interval_ms: float, end_t: float | None) -> Recording:
        """What was streamed so far, as a Recording marked ``meta["partial"]``."""
        phases = [self.phases[i] for i in sorted(self.phases)]
        marks = [Mark(str(m.get("name", "")), float(m.get("t", 0.0)),
                      dict(m.get("detail") or {})) for m in self.marks]
        duration = max([end_t or 0.0] + [s.t[-1] for s in self.series.values() if s.t])
        return Recording(name=name, pid=pid, interval_ms=interval_ms, series=self.series,
                         phases=phases, marks=marks, duration=duration,
                         meta={"partial": True})
