"""JSON reports: the object's own plain data with a ``kind`` field in front.

Layout (see docs/schema.md)::

    {"kind": "sweep", "results": [...], ..., "schema": 1}     # a Sweep
    {"kind": "run", "strategy": ..., "schema": 1}             # a RunResult
    {"kind": "recording", "name": ..., "schema": 1}           # a Recording
    {"kind": "runs", "results": [...], "schema": 1}           # a list of RunResults

``Recording.save`` and ``Sweep.save`` write the same document (one layout). Files they
wrote before it carried ``kind`` (schema 1, no ``kind``) load too: the kind is recognised
from their fields.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bigviz._errors import ReportError
from bigviz.data.recording import Recording
from bigviz.data.result import RunResult, Sweep
from bigviz.data.serde import SCHEMA_VERSION, check_schema, dumps_document

from ._common import Kind, Reportable, kind_of

KINDS: tuple[str, ...] = ("recording", "run", "sweep", "runs")


def to_data(obj: Reportable) -> tuple[Kind, dict[str, Any]]:
    """The kind and the JSON-ready data of ``obj`` (its own ``to_dict``; a list of runs
    is ``{"results": [...], "schema": N}``)."""
    kind = kind_of(obj)
    if kind == "runs":
        assert isinstance(obj, (list, tuple))
        return kind, {"results": [r.to_dict() for r in obj], "schema": SCHEMA_VERSION}
    assert isinstance(obj, (Recording, RunResult, Sweep))
    return kind, obj.to_dict()


def dumps(obj: Reportable) -> str:
    """The text of a JSON report: ``{"kind": ..., ...}``, compact, strict JSON, UTF-8,
    newline-terminated; the same document ``Recording.save`` and ``Sweep.save`` write."""
    return dumps_document(*to_data(obj))


def _guess_kind(data: dict[str, Any]) -> Kind | None:
    if "results" in data and isinstance(data.get("results"), list):
        return "sweep" if any(k in data for k in ("config", "command", "meta")) else "runs"
    if "strategy" in data and "outcome" in data:
        return "run"
    if "series" in data or "phases" in data:
        return "recording"
    return None


def from_data(data: Any, where: str) -> Reportable:
    """Rebuild the object of a report file's data.

    Raises:
        ReportError: not a bigviz report, an unknown kind or schema, or a bad field.
    """
    if not isinstance(data, dict):
        raise ReportError(
            f"{where} is not a bigviz report: expected a JSON object, got {type(data).__name__}"
        )
    kind = data.get("kind")
    if kind is None:
        kind = _guess_kind(data)
        if kind is None:
            raise ReportError(
                f"{where} is not a bigviz report: no 'kind' field and not the fields of a "
                "Recording, RunResult or Sweep; write reports with bigviz.report.write"
            )
    if kind not in KINDS:
        raise ReportError(
            f"{where} has an unknown report kind {kind!r}; this bigviz reads {', '.join(KINDS)} "
            "(a newer bigviz may have written it: pip install -U bigviz)"
        )
    label = {"recording": "Recording", "run": "RunResult", "sweep": "Sweep", "runs": "runs"}[kind]
    try:
        check_schema(data, f"{where}: {label}")
        if kind == "recording":
            return Recording.from_dict(data)
        if kind == "run":
            return RunResult.from_dict(data)
        if kind == "sweep":
            return Sweep.from_dict(data)
        results = data.get("results")
        if not isinstance(results, list):
            raise ReportError(f"{where}: 'results' must be a list of runs")
        return [RunResult.from_dict(r) for r in results]
    except ReportError as exc:
        msg = str(exc)
        raise ReportError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def load(path: Path) -> Reportable:
    """Read a JSON report file back into its object (see ``bigviz.report.load``)."""
    where = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ReportError(f"no report at {where!r}; check the path") from None
    except IsADirectoryError:
        raise ReportError(f"{where!r} is a folder, not a report file") from None
    except OSError as exc:
        raise ReportError(f"cannot read report {where!r}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ReportError(
            f"{where!r} is not a JSON report (not UTF-8 text); load the .json file a report "
            "was written to"
        ) from None
    head = text.lstrip()[:20].lower()
    if head.startswith(("<!doctype", "<html", "<svg", "<?xml")):
        raise ReportError(
            f"{where!r} is an HTML report; only JSON reports load back: "
            "bigviz.report.write(obj, 'out.json')"
        )
    if not text.strip():
        raise ReportError(f"report {where!r} is empty; was it written completely? re-export it")
    try:
        data = json.loads(text)
    except RecursionError:
        raise ReportError(f"report {where!r} is nested too deeply to be a bigviz report") from None
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"report {where!r} is not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}); was the file truncated? re-export it"
        ) from None
    return from_data(data, where)
