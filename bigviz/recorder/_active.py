"""One recorder at a time in a process: two would reset each other's exact peaks.

Example:
    >>> claim("first", lambda: "name='first'")
    >>> try:
    ...     claim("second", lambda: "name='second'")
    ... except RecorderError as exc:
    ...     "already recording" in str(exc)
    True
    >>> release("first")
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from bigviz._errors import RecorderError

__all__ = ["claim", "release"]

# the recording recorder and how to name it in the error
_ACTIVE: tuple[object, Callable[[], str]] | None = None
_LOCK = threading.Lock()


def _reset_after_fork() -> None:
    # a forked child has no sidecar and no collector thread: it is not recording, and may
    # start its own recorder (the lock may have been held by another thread at fork time)
    global _ACTIVE, _LOCK
    _ACTIVE = None
    _LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_reset_after_fork)


def claim(owner: object, label: Callable[[], str]) -> None:
    """Make ``owner`` the process's recording recorder.

    Args:
        owner: the recorder.
        label: names it in the error another recorder gets meanwhile.

    Raises:
        RecorderError: another recorder is recording.
    """
    global _ACTIVE
    with _LOCK:
        if _ACTIVE is not None:
            raise RecorderError(
                "another bigviz recorder is already recording in this process "
                f"({_ACTIVE[1]()}); two at once "
                "would reset each other's exact peaks — stop it first (rec.stop() or "
                "leave its `with` block), or use rec.phase(...) inside it"
            )
        _ACTIVE = (owner, label)


def release(owner: object) -> None:
    """``owner`` stopped recording (nothing happens if it was not the recording one)."""
    global _ACTIVE
    with _LOCK:
        if _ACTIVE is not None and _ACTIVE[0] is owner:
            _ACTIVE = None
