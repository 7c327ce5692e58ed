"""Open phases and the fold of high-water marks into them: one stack for every recorder.

Both the in-process :class:`~bigviz.recorder.Recorder` and ``bigviz profile``'s
process-tree sampler (:mod:`bigviz.recorder.tree`) keep their open phases here.

How exact nested peaks work. A resettable high-water mark (the kernel's ``VmHWM`` via
``clear_refs``; the CUDA allocator's ``max_memory_allocated``) is reset at every phase
boundary. Before a reset, the mark reached since the previous reset is *folded*
(:meth:`PhaseStack.fold`) into every open phase (the stretch just ended belongs to all of
them) and into the whole recording (:attr:`PhaseStack.root`). A phase's peak is therefore
the max over its own stretches and its children's, with one reset per boundary and no lost
spike. The keys of the marks are whatever the recorder measures: ``"ram"``/``"cuda:0"``
for one process, process ids for a process tree.

Example:
    >>> phases: list[Phase] = []
    >>> stack: PhaseStack[str] = PhaseStack()
    >>> outer = stack.open(phases, "outer", start=0.0)
    >>> inner = stack.open(phases, "inner", start=1.0)
    >>> stack.fold({"ram": 900})      # a spike while both were open
    >>> stack.close(inner)
    True
    >>> stack.fold({"ram": 300})
    >>> outer.peaks, inner.peaks, phases[1].parent
    ({'ram': 900}, {'ram': 900}, 0)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bigviz.data.recording import Phase

__all__ = ["OpenPhase", "PhaseStack", "fold_max"]

K = TypeVar("K")


def fold_max(into: dict[K, int], marks: Mapping[K, int]) -> None:
    """Raise each of ``into``'s values to ``marks``' value for the same key (keys missing
    from ``into`` are added).

    Example:
        >>> peaks = {"ram": 5}
        >>> fold_max(peaks, {"ram": 3, "cuda:0": 7})
        >>> peaks
        {'ram': 5, 'cuda:0': 7}
    """
    for k, v in marks.items():
        into[k] = max(into.get(k, v), v)


# eq=False: an open phase is one event, found in the stack by identity
@dataclass(eq=False)
class OpenPhase(Generic[K]):
    """A phase that has started and not ended yet.

    Attributes:
        index: its position in the recording's phase list.
        phase: the :class:`~bigviz.data.recording.Phase` being filled.
        peaks: the highest mark folded in per key so far (exact figures).
        thread: the thread that opened it (0 when not tracked).

    Example:
        >>> OpenPhase(0, Phase("load", start=0.0)).peaks
        {}
    """

    index: int
    phase: Phase
    peaks: dict[K, int] = field(default_factory=dict)
    thread: int = 0


class PhaseStack(Generic[K]):
    """The open phases, outermost first, and the marks folded into them.

    Not thread-safe by itself: the recorder holds its lock around every call.

    Example:
        >>> phases: list[Phase] = []
        >>> stack: PhaseStack[int] = PhaseStack()
        >>> a = stack.open(phases, "a", start=0.0)
        >>> b = stack.open(phases, "b", start=0.5)
        >>> [op.phase.name for op in stack.close_through("a")]
        ['b', 'a']
    """

    def __init__(self) -> None:
        self._open: list[OpenPhase[K]] = []
        #: the marks folded in over the whole recording
        self.root: dict[K, int] = {}

    def open(
        self,
        phases: list[Phase],
        name: str,
        *,
        start: float,
        peaks: Mapping[K, int] | None = None,
        thread: int = 0,
        **fields: Any,
    ) -> OpenPhase[K]:
        """Start a phase nested in the innermost open one and append it to ``phases``.

        Args:
            phases: the recording's phase list (the new phase's index is its length).
            name: the phase's name.
            start: its start time.
            peaks: the values at the start, the first marks of the new phase.
            thread: the opening thread.
            **fields: more :class:`~bigviz.data.recording.Phase` fields (``auto``,
                ``detail``, ``ram_start`` …).

        Returns:
            The :class:`OpenPhase`; ``parent`` and ``depth`` of its phase are set.
        """
        parent = self._open[-1].index if self._open else None
        phase = Phase(name, start=start, parent=parent, depth=len(self._open), **fields)
        phases.append(phase)
        op: OpenPhase[K] = OpenPhase(len(phases) - 1, phase, dict(peaks or {}), thread)
        self._open.append(op)
        return op

    def fold(self, marks: Mapping[K, int]) -> None:
        """Fold high-water marks reached since the last reset into every open phase and
        into :attr:`root` (see the module docs)."""
        fold_max(self.root, marks)
        for op in self._open:
            fold_max(op.peaks, marks)

    def clear_peaks(self) -> None:
        """Forget the marks folded into the open phases (they can no longer be exact)."""
        for op in self._open:
            op.peaks.clear()

    def close(self, op: OpenPhase[K]) -> bool:
        """Take ``op`` off the stack; False when it was closed already.

        Not a pop: a child may close after its parent when threads interleave.
        """
        if op not in self._open:
            return False
        self._open.remove(op)
        return True

    def close_through(self, name: str = "") -> list[OpenPhase[K]]:
        """Close the innermost phase, or every phase down to the innermost one called
        ``name``; returns them innermost first (empty when ``name`` is not open)."""
        if name and name not in self.names():
            return []
        closed: list[OpenPhase[K]] = []
        while self._open:
            op = self._open.pop()
            closed.append(op)
            if not name or op.phase.name == name:
                break
        return closed

    def names(self) -> list[str]:
        """The open phases' names, outermost first."""
        return [op.phase.name for op in self._open]

    @property
    def innermost(self) -> OpenPhase[K] | None:
        """The most recently opened phase still open, or ``None``."""
        return self._open[-1] if self._open else None

    def __iter__(self) -> Iterator[OpenPhase[K]]:
        return iter(list(self._open))

    def __len__(self) -> int:
        return len(self._open)

    def __bool__(self) -> bool:
        return bool(self._open)

    def __contains__(self, op: object) -> bool:
        return op in self._open
