"""What every report format shares: object kinds, the summary table, the key finding,
and atomic file writes. No matplotlib here (``import bigviz.report`` stays light)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bigviz._errors import ConfigError, ReportError
from bigviz._labels import OUTCOME_TEXT, short_labels
from bigviz._ranks import is_distributed, node_rss_sum, nproc_of
from bigviz.data.recording import Phase, Recording
from bigviz.data.result import RunResult, Sweep
from bigviz.units import format_size

#: What a report can be made of.
Reportable = Recording | RunResult | Sweep | Sequence[RunResult]
Kind = Literal["recording", "run", "sweep", "runs"]


def kind_of(obj: Any) -> Kind:
    """The kind of a reportable object.

    Raises:
        ConfigError: for anything else.
    """
    if isinstance(obj, Recording):
        return "recording"
    if isinstance(obj, RunResult):
        return "run"
    if isinstance(obj, Sweep):
        return "sweep"
    if isinstance(obj, (list, tuple)) and all(isinstance(x, RunResult) for x in obj):
        return "runs"
    raise ConfigError(
        f"cannot report a {type(obj).__name__}; give a Recording, a RunResult, a Sweep "
        "or a list of RunResults"
    )


def results_of(obj: Reportable) -> list[RunResult]:
    """The runs in ``obj`` (none for a Recording)."""
    if isinstance(obj, Sweep):
        return list(obj.results)
    if isinstance(obj, RunResult):
        return [obj]
    if isinstance(obj, Recording):
        return []
    return list(obj)


def recordings_of(obj: Reportable) -> list[tuple[str, Recording, RunResult | None]]:
    """``(label, recording, run or None)`` for every timeline in ``obj``."""
    if isinstance(obj, Recording):
        return [(obj.name or "recording", obj, None)]
    results = results_of(obj)
    labels = short_labels(results) if len(results) > 1 else [r.label for r in results]
    return [(lab, r.recording, r) for lab, r in zip(labels, results, strict=True)]


# -- summary table ---------------------------------------------------------------------


@dataclass
class Row:
    """One line of the summary table; sizes in bytes above the run's baseline."""

    label: str
    strategy: str
    model: str
    shard_size: int | None
    format: str | None
    device_map: str | None
    outcome: str
    ram_peak: int | None
    ram_anon_peak: int | None
    ram_file_peak: int | None
    vram_peak: int | None
    predicted: int | None
    formula: str
    seconds: float
    error: str | None
    agrees: bool | None = None
    nproc: int | None = None

    @property
    def off_prediction(self) -> bool:
        """Measured and predicted disagree: the runner's verdict (``checks["prediction"]``,
        which allows for fixed overheads) when it gave one, else more than 25% apart."""
        if self.agrees is not None:
            return not self.agrees
        ratio = self.vs_predicted
        return ratio is not None and not 0.75 <= ratio <= 1.25

    @property
    def vs_predicted(self) -> float | None:
        """Measured peak divided by the predicted peak (``None`` when either is missing)."""
        if self.ram_peak is None or not self.predicted:
            return None
        return self.ram_peak / self.predicted


def summary_rows(results: Sequence[RunResult]) -> list[Row]:
    """The summary table of ``results``, one row per run, in their order."""
    labels = short_labels(results)
    return [
        Row(
            label=lab,
            strategy=r.strategy,
            model=r.model,
            shard_size=r.shard_size,
            format=r.format,
            device_map=r.device_map,
            outcome=r.outcome,
            ram_peak=r.ram_peak,
            ram_anon_peak=r.ram_anon_peak,
            ram_file_peak=r.ram_file_peak,
            vram_peak=sum(r.vram_peak.values()) if r.vram_peak else None,
            predicted=r.predicted.ram_peak if r.predicted else None,
            formula=r.predicted.formula if r.predicted else "",
            seconds=r.seconds,
            error=r.error,
            agrees=_agrees(r),
            nproc=nproc_of(r),
        )
        for lab, r in zip(labels, results, strict=True)
    ]


def _agrees(r: RunResult) -> bool | None:
    verdict = r.checks.prediction
    return None if verdict is None else verdict.agrees


def size(n: int | float | None) -> str:
    """A size for a table cell (``—`` when unknown)."""
    return format_size(n)


def shard_text(n: int | None) -> str:
    """A shard size the way people typed it (decimal units), or ``one file``."""
    return "one file" if n is None else format_size(n, binary=False, precision=0)


def percent(delta: float) -> str:
    """``−49%`` / ``+12%`` with a real minus sign."""
    p = round(delta * 100)
    if p == 0:
        return "±0%"
    return f"+{p}%" if p > 0 else f"−{-p}%"


# -- the key finding -------------------------------------------------------------------


def key_finding(results: Sequence[RunResult]) -> str | None:
    """The one sentence a reviewer needs, computed from the runs.

    The cheapest finished run is compared with ``naive`` (the same shard size and device
    map when there is one), or with the most expensive finished run when ``naive`` is
    absent, e.g. ``"meta cuts peak RAM from 1.6 GiB (naive) to 800.0 MiB (−49%)."``

    Distributed runs are compared by node RAM (Σ PSS over ranks) with ``every-rank-loads``
    on the same number of ranks (the largest rank count with two finished runs), e.g.
    ``"rank0-broadcast cuts node RAM on 2 ranks from 1.6 GiB (every-rank-loads) to
    800.0 MiB (−50%)."``; when summing RSS would overstate it, the sentence says so.

    Returns:
        The sentence, or ``None`` when fewer than two runs finished with a known peak
        (one run gets a sentence about itself).
    """
    dist = [r for r in results if is_distributed(r) or nproc_of(r) is not None]
    if dist:
        return _distributed_finding(dist)
    labels = dict(zip(map(id, results), short_labels(results), strict=True))
    done = [r for r in results if r.ok and r.ram_peak is not None]
    if len(done) == 1:
        r = done[0]
        return f"{labels[id(r)]} peaked at {size(r.ram_peak)} of RAM above its baseline."
    if len(done) < 2:
        return None
    best = min(done, key=lambda r: r.ram_peak or 0)
    naive = [r for r in done if r.strategy == "naive"]
    same = [r for r in naive if (r.shard_size, r.device_map) == (best.shard_size, best.device_map)]
    if same:
        ref = max(same, key=lambda r: r.ram_peak or 0)
    elif naive:
        ref = max(naive, key=lambda r: r.ram_peak or 0)
    else:
        failed_naive = [r for r in results if r.strategy == "naive" and not r.ok]
        if failed_naive:
            # naive could not even finish: that, not a 3% gap to the next-worst, is the news
            why = OUTCOME_TEXT.get(failed_naive[0].outcome, failed_naive[0].outcome)
            return (
                f"naive did not finish ({why}); {labels[id(best)]} has the lowest peak RAM, "
                f"{size(best.ram_peak)}."
            )
        ref = max(done, key=lambda r: r.ram_peak or 0)
    b, w = best.ram_peak or 0, ref.ram_peak or 0
    if ref is best or w <= b:
        return f"{labels[id(best)]} has the lowest peak RAM, {size(b)}; the others are no lower."
    text = (
        f"{labels[id(best)]} cuts peak RAM from {size(w)} ({labels[id(ref)]}) to {size(b)} "
        f"({percent((b - w) / w)})"
    )
    anon, file = best.ram_anon_peak, best.ram_file_peak
    if anon is not None and file is not None and file > anon:
        # an mmap strategy's peak is mostly page cache the kernel can drop: say so
        text += f", of which {size(file)} is file-backed and reclaimable"
    return text + "."


#: the distributed strategy every remedy is measured against (DESIGN.md)
DIST_REFERENCE = "every-rank-loads"


def _distributed_finding(results: Sequence[RunResult]) -> str | None:
    """The key finding among distributed runs: node RAM (Σ PSS over ranks), compared
    with ``every-rank-loads`` on the same number of ranks."""
    groups: dict[int | None, list[RunResult]] = {}
    for r in results:
        groups.setdefault(nproc_of(r), []).append(r)

    def done_in(rs: list[RunResult]) -> list[RunResult]:
        return [r for r in rs if r.ok and r.ram_peak is not None]

    # the most ranks that still give a comparison: that is where the choice matters most
    n, group = max(groups.items(), key=lambda kv: (len(done_in(kv[1])) >= 2, kv[0] or 0))
    labels = dict(zip(map(id, group), short_labels(group), strict=True))
    done = done_in(group)
    on = f"{n} ranks" if n is not None else "all ranks"
    if len(done) == 1:
        r = done[0]
        return (
            f"{labels[id(r)]} on {on}: node RAM (Σ PSS over ranks) peaked at "
            f"{size(r.ram_peak)} above baseline{_double_count(r)}."
        )
    if len(done) < 2:
        return None
    best = min(done, key=lambda r: r.ram_peak or 0)
    refs = [r for r in done if r.strategy == DIST_REFERENCE]
    if refs:
        ref = max(refs, key=lambda r: r.ram_peak or 0)
    else:
        failed = [r for r in group if r.strategy == DIST_REFERENCE and not r.ok]
        if failed:
            why = OUTCOME_TEXT.get(failed[0].outcome, failed[0].outcome)
            return (
                f"{DIST_REFERENCE} did not finish on {on} ({why}); {labels[id(best)]} has the "
                f"lowest node RAM, {size(best.ram_peak)}{_double_count(best)}."
            )
        ref = max(done, key=lambda r: r.ram_peak or 0)
    b, w = best.ram_peak or 0, ref.ram_peak or 0
    if ref is best or w <= b:
        return (
            f"{labels[id(best)]} has the lowest node RAM on {on}, {size(b)}; "
            "the others are no lower."
        )
    return (
        f"{labels[id(best)]} cuts node RAM on {on} from {size(w)} ({labels[id(ref)]}) to "
        f"{size(b)} ({percent((b - w) / w)}){_double_count(best)}."
    )


def _double_count(r: RunResult) -> str:
    """The RSS sum's claim when it would overstate node RAM by more than a quarter."""
    rss = node_rss_sum(r)
    if rss is None or r.ram_peak is None or rss <= 1.25 * r.ram_peak:
        return ""
    return f"; summing the ranks' RSS would claim {size(rss)}, counting shared pages once per rank"


def failures(results: Sequence[RunResult]) -> list[str]:
    """One line per run that did not finish, e.g. ``naive · 1GB: OOM-killed in load``."""
    labels = short_labels(results)
    out = []
    for lab, r in zip(labels, results, strict=True):
        if r.ok:
            continue
        where = f" in {r.phase_reached}" if r.phase_reached else ""
        why = f" ({r.error})" if r.error else ""
        out.append(f"{lab}: {OUTCOME_TEXT.get(r.outcome, r.outcome)}{where}{why}")
    return out


def phase_peak_sentence(rec: Recording) -> str | None:
    """``"Peak RSS 1.5 GiB, in phase 'load'."`` for a bare Recording."""
    best: Phase | None = None
    for p in rec.phases:
        if (
            p.ram_peak is not None
            and p.depth == 0
            and (best is None or p.ram_peak > (best.ram_peak or 0))
        ):
            best = p
    if best is not None:
        return f"Peak RSS {size(best.ram_peak)}, in phase {best.name!r}."
    peak = rec.peak("ram.rss")
    return None if peak is None else f"Peak RSS {size(peak)}."


def headline(obj: Reportable) -> str | None:
    """The sentence a report leads with: the key finding of its runs, or for a bare
    Recording the phase where RSS peaked."""
    results = results_of(obj)
    if results:
        return key_finding(results)
    return phase_peak_sentence(obj) if isinstance(obj, Recording) else None


def environment(obj: Reportable) -> list[tuple[str, str]]:
    """``(key, value)`` pairs describing where the runs ran, from the meta dicts."""
    metas: list[dict[str, Any]] = []
    if isinstance(obj, Sweep):
        metas.append(obj.meta)
    for _l, rec, _r in recordings_of(obj)[:1]:
        metas.append(rec.meta)
    merged: dict[str, Any] = {}
    for m in metas:
        for k, v in m.items():
            merged.setdefault(k, v)
    out: list[tuple[str, str]] = []

    def add(key: str, value: Any) -> None:
        if isinstance(value, dict) and value and len(out) < 200:
            for k, v in value.items():
                add(f"{key}.{k}", v)
            return
        if isinstance(value, bool) or value is None:
            text = str(value)
        elif isinstance(value, int) and _is_size_key(key):
            text = f"{format_size(value)} ({value:,} bytes)"
        elif key == "gpus" and isinstance(value, list) and all(isinstance(g, dict) for g in value):
            text = "; ".join(_gpu_text(g) for g in value) or "none"
        elif isinstance(value, (list, dict)):
            text = json.dumps(value, ensure_ascii=False)
        else:
            text = str(value)
        out.append((key, text))

    for k, v in merged.items():
        add(str(k), v)
    return out


def _is_size_key(key: str) -> bool:
    """Does a meta key name a byte count (``ram_total``, ``memory_total``, ``x_bytes``)?"""
    last = key.rsplit(".", 1)[-1].lower()
    return last.endswith(("_bytes", "ram_total", "memory_total", "total_memory", "mem_total")) or (
        last in ("ram", "memory", "bytes", "total")
    )


def _gpu_text(gpu: dict[str, Any]) -> str:
    name = str(gpu.get("name", "GPU"))
    total = next((v for k, v in gpu.items() if "memory" in k or k == "total"), None)
    idx = gpu.get("index")
    head = f"{idx}: {name}" if idx is not None else name
    return f"{head} ({format_size(total)})" if isinstance(total, int) else head


def title_of(obj: Reportable) -> str:
    """A short title: the model and the number of runs, or the recording's name."""
    if isinstance(obj, Recording):
        return f"recording {obj.name}" if obj.name else "recording"
    results = results_of(obj)
    models = sorted({r.model for r in results if r.model})
    what = ", ".join(models) if models else "runs"
    n = len(results)
    return f"{what} — {n} run{'s' if n != 1 else ''}"


# -- files -----------------------------------------------------------------------------


def check_target(path: Path, *, overwrite: bool) -> None:
    """Refuse, before any work, a path that cannot take a report.

    Raises:
        ReportError: naming the path and the fix.
    """
    parent = path.parent
    if not parent.is_dir():
        raise ReportError(
            f"cannot write report {str(path)!r}: folder {str(parent)!r} does not exist; "
            "create it first"
        )
    if path.is_dir():
        raise ReportError(f"cannot write report {str(path)!r}: it is a folder; give a file name")
    if path.exists() and not overwrite:
        raise ReportError(
            f"report {str(path)!r} already exists; pass overwrite=True or choose another name"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ReportError(
            f"cannot write report {str(path)!r}: folder {str(parent)!r} is not writable; "
            "choose a folder you can write to"
        )


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    A reader never sees half a report, and a failure leaves no partial file.

    Raises:
        ReportError: naming the path and the operating system's reason.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        # mkstemp makes 0600 files; a report is meant to be shared like any other file
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise ReportError(
            f"cannot write report {str(path)!r}: {exc.strerror or exc}; "
            "check the folder exists, is writable and has space"
        ) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


def sibling(path: Path, suffix: str) -> Path:
    """``out.md`` → ``out<suffix>`` (e.g. ``out.peaks.png``), in the same folder."""
    return path.with_name(path.stem + suffix)


def iter_phases(rec: Recording) -> Iterable[tuple[int, Phase]]:
    """Phases in recorded order with their index."""
    return enumerate(rec.phases)
