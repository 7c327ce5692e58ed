"""Run a Python program under ``bigviz.record(instrument=True)`` for ``bigviz profile``.

Usage (by ``bigviz profile`` only)::

    BIGVIZ_PROFILE_OUT=out.json python -m bigviz.recorder._bootstrap script.py ARGS
    BIGVIZ_PROFILE_OUT=out.json python -m bigviz.recorder._bootstrap -m module ARGS
    BIGVIZ_PROFILE_OUT=out.json python -m bigviz.recorder._bootstrap -c CODE ARGS

The program runs as ``__main__`` with its own ``sys.argv``; when it ends (normally, by
``sys.exit`` or by an exception) the Recording is written to ``$BIGVIZ_PROFILE_OUT`` as
``{"pid", "t_enter", "recording"}``, ``t_enter`` being the monotonic time at which the
recording started, so ``bigviz profile`` can put its phases on its own clock.

A child the program forks that ends through ``sys.exit`` or an exception unwinds through
this code too: it neither stops the recording (a forked copy of a recorder is inert) nor
writes ``$BIGVIZ_PROFILE_OUT``, which is the program's own process's to write.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import runpy
import sys
import time
import traceback
import types
from collections.abc import Callable, Sequence
from typing import Any

# The recorder patches loader functions of modules already imported, and of modules
# imported later at its next phase or mark. A program imports torch itself, after the
# recorder started: a mark right after that import ("imported torch") gets it patched.
_WATCHED = ("torch", "safetensors", "safetensors.torch")


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``before(name)`` as a watched module is found (before it enters
    ``sys.modules``) and ``after(name)`` once it has finished importing."""

    def __init__(self, before: Callable[[str], None], after: Callable[[str], None]) -> None:
        self.before = before
        self.after = after
        self._busy: set[str] = set()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _WATCHED or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy.discard(fullname)
        loader = spec.loader if spec is not None else None
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return None
        original = loader.exec_module
        after = self.after
        self.before(fullname)

        def exec_module(module: types.ModuleType) -> None:
            try:
                original(module)
            finally:
                after(fullname)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


_OWN_RECORDER = ("bigviz profile records this program already, with its automatic "
                 "instrumentation; to record it with your own bigviz.record(), run "
                 "`bigviz profile --no-instrument -- …`")


def _loaders_patched() -> bool:
    torch = sys.modules.get("torch")
    return torch is None or hasattr(getattr(torch, "load", None), "__wrapped__")


def _run_target(argv: list[str]) -> None:
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv[0] == "-c":
        sys.argv = ["-c", *argv[2:]]
        code = compile(argv[1], "<string>", "exec")
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    else:
        script = os.path.abspath(argv[0])
        sys.argv = [argv[0], *argv[1:]]
        # `python script.py` puts the script's folder first on sys.path
        sys.path[0] = os.path.dirname(script)
        runpy.run_path(script, run_name="__main__")


def _write(out: str, payload: dict[str, Any]) -> None:
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, allow_nan=False)
    os.replace(tmp, out)


def main(argv: list[str]) -> int:
    out = os.environ.pop("BIGVIZ_PROFILE_OUT", "")
    if not argv:
        print(
            "usage: python -m bigviz.recorder._bootstrap script.py|-m MOD|-c CODE ARGS",
            file=sys.stderr,
        )
        return 2
    name = " ".join(argv)[:200]
    me = os.getpid()
    try:
        from bigviz.recorder import record

        t_before = time.monotonic()
        recorder = record(instrument=True, name=name)
        rec = recorder.__enter__()
        # a program that calls bigviz.record() itself is told how to run it
        from bigviz.recorder import _active

        _active.release(recorder)
        _active.claim(recorder, lambda: _OWN_RECORDER)
        t_enter = (t_before + time.monotonic()) / 2.0

        open_imports: dict[str, contextlib.ExitStack] = {}

        def before_import(name: str) -> None:
            # the import itself is a phase: importing torch costs hundreds of MiB. It opens
            # here, before the half-initialised module is visible in sys.modules.
            if recorder.recording_active:
                stack = contextlib.ExitStack()
                stack.enter_context(recorder.phase(f"import {name}"))
                open_imports[name] = stack

        def after_import(name: str) -> None:
            stack = open_imports.pop(name, None)
            if stack is None or not recorder.recording_active:
                return
            stack.close()
            if not _loaders_patched():
                # this recorder patches modules imported late at a phase start only
                with recorder.phase(f"instrument {name}"):
                    pass

        sys.meta_path.insert(0, _AfterImport(before_import, after_import))
    except Exception as exc:  # the program must run even if recording cannot start
        if out:
            _write(out, {"error": f"the recorder did not start: {exc}"})
        _run_target(argv)
        return 0
    code = 0
    try:
        _run_target(argv)
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        recorder.__exit__(None, None, None)  # nothing happens in a forked child
    if os.getpid() != me:
        return code  # a child the program forked: the recording is not its to write
    if out:
        _write(out, {"pid": os.getpid(), "t_enter": t_enter, "recording": rec.recording.to_dict()})
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
