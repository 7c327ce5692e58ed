"""The phase-marker protocol of ``bigviz profile``: phases from a program in any language.

The profiled command gets a file descriptor (and a FIFO path any descendant can open for
writing). Each line written there is one event::

    BIGVIZ_PHASE start NAME     open a phase (nested inside the open one)
    BIGVIZ_PHASE end [NAME]     close the innermost open phase (or the one called NAME)
    BIGVIZ_MARK NAME            an instant event

This module parses the lines (:func:`parse_marker`) and reads them off the descriptor
without blocking (:class:`MarkerReader`); :mod:`bigviz.recorder.tree` acts on them.

Example:
    >>> parse_marker("BIGVIZ_PHASE start load shard 1")
    Marker(kind='start', name='load shard 1', line='BIGVIZ_PHASE start load shard 1')
    >>> parse_marker("BIGVIZ_PHASE begin x").kind
    'bad'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

__all__ = ["MARK_PREFIX", "PHASE_PREFIX", "Marker", "MarkerReader", "parse_marker"]

#: Line prefixes of the phase protocol.
PHASE_PREFIX = "BIGVIZ_PHASE"
MARK_PREFIX = "BIGVIZ_MARK"


@dataclass(frozen=True)
class Marker:
    """One marker line: ``kind`` is ``"start"``, ``"end"`` (``name`` may be empty: the
    innermost phase), ``"mark"`` or ``"bad"`` (not in the protocol; ``line`` says what).

    Example:
        >>> Marker("mark", "freed", "BIGVIZ_MARK freed").name
        'freed'
    """

    kind: Literal["start", "end", "mark", "bad"]
    name: str
    line: str


def parse_marker(line: str) -> Marker | None:
    """The event a marker line stands for; ``None`` for a blank line.

    Example:
        >>> parse_marker("BIGVIZ_PHASE end").kind, parse_marker("  ") is None
        ('end', True)
    """
    line = line.strip()
    if not line:
        return None
    head, _, rest = line.partition(" ")
    if head == MARK_PREFIX and rest.strip():
        return Marker("mark", rest.strip(), line)
    verb, _, name = rest.strip().partition(" ")
    name = name.strip()
    if head == PHASE_PREFIX and verb == "start" and name:
        return Marker("start", name, line)
    if head == PHASE_PREFIX and verb == "end":
        return Marker("end", name, line)
    return Marker("bad", "", line)


class MarkerReader:
    """Reads marker lines from a non-blocking file descriptor, keeping a partial last line
    for the next read.

    Args:
        fd: the reading end (a FIFO opened ``O_RDWR | O_NONBLOCK``, so that it never
            reports end-of-file between writers).

    Example:
        >>> r, w = os.pipe()
        >>> os.set_blocking(r, False)
        >>> _ = os.write(w, b"BIGVIZ_MARK a\\nBIGVIZ_PH")
        >>> reader = MarkerReader(r)
        >>> reader.lines()
        ['BIGVIZ_MARK a']
        >>> _ = os.write(w, b"ASE end\\n")
        >>> reader.lines()
        ['BIGVIZ_PHASE end']
        >>> os.close(r); os.close(w)
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = b""

    def lines(self) -> list[str]:
        """The complete lines written since the last call (decoded, stripped)."""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                return []
            if not chunk:
                break
            self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        return [raw.decode("utf-8", "replace").strip() for raw in lines]
