"""The source protocol: what the Recorder asks of a memory source.

A source does two jobs:

* **timeline** — :meth:`Source.poll` returns the samples gathered since the last poll,
  as ``{series_name: ([t, ...], [v, ...])}`` with ``t`` on the recorder's clock (absolute,
  the recorder subtracts its t0);
* **exact peaks** — :meth:`Source.read_now`, :meth:`Source.read_peaks` and
  :meth:`Source.reset_peaks` expose high-water marks the recorder folds into nested
  phases (``"ram"`` → ``Phase.ram_*``, ``"cuda:N"`` → ``Phase.vram_*``).

Sources never raise to say "not here": :meth:`Source.start` returns
``SourceInfo(available=False, reason=...)``. A failure mid-run raises from ``poll`` (or the
peak calls); the recorder records it in ``Recording.errors`` and carries on without it.

Example:
    >>> class Idle(Source):
    ...     names = ("idle",)
    >>> Idle().poll()
    {}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bigviz.data.recording import SourceInfo

__all__ = ["SOURCE_NAMES", "Clock", "SampleBatch", "Samples", "Source"]

#: series name -> (times, values); times on the recorder's clock
Samples = dict[str, tuple[list[float], list[int]]]

#: what :meth:`Source.poll` may return: any sequences (``Samples`` with lists, or
#: ``array("d")`` / ``array("q")`` as :class:`ProcSource` gives, which the recorder
#: copies into its store without a Python object per sample)
SampleBatch = Mapping[str, tuple[Sequence[float], Sequence[int]]]

#: names accepted by ``record(sources=...)``
SOURCE_NAMES = ("ram", "sys", "cuda", "nvml")

Clock = Callable[[], float]


class Source:
    """Base class of memory sources; see the module docstring for the protocol.

    Subclass it (as :class:`bigviz.testing.FakeSource` does) to feed the recorder
    anything. Every method may raise; the recorder turns that into ``Recording.errors``.
    """

    #: names this source answers to in ``record(sources=[...])``
    names: tuple[str, ...] = ()
    #: peak key -> series used when the exact counter is unavailable
    peak_series: dict[str, str] = {}  # noqa: RUF012 - read-only class default

    def start(self, *, clock: Clock, interval_ms: float) -> list[SourceInfo]:
        """Begin measuring; one SourceInfo per name in :attr:`names`."""
        return []

    def poll(self) -> SampleBatch:
        """Samples gathered since the last call (series sharing one time sequence object
        are stored with one time array)."""
        return {}

    def read_now(self) -> dict[str, int]:
        """Exact current values of the peak keys (``{"ram": rss}``)."""
        return {}

    def read_peaks(self) -> dict[str, int]:
        """High-water marks since the last :meth:`reset_peaks` (only exact ones)."""
        return {}

    def reset_peaks(self) -> None:
        """Restart the high-water marks at the current values."""

    def exact_keys(self) -> set[str]:
        """Peak keys whose :meth:`read_peaks` figure is exact (kernel/allocator counter)."""
        return set()

    def meta(self) -> dict[str, Any]:
        """Facts for ``Recording.meta`` (versions, device names, rates)."""
        return {}

    def stop(self) -> None:
        """Stop measuring and release everything (processes, threads, handles)."""
