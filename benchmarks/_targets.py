"""One line per figure that has a target, for ``run_all.py``'s closing table (issue 17).

A benchmark calls :func:`figure` where it prints a figure against its target; when
``run_all.py`` runs it, :data:`ENV` names a file and the figure is appended to it as one
JSON line, with the machine's load average at that moment. Run alone, nothing is written.

Example:
    >>> figure("recorder: load ratio on/off", 1.004, "<= 1.03", True)  # ENV unset: no-op
"""

from __future__ import annotations

import json
import os

#: the environment variable naming the JSON-lines file the figures go to
ENV = "BIGVIZ_BENCH_TARGETS"


def figure(name: str, value: float | str, target: str, met: bool, detail: str = "") -> None:
    """Append one figure (its value, its target, whether it is met) to :data:`ENV`'s file."""
    path = os.environ.get(ENV)
    if not path:
        return
    row = {
        "figure": name,
        "value": value,
        "target": target,
        "met": bool(met),
        "detail": detail,
        "load": round(os.getloadavg()[0], 2),
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
