"""Automatic phases: known loader calls mark themselves while a recorder runs.

Patched while recording (and only if their module is already imported; modules imported
later are patched at the next ``rec.phase``/``rec.mark``):

* ``torch.load``, ``torch.save``
* ``safetensors.torch.load_file`` / ``save_file``, ``safetensors.safe_open``
* ``torch.nn.Module.load_state_dict``, ``torch.nn.Module.to``

Functions are replaced in *every* loaded module that holds them, because libraries bind
them at import (``from safetensors.torch import load_file as safe_load_file`` in
Transformers) and patching only ``safetensors.torch`` would miss those calls. Every
replacement is recorded and undone by :meth:`Patches.remove`, which also sweeps modules
imported during the recording that picked up a wrapper.

An automatic call inside another one on the same thread (``load_file`` opening the file
with ``safe_open``) does not make a second phase.

The phases go to a :class:`PhaseSink`: anything with ``recording_active``,
``open_phase`` and ``close_phase``, as :class:`bigviz.recorder.Recorder` has. This module
never imports the recorder.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from bigviz.recorder.phases import OpenPhase
from bigviz.units import format_size

__all__ = ["Patches", "PhaseSink", "install"]


class PhaseSink(Protocol):
    """What the instrumentation needs from a recorder: a way to open and close phases."""

    @property
    def recording_active(self) -> bool:
        """True while phases may be opened."""

    def open_phase(
        self, name: str, detail: Mapping[str, Any] | None = None, *, auto: bool = False
    ) -> OpenPhase[str]:
        """Start a phase (see :meth:`bigviz.recorder.Recorder.open_phase`)."""

    def close_phase(self, op: OpenPhase[str], error: str | None = None) -> None:
        """End a phase started by :meth:`open_phase`."""


_current: PhaseSink | None = None
_local = threading.local()

Describe = Callable[..., tuple[str, dict[str, Any]]]


# --------------------------------------------------------------------------- naming
def _file_facts(f: Any) -> tuple[str, dict[str, Any]]:
    """Short name and detail for a path or file object."""
    if isinstance(f, (str, os.PathLike)):
        path = os.fspath(f)
        label = os.path.basename(str(path)) or str(path)
        detail: dict[str, Any] = {"file": str(path)}
        with contextlib.suppress(OSError):
            detail["bytes"] = os.path.getsize(path)
        return label, detail
    name = getattr(f, "name", None)
    if isinstance(name, str):
        return os.path.basename(name), {"file": name}
    return f"<{type(f).__name__}>", {"file": None}


def _device_str(dev: Any) -> str | None:
    if dev is None or callable(dev) or isinstance(dev, dict):
        return None
    return str(dev)


def _label(op: str, target: str, size: int | None, device: str | None) -> str:
    """``"torch.load model-00001-of-00003.bin (1.9 GiB → cuda:0)"``: what a user reads."""
    extra = []
    if size is not None:
        extra.append(format_size(size))
    if device is not None and device != "cpu":
        extra.append(f"→ {device}")
    tail = f" ({' '.join(extra)})" if extra else ""
    return f"{op} {target}{tail}"


def _tensor_bytes(obj: Any) -> tuple[int, int] | None:
    """(tensors, bytes) in a dict of tensors, or None if it is not one."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(obj, dict):
        return None
    n = total = 0
    for v in obj.values():
        if isinstance(v, torch.Tensor):
            n += 1
            total += v.numel() * v.element_size()
    return n, total


def _torch_load(f: Any, map_location: Any = None, *a: Any, **kw: Any) -> tuple[str, dict[str, Any]]:
    label, detail = _file_facts(f)
    dev = _device_str(map_location)
    detail.update(map_location=dev, mmap=bool(kw.get("mmap")))
    return _label("torch.load", label, detail.get("bytes"), dev), detail


def _torch_save(obj: Any, f: Any, *a: Any, **kw: Any) -> tuple[str, dict[str, Any]]:
    label, detail = _file_facts(f)
    detail.pop("bytes", None)  # the old file's size, if any, is not what is saved
    tb = _tensor_bytes(obj)
    if tb is not None:
        detail.update(tensors=tb[0], bytes=tb[1])
    return _label("torch.save", label, detail.get("bytes"), None), detail


def _st_load_file(filename: Any, device: Any = "cpu", **kw: Any) -> tuple[str, dict[str, Any]]:
    label, detail = _file_facts(filename)
    dev = _device_str(device)
    detail.update(device=dev, **{k: str(v) for k, v in kw.items()})
    return _label("safetensors.load_file", label, detail.get("bytes"), dev), detail


def _st_save_file(tensors: Any, filename: Any, *a: Any, **kw: Any) -> tuple[str, dict[str, Any]]:
    label, detail = _file_facts(filename)
    detail.pop("bytes", None)
    tb = _tensor_bytes(tensors)
    if tb is not None:
        detail.update(tensors=tb[0], bytes=tb[1])
    return _label("safetensors.save_file", label, detail.get("bytes"), None), detail


def _safe_open(
    filename: Any, framework: Any = None, device: Any = "cpu", **kw: Any
) -> tuple[str, dict[str, Any]]:
    label, detail = _file_facts(filename)
    dev = _device_str(device)
    detail.update(device=dev, framework=str(framework))
    return _label("safe_open", label, detail.get("bytes"), dev), detail


def _module_bytes(module: Any) -> int:
    seen: set[int] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        if t.device.type == "meta" or id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def _load_state_dict(
    module: Any, state_dict: Any, *a: Any, **kw: Any
) -> tuple[str, dict[str, Any]]:
    tb = _tensor_bytes(dict(state_dict)) if hasattr(state_dict, "keys") else None
    strict = a[0] if a else kw.get("strict", True)
    assign = a[1] if len(a) > 1 else kw.get("assign", False)
    detail: dict[str, Any] = {"module": type(module).__name__, "strict": bool(strict)}
    detail["assign"] = bool(assign)
    name = f"{type(module).__name__}.load_state_dict"
    if tb is not None:
        detail.update(tensors=tb[0], bytes=tb[1])
        name += f" ({tb[0]} tensors, {format_size(tb[1])})"
    return name, detail


def _module_to(module: Any, *a: Any, **kw: Any) -> tuple[str, dict[str, Any]]:
    torch = sys.modules["torch"]
    device, dtype, _nb, _fmt = torch._C._nn._parse_to(*a, **kw)
    size = _module_bytes(module)
    target = " ".join(str(x) for x in (device, dtype) if x is not None) or "(no change)"
    detail: dict[str, Any] = {"module": type(module).__name__, "bytes": size}
    detail.update(device=_device_str(device), dtype=None if dtype is None else str(dtype))
    return f"{type(module).__name__}.to {target} ({format_size(size)})", detail


# --------------------------------------------------------------------------- wrapping
def _after(result: Any, op: OpenPhase[str]) -> None:
    """Facts only known after the call: what a load produced."""
    tb = _tensor_bytes(result)
    if tb is not None:
        op.phase.detail.setdefault("tensors", tb[0])
        op.phase.detail["tensor_bytes"] = tb[1]


def _wrap(orig: Callable[..., Any], describe: Describe) -> Callable[..., Any]:
    @functools.wraps(orig)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        rec = _current
        if rec is None or getattr(_local, "busy", False) or not rec.recording_active:
            return orig(*args, **kwargs)
        try:
            name, detail = describe(*args, **kwargs)
        except Exception:  # a describer must never break the user's call
            name, detail = getattr(orig, "__qualname__", "call"), {}
        try:
            op = rec.open_phase(name, detail, auto=True)
        except Exception:
            return orig(*args, **kwargs)
        _local.busy = True
        try:
            result = orig(*args, **kwargs)
        except BaseException as exc:
            _local.busy = False
            rec.close_phase(op, f"{type(exc).__name__}: {exc}")
            raise
        _local.busy = False
        with contextlib.suppress(Exception):
            _after(result, op)
        rec.close_phase(op, None)
        return result

    wrapper.__bigviz_original__ = orig  # type: ignore[attr-defined]
    return wrapper


class _SafeOpenProxy:
    """Stands in for a safetensors ``safe_open`` handle; the phase spans the ``with``."""

    def __init__(self, inner: Any, name: str, detail: dict[str, Any]) -> None:
        self._inner = inner
        self._name = name
        self._detail = detail
        self._op: OpenPhase[str] | None = None

    def __enter__(self) -> Any:
        handle = self._inner.__enter__()
        rec = _current
        if rec is not None and rec.recording_active and not getattr(_local, "busy", False):
            try:
                self._op = rec.open_phase(self._name, self._detail, auto=True)
            except Exception:
                self._op = None
        return handle

    def __exit__(self, et: Any, ev: Any, tb: Any) -> Any:
        try:
            return self._inner.__exit__(et, ev, tb)
        finally:
            rec, op = _current, self._op
            self._op = None
            if rec is not None and op is not None:
                rec.close_phase(op, None if ev is None else f"{type(ev).__name__}: {ev}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _wrap_safe_open(orig: Any) -> Callable[..., Any]:
    def safe_open(*args: Any, **kwargs: Any) -> Any:
        inner = orig(*args, **kwargs)
        rec = _current
        if rec is None or not rec.recording_active or getattr(_local, "busy", False):
            return inner
        try:
            name, detail = _safe_open(*args, **kwargs)
        except Exception:
            name, detail = "safe_open", {}
        return _SafeOpenProxy(inner, name, detail)

    safe_open.__doc__ = getattr(orig, "__doc__", None)
    safe_open.__bigviz_original__ = orig  # type: ignore[attr-defined]
    return safe_open


# --------------------------------------------------------------------------- patching
class Patches:
    """The replacements made by :func:`install`; :meth:`remove` undoes all of them."""

    def __init__(self) -> None:
        self.wrappers: dict[int, tuple[Any, Any]] = {}  # id(original) -> (original, wrapper)
        self.done: set[str] = set()
        self.module_attrs: list[tuple[Any, str, Any, Any]] = []  # (obj, attr, orig, wrapper)

    def refresh(self) -> None:
        """Patch target modules imported since the last call."""
        new: dict[int, tuple[Any, Any]] = {}
        torch = sys.modules.get("torch")
        if torch is not None and "torch" not in self.done and hasattr(torch, "load"):
            self.done.add("torch")
            pairs: list[tuple[Any, Describe]] = [
                (torch.load, _torch_load),
                (torch.save, _torch_save),
            ]
            for orig, desc in pairs:
                new[id(orig)] = (orig, _wrap(orig, desc))
            module_cls = getattr(getattr(torch, "nn", None), "Module", None)
            if module_cls is not None:
                methods: list[tuple[str, Describe]] = [
                    ("load_state_dict", _load_state_dict),
                    ("to", _module_to),
                ]
                for attr, desc in methods:
                    orig = module_cls.__dict__[attr]
                    wrapper = _wrap(orig, desc)
                    setattr(module_cls, attr, wrapper)
                    self.module_attrs.append((module_cls, attr, orig, wrapper))
        st = sys.modules.get("safetensors.torch")
        if st is not None and "safetensors.torch" not in self.done:
            self.done.add("safetensors.torch")
            funcs: list[tuple[Any, Describe]] = [
                (st.load_file, _st_load_file),
                (st.save_file, _st_save_file),
            ]
            for orig, desc in funcs:
                new[id(orig)] = (orig, _wrap(orig, desc))
        sf = sys.modules.get("safetensors")
        if sf is not None and "safetensors" not in self.done and hasattr(sf, "safe_open"):
            self.done.add("safetensors")
            new[id(sf.safe_open)] = (sf.safe_open, _wrap_safe_open(sf.safe_open))
        if new:
            self.wrappers.update(new)
            self._sweep(new, restore=False)

    def _sweep(self, table: dict[int, tuple[Any, Any]], *, restore: bool) -> None:
        """Replace originals by wrappers (or back) in every loaded module's namespace."""
        lookup = {id(w if restore else o): (o, w) for o, w in table.values()}
        for modname, mod in list(sys.modules.items()):
            if modname.split(".")[0] == "bigviz" or modname.endswith("_safetensors_rust"):
                continue
            d = getattr(mod, "__dict__", None)
            if not isinstance(d, dict):
                continue
            # iterate without copying: with torch loaded a copy per module allocates
            # enough to trigger a full GC pass (~100 ms); a thread importing meanwhile
            # can resize the dict, then we scan a copy instead
            try:
                hits = [k for k, v in d.items() if id(v) in lookup]
            except RuntimeError:
                hits = [k for k, v in list(d.items()) if id(v) in lookup]
            for key in hits:
                value = d.get(key)
                pair = lookup.get(id(value))
                if pair is not None and value is (pair[1] if restore else pair[0]):
                    with contextlib.suppress(Exception):  # an odd namespace: leave it
                        d[key] = pair[0] if restore else pair[1]

    def remove(self) -> None:
        """Undo every patch (also in modules imported while recording)."""
        global _current
        try:
            for obj, attr, orig, wrapper in reversed(self.module_attrs):
                if obj.__dict__.get(attr) is wrapper:
                    setattr(obj, attr, orig)
            self.module_attrs.clear()
            self._sweep(self.wrappers, restore=True)
            self.wrappers.clear()
        finally:
            _current = None


def _forget_after_fork() -> None:
    # a forked child does not record: its copies of the wrappers just pass calls through
    global _current
    _current = None


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_after_fork)


def install(rec: PhaseSink) -> Patches:
    """Patch the loaders so that they report to ``rec``; returns the undo handle."""
    global _current
    _current = rec
    patches = Patches()
    try:
        patches.refresh()
    except BaseException:
        patches.remove()
        raise
    return patches
