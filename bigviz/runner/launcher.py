"""The distributed launcher: N ranks of the rank program on this machine, followed by the
one supervisor, and their RunResult.

:func:`run_distributed` launches N ranks (fresh processes, gloo on CPU, NCCL when every
rank has its own GPU), each running a distributed strategy under its own recorder. Rank 0
gathers every rank's Recording into one whose ``ranks`` are the per-rank lanes on one
clock, and whose series are node totals (:mod:`bigviz.recorder.merge`):

=============  ======================================================================
``node.pss``   Σ of the ranks' proportional set size: the honest node RAM when ranks
               share pages (a page mapped by N ranks counts 1/N in each); read by the
               launcher, all ranks back to back (:class:`NodeSampler`)
``node.uss``   Σ of the memory each rank alone holds
``node.anon``  Σ of anonymous memory (private to each rank)
``node.rss``   Σ of RSS: counts shared file pages once *per rank* (shown for contrast)
=============  ======================================================================

A rank that fails stops the job: the supervisor kills the other ranks and the
:class:`~bigviz.data.result.RunResult` names the rank, its phase and how it died
(``checks.failed_rank``).

No rank outlives its launcher: each runs in its own session (killing it kills what it
started), and asks the kernel first thing to SIGKILL it when the launcher dies
(``PR_SET_PDEATHSIG``, :func:`bigviz.runner._server.die_with_parent`), so a launcher
killed with ``kill -9`` leaves no rank loading on.

A checkpoint folder the user has (``model="./my-model"`` or ``hf:ORG/NAME``) runs as
saved: the ranks build its skeleton from ``config.json`` (or ``factory``) on meta, read
its files where they are (through a ``checkpoint`` link in the work folder, nothing is
written into the folder) and check their weights against the checksums
:func:`~bigviz.runner.checkpoints.prepare_folder` took of its files once; a shard size
reshards a copy into the work folder first.

Example:
    >>> # r = run_distributed("shared-mmap", nproc=2, model="gpt:100MB")
    >>> # r = run_distributed("fsdp-hf", nproc=2, model="./my-gpt2")   # as saved
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bigviz.strategies as strategies
from bigviz._errors import ConfigError, RunError
from bigviz.data.recording import Series
from bigviz.data.result import PredictionCheck, RunResult
from bigviz.models import parse_spec
from bigviz.runner.checkpoints import prepare_checkpoint, prepare_folder
from bigviz.runner.interpreter import child_argv, child_env
from bigviz.runner.memory import snapshot, snapshot_status
from bigviz.runner.rank import SMAPS_MS
from bigviz.runner.results import (
    above,
    add_barrier_points,
    failed_ranks_result,
    max_after,
    measured_from,
)
from bigviz.runner.supervisor import EventCallback, Watched, oom_kill_count, supervise
from bigviz.runner.validate import (
    check_format,
    check_interval,
    check_ranks,
    model_id,
    parse_budget,
)
from bigviz.strategies import Strategy
from bigviz.strategies.ranks import EveryRankLoads
from bigviz.units import parse_size

__all__ = ["AS_SAVED_ARG", "GATHER_S", "Cluster", "NodeSampler", "RankChild",
           "check_folder_format", "check_rank_options", "launch", "rank_settings",
           "run_distributed"]

#: ``--max-shard-size`` of a rank that loads a checkpoint folder's files as saved
AS_SAVED_ARG = "as-saved"

#: why a strategy reads safetensors files only, for the refusal of a ``.bin`` folder
_SAFETENSORS_ONLY = {
    "shared-mmap": ".bin files cannot be mapped zero-copy",
    "fsdp-hf": "HuggingFaceStorageReader reads safetensors files only",
}

#: how long a killed rank may take to exit before the launcher stops waiting
_REAP_S = 10.0


class RankChild:
    """One rank process, seen through the supervisor's
    :class:`~bigviz.runner.supervisor.Child` interface: its events arrive on a pipe, its
    output goes to ``log``.

    Example:
        >>> # RankChild(subprocess.Popen(args, pass_fds=(w,)), r, log)
    """

    def __init__(self, proc: subprocess.Popen[bytes], fd: int, log: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.log = log
        self._fd: int | None = fd
        os.set_blocking(fd, False)

    def fileno(self) -> int | None:
        return self._fd

    def read(self) -> bytes | None:
        if self._fd is None:
            return None
        chunks: list[bytes] = []
        while True:
            try:
                data = os.read(self._fd, 1 << 20)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.close()
                if not chunks:
                    return None
                break
            chunks.append(data)
        return b"".join(chunks)

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        # the rank's own session: the rank, its sampler sidecar, and anything left behind
        # by a rank that already died (its pid stays reserved until we reap it)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def memory(self) -> dict[str, int]:
        return snapshot_status(self.proc.pid)

    def reap(self) -> None:
        """Wait for the killed rank to exit, and close its pipe."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(_REAP_S)
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def log_tail(self, n: int = 2000) -> str:
        """The last ``n`` bytes the rank printed."""
        try:
            data = self.log.read_bytes()
        except OSError:
            return ""
        return data[-n:].decode(errors="replace")


#: what each rank runs: the command line of ``python -m bigviz.runner.distributed``, after
#: tying its life to the launcher's (before torch is imported: that takes seconds)
_RANK_MAIN = ("import os, sys; from bigviz.runner._server import die_with_parent; "
              "die_with_parent(int(os.environ.pop('BIGVIZ_LAUNCHER_PID', os.getppid()))); "
              "from bigviz.runner.distributed import main; "
              "sys.exit(main(sys.argv[1:]))")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: how long node 0's launcher waits, after its ranks are done, for the other nodes'
#: sampled totals to appear in the shared folder
GATHER_S = 30.0


@dataclass(frozen=True)
class Cluster:
    """Where this launcher's ranks sit in a job of ``nnodes`` nodes (one launcher per
    node, like ``torchrun --nnodes``).

    Rank ``r`` of node ``node_rank`` is global rank ``node_rank * nproc + r``; every
    node's ranks meet at ``master_addr:master_port`` (node 0 hosts the rendezvous).
    ``node_dir`` is a folder every node's launcher can read and write (on one machine:
    any folder; on a cluster: a shared file system): global rank 0 writes the job's
    RunResult there, and each launcher writes its node's sampled PSS (``node<K>.json``),
    which node 0's launcher adds to the result. ``rendezvous_timeout``: seconds the
    ranks may wait for the other nodes before the job is stopped.

    Example:
        >>> Cluster(2, 1, master_port=29500, node_dir=Path("/tmp/job")).world(4)
        8
    """

    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    node_dir: Path | None = None
    rendezvous_timeout: float = 300.0

    @property
    def multi(self) -> bool:
        """Whether the job spans more than one node."""
        return self.nnodes > 1

    def world(self, nproc: int) -> int:
        """The job's world size with ``nproc`` ranks on every node."""
        return self.nnodes * nproc

    def check(self) -> Cluster:
        """These settings, checked.

        Raises:
            ConfigError: naming the value and the fix.
        """
        if self.nnodes < 1:
            raise ConfigError(f"nnodes {self.nnodes} must be >= 1 (--nnodes 2)")
        if not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(f"node_rank {self.node_rank} must be in 0..{self.nnodes - 1} "
                              f"for nnodes {self.nnodes} (--node-rank)")
        if self.master_port is not None and not 0 < self.master_port < 65536:
            raise ConfigError(f"master_port {self.master_port} is not a TCP port; use "
                              "e.g. --master-port 29500")
        if not self.rendezvous_timeout > 0:
            raise ConfigError(f"rendezvous_timeout {self.rendezvous_timeout} must be a "
                              "positive number of seconds")
        if self.multi and (self.master_port is None or self.node_dir is None):
            raise ConfigError(
                f"nnodes {self.nnodes} needs the same master_port and node_dir on every "
                "node, e.g. --master-port 29500 --node-dir /shared/bigviz-job")
        if not self.multi and self.node_rank:
            raise ConfigError(f"node_rank {self.node_rank} needs nnodes > 1 (--nnodes)")
        return self


class _Either(threading.Event):
    """Set when this launcher stops the job itself, or when the caller's ``cancel`` is."""

    def __init__(self, user: threading.Event | None) -> None:
        super().__init__()
        self._user = user

    def is_set(self) -> bool:
        return super().is_set() or (self._user is not None and self._user.is_set())


def rank_settings(nproc: int | None, per_rank: str | None,
                  backend: str | None) -> dict[str, Any]:
    """``per_rank`` and ``backend`` of :func:`bigviz.run` / :func:`bigviz.sweep`, checked:
    the keywords of :class:`~bigviz.runner.plan.Settings` (``per_rank`` ``None``: naive).

    Raises:
        ConfigError: an unknown value (the choices named), or either one without ``nproc``.

    Example:
        >>> rank_settings(2, "sharded", None)
        {'per_rank': 'sharded', 'backend': None}
    """
    from bigviz.options import BACKENDS, PER_RANK

    if per_rank is not None and per_rank not in PER_RANK:
        raise ConfigError(f"per_rank {per_rank!r} is not a per-rank strategy; use one of "
                          f"{', '.join(PER_RANK)} (--per-rank)")
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} is not supported; use one of "
                          f"{', '.join(BACKENDS)} (--backend), or leave it out")
    given = [f"{k}={v!r}" for k, v in (("per_rank", per_rank), ("backend", backend))
             if v is not None]
    if nproc is None and given:
        raise ConfigError(f"{' and '.join(given)}: only distributed runs take "
                          f"{'these' if len(given) > 1 else 'this'}; add nproc (--nproc 2) "
                          "or leave it out")
    return {"per_rank": per_rank or "naive", "backend": backend}


def check_rank_options(
    strategy: str, *, nproc: int, model: Any, format: str, dtype: str, per_rank: str,
    backend: str | None, interval_ms: float, folder: bool = False,
) -> Strategy:
    """Everything a launch needs, checked before anything is saved or started
    (``folder``: ``model`` is a checkpoint folder read as saved, in ``format``)."""
    strat = strategies.get(strategy, kind="distributed")
    check_ranks(nproc, model)
    check_format(format)
    if folder:
        check_folder_format(strat, model_id(model), format)
    if format not in strat.formats:
        raise ConfigError(
            f"strategy {strat.name!r} ({strat.description}) does not read format "
            f"{format!r}; use format={strat.formats[0]!r}"
        )
    if isinstance(strat, EveryRankLoads):
        strat.check_options(per_rank)
    rank_settings(nproc, per_rank, backend)
    if backend == "nccl":
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus < nproc:
            raise ConfigError(f"backend 'nccl' needs a GPU per rank: nproc {nproc}, "
                              f"{gpus} GPU(s) here; use backend 'gloo' (--backend gloo)")
    parse_spec(model, dtype)
    check_interval(interval_ms)
    return strat


def check_folder_format(strat: Strategy, spec: str, fmt: str) -> None:
    """Refuse, in one line, a checkpoint folder loaded as saved in a format ``strat``
    does not read (a ``.bin`` folder for ``fsdp-hf`` or ``shared-mmap``), naming why and
    the fixes.

    Raises:
        ConfigError: the strategy cannot read the folder's files.

    Example:
        >>> check_folder_format(strategies.get("fsdp-hf"), "./m", "safetensors")
    """
    if fmt in strat.formats:
        return
    why = _SAFETENSORS_ONLY.get(strat.name, f"it reads {' / '.join(strat.formats)} only")
    others = [n for n in strategies.names(kind="distributed")
              if fmt in strategies.get(n).formats and not n.endswith("-save")]
    raise ConfigError(
        f"model {spec!r} is saved as {fmt} files and {strat.name!r} cannot read them as "
        f"saved ({why}); reshard a {strat.formats[0]} copy into the work folder with "
        f"max_shard_size='500MB' (--max-shard-size 500MB), or use {', '.join(others)}")


def run_distributed(
    strategy: str,
    *,
    nproc: int = 2,
    model: str = "gpt:100MB",
    max_shard_size: int | str | None = None,
    format: str = "safetensors",
    dtype: str | None = None,
    per_rank: str = "naive",
    work_dir: str | os.PathLike[str] | None = None,
    ram_budget: int | str | None = None,
    interval_ms: float = 1.0,
    on_event: EventCallback | None = None,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
    seed: int = 0,
    backend: str | None = None,
    cluster: Cluster | None = None,
    factory: str | None = None,
) -> RunResult:
    """Launch ``nproc`` ranks on this machine, each loading with ``strategy``, and measure.

    Each rank is a fresh interpreter running ``bigviz.runner.distributed`` (the rank
    program of :mod:`bigviz.runner.rank`; the working directory is searched last, see
    :mod:`bigviz.runner.interpreter`) with the variables
    torchrun would set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR=127.0.0.1``,
    a free ``MASTER_PORT``, ``OMP_NUM_THREADS=1`` unless set). Every rank records its own
    timeline; rank 0 gathers them into ``result.recording`` (``ranks`` holds the lanes,
    ``series["node.pss"]`` the node total).

    Args:
        strategy: ``"every-rank-loads"``, ``"rank0-broadcast"`` or ``"shared-mmap"``.
        nproc: number of ranks.
        model: a zoo spec (``"gpt:1GB"``), ``"package.module:function"``, or a checkpoint
            folder (``"./my-model"``, ``"hf:ORG/NAME"`` from the local cache) that the
            ranks read as saved, never writing into it.
        max_shard_size: shard size of the checkpoint (saved once in ``work_dir``, reused);
            ``None``: 500 MB for the zoo, a folder's files as saved (a size reshards a
            copy of the folder into ``work_dir``).
        format: ``"safetensors"`` or ``"bin"`` (``shared-mmap``, ``fsdp-hf``: safetensors
            only); a folder as saved is read in its own format.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (``None``: float32; a folder
            loads in its files' dtype).
        per_rank: what each rank of ``every-rank-loads`` runs: ``"naive"`` (2 × M, the
            textbook problem), ``"sharded"`` or ``"meta"``.
        work_dir: checkpoints and scratch files (default ``$TMPDIR/bigviz-work``).
        ram_budget: kill the job when the ranks together exceed this (Σ anonymous +
            shmem, plus the largest rank's file-backed pages, which the ranks share);
            outcome ``"budget_exceeded"``.
        interval_ms: sampling interval of every rank's timeline.
        on_event: called here with each rank's streamed events (samples, phase
            start/end, marks, errors), each carrying ``"rank"`` and ``"pid"``. Times
            are seconds since that rank's recording started; each rank's ``"hello"``
            event gives its ``t0_monotonic`` to align them (the result is aligned).
        timeout: seconds after which every rank is killed (outcome ``"error"``).
        cancel: set it to stop every rank (outcome ``"cancelled"``).
        seed: seed of the synthetic weights.
        backend: ``"gloo"`` or ``"nccl"``; default NCCL when each rank has a GPU.
        cluster: this node's place in a multi-node job (:class:`Cluster`): run the same
            call on every node with its own ``node_rank``. Node 0's result has each
            node's totals in ``checks.nodes`` and the cluster's in ``checks.node``; a
            node that never joins stops the job after ``cluster.rendezvous_timeout``
            (outcome ``"error"``, the partial timelines kept).
        factory: for a checkpoint folder without ``config.json``, the
            ``"package.module:function"`` that builds its model.

    Returns:
        A :class:`RunResult`: node figures (``ram_peak`` = node PSS above the ranks'
        baselines), per-rank figures in ``checks.ranks``; on failure ``outcome`` is
        ``"error"``, ``"crashed"``, ``"oom"`` (a rank killed by the OOM killer), ``"cancelled"``
        or ``"budget_exceeded"``, with ``checks.failed_rank`` and the phase.

    Raises:
        ConfigError: a bad nproc, model, format, dtype, size or budget.
        StrategyError: an unknown strategy or per-rank strategy.
        RunError: the ranks could not be started.

    Example:
        >>> # r = run_distributed("shared-mmap", nproc=2, model="gpt:100MB")
        >>> # r.ram_peak / r.model_bytes      # ≈ 1: the page cache is shared
    """
    from bigviz.runner.plan import Settings

    check_ranks(nproc, model)
    # a checkpoint folder: resolved, its dtype and format read, its skeleton built on
    # meta (a missing config.json is an error now, not a failed rank)
    settings = Settings(model, dtype=dtype, factory=factory).resolved()
    src = settings.folder
    dtype = settings.dtype or "float32"
    shard = (None if src is not None and max_shard_size is None
             else parse_size(max_shard_size or "500MB"))
    if src is not None and shard is None:
        format = settings.folder_format or format
    strat = check_rank_options(strategy, nproc=nproc, model=model, format=format, dtype=dtype,
                        per_rank=per_rank, backend=backend, interval_ms=interval_ms,
                        folder=src is not None and shard is None)
    cluster = (cluster or Cluster()).check()
    budget = parse_budget(ram_budget)
    if src is not None:
        folder = prepare_folder(src, shard=shard, format=None if shard is None else format,
                                work_dir=work_dir, cancel=cancel)
    else:
        assert shard is not None
        folder = prepare_checkpoint(model, max_shard_size=shard, format=format, dtype=dtype,
                                    work_dir=work_dir, seed=seed)
    return launch(strat, folder, nproc=nproc, model=model if src is None else str(src),
                  shard=shard, format=format, dtype=dtype, per_rank=per_rank, budget=budget,
                  interval_ms=float(interval_ms), on_event=on_event, timeout=timeout,
                  cancel=cancel, seed=seed, backend=backend, cluster=cluster,
                  factory=settings.factory, source=None if src is None else model_id(model),
                  as_saved=settings.as_saved if shard is None else None)


def launch(
    strat: Strategy, folder: Path, *, nproc: int, model: str, shard: int | None, format: str,
    dtype: str, per_rank: str, budget: int | None, interval_ms: float,
    on_event: EventCallback | None, timeout: float | None, cancel: threading.Event | None,
    seed: int, backend: str | None, cluster: Cluster | None = None,
    factory: str | None = None, source: str | None = None, as_saved: str | None = None,
) -> RunResult:
    """Launch the ranks on a prepared checkpoint ``folder`` (options already checked, as
    :func:`run_distributed` does) and follow them to the end.

    For a checkpoint folder, ``model`` is its resolved path (the ranks build from it,
    with ``factory`` if given), ``source`` the spec the user gave (the result's model),
    and ``shard`` ``None`` with ``as_saved`` (how its files are cut) when it is read as
    saved.

    Example:
        >>> # launch(strategies.get("shared-mmap"), prepare_checkpoint(...), nproc=2, ...)
    """
    scratch = folder.parent.parent / "runs" / f"dist-{strat.name}-{uuid.uuid4().hex[:8]}"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        res = _launch(strat.name, nproc=nproc, model=model, shard=shard, format=format,
                      dtype=dtype, per_rank=per_rank, folder=folder, scratch=scratch,
                      budget=budget, interval_ms=interval_ms, on_event=on_event,
                      timeout=timeout, cancel=cancel, seed=seed, backend=backend,
                      cluster=cluster or Cluster(), factory=factory)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if source is not None:  # a checkpoint folder: named as the user gave it
        res.model = source
        res.params["source"] = model
        if factory:
            res.params["factory"] = factory
        if shard is None:
            res.params["as_saved"] = as_saved
    return res


def _launch(
    strategy: str, *, nproc: int, model: str, shard: int | None, format: str, dtype: str,
    per_rank: str, folder: Path, scratch: Path, budget: int | None, interval_ms: float,
    on_event: EventCallback | None, timeout: float | None, cancel: threading.Event | None,
    seed: int, backend: str | None, cluster: Cluster, factory: str | None = None,
) -> RunResult:
    out = scratch / "result.json"
    if cluster.multi:
        assert cluster.node_dir is not None  # Cluster.check
        cluster.node_dir.mkdir(parents=True, exist_ok=True)
        out = cluster.node_dir / "result.json"
        if cluster.node_rank == 0:  # files of an earlier job in the same folder
            for old in (out, *cluster.node_dir.glob("node*.json")):
                old.unlink(missing_ok=True)
    env_base = child_env()  # the working directory is searched last, never first
    env_base.setdefault("OMP_NUM_THREADS", "1")  # N ranks share the cores
    env_base.update(MASTER_ADDR=cluster.master_addr,
                    MASTER_PORT=str(cluster.master_port or _free_port()),
                    WORLD_SIZE=str(cluster.world(nproc)), LOCAL_WORLD_SIZE=str(nproc),
                    GROUP_RANK=str(cluster.node_rank), BIGVIZ_LAUNCHER_PID=str(os.getpid()))
    pg_timeout = max(60.0, float(timeout)) if timeout else 1800.0
    ranks: list[RankChild] = []
    sampler = NodeSampler()
    t_start = time.monotonic()
    oom_before = oom_kill_count()
    stop = _Either(cancel)
    waited: list[float] = []  # set when the rendezvous did not complete in time

    def tick(ws: Sequence[Watched], now: float) -> None:
        if (cluster.multi and not waited and now - t_start > cluster.rendezvous_timeout
                and not all("hello" in w.kept for w in ws)):
            waited.append(now - t_start)
            stop.set()
        sampler.maybe_sample(ws, now)

    try:
        for r in range(nproc):
            rfd, wfd = os.pipe()
            rank = cluster.node_rank * nproc + r
            env = {**env_base, "RANK": str(rank), "LOCAL_RANK": str(r)}
            args = [*child_argv(_RANK_MAIN), strategy,
                    "--model", model,
                    "--max-shard-size", AS_SAVED_ARG if shard is None else str(shard),
                    "--format", format,
                    "--dtype", dtype, "--per-rank", per_rank, "--interval-ms",
                    repr(interval_ms), "--seed", str(seed), "--out", str(out),
                    "--checkpoint-root", str(folder), "--scratch", str(scratch),
                    "--events-fd", str(wfd), "--pg-timeout", repr(pg_timeout)]
            if backend:
                args += ["--backend", backend]
            if factory:
                args += ["--factory", factory]
            log = scratch / f"rank{r}.log"
            try:
                with open(log, "wb") as logf:
                    proc = subprocess.Popen(args, env=env, pass_fds=(wfd,), stdout=logf,
                                            stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL,
                                            start_new_session=True)
            except OSError as exc:
                os.close(rfd)
                raise RunError(f"could not start rank {r}: {exc}") from exc
            finally:
                os.close(wfd)
            ranks.append(RankChild(proc, rfd, log))
        seen = supervise(ranks, on_event=on_event, ram_budget=budget, timeout=timeout,
                         cancel=stop, group=True, t_start=t_start, oom_before=oom_before,
                         on_tick=tick)
    finally:
        for rc in ranks:
            rc.kill()
        for rc in ranks:
            rc.reap()
    for w, rc in zip(seen.watched, ranks, strict=True):
        if w.exit_code is None:  # it exited only after the supervisor stopped watching
            w.exit_code, w.t_exit = rc.proc.returncode, time.monotonic()
    seen.seconds = time.monotonic() - t_start
    codes = {str(w.rank): w.exit_code for w in seen.watched}  # str keys: JSON round-trips
    if seen.stop is None and all(c == 0 for c in codes.values()) and out.exists():
        res = RunResult.from_json(out.read_text(encoding="utf-8"))
        res.seconds = round(seen.seconds, 6)
        res.checks.exit_codes = codes
        if cluster.multi:
            _gather_nodes(res, sampler, seen.watched, cluster)
        else:
            sampler.apply(res)
        if budget is not None:
            res.params["ram_budget"] = budget
        return res
    failed = failed_ranks_result(
        strategy, seen, pids=[rc.pid for rc in ranks], logs=[rc.log_tail() for rc in ranks],
        interval_ms=interval_ms, model=model, shard=shard, format=format, nproc=nproc,
        per_rank=per_rank, folder=folder, budget=budget, backend=backend)
    if cluster.multi:
        failed.params.update(nnodes=cluster.nnodes, node_rank=cluster.node_rank)
        missing = [w.rank for w in seen.watched if "hello" not in w.kept]
        if waited or (missing and seen.stop is not None and seen.stop.outcome == "error"
                      and (cancel is None or not cancel.is_set())):
            failed.outcome = "error"
            failed.error = (
                f"rendezvous at {cluster.master_addr}:{env_base['MASTER_PORT']} incomplete "
                f"after {(waited or [seen.seconds])[0]:.0f} s: node {cluster.node_rank}'s "
                f"{nproc} rank(s) waited for a world of {cluster.world(nproc)} on "
                f"{cluster.nnodes} nodes, and the other node(s) never joined; start every "
                "node with the same --nnodes, --master-addr, --master-port and its own "
                "--node-rank (all ranks here were stopped)")
    return failed


def _gather_nodes(res: RunResult, sampler: NodeSampler, watched: Sequence[Watched],
                  cluster: Cluster) -> None:
    """Multi-node: publish this node's sampled PSS in ``cluster.node_dir`` and put it in
    ``res``; node 0 also waits (up to :data:`GATHER_S`) for the other nodes' files."""
    assert cluster.node_dir is not None
    syncs = [w.kept.get("hello", {}).get("t_sync") for w in watched]
    t_sync = next((float(t) for t in syncs if isinstance(t, (int, float))), None)
    mine = {"node": cluster.node_rank, "host": socket.gethostname(),
            "ranks": [int(w.rank) + cluster.node_rank * len(watched) for w in watched],
            "spread_ms": round(sampler.spread * 1000, 3),
            # seconds after this node's ranks left the alignment barrier (every node's
            # ranks leave it together), so any host's clock works
            "t": [] if t_sync is None else [t - t_sync for t in sampler.t],
            "v": [] if t_sync is None else list(sampler.v)}
    path = cluster.node_dir / f"node{cluster.node_rank}.json"
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(mine), encoding="utf-8")
    tmp.replace(path)
    _apply_node(res, mine)
    res.params.update(nnodes=cluster.nnodes, node_rank=cluster.node_rank)
    if cluster.node_rank != 0:
        res.recording.meta["node_totals"] = (
            f"node {cluster.node_rank}'s launcher: only this node's PSS is sampled here; "
            "node 0's result has every node's")
        return
    others = [k for k in range(cluster.nnodes) if k != 0]
    deadline = time.monotonic() + GATHER_S
    while others and time.monotonic() < deadline:
        for k in list(others):
            f = cluster.node_dir / f"node{k}.json"
            with contextlib.suppress(OSError, ValueError):
                _apply_node(res, json.loads(f.read_text(encoding="utf-8")))
                others.remove(k)
        if others:
            time.sleep(0.1)
    res.recording.meta["node_totals"] = (
        "each node's launcher sampled its own ranks' PSS back to back; node 0 read them "
        f"from {cluster.node_dir}"
        + (f"; node(s) {others} did not report within {GATHER_S:g} s: their totals are "
           "the barrier snapshots" if others else ""))


def _apply_node(res: RunResult, data: dict[str, Any]) -> None:
    """Put one node's sampled PSS (a ``node<K>.json``) into ``res``: the series
    ``node<K>.pss`` and that node's peak in ``checks.nodes``."""
    k = int(data["node"])
    fig = next((f for f in res.checks.nodes if f.node == k), None)
    t_sync = res.recording.meta.get("t_sync")
    t, v = list(data.get("t") or []), [int(x) for x in data.get("v") or []]
    if fig is None or not isinstance(t_sync, (int, float)) or not t:
        return
    res.recording.series[f"node{k}.pss"] = Series(
        f"node{k}.pss", t=[float(t_sync) + x for x in t], v=v,
        source=f"node {k}'s launcher: its ranks' smaps_rollup in one go")
    base = int(fig.baseline.get("pss", 0))
    sampled = above(max((b for a, b in zip(t, v, strict=True) if a >= 0), default=None), base)
    cands = [x for x in (sampled, fig.pss_loaded) if x is not None]
    fig.pss_peak = max(cands) if cands else None
    fig.ram_peak = fig.pss_peak
    fig.sampled = (f"node {k}'s launcher, its ranks within {data.get('spread_ms')} ms, "
                   "plus the barrier snapshot")


class NodeSampler:
    """The launcher's own node PSS: every rank's ``smaps_rollup`` read back to back.

    Summing the ranks' own PSS series mixes readings taken up to 50 ms apart; while
    ranks map shared pages that double-counts what moved in between (measured here:
    1.4 × M instead of 1 × M for a 1 GB ``shared-mmap`` pass). Reading all ranks within
    a few milliseconds, as one node-wide sample, does not. The period backs off to 20 ×
    the cost of a round, since each read walks the rank's page tables.
    """

    def __init__(self, period: float = SMAPS_MS / 1000.0) -> None:
        self.period = period
        self.next = 0.0
        self.t: list[float] = []
        self.v: list[int] = []
        self.spread: float = 0.0

    def maybe_sample(self, ranks: Sequence[Watched], now: float) -> None:
        """Take a node-wide sample if one is due and every rank is up (the supervisor's
        ``on_tick``)."""
        if now < self.next or any(w.exit_code is not None or "hello" not in w.kept
                                  for w in ranks):
            return
        c0 = time.monotonic()
        total = 0
        for w in ranks:
            pss = snapshot(w.child.pid)["pss"]
            if not pss:
                return  # the rank is gone (or not Linux): no node-wide sample
            total += pss
        c1 = time.monotonic()
        self.t.append((c0 + c1) / 2)
        self.v.append(total)
        self.spread = max(self.spread, c1 - c0)
        self.next = c1 + max(self.period, 20 * (c1 - c0))

    def apply(self, res: RunResult) -> None:
        """Replace ``node.pss`` by these samples and update the node peak from them."""
        rec = res.recording
        lanes = rec.ranks
        if not self.t or not lanes:
            return
        t0 = rec.meta.get("t0_monotonic")
        if not isinstance(t0, (int, float)):
            return
        rec.series["node.pss"] = Series("node.pss", t=[t - t0 for t in self.t], v=self.v,
                                        source="launcher: all ranks' smaps_rollup in one go")
        node = res.checks.node
        if node is not None:
            base = int(node.baseline.get("pss", 0))
            loaded = node.pss_loaded
            add_barrier_points(rec, {"baseline": base,
                                      "loaded": base + int(loaded) if loaded else 0})
        rec.meta["node_pss"] = (f"sampled by the launcher, all ranks within "
                                f"{self.spread * 1000:.1f} ms, plus the barrier snapshots")
        if node is None:
            return
        t_all = measured_from(lanes)
        base = int(node.baseline.get("pss", 0))
        sampled = above(max_after(rec.series["node.pss"], t_all), base)
        cands = [v for v in (sampled, node.pss_loaded) if v is not None]
        node.pss_peak = max(cands) if cands else None
        peaks = [v for v in (node.pss_peak, node.anon_peak) if v is not None]
        node.ram_peak = max(peaks) if peaks else None
        res.ram_peak = node.ram_peak
        pred = res.checks.prediction
        if pred is not None and res.ram_peak is not None:
            res.checks.prediction = PredictionCheck.judge(
                res.ram_peak, res.predicted or pred.predicted,
                nproc=int(res.params.get("nproc") or 1))
