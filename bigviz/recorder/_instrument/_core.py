"""The machinery every library module of the instrumentation shares.

* :class:`PhaseSink` — where phases go (the Recorder is one; nothing here imports it);
* :func:`wrap` — turn a function into one that opens an automatic phase around each call;
* the per-thread stack of open automatic phases (:class:`Frame`): a *leaf* phase
  (``torch.load``, ``load_file``) hides the loader calls inside it, so ``load_file``'s own
  ``safe_open`` is not a second phase; a *container* (``from_pretrained``,
  ``load_checkpoint_and_dispatch``) shows them as its children;
* naming helpers: file facts, shard position ``i/n``, tensor bytes with shared storage
  counted once;
* lazy loads: when a phase closes, the files it touched are looked up in
  ``/proc/self/smaps`` (:mod:`._maps`); bytes mapped but not resident make the phase say
  ``"… mapped, arrives on first use"``, and are remembered so that a later recording can
  say when they arrived.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from bigviz.recorder._instrument._maps import mapped_files, real_paths
from bigviz.recorder.phases import OpenPhase
from bigviz.units import format_size

__all__ = [
    "Describe",
    "Frame",
    "Named",
    "PhaseSink",
    "device_str",
    "file_facts",
    "innermost",
    "label",
    "set_sink",
    "shard_position",
    "shard_prefix",
    "sink",
    "tensor_bytes",
    "wrap",
]

#: a phase is lazy when at least this share of the bytes it mapped is not resident
LAZY_SHARE = 0.05


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


#: a phase's name and detail
Named = tuple[str, dict[str, Any]]
#: (name, detail) of a call, from its arguments
Describe = Callable[..., Named]
#: facts known after the call: (result, frame, the call's args, kwargs)
After = Callable[[Any, "Frame", tuple[Any, ...], dict[str, Any]], None]


@dataclass
class Frame:
    """One open automatic phase on this thread."""

    op: OpenPhase[str]
    leaf: bool
    files: set[str] = field(default_factory=set)  # what it (or its children) read
    shards: list[str] = field(default_factory=list)  # the checkpoint's files, in order
    calls: int = 0  # children opened so far (shard numbering where no file is named)
    # a phase that ends at the next event (a handle opened without `with`): closes it
    pending: Callable[[], None] | None = None


class _State:
    sink: PhaseSink | None = None
    local = threading.local()
    # real path -> (mapped, resident at the load, the phase that mapped it)
    lazy: ClassVar[dict[str, tuple[int, int, str]]] = {}


def set_sink(new: PhaseSink | None) -> None:
    """Send automatic phases to ``new`` (``None``: calls just pass through)."""
    _State.sink = new


def sink() -> PhaseSink | None:
    """Where automatic phases go now, or ``None``."""
    return _State.sink


def _frames() -> list[Frame]:
    stack: list[Frame] | None = getattr(_State.local, "frames", None)
    if stack is None:
        stack = _State.local.frames = []
    return stack


def innermost() -> Frame | None:
    """The innermost open automatic phase of this thread (pending ones closed first)."""
    stack = _frames()
    while stack and stack[-1].pending is not None:
        close = stack[-1].pending
        stack[-1].pending = None
        close()
    return stack[-1] if stack else None


def lazy_files() -> dict[str, tuple[int, int, str]]:
    """Files mapped lazily by earlier phases of this process (for the arrival marks)."""
    return _State.lazy


# --------------------------------------------------------------------------- naming
def file_facts(f: Any) -> tuple[str, dict[str, Any]]:
    """Short name and detail for a path or file object.

    Example:
        >>> file_facts("/nonexistent/model.safetensors")
        ('model.safetensors', {'file': '/nonexistent/model.safetensors'})
    """
    if isinstance(f, (str, os.PathLike)):
        path = os.fspath(f)
        name = os.path.basename(str(path)) or str(path)
        detail: dict[str, Any] = {"file": str(path)}
        with contextlib.suppress(OSError):
            detail["bytes"] = os.path.getsize(path)
        return name, detail
    fname = getattr(f, "name", None)
    if isinstance(fname, str):
        return os.path.basename(fname), {"file": fname}
    return f"<{type(f).__name__}>", {"file": None}


def device_str(dev: Any) -> str | None:
    """A device argument as text; ``None`` for maps and callables (no single device)."""
    if dev is None or callable(dev) or isinstance(dev, dict):
        return None
    return str(dev)


def label(op: str, target: str, size: int | None, device: str | None) -> str:
    """``"torch.load model-00001-of-00003.bin (1.9 GiB → cuda:0)"``: what a user reads.

    Example:
        >>> label("torch.load", "model.bin", 2**20, "cuda:0")
        'torch.load model.bin (1.0 MiB → cuda:0)'
    """
    extra = []
    if size is not None:
        extra.append(format_size(size))
    if device is not None and device != "cpu":
        extra.append(f"→ {device}")
    tail = f" ({' '.join(extra)})" if extra else ""
    return f"{op} {target}{tail}"


_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.")


def shard_position(path: str | None, shards: Iterable[str] = ()) -> tuple[int, int] | None:
    """``(i, n)`` of a shard: from its place in the checkpoint's file list when known,
    else from a Transformers/hub name (``model-00002-of-00007.safetensors`` → (2, 7)).

    Example:
        >>> shard_position("/x/model-00002-of-00007.safetensors")
        (2, 7)
    """
    if path is None:
        return None
    names = [os.path.basename(s) for s in shards]
    base = os.path.basename(path)
    if base in names:
        return names.index(base) + 1, len(names)
    m = _SHARD.search(base)
    return (int(m.group(1)), int(m.group(2))) if m else None


def shard_prefix(path: Any) -> str:
    """``"shard 2/7 "`` inside a loader that said which files it loads, else ``""``."""
    frame = innermost()
    if frame is None or not frame.shards or not isinstance(path, (str, os.PathLike)):
        return ""
    pos = shard_position(os.fspath(path), frame.shards)
    return f"shard {pos[0]}/{pos[1]} " if pos else ""


def tensor_bytes(obj: Any) -> tuple[int, int] | None:
    """(tensors, bytes) in a mapping of tensors, or ``None`` if it holds none.

    Bytes count memory once where tensors share it (tied weights, views): the union of
    the address ranges of the tensors, per device; meta tensors count their size.
    """
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(obj, "values"):
        return None
    n = meta = 0
    ranges: dict[str, list[tuple[int, int]]] = {}
    try:
        values = list(obj.values())
    except Exception:
        return None
    for v in values:
        if not isinstance(v, torch.Tensor):
            continue
        n += 1
        size = v.numel() * v.element_size()
        ptr = v.data_ptr() if v.device.type != "meta" else 0
        if ptr == 0:
            meta += size
        else:
            ranges.setdefault(str(v.device), []).append((ptr, ptr + size))
    if n == 0:
        return None
    total = meta
    for spans in ranges.values():
        spans.sort()
        end = -1
        for lo, hi in spans:
            lo = max(lo, end)
            if hi > lo:
                total += hi - lo
            end = max(end, hi)
    return n, total


def module_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers, shared ones once, meta ones not."""
    tensors = {i: t for i, t in enumerate([*module.parameters(), *module.buffers()])
               if t.device.type != "meta"}
    tb = tensor_bytes(tensors)
    return tb[1] if tb else 0


# --------------------------------------------------------------------------- lazy bytes
def _lazy_tail(mapped: int, resident: int) -> str:
    lazy = mapped - resident
    if resident < LAZY_SHARE * mapped:
        return f"{format_size(mapped)} mapped, arrives on first use"
    return f"{format_size(mapped)} mapped, {format_size(lazy)} of it arrives on first use"


def _note_mapped(frame: Frame) -> None:
    """Mapped vs resident bytes of the files the phase touched; a lazy phase says so."""
    paths = real_paths(frame.files)
    maps = mapped_files(paths)
    if not maps:
        return
    mapped = sum(m for m, _ in maps.values())
    resident = sum(r for _, r in maps.values())
    ph = frame.op.phase
    ph.detail.update(mapped_bytes=mapped, mapped_resident_bytes=resident)
    if mapped - resident >= LAZY_SHARE * mapped and mapped > resident:
        ph.detail["lazy_bytes"] = mapped - resident
        origin = ph.name
        tail = _lazy_tail(mapped, resident)
        ph.name = ph.name[:-1] + f"; {tail})" if ph.name.endswith(")") else f"{ph.name} ({tail})"
        for p, (m, r) in maps.items():
            if m > r:
                _State.lazy[p] = (m, r, origin)


def _finish(rec: PhaseSink, frame: Frame, error: str | None) -> None:
    stack = _frames()
    while stack and stack[-1] is not frame and stack[-1].pending is not None:
        innermost()  # a child opened without `with` ends with its parent at the latest
    with contextlib.suppress(ValueError):
        stack.remove(frame)
    with contextlib.suppress(Exception):  # measuring must never break the user's call
        _note_mapped(frame)
    if stack:
        stack[-1].files |= frame.files
    rec.close_phase(frame.op, error)


def open_frame(name: str, detail: dict[str, Any], *, leaf: bool) -> tuple[PhaseSink, Frame] | None:
    """Open an automatic phase on this thread, or ``None`` when none should open (not
    recording, or inside a leaf phase)."""
    rec = _State.sink
    if rec is None or not rec.recording_active:
        return None
    parent = innermost()
    if parent is not None and parent.leaf:
        return None
    # describers hand over the checkpoint's files under private keys, kept off the phase
    shards = detail.pop("_shards", None)
    files = detail.pop("_files", None)
    try:
        op = rec.open_phase(name, detail, auto=True)
    except Exception:
        return None
    frame = Frame(op, leaf)
    if isinstance(detail.get("file"), str):
        frame.files.add(detail["file"])
    if parent is not None:
        parent.calls += 1
        frame.shards = parent.shards
    if shards:
        frame.shards = list(shards)
    frame.files.update(files or ())
    _frames().append(frame)
    return rec, frame


def close_frame(opened: tuple[PhaseSink, Frame], error: str | None = None) -> None:
    """Close what :func:`open_frame` opened."""
    _finish(opened[0], opened[1], error)


def would_open() -> bool:
    """True when a call now would become a phase (cheap: no describing needed)."""
    rec = _State.sink
    if rec is None or not rec.recording_active:
        return False
    parent = innermost()
    return parent is None or not parent.leaf


def wrap(
    orig: Callable[..., Any],
    describe: Describe,
    *,
    leaf: bool = True,
    after: After | None = None,
) -> Callable[..., Any]:
    """``orig`` with an automatic phase around each call made while recording.

    Args:
        orig: the function (for a method, the plain function: ``self`` is ``args[0]``).
        describe: ``describe(*args, **kwargs) -> (name, detail)``.
        leaf: calls of instrumented loaders inside it make no phases of their own.
        after: fills in what is known only after the call (a load's tensor count).
    """

    @functools.wraps(orig)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not would_open():
            return orig(*args, **kwargs)
        try:
            name, detail = describe(*args, **kwargs)
        except Exception:  # a describer must never break the user's call
            name, detail = getattr(orig, "__qualname__", "call"), {}
        opened = open_frame(name, detail, leaf=leaf)
        if opened is None:
            return orig(*args, **kwargs)
        try:
            result = orig(*args, **kwargs)
        except BaseException as exc:
            close_frame(opened, f"{type(exc).__name__}: {exc}")
            raise
        if after is not None:
            with contextlib.suppress(Exception):
                after(result, opened[1], args, kwargs)
        close_frame(opened)
        return result

    wrapper.__bigviz_original__ = orig  # type: ignore[attr-defined]
    return wrapper


def loaded_tensors(
    result: Any, frame: Frame, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """An ``after`` for loads: how many tensors (and unique bytes) the call returned."""
    del args, kwargs
    tb = tensor_bytes(result)
    if tb is not None:
        frame.op.phase.detail.setdefault("tensors", tb[0])
        frame.op.phase.detail["tensor_bytes"] = tb[1]


@dataclass(frozen=True)
class Target:
    """One function to instrument, looked up by name (patched only where it exists).

    ``path`` is ``"func"`` for a module-level function (replaced in every module that
    bound it) or ``"Class.method"`` for a method (plain, class- or static method),
    replaced on the class. ``factory``, when given, makes the replacement instead of
    :func:`wrap` (``safe_open`` returns a handle, not a result).
    """

    module: str
    path: str
    describe: Describe | None = None
    leaf: bool = True
    after: After | None = None
    factory: Callable[[Any], Any] | None = None

    def make(self, orig: Callable[..., Any]) -> Any:
        """The replacement of ``orig``."""
        if self.factory is not None:
            return self.factory(orig)
        assert self.describe is not None
        return wrap(orig, self.describe, leaf=self.leaf, after=self.after)
