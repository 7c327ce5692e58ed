"""Plain-data (de)serialisation of bigviz's dataclasses.

Recordings, RunResults and Sweeps are dataclasses made of ``int``, ``float``, ``str``,
``bool``, ``None``, lists, ``dict[str, ...]`` and other such dataclasses. ``to_plain``
turns one into JSON-ready data and ``from_plain`` rebuilds it from the field types, so
``from_plain(T, to_plain(x)) == x`` holds exactly (JSON keeps floats bit-exact).

A dataclass may take over its own conversion: ``__to_plain__(self)`` returns its plain
data, ``__from_plain__(data, where)`` prepares data before the fields are rebuilt (and
may put ready-made dataclass instances in it, which are kept as they are). The Recording
uses them to write its series as packed columns (:mod:`bigviz.data.columns`).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union, cast

from bigviz._errors import ReportError

__all__ = [
    "SCHEMA_VERSION",
    "check_schema",
    "dumps_document",
    "from_plain",
    "loads_json",
    "plain_fields",
    "to_plain",
]

#: largest magnitude of an integer read from a document (a signed 64-bit value)
MAX_INT = 2**63 - 1

#: Version of the JSON schema of Recordings, RunResults and Sweeps. Bump it on any
#: change that an older reader would misread; readers refuse newer versions.
#: 1: series as JSON lists; 2: series as packed columns (:mod:`bigviz.data.columns`).
SCHEMA_VERSION = 2

T = TypeVar("T")

_HINTS: dict[type, dict[str, Any]] = {}


def to_plain(obj: Any) -> Any:
    """Return ``obj`` as JSON-ready data (dicts, lists, numbers, strings, None).

    Non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"`` so the
    result is strict JSON.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class P:
        ...     x: int
        >>> to_plain(P(3))
        {'x': 3}
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        hook = getattr(obj, "__to_plain__", None)
        return hook() if hook is not None else plain_fields(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, (list, tuple)):
        if _plain_numbers(obj):  # fast path: timelines are long lists of numbers
            return list(obj)
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    return obj


def plain_fields(obj: Any, **override: Any) -> dict[str, Any]:
    """The fields of dataclass ``obj`` as plain data, in field order; ``override`` gives
    ready-made plain data for some fields (a ``__to_plain__`` hook's building block)."""
    return {
        f.name: override[f.name] if f.name in override else to_plain(getattr(obj, f.name))
        for f in dataclasses.fields(obj)
    }


def _plain_numbers(items: list[Any] | tuple[Any, ...]) -> bool:
    """True when every item is an int or float and the floats are all finite."""
    if not all(type(v) is int or type(v) is float for v in items):
        return False
    try:
        return math.isfinite(math.fsum(v for v in items if type(v) is float))
    except (OverflowError, ValueError):  # ValueError: fsum of inf and -inf together
        return False


def from_plain(cls: type[T], data: Any) -> T:
    """Rebuild a dataclass ``cls`` from data made by :func:`to_plain`.

    Raises:
        ReportError: when the data does not fit the type, naming the field.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class P:
        ...     x: int
        >>> from_plain(P, {"x": 3})
        P(x=3)
    """
    return cast(T, _convert(cls, data, cls.__name__))


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _convert(tp: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return data
    if origin is Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if data is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, data, where)
            except ReportError as exc:
                errors.append(str(exc))
        raise ReportError(f"{where}: {data!r} fits none of {tp}; {'; '.join(errors)}")
    if origin in (list, tuple):
        if not isinstance(data, list):
            raise ReportError(f"{where}: expected a list, got {type(data).__name__}")
        (arg,) = typing.get_args(tp)[:1] or (Any,)
        # fast paths for long numeric series (exactness is unchanged: same values)
        if arg is int and all(type(v) is int for v in data):
            if data and max(abs(min(data)), abs(max(data))) > MAX_INT:
                raise ReportError(f"{where}: a value is out of range (|v| > 2**63 - 1)")
            return list(data) if origin is list else tuple(data)
        if arg is float and all(type(v) is float or type(v) is int for v in data):
            floats = [float(v) for v in data]
            return floats if origin is list else tuple(floats)
        items = [_convert(arg, v, f"{where}[{i}]") for i, v in enumerate(data)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(data, dict):
            raise ReportError(f"{where}: expected an object, got {type(data).__name__}")
        _key_tp, val_tp = typing.get_args(tp)
        return {k: _convert(val_tp, v, f"{where}[{k!r}]") for k, v in data.items()}
    if origin is typing.Literal:
        if data not in typing.get_args(tp):
            raise ReportError(f"{where}: {data!r} is not one of {typing.get_args(tp)}")
        return data
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(data, tp):  # built by a __from_plain__ hook (a decoded series)
            return data
        prepare = getattr(tp, "__from_plain__", None)
        if prepare is not None and isinstance(data, dict):
            data = prepare(data, where)
        if not isinstance(data, dict):
            raise ReportError(f"{where}: expected an object for {tp.__name__}")
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in data:
                kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ReportError(f"{where}: field {f.name!r} is missing")
        return tp(**kwargs)
    if tp is float:
        if isinstance(data, str) and data in ("nan", "inf", "-inf"):
            return float(data)
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise ReportError(f"{where}: expected a number, got {data!r}")
        return float(data)
    if tp is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise ReportError(f"{where}: expected an integer, got {str(data)[:40]!r}")
        if abs(data) > MAX_INT:
            raise ReportError(f"{where}: {str(data)[:20]}… is out of range (|v| > 2**63 - 1)")
        return data
    if tp is str:
        if not isinstance(data, str):
            raise ReportError(f"{where}: expected a string, got {data!r}")
        return data
    if tp is bool:
        if not isinstance(data, bool):
            raise ReportError(f"{where}: expected true/false, got {data!r}")
        return data
    if tp is type(None):
        if data is not None:
            raise ReportError(f"{where}: expected null, got {data!r}")
        return None
    raise ReportError(f"{where}: cannot rebuild type {tp!r}")


def check_schema(data: Any, what: str) -> None:
    """Raise ReportError unless ``data`` is an object with a schema this version reads."""
    if not isinstance(data, dict):
        raise ReportError(f"{what} JSON must be an object, got {type(data).__name__}")
    version = data.get("schema", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ReportError(f"{what} JSON has a bad schema version {version!r}; expected an integer")
    if version > SCHEMA_VERSION:
        raise ReportError(
            f"{what} JSON has schema version {version}, newer than this bigviz reads "
            f"({SCHEMA_VERSION}); upgrade bigviz (pip install -U bigviz)"
        )
    if version < 1:
        raise ReportError(f"{what} JSON has an unknown schema version {version}")


def loads_json(text: str, what: str) -> Any:
    """``json.loads`` whose error names ``what`` and suggests re-exporting a truncated file."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{what} JSON is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "was the file truncated? re-export it"
        ) from exc
    except RecursionError:
        raise ReportError(f"{what} JSON is nested too deeply to be a bigviz document") from None


def dumps_document(kind: str, data: dict[str, Any]) -> str:
    """The text of a bigviz JSON file: ``{"kind": kind, ...data}``, compact strict JSON,
    UTF-8, newline-terminated. The one layout that ``Recording.save``, ``Sweep.save`` and
    ``bigviz.report.write`` write (compact: a timeline holds ~1000 samples per second per
    series); ``from_dict`` ignores the ``kind`` field, so either reader loads it.

    Example:
        >>> dumps_document("recording", {"name": "r", "schema": 1})
        '{"kind":"recording","name":"r","schema":1}\\n'
    """
    return (
        json.dumps(
            {"kind": kind, **data}, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
        + "\n"
    )


_Doc = TypeVar("_Doc", bound="Document")


class Document:
    """The one JSON path of bigviz's top-level dataclasses (Recording, RunResult, Sweep).

    ``to_dict``/``from_dict`` (plain data), ``to_json``/``from_json`` (text) and ``save``
    (a file in the layout :func:`dumps_document` writes, the same as
    ``bigviz.report.write``): flat pairs, as safetensors has them. ``from_dict`` refuses a
    schema newer than this bigviz reads; schema-1 data without ``kind`` loads.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Note(Document):
        ...     KIND = "note"
        ...     text: str = ""
        >>> Note.from_json(Note("hi").to_json())
        Note(text='hi')
    """

    #: the ``kind`` a saved file names (``"recording"``, ``"run"``, ``"sweep"``)
    KIND: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        data: dict[str, Any] = to_plain(self)
        return data

    @classmethod
    def from_dict(cls: type[_Doc], data: dict[str, Any]) -> _Doc:
        """Rebuild from :meth:`to_dict` data; refuses a newer schema version.

        Data of an older schema is upgraded: the object's ``schema`` (and its parts')
        is this version's, the one :meth:`to_dict` writes it in."""
        check_schema(data, cls.__name__)
        # bounds every reader relies on: packed sizes before decoding, the rest after
        from bigviz.data.validate import check_columns, check_document

        check_columns(data, cls.__name__)
        # a long timeline is millions of numbers in a few lists: a garbage collection
        # pass triggered meanwhile would walk them all, again and again
        collecting = gc.isenabled()
        gc.disable()
        try:
            obj = from_plain(cls, data)
        finally:
            if collecting:
                gc.enable()
        check_document(obj, cls.__name__)
        _upgrade(obj)
        return obj

    def __to_plain__(self) -> dict[str, Any]:
        """Plain data (the serde hook; subclasses pack their own fields)."""
        return plain_fields(self)

    def to_json(self, *, indent: int | None = None) -> str:
        """JSON text (strict: no NaN literals)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls: type[_Doc], text: str) -> _Doc:
        """Rebuild from :meth:`to_json` (or :meth:`save`) text."""
        return cls.from_dict(loads_json(text, cls.__name__))

    def save(self, path: str | Path) -> Path:
        """Write JSON to ``path``: the document ``bigviz.report.write`` writes for a
        ``.json`` path (see it for other formats)."""
        p = Path(path)
        p.write_text(dumps_document(self.KIND, self.to_dict()), encoding="utf-8")
        return p


def _upgrade(obj: Any) -> None:
    """Set ``schema`` to this version on ``obj`` and the Documents inside it."""
    if isinstance(obj, Document):
        if isinstance(getattr(obj, "schema", None), int):
            object.__setattr__(obj, "schema", SCHEMA_VERSION)
        for f in dataclasses.fields(obj):  # type: ignore[arg-type]
            value = getattr(obj, f.name)
            if isinstance(value, Document):
                _upgrade(value)
            elif isinstance(value, list) and value and isinstance(value[0], Document):
                for item in value:
                    _upgrade(item)
