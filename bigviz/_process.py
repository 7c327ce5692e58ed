"""Small facts about other processes that any layer may ask, with no import of its own.

Example:
    >>> import os
    >>> pid_alive(os.getpid())
    True
"""

from __future__ import annotations

import os

__all__ = ["pid_alive"]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0: nothing is sent). Someone else's
    process, which we may not signal, counts as alive.

    Used to tell the hidden temporary folders of a live save or preparation from those a
    killed process left behind (their names carry the owner's pid).

    Example:
        >>> pid_alive(os.getpid())
        True
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True
