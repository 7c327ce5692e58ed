"""One row model per table, the labels of runs, and the one-line findings.

Every front end (the HTML, Markdown and CSV reports, the notebook tables, the terminal)
reads these rows and only formats their cells, so a figure reads the same everywhere.
Plain data in, plain data out: no matplotlib, IPython or runner here.

=============  ===========================================================================
``runs``       :class:`RunRow`, :func:`run_rows`: one row per run (peaks, prediction, verdict)
``phases``     :class:`PhaseRow`, :func:`phase_rows`, :func:`lanes`: one row per phase
``ranks``      :class:`RankRow`, :func:`rank_rows` and the per-rank figures of distributed runs
``labels``     outcome words, :func:`short_labels`, cell words (shard size, percent, VRAM)
``findings``   :func:`key_finding`, :func:`failures`, :func:`headline`
=============  ===========================================================================

Example:
    >>> from bigviz.data.result import RunResult
    >>> [row.label for row in run_rows([RunResult("naive", "ok"), RunResult("meta", "ok")])]
    ['naive', 'meta']
"""

from __future__ import annotations

from bigviz.tables.findings import (
    DIST_REFERENCE,
    failures,
    headline,
    key_finding,
    phase_peak_sentence,
)
from bigviz.tables.labels import (
    OUTCOME_TEXT,
    outcome_text,
    percent,
    shard_text,
    short_labels,
    vram_text,
)
from bigviz.tables.phases import PhaseRow, lanes, phase_rows
from bigviz.tables.ranks import (
    RankRow,
    contributions,
    failed_rank,
    is_distributed,
    node_rss_sum,
    nproc_of,
    pss_snapshots,
    rank_baseline,
    rank_rows,
)
from bigviz.tables.runs import RunRow, results_of, run_rows

__all__ = [
    "DIST_REFERENCE",
    "OUTCOME_TEXT",
    "PhaseRow",
    "RankRow",
    "RunRow",
    "contributions",
    "failed_rank",
    "failures",
    "headline",
    "is_distributed",
    "key_finding",
    "lanes",
    "node_rss_sum",
    "nproc_of",
    "outcome_text",
    "percent",
    "phase_peak_sentence",
    "phase_rows",
    "pss_snapshots",
    "rank_baseline",
    "rank_rows",
    "results_of",
    "run_rows",
    "shard_text",
    "short_labels",
    "vram_text",
]
