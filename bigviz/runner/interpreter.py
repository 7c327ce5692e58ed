"""How bigviz starts a child interpreter (the fork server, torch.distributed ranks).

``python -c`` and ``python -m`` put the working directory FIRST on ``sys.path``, so a
``json.py`` or ``safetensors.py`` lying in the folder where ``bigviz sweep`` runs would
be imported instead of the real module, and executed. bigviz's children therefore drop
the working directory from the front of their path before importing anything, and
search it LAST, after the standard library and the installed packages: a factory module
named on purpose (``--model mymodels:build`` with ``mymodels.py`` in the working
directory) still resolves, a file that shadows a library never does.

The parent's other ``sys.path`` entries travel in ``PYTHONPATH`` so a child imports what
the parent can (bigviz itself, a user's package on a path the parent added).

Example:
    >>> argv = child_argv("print(1)")
    >>> argv[1], "sys.path" in argv[2]
    ('-c', True)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

__all__ = ["child_argv", "child_env"]

# Run before the child's own code: `os` and `sys` are loaded at start-up (frozen or
# builtin), so nothing is looked up on the path before the working directory moves.
_PRELUDE = (
    "import os as _o, sys as _s; _c = _o.getcwd(); "
    "_s.path[:] = [p for p in _s.path if p not in ('', '.', _c)]; _s.path.append(_c); "
    "del _o, _c, _s; "
)


def child_argv(code: str) -> list[str]:
    """The command line of a child interpreter that runs ``code`` with the working
    directory searched last (see the module docstring).

    Example:
        >>> child_argv("pass")[0] == sys.executable
        True
    """
    return [sys.executable, "-c", _PRELUDE + code]


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) with ``PYTHONPATH`` set to the parent's
    ``sys.path``, less the working directory (the child appends it at the end itself).

    Example:
        >>> os.getcwd() in child_env({}).get("PYTHONPATH", "").split(os.pathsep)
        False
    """
    env = dict(os.environ if base is None else base)
    cwd = os.getcwd()
    keep = [p for p in sys.path if p and p != "." and os.path.abspath(p) != cwd]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(keep))
    return env
