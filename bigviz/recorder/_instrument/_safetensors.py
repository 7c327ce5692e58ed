"""safetensors: ``load_file``, ``save_file``, ``load``, ``save`` and ``safe_open``.

``safe_open`` returns a handle, used two ways, both seen in real loaders:

* ``with safe_open(f) as h: h.get_tensor(k)`` (huggingface_hub, Transformers'
  ``load_state_dict``): the phase spans the ``with`` and counts the bytes of the tensors
  taken through ``get_tensor``/``get_slice`` while it is open;
* ``h = safe_open(f)`` then ``h.get_slice(k)`` … ``h.__exit__()`` much later
  (Transformers 5 ``_load_pretrained_model`` opens every shard up front): the phase is
  the opening itself (mapping the file), closed at the first use of the handle.
"""

from __future__ import annotations

import math
from typing import Any

from bigviz.recorder._instrument._core import (
    Frame,
    Named,
    PhaseSink,
    Target,
    close_frame,
    device_str,
    file_facts,
    innermost,
    label,
    loaded_tensors,
    open_frame,
    shard_prefix,
    tensor_bytes,
    would_open,
)
from bigviz.units import format_size

__all__ = ["TARGETS", "slice_bytes"]

# bytes per element of safetensors' dtype names
_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "C64": 8, "F32": 4, "I32": 4, "U32": 4,
                "F16": 2, "BF16": 2, "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1}


def _load_file(filename: Any, device: Any = "cpu", **kw: Any) -> Named:
    name, detail = file_facts(filename)
    dev = device_str(device)
    detail.update(device=dev, **{k: str(v) for k, v in kw.items()})
    op = "safetensors.load_file " + shard_prefix(detail["file"])
    return label(op.rstrip(), name, detail.get("bytes"), dev), detail


def _save_file(tensors: Any, filename: Any, *a: Any, **kw: Any) -> Named:
    name, detail = file_facts(filename)
    detail.pop("bytes", None)
    tb = tensor_bytes(tensors)
    if tb is not None:
        detail.update(tensors=tb[0], bytes=tb[1])
    return label("safetensors.save_file", name, detail.get("bytes"), None), detail


def _load(data: Any, *a: Any, **kw: Any) -> Named:
    size = len(data) if isinstance(data, (bytes, bytearray, memoryview)) else None
    frame_name = shard_prefix_for_bytes()
    return label("safetensors.load", frame_name + "(bytes)", size, None), {"bytes": size}


def shard_prefix_for_bytes() -> str:
    """``"shard i/n "`` for a load from bytes inside a loader that listed its files:
    the i-th such call (Transformers reads each shard into bytes when mmap is off)."""
    frame = innermost()
    if frame is None or not frame.shards:
        return ""
    return f"shard {frame.calls + 1}/{len(frame.shards)} "


def _save(tensors: Any, *a: Any, **kw: Any) -> Named:
    tb = tensor_bytes(tensors)
    detail: dict[str, Any] = {}
    if tb is not None:
        detail.update(tensors=tb[0], bytes=tb[1])
    return label("safetensors.save", "(to bytes)", detail.get("bytes"), None), detail


def slice_bytes(s: Any) -> int:
    """Bytes of a safetensors slice (shape × dtype size; 0 when it is not one)."""
    try:
        return int(math.prod(s.get_shape())) * _DTYPE_BYTES.get(str(s.get_dtype()), 0)
    except Exception:
        return 0


class _Handle:
    """Stands in for a ``safe_open`` handle while its phase is open (see module docs)."""

    def __init__(self, inner: Any, opened: tuple[PhaseSink, Frame] | None) -> None:
        self._inner = inner
        self._opened = opened
        self._entered = False
        if opened is not None:
            # closed by whatever comes first: a use of the handle, another phase
            opened[1].pending = self._close

    def _close(self, error: str | None = None) -> None:
        opened, self._opened = self._opened, None
        if opened is not None:
            opened[1].pending = None
            close_frame(opened, error)

    def _count(self, nbytes: int) -> None:
        if self._opened is not None and self._entered:
            detail = self._opened[1].op.phase.detail
            detail["taken_tensors"] = detail.get("taken_tensors", 0) + 1
            detail["taken_bytes"] = detail.get("taken_bytes", 0) + nbytes

    def __enter__(self) -> Any:
        self._inner.__enter__()
        self._entered = True
        if self._opened is not None:
            self._opened[1].pending = None  # the phase spans the `with`
        return self

    def __exit__(self, et: Any, ev: Any, tb: Any) -> Any:
        try:
            return self._inner.__exit__(et, ev, tb)
        finally:
            if self._opened is not None:
                ph = self._opened[1].op.phase
                n, b = ph.detail.get("taken_tensors"), ph.detail.get("taken_bytes")
                if n and ph.name.endswith(")"):
                    ph.name = ph.name[:-1] + f"; {n} tensors taken, {format_size(b)})"
                elif n:
                    ph.name += f" ({n} tensors taken, {format_size(b)})"
            self._close(None if ev is None else f"{type(ev).__name__}: {ev}")

    def get_tensor(self, key: str) -> Any:
        if not self._entered:
            self._close()
        t = self._inner.get_tensor(key)
        self._count(t.numel() * t.element_size())
        return t

    def get_slice(self, key: str) -> Any:
        if not self._entered:
            self._close()
        s = self._inner.get_slice(key)
        self._count(slice_bytes(s))
        return s

    def __getattr__(self, name: str) -> Any:
        if not self._entered:
            self._close()  # used without `with`: the phase was the opening
        return getattr(self._inner, name)


def _safe_open_name(filename: Any, device: Any) -> Named:
    name, detail = file_facts(filename)
    dev = device_str(device)
    detail["device"] = dev
    op = "safe_open " + shard_prefix(detail["file"])
    return label(op.rstrip(), name, detail.get("bytes"), dev), detail


def _wrap_safe_open(orig: Any) -> Any:
    def safe_open(*args: Any, **kwargs: Any) -> Any:
        if not would_open():
            return orig(*args, **kwargs)
        try:
            filename = args[0] if args else kwargs.get("filename")
            device = args[2] if len(args) > 2 else kwargs.get("device", "cpu")
            name, detail = _safe_open_name(filename, device)
            detail["framework"] = str(args[1] if len(args) > 1 else kwargs.get("framework"))
            detail.update({k: str(v) for k, v in kwargs.items() if k == "backend"})
        except Exception:
            name, detail = "safe_open", {}
        opened = open_frame(name, detail, leaf=True)
        try:
            inner = orig(*args, **kwargs)
        except BaseException as exc:
            if opened is not None:
                close_frame(opened, f"{type(exc).__name__}: {exc}")
            raise
        return _Handle(inner, opened) if opened is not None else inner

    safe_open.__doc__ = getattr(orig, "__doc__", None)
    safe_open.__bigviz_original__ = orig  # type: ignore[attr-defined]
    return safe_open


TARGETS = [
    Target("safetensors.torch", "load_file", _load_file, after=loaded_tensors),
    Target("safetensors.torch", "save_file", _save_file),
    Target("safetensors.torch", "load", _load, after=loaded_tensors),
    Target("safetensors.torch", "save", _save),
    Target("safetensors", "safe_open", factory=_wrap_safe_open),
]
