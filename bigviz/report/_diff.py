"""Compare two sets of runs and gate a change on its peaks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bigviz._errors import ConfigError, ReportError
from bigviz.data.recording import Recording
from bigviz.data.result import RunResult, Sweep
from bigviz.tables.labels import outcome_text, percent, short_labels
from bigviz.tables.ranks import nproc_of
from bigviz.units import format_size

#: Metrics compared, in table order: (field, heading, gates the exit code).
#: File-backed pages are page cache the kernel can drop and times are noisy (ANCHORS.md:
#: ±20–200% below a second), so they are shown but never fail a check.
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("ram_peak", "peak RAM", True),
    ("ram_anon_peak", "anonymous", True),
    ("ram_file_peak", "file-backed", False),
    ("vram_peak", "VRAM", True),
    ("seconds", "time", False),
)

Key = tuple[str, str, int | None, str | None, str | None, int | None]


def parse_threshold(threshold: float | str) -> float:
    """A relative threshold from ``0.05``, ``"0.05"`` or ``"5%"``.

    Args:
        threshold: a fraction (``0.05``) or a percentage string (``"5%"``).

    Returns:
        The fraction, e.g. ``0.05``.

    Raises:
        ConfigError: for negative, non-finite or unparsable values.

    Example:
        >>> parse_threshold("5%"), parse_threshold(0.2)
        (0.05, 0.2)
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, str)):
        raise ConfigError(
            f"threshold {threshold!r} must be a number like 0.05 or a string like '5%'"
        )
    if isinstance(threshold, str):
        text = threshold.strip()
        try:
            value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise ConfigError(
                f"threshold {threshold!r} is not understood; write a percentage like '5%' "
                "or a fraction like 0.05"
            ) from None
    else:
        value = float(threshold)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"threshold {threshold!r} must be a finite percentage >= 0, e.g. '5%'")
    return value


def _value(r: RunResult, metric: str) -> float | None:
    if metric == "vram_peak":
        return float(sum(r.vram_peak.values())) if r.vram_peak else None
    v = getattr(r, metric)
    return None if v is None else float(v)


@dataclass(frozen=True)
class Change:
    """One metric of one matched run: base and new values (bytes, or seconds for time)."""

    metric: str
    base: float | None
    new: float | None
    regressed: bool = False

    @property
    def delta(self) -> float | None:
        """``new - base`` (``None`` when either is unknown)."""
        return None if self.base is None or self.new is None else self.new - self.base

    @property
    def ratio(self) -> float | None:
        """Relative change, ``(new - base) / base`` (``None`` when base is 0 or unknown)."""
        if self.base is None or self.new is None or self.base == 0:
            return None
        return (self.new - self.base) / self.base

    def text(self) -> str:
        """``"1.5 GiB → 1.7 GiB (+10%)"``."""

        def fmt(v: float | None) -> str:
            if v is None:
                return "—"
            return f"{v:.2f} s" if self.metric == "seconds" else format_size(v)

        if self.base is None and self.new is None:
            return "—"
        r = self.ratio
        tail = f" ({percent(r)})" if r is not None else ""
        return f"{fmt(self.base)} → {fmt(self.new)}{tail}"


@dataclass
class RunDiff:
    """A run in base and/or new, matched by strategy, model, shard size, format, device map
    and rank count (distributed runs)."""

    key: Key
    label: str
    base: RunResult | None
    new: RunResult | None
    changes: list[Change] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``"matched"``, ``"added"`` (only in new) or ``"missing"`` (only in base)."""
        if self.base is None:
            return "added"
        if self.new is None:
            return "missing"
        return "matched"

    @property
    def outcome_regressed(self) -> bool:
        """A run that finished in base and does not in new."""
        return bool(self.base and self.new and self.base.ok and not self.new.ok)

    def change(self, metric: str) -> Change | None:
        """The change of ``metric`` (``None`` for unmatched runs)."""
        return next((c for c in self.changes if c.metric == metric), None)


@dataclass(frozen=True)
class Regression:
    """One reason a diff fails: a peak grew beyond the threshold, or a run stopped finishing."""

    label: str
    metric: str
    base: float | None
    new: float | None
    detail: str

    def __str__(self) -> str:
        return f"{self.label}: {self.detail}"


@dataclass
class Diff:
    """The changes between two sets of runs.

    ``exit_code`` is 1 when any regression was found (a gating peak grew by more than
    ``threshold`` and by at least ``min_bytes``, or a run that finished no longer does),
    else 0: ready for CI.
    """

    runs: list[RunDiff]
    threshold: float
    min_bytes: int

    @property
    def regressions(self) -> list[Regression]:
        """Every reason to fail, in run order."""
        out = []
        for rd in self.runs:
            if rd.outcome_regressed and rd.base and rd.new:
                out.append(
                    Regression(
                        rd.label,
                        "outcome",
                        None,
                        None,
                        f"finished in base, {outcome_text(rd.new.outcome)} now",
                    )
                )
            for c in rd.changes:
                if c.regressed:
                    heading = dict((m, h) for m, h, _g in METRICS)[c.metric]
                    out.append(
                        Regression(
                            rd.label,
                            c.metric,
                            c.base,
                            c.new,
                            f"{heading} {c.text()}, beyond the {self.threshold * 100:g}% threshold",
                        )
                    )
        return out

    @property
    def exit_code(self) -> int:
        """1 when there is a regression, else 0."""
        return 1 if self.regressions else 0

    def _rows(self) -> tuple[list[str], list[list[str]]]:
        head = ["run", "status", *[h for _m, h, _g in METRICS]]
        rows = []
        for rd in self.runs:
            status = rd.status
            if rd.outcome_regressed and rd.new:
                status = outcome_text(rd.new.outcome)
            elif any(c.regressed for c in rd.changes):
                status = "REGRESSED"
            cells = []
            for m, _h, _g in METRICS:
                c = rd.change(m)
                cells.append("—" if c is None else c.text() + (" ✕" if c.regressed else ""))
            rows.append([rd.label, status, *cells])
        return head, rows

    def summary(self) -> str:
        """One line: how many runs compared and what failed."""
        n = sum(1 for r in self.runs if r.status == "matched")
        regs = self.regressions
        added = sum(1 for r in self.runs if r.status == "added")
        missing = sum(1 for r in self.runs if r.status == "missing")
        extra = (f", {added} only in new" if added else "") + (
            f", {missing} only in base" if missing else ""
        )
        if regs:
            return (
                f"{len(regs)} regression(s) beyond {self.threshold * 100:g}% "
                f"in {n} matched run(s){extra}."
            )
        return f"No regression beyond {self.threshold * 100:g}% in {n} matched run(s){extra}."

    def to_text(self) -> str:
        """An aligned plain-text table for a terminal, then the regressions."""
        head, rows = self._rows()
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)).rstrip()]
        lines.append("  ".join("-" * w for w in widths))
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        lines += ["", self.summary()]
        lines += [f"  ✕ {reg}" for reg in self.regressions]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """A Markdown table for a pull-request comment."""
        from ._markdown import cell

        head, rows = self._rows()
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
        lines += ["", f"**{cell(self.summary())}**"]
        lines += [f"- {cell(str(reg))}" for reg in self.regressions]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data: threshold, exit code, per run its changes, the regressions."""
        return {
            "threshold": self.threshold,
            "min_bytes": self.min_bytes,
            "exit_code": self.exit_code,
            "runs": [
                {
                    "label": rd.label,
                    "key": list(rd.key),
                    "status": rd.status,
                    "outcome": {
                        "base": rd.base.outcome if rd.base else None,
                        "new": rd.new.outcome if rd.new else None,
                    },
                    "changes": {
                        c.metric: {
                            "base": c.base,
                            "new": c.new,
                            "ratio": c.ratio,
                            "regressed": c.regressed,
                        }
                        for c in rd.changes
                    },
                }
                for rd in self.runs
            ],
            "regressions": [
                {
                    "label": r.label,
                    "metric": r.metric,
                    "base": r.base,
                    "new": r.new,
                    "detail": r.detail,
                }
                for r in self.regressions
            ],
        }


def _runs(obj: Any, which: str) -> list[RunResult]:
    if isinstance(obj, Sweep):
        return list(obj.results)
    if isinstance(obj, RunResult):
        return [obj]
    if isinstance(obj, Recording):
        raise ReportError(
            f"the {which} report holds a Recording; diff compares runs: give RunResults or a Sweep"
        )
    if isinstance(obj, (list, tuple)) and all(isinstance(x, RunResult) for x in obj):
        return list(obj)
    raise ConfigError(
        f"cannot diff a {type(obj).__name__} ({which}); give a Sweep, a RunResult or RunResults"
    )


def _keyed(results: Sequence[RunResult]) -> dict[tuple[Key, int], RunResult]:
    # the same configuration twice (repeats) is matched in order: 1st with 1st, ...
    out: dict[tuple[Key, int], RunResult] = {}
    for r in results:
        # a distributed run on 4 ranks is not the same configuration as on 2
        key: Key = (r.strategy, r.model, r.shard_size, r.format, r.device_map, nproc_of(r))
        n = 0
        while (key, n) in out:
            n += 1
        out[(key, n)] = r
    return out


def diff(
    base: Sweep | RunResult | Sequence[RunResult],
    new: Sweep | RunResult | Sequence[RunResult],
    *,
    threshold: float | str = 0.05,
    min_bytes: int = 2**20,
) -> Diff:
    """Compare the runs of ``new`` with those of ``base``.

    Runs are matched by (strategy, model, shard size, format, device map, rank count).
    For each match the peaks (RAM, anonymous, file-backed, VRAM) and the time are
    compared. A gating peak (RAM, anonymous, VRAM) that grows by more than
    ``threshold`` and by at least ``min_bytes`` (so a 4 KiB wobble on a tiny run never
    fails CI) is a regression, and so is a run that finished in base and fails in new.

    Args:
        base: the reference runs.
        new: the runs to check.
        threshold: allowed relative growth: ``0.05`` or ``"5%"``.
        min_bytes: growth below this many bytes never counts (default 1 MiB).

    Returns:
        A :class:`Diff`; ``diff.exit_code`` is 1 on any regression.

    Raises:
        ConfigError: a bad threshold or an object that holds no runs.
        ReportError: a Recording was given (it has no runs to match).

    Example:
        >>> d = diff(base_sweep, new_sweep, threshold="5%")  # doctest: +SKIP
        >>> print(d.to_text()); raise SystemExit(d.exit_code)  # doctest: +SKIP
    """
    limit = parse_threshold(threshold)
    if isinstance(min_bytes, bool) or not isinstance(min_bytes, int) or min_bytes < 0:
        raise ConfigError(f"min_bytes {min_bytes!r} must be an int >= 0")
    b = _keyed(_runs(base, "base"))
    n = _keyed(_runs(new, "new"))
    keys = list(b) + [k for k in n if k not in b]
    rows: list[RunDiff] = []
    present = [b.get(k) or n[k] for k in keys]
    labels = short_labels(present) if present else []
    for key, label in zip(keys, labels, strict=True):
        rb, rn = b.get(key), n.get(key)
        if key[1] > 0:
            label += f" (#{key[1] + 1})"
        changes: list[Change] = []
        if rb is not None and rn is not None:
            for metric, _h, gates in METRICS:
                vb, vn = _value(rb, metric), _value(rn, metric)
                regressed = (
                    gates
                    and vb is not None
                    and vn is not None
                    and vn - vb > limit * vb
                    and vn - vb >= min_bytes
                )
                changes.append(Change(metric, vb, vn, bool(regressed)))
        rows.append(RunDiff(key[0], label, rb, rn, changes))
    return Diff(rows, limit, min_bytes)


def diff_files(base_path: str | Path, new_path: str | Path, threshold: float | str = 0.05) -> Diff:
    """:func:`diff` of two JSON reports on disk (what ``bigviz diff`` calls).

    Args:
        base_path: the reference JSON report (a sweep, a run or a list of runs).
        new_path: the JSON report to check.
        threshold: allowed relative growth: ``0.05`` or ``"5%"``.

    Returns:
        A :class:`Diff`; ``diff.exit_code`` is 1 on any regression.

    Raises:
        ReportError: a file is missing, corrupt, or holds a Recording.
        ConfigError: a bad threshold.

    Example:
        >>> d = diff_files("base.json", "new.json", "5%")  # doctest: +SKIP
    """
    from ._json import load

    limit = parse_threshold(threshold)
    base = load(Path(base_path))
    new = load(Path(new_path))
    for obj, p in ((base, base_path), (new, new_path)):
        if isinstance(obj, Recording):
            raise ReportError(
                f"{str(p)!r} holds a Recording; diff compares runs: give the JSON of a sweep or run"
            )
    return diff(base, new, threshold=limit)  # type: ignore[arg-type]
