"""The fork server's own loop (runs in its process; see :mod:`bigviz.runner.forkserver`)."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import socket
import sys
from typing import Any

_MAX_MSG = 1 << 20


def _preload() -> None:
    # Everything a run needs, imported once here so that forked children start warm.
    # Nothing here may start threads or allocate tensors: children must start clean.
    import safetensors.torch  # noqa: F401
    import torch

    import bigviz.checkpoint
    import bigviz.recorder
    import bigviz.runner.worker
    import bigviz.strategies  # noqa: F401
    from bigviz.models import build_model

    with contextlib.suppress(ImportError):
        import accelerate  # noqa: F401
    from torch import nn

    from bigviz.models import materialize
    from bigviz.strategies.weights import first_use

    # The first meta build imports torch._dynamo and sympy (~3 s, tens of MB of Python
    # objects) and the first load_state_dict more: pay it here once, not in every run's
    # timeline. Tensors stay tiny so no intra-op thread pool starts (forking after one
    # has started is unsafe).
    build_model("gpt:1MB", device="meta")
    build_model("bert-base", device="meta")
    real = nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64))
    with torch.device("meta"):
        empty = nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64))
    materialize(empty)
    first_use(empty)
    empty.load_state_dict(real.state_dict())
    empty.load_state_dict(real.state_dict(), assign=True)


_IMPORTED: set[str] = set()


def _import_once(modules: list[str]) -> None:
    """Import a library a strategy needs (transformers: seconds) here, once, so every
    later run forks with it already imported. Failures surface in the worker."""
    for mod in modules:
        if mod not in _IMPORTED:
            _IMPORTED.add(mod)
            with contextlib.suppress(Exception):
                importlib.import_module(mod)


def _send(sock: socket.socket, msg: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        sock.send(json.dumps(msg).encode())


def main(fd: int) -> None:
    """Serve fork requests on control socket ``fd`` until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    sock = socket.socket(fileno=fd)
    _preload()
    _send(sock, {"op": "ready", "pid": os.getpid()})
    children: dict[int, int] = {}
    try:
        while True:
            r, _, _ = select.select([sock], [], [], 0.01)
            if r:
                try:
                    data, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MSG, 4)
                except OSError:
                    break
                if not data:
                    break  # the parent closed the socket or died
                req = json.loads(data)
                if req.get("op") == "run":
                    _import_once(req.get("job", {}).get("preload", []))
                if req.get("op") == "run" and fds:
                    pid = os.fork()
                    if pid == 0:
                        _child(sock, req["job"], fds[0])  # never returns
                    for f in fds:
                        os.close(f)
                    children[pid] = int(req["id"])
                    _send(sock, {"op": "started", "id": req["id"], "pid": pid})
                else:
                    for f in fds:
                        os.close(f)
            while children:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                run_id = children.pop(pid, None)
                if run_id is not None:
                    code = os.waitstatus_to_exitcode(status)
                    _send(sock, {"op": "exited", "id": run_id, "code": code})
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        # skip interpreter teardown (torch's can take seconds); nothing is left to flush
        os._exit(0)


def _child(ctrl: socket.socket, job: dict[str, Any], fd: int) -> None:
    code = 70
    try:
        ctrl.close()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        from bigviz.runner.worker import child_main

        code = child_main(job, fd)
    except BaseException:  # the worker reports its own errors; this is a last resort
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
