"""A warm fork server: one process with torch imported that forks a clean child per run.

Importing torch costs a second or more, so starting a fresh interpreter per run would
dominate short runs. The server (``python -c ...`` started once, working directory
searched last: :mod:`bigviz.runner.interpreter`, on first use) imports
torch, safetensors, accelerate and bigviz, warms the meta device, and then waits. For
each run the parent hands it one end of a new socket pair; the server forks, and the
child runs the job, streaming events back through that socket. Forked children share
the server's imported modules copy-on-write but none of its allocations (the server
never allocated tensors), so each run starts with clean allocator state in well under a
second.

Protocol on the control socket (``SOCK_SEQPACKET``, JSON messages):

* parent → server: ``{"op": "run", "id": N, "job": {...}}`` with the data socket's
  file descriptor attached (``SCM_RIGHTS``);
* parent → server: ``{"op": "run", "id": 0, "job": {"preload": [...]}}`` with no
  descriptor only imports those modules (what a strategy needs) and forks nothing
  (:meth:`ForkServer.preload`);
* server → parent: ``{"op": "ready", "pid": …}`` once, then per run
  ``{"op": "started", "id": N, "pid": …}`` and ``{"op": "exited", "id": N, "code": …}``
  (``code`` as ``os.waitstatus_to_exitcode``: negative for a signal).

The server exits when the parent closes the control socket (or dies), killing any
children still running. :func:`close` stops it; it is also registered ``atexit``.

Starting early. The server's start (its imports: seconds) is paid by the first run
unless :func:`prestart` began it earlier (``%load_ext bigviz``, opening a dashboard; never
``import bigviz`` alone): :meth:`ForkServer.start` launches the process and returns, and
the first :meth:`ForkServer.ensure` (every run's) waits for its ``ready``. Both hold the
handle's lock, so a run asked for while a start is in flight waits for that start
instead of beginning a second server.

Lifecycle. Each worker leads its own process group and dies with the server
(``PR_SET_PDEATHSIG``); what a run leaves in its group is killed when the worker is
reaped (:mod:`bigviz.runner._server`). If the server dies (``kill -9``, or the OOM killer
choosing it: it holds torch), the runs in flight are *lost*: :meth:`ForkServer.lost`
says so, their workers died with it, and the next :meth:`ForkServer.ensure` starts a new
server. A server that dies before it forked a run's worker raises
:class:`ForkServerDied`, which the runner answers by retrying once on a new server.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from bigviz._errors import RunError
from bigviz.runner.interpreter import child_argv, child_env

__all__ = ["ForkServer", "ForkServerDied", "close", "get_server", "kill", "live_server_pids",
           "prestart"]

_MAX_MSG = 1 << 20


class ForkServerDied(RunError):
    """The fork server died before it started a run's worker (nothing of the run ran)."""


def readable(sock: socket.socket, timeout: float) -> bool:
    """Whether ``sock`` has data (or EOF) within ``timeout`` seconds. ``poll``, not
    ``select``: a notebook kernel may hold more than FD_SETSIZE (1024) descriptors."""
    p = select.poll()
    p.register(sock.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(p.poll(max(0, int(timeout * 1000))))


class ForkServer:
    """The parent's handle on the fork server process.

    Example:
        >>> # srv = get_server(); rid, pid, sock = srv.spawn({"kind": "noop"})
    """

    def __init__(self, *, start_timeout: float = 120.0) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.RLock()
        self._exits: dict[int, int] = {}
        self._started: dict[int, int] = {}
        # runs whose worker was forked and not yet reported exited: run id -> pid
        self._inflight: dict[int, int] = {}
        # runs lost with a server that died or was closed under them: run id -> "died"/"closed"
        self._lost: dict[int, str] = {}
        self._next_id = 0
        self._start_timeout = start_timeout
        self._owner = os.getpid()
        self.pid: int | None = None
        # when a start began whose "ready" nobody has read yet (None: none in flight)
        self._starting: float | None = None

    # -- lifecycle ----------------------------------------------------------
    def alive(self) -> bool:
        """Whether the server process is running (and is this process's own)."""
        if self._owner != os.getpid():
            # we are a fork of the process that started it: its socket and children are
            # not ours to use; forget them (without closing the parent's server)
            self._owner = os.getpid()
            self._proc, self._sock, self.pid, self._starting = None, None, None, None
            self._exits.clear()
            self._started.clear()
            self._inflight.clear()
            self._lost.clear()
            return False
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Begin starting the server if it is not running, without waiting for its
        imports (:meth:`ensure` waits for them). Returns in milliseconds.

        Example:
            >>> # srv.start(); ...; srv.ensure()  # the imports ran meanwhile
        """
        with self._lock:
            if self.alive():
                return  # running, or a start is already in flight
            self._shutdown(why="died")
            parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            # the server imports what the parent can (user factories, bigviz itself) and
            # searches the working directory last (see bigviz.runner.interpreter)
            env = child_env()
            # CUDA must not be initialised in the server (children could not use it
            # after the fork): make torch's availability checks ask NVML, not the driver
            env.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
            code = f"from bigviz.runner._server import main; main({child_end.fileno()})"
            try:
                self._proc = subprocess.Popen(
                    child_argv(code),
                    pass_fds=[child_end.fileno()],
                    stdin=subprocess.DEVNULL,
                    env=env,
                )
            finally:
                child_end.close()
            self._sock = parent_end
            self._starting = time.monotonic()

    def ensure(self) -> None:
        """Start the server if it is not running, and wait until its imports are done
        (also for a start :meth:`start` or :func:`prestart` began: never a second one).

        Raises:
            RunError: the server did not start (its stderr is in the message).
        """
        with self._lock:
            if self.alive() and self._starting is None:
                return
            self.start()
            began = self._starting if self._starting is not None else time.monotonic()
            left = max(0.0, self._start_timeout - (time.monotonic() - began))
            msg = self._recv(timeout=left)
            self._starting = None
            if msg is None or msg.get("op") != "ready":
                self._shutdown()
                raise RunError(
                    f"the bigviz fork server did not start within {self._start_timeout:.0f} s "
                    f"(got {msg!r}); check that `{sys.executable} -c 'import torch, bigviz'` works"
                )
            self.pid = int(msg["pid"])

    def close(self, timeout: float = 5.0) -> None:
        """Stop the server and any run still in flight (with everything each run started)."""
        with self._lock:
            self._shutdown(timeout)

    def lost(self, run_id: int) -> str | None:
        """``"died"`` or ``"closed"`` when run ``run_id`` was in flight as its server died
        or was closed (its worker went with it), else ``None``.

        Example:
            >>> ForkServer().lost(1) is None
            True
        """
        return self._lost.get(run_id)

    def _shutdown(self, timeout: float = 5.0, why: str = "closed") -> None:
        for run_id, pid in self._inflight.items():
            self._lost[run_id] = why
            if why == "died":
                # the worker died with the server (PR_SET_PDEATHSIG); what it started is
                # left in its group, with no server to clean up after it. The group, never
                # the pid alone: the worker may be reaped already and its pid reused.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        self._inflight.clear()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()  # EOF tells the server to kill its children and exit
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        self.pid = None
        self._starting = None
        self._exits.clear()
        self._started.clear()

    # -- messages -----------------------------------------------------------
    def _recv(self, timeout: float) -> dict[str, Any] | None:
        sock = self._sock
        if sock is None:
            return None
        if not readable(sock, timeout):
            return None
        data = sock.recv(_MAX_MSG)
        if not data:  # server died
            return {"op": "eof"}
        msg: dict[str, Any] = json.loads(data)
        return msg

    def _pump(self, timeout: float) -> bool:
        """Read one message (waiting up to ``timeout``) into the tables; False if none."""
        msg = self._recv(timeout)
        if msg is None:
            return False
        op = msg.get("op")
        if op == "started":
            self._started[int(msg["id"])] = int(msg["pid"])
            self._inflight[int(msg["id"])] = int(msg["pid"])
        elif op == "exited":
            self._exits[int(msg["id"])] = int(msg["code"])
            self._inflight.pop(int(msg["id"]), None)
        elif op == "eof":  # the server died: its runs in flight are lost (see lost())
            self._shutdown(0.5, why="died")
        return True

    def spawn(self, job: dict[str, Any]) -> tuple[int, int, socket.socket]:
        """Fork a child for ``job``; return ``(run id, child pid, data socket)``.

        Raises:
            ForkServerDied: the server died before it forked the worker.
            RunError: the server could not be started or did not answer.
        """
        with self._lock:
            self.ensure()
            assert self._sock is not None
            self._next_id += 1
            run_id = self._next_id
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                payload = json.dumps({"op": "run", "id": run_id, "job": job}).encode()
                socket.send_fds(self._sock, [payload], [theirs.fileno()])
            except OSError as exc:
                mine.close()
                self._shutdown(0.5, why="died")
                raise ForkServerDied(
                    f"could not reach the bigviz fork server (it died?): {exc}") from exc
            finally:
                theirs.close()
            deadline = time.monotonic() + 30.0
            while run_id not in self._started:
                if self._sock is None:
                    mine.close()
                    raise ForkServerDied(
                        "the bigviz fork server died before it started the worker")
                if time.monotonic() > deadline:
                    mine.close()
                    raise RunError("the bigviz fork server did not fork a worker within 30 s")
                self._pump(0.05)
            return run_id, self._started.pop(run_id), mine

    def preload(self, modules: list[str] | tuple[str, ...]) -> None:
        """Have the server import ``modules`` (e.g. ``transformers`` for an ``hf``
        strategy) as soon as it is ready, so the first run that needs them forks with
        them imported. Begins a start if none is running; never waits for it. An import
        that fails is left for the run to report.

        Example:
            >>> # get_server().preload(["transformers"])
        """
        if not modules:
            return
        with self._lock:
            self.start()
            if self._sock is None:
                return
            # a "run" without a descriptor: the server imports job["preload"], forks nothing
            payload = json.dumps({"op": "run", "id": 0, "job": {"preload": list(modules)}})
            try:
                self._sock.send(payload.encode())
            except OSError:
                self._shutdown(0.5, why="died")

    def poll_exit(self, run_id: int, timeout: float = 0.0) -> int | None:
        """The exit code of run ``run_id`` once its process is reaped, else ``None``
        (also for a run :meth:`lost` with its server: no exit code will come)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if run_id in self._exits:
                    return self._exits.pop(run_id)
                if run_id in self._lost or self._sock is None:
                    return None
                left = deadline - time.monotonic()
                if not self._pump(max(0.0, left)) and left <= 0:
                    return None


_SERVER: ForkServer | None = None
_SERVER_LOCK = threading.Lock()


def get_server() -> ForkServer:
    """The process-wide fork server handle (started lazily by :meth:`ForkServer.spawn`)."""
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is None:
            _SERVER = ForkServer()
            atexit.register(close)
        return _SERVER


#: set to ``0`` to start the fork server only when a run needs it (no head start)
PRESTART_ENV = "BIGVIZ_PRESTART"


def prestart(modules: list[str] | tuple[str, ...] = ()) -> bool:
    """Begin starting the fork server now, in the background, and have it import
    ``modules`` once it is up, so that the first run finds it warm. Returns at once
    (the server's own imports run in its process; no thread is left in this one);
    ``False`` when :data:`PRESTART_ENV` is ``0`` and nothing was started. Safe from any
    thread: a start in flight is never begun twice, and a run asked for meanwhile waits
    for it (:meth:`ForkServer.ensure`). A server that cannot start is reported by the
    first run.

    Example:
        >>> # prestart(["transformers"])  # %load_ext bigviz, a dashboard opening
    """
    if os.environ.get(PRESTART_ENV, "1").strip() == "0":
        return False
    srv = get_server()
    srv.start()
    srv.preload(modules)
    return True


def live_server_pids() -> list[int]:
    """PIDs of the fork server processes bigviz keeps alive on purpose (for leak checks).

    Example:
        >>> isinstance(live_server_pids(), list)
        True
    """
    srv = _SERVER
    if srv is not None and srv.alive() and srv._proc is not None:
        return [srv._proc.pid]
    return []


def close() -> None:
    """Stop the fork server (a later run starts a new one).

    Example:
        >>> close()
    """
    srv = _SERVER
    if srv is not None:
        srv.close()


def kill(pid: int) -> None:
    """SIGKILL a worker and everything in its process group (it leads its own: what it
    started goes with it). We may signal it as the same user.

    Example:
        >>> kill(2**22 + 1)  # no such process: nothing happens
    """
    try:
        os.killpg(pid, signal.SIGKILL)
        return
    except ProcessLookupError:
        pass  # no such group (its worker never got one): the process alone
    except PermissionError:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
