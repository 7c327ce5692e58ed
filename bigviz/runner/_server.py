"""The fork server's own loop (runs in its process; see :mod:`bigviz.runner.forkserver`).

Every worker leads its own process group (set on both sides of the fork, so the parent
can signal the group as soon as it hears ``started``), and asks the kernel to SIGKILL it
when the server dies (``PR_SET_PDEATHSIG``). When a worker exits the server sees it
before reaping it (``waitid(WNOWAIT)``: the zombie keeps the group's id reserved), kills
whatever is left in its group (children the run started and left behind), then reaps
it. Closing the server kills every worker's group.
"""

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
PR_SET_PDEATHSIG = 1
_LIBC: Any = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        import ctypes

        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def die_with_parent(parent: int) -> bool:
    """Have the kernel SIGKILL this process when its parent exits (Linux
    ``PR_SET_PDEATHSIG``), and exit at once if ``parent`` is already gone (it died
    between the fork and this call). Returns whether the kernel took the request
    (``False`` off Linux).

    The signal comes when the parent *thread* that forked this process ends: fork from a
    thread that outlives the child (the fork server's main loop, a launcher waiting on
    its ranks).

    Example:
        >>> # in a freshly started child: die_with_parent(int(os.environ["PARENT_PID"]))
    """
    ok = False
    if sys.platform.startswith("linux"):
        try:
            ok = _libc().prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            ok = False
    if os.getppid() != parent:
        os._exit(1)  # orphaned already: nobody waits for this process's work
    return ok


def kill_group(pgid: int) -> None:
    """SIGKILL process group ``pgid`` (a worker's or a rank's), if it still exists.

    Example:
        >>> kill_group(2**22 + 1)  # no such group: nothing happens
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


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
    sock.set_inheritable(False)  # no process started from here may hold the parent's EOF
    _preload()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            _libc()  # loaded once here, not in every worker
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
                    server = os.getpid()
                    pid = os.fork()
                    if pid == 0:
                        _child(sock, req["job"], fds[0], server)  # never returns
                    # the worker leads its own group before anyone hears of it (it sets
                    # the same itself: whichever runs first, the group exists)
                    with contextlib.suppress(OSError):
                        os.setpgid(pid, pid)
                    for f in fds:
                        os.close(f)
                    children[pid] = int(req["id"])
                    _send(sock, {"op": "started", "id": req["id"], "pid": pid})
                else:
                    for f in fds:
                        os.close(f)
            _reap(sock, children)
    finally:
        for pid in children:  # not reaped yet: each group's id is still reserved
            kill_group(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        # skip interpreter teardown (torch's can take seconds); nothing is left to flush
        os._exit(0)


def _reap(sock: socket.socket, children: dict[int, int]) -> None:
    """Reap the workers that exited, killing what each left in its process group first."""
    while children:
        try:
            # WNOWAIT: see the exit, leave the zombie (and with it the group id) in place
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None:
            return
        pid = info.si_pid
        if pid in children:
            kill_group(pid)  # the run's leftovers: a `sleep` it started, a forked child
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            continue
        run_id = children.pop(pid, None)
        if run_id is not None:
            code = os.waitstatus_to_exitcode(status)
            _send(sock, {"op": "exited", "id": run_id, "code": code})


def _child(ctrl: socket.socket, job: dict[str, Any], fd: int, server: int) -> None:
    code = 70
    try:
        ctrl.close()
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        die_with_parent(server)  # a worker never outlives its server
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
