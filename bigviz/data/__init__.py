"""Plain data at the bottom of bigviz: what a run recorded and what it concluded.

Nothing here imports torch, the recorder or the runner, so reading a JSON report needs
only this package. :mod:`bigviz.data.recording` holds the timeline model (Recording,
Phase, Series, Mark, SourceInfo), :mod:`bigviz.data.result` the outcome model
(RunResult, Sweep, Prediction) and :mod:`bigviz.data.serde` the one JSON path.

Example:
    >>> from bigviz.data import Recording, RunResult
    >>> r = RunResult(strategy="meta", outcome="ok", recording=Recording(name="x"))
    >>> RunResult.from_json(r.to_json()) == r
    True
"""

from __future__ import annotations

from bigviz.data.recording import Mark, Phase, Recording, Series, SourceInfo
from bigviz.data.result import OUTCOMES, Outcome, Prediction, RunResult, Sweep
from bigviz.data.serde import SCHEMA_VERSION

__all__ = [
    "OUTCOMES",
    "SCHEMA_VERSION",
    "Mark",
    "Outcome",
    "Phase",
    "Prediction",
    "Recording",
    "RunResult",
    "Series",
    "SourceInfo",
    "Sweep",
]
