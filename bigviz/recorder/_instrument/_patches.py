"""Putting the wrappers in place, and taking them out again.

Functions are replaced in *every* loaded module that holds them, because libraries bind
them at import (``from safetensors import safe_open`` in ``transformers.modeling_utils``,
``from safetensors.torch import load_file as safe_load_file`` in Accelerate), and patching
only the defining module would miss those calls. Methods are replaced on their class.
Modules imported while recording are patched as soon as their import finishes (an import
hook watches the target modules), so ``import transformers`` inside a ``%%bigviz`` cell is
covered. :meth:`Patches.remove` undoes every replacement, also in modules imported during
the recording that picked up a wrapper, and takes the hook out.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Sequence
from typing import Any

from bigviz.recorder._instrument import _libs, _safetensors, _torch, _transformers
from bigviz.recorder._instrument._core import PhaseSink, Target, lazy_files, set_sink, sink
from bigviz.recorder._instrument._maps import mapped_files
from bigviz.units import format_size

__all__ = ["TARGETS", "Patches", "install"]

TARGETS: list[Target] = [*_torch.TARGETS, *_safetensors.TARGETS, *_transformers.TARGETS,
                         *_libs.TARGETS]
_WATCHED = frozenset(t.module for t in TARGETS)


class _ImportHook(importlib.abc.MetaPathFinder):
    """Calls ``done()`` once a watched module has finished importing."""

    def __init__(self, patches: Patches) -> None:
        self.patches = patches
        self._busy: set[str] = set()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _WATCHED or fullname in self._busy or self.patches.removed:
            return None
        self._busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        except (ImportError, ValueError):
            return None
        finally:
            self._busy.discard(fullname)
        loader = spec.loader if spec is not None else None
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return None
        original = loader.exec_module
        patches = self.patches

        def exec_module(module: types.ModuleType) -> None:
            try:
                original(module)
            finally:
                loader.exec_module = original  # type: ignore[method-assign]
                if not patches.removed:
                    with contextlib.suppress(Exception):
                        patches.refresh()

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


class Patches:
    """The replacements made by :func:`install`; :meth:`remove` undoes all of them."""

    def __init__(self) -> None:
        self.wrappers: dict[int, tuple[Any, Any]] = {}  # id(original) -> (original, wrapper)
        self.done: set[tuple[str, str]] = set()
        self.class_attrs: list[tuple[Any, str, Any, Any]] = []  # (class, attr, orig, new)
        self.removed = False
        self._hook = _ImportHook(self)
        # lazily mapped files resident at the start, to tell what arrived while recording
        self._lazy_start = {p: r for p, (_m, r) in mapped_files(lazy_files()).items()}

    def refresh(self) -> None:
        """Patch target modules imported since the last call (names missing in the
        installed version are skipped)."""
        new: dict[int, tuple[Any, Any]] = {}
        for t in TARGETS:
            key = (t.module, t.path)
            mod = sys.modules.get(t.module)
            if key in self.done or mod is None:
                continue
            owner_name, _, attr = t.path.rpartition(".")
            if owner_name:
                owner = getattr(mod, owner_name, None)
                raw = getattr(owner, "__dict__", {}).get(attr)
                if raw is None:
                    continue
                self.done.add(key)
                func = raw.__func__ if isinstance(raw, (classmethod, staticmethod)) else raw
                if not callable(func) or hasattr(func, "__bigviz_original__"):
                    continue
                wrapper = t.make(func)
                kind = type(raw) if isinstance(raw, (classmethod, staticmethod)) else None
                repl = kind(wrapper) if kind is not None else wrapper
                setattr(owner, attr, repl)
                self.class_attrs.append((owner, attr, raw, repl))
            else:
                orig = getattr(mod, attr, None)
                if orig is None:
                    continue
                self.done.add(key)
                if hasattr(orig, "__bigviz_original__") or id(orig) in self.wrappers:
                    continue
                new[id(orig)] = (orig, t.make(orig))
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

    def start(self) -> None:
        """Patch what is loaded now and watch the imports of the rest."""
        sys.meta_path.insert(0, self._hook)
        self.refresh()

    def arrivals(self) -> list[tuple[str, dict[str, Any]]]:
        """Marks for weights mapped lazily (in this recording or an earlier one in this
        process) that became resident while recording, one per phase that mapped them:
        ``(name, detail)``."""
        lazy = lazy_files()
        now = mapped_files(lazy)
        by_origin: dict[str, list[tuple[str, int, int]]] = {}
        for path, (mapped, resident) in sorted(now.items()):
            before = self._lazy_start.get(path, lazy[path][1])
            if resident > before:
                by_origin.setdefault(lazy[path][2], []).append((path, resident - before, mapped))
        for path in [p for p in lazy if p not in now]:
            del lazy[path]  # unmapped: nothing more will arrive
        out = []
        for origin, files in by_origin.items():
            arrived = sum(a for _, a, _ in files)
            mapped = sum(m for _, _, m in files)
            if arrived < max(mapped // 100, 4096):
                continue  # a header page or two: not the weights arriving
            n = len(files)
            out.append((f"arrived on first use: {format_size(arrived)} mapped by {origin} "
                        f"({n} file{'s' if n != 1 else ''})",
                        {"bytes": arrived, "mapped_bytes": mapped, "files": n,
                         "mapped_by": origin}))
        return out

    def remove(self) -> None:
        """Undo every patch (also in modules imported while recording)."""
        try:
            rec = sink()
            mark = getattr(rec, "mark", None)
            if rec is not None and rec.recording_active and callable(mark):
                with contextlib.suppress(Exception):
                    for name, detail in self.arrivals():
                        mark(name, **detail)
        finally:
            self.removed = True
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self._hook)
            try:
                for owner, attr, orig, repl in reversed(self.class_attrs):
                    if owner.__dict__.get(attr) is repl:
                        setattr(owner, attr, orig)
                self.class_attrs.clear()
                self._sweep(self.wrappers, restore=True)
                self.wrappers.clear()
            finally:
                set_sink(None)


def _forget_after_fork() -> None:
    # a forked child does not record: its copies of the wrappers just pass calls through
    set_sink(None)


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_after_fork)


def install(rec: PhaseSink) -> Patches:
    """Patch the loaders so that they report to ``rec``; returns the undo handle."""
    set_sink(rec)
    patches = Patches()
    try:
        patches.start()
    except BaseException:
        patches.remove()
        raise
    return patches
