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

A job of several nodes (``--nnodes``, ``--node-rank``, the shared ``--node-dir``) runs
one launcher per node: :mod:`bigviz.runner.nodes`.

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
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bigviz.strategies as strategies
from bigviz._errors import ConfigError, RunError
from bigviz.data.result import RunResult
from bigviz.models import parse_spec
from bigviz.runner.checkpoints import prepare_checkpoint, prepare_folder
from bigviz.runner.interpreter import child_argv, child_env
from bigviz.runner.memory import snapshot_status
from bigviz.runner.nodes import (
    GATHER_S,
    Cluster,
    NodeSampler,
    gather_nodes,
    job_result_path,
    rendezvous_failure,
    rendezvous_overdue,
)
from bigviz.runner.results import failed_ranks_result
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
    out = job_result_path(cluster, scratch)
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
        if not waited and rendezvous_overdue(cluster, ws, now - t_start):
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
            gather_nodes(res, sampler, seen.watched, cluster)
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
        rendezvous_failure(failed, seen, cluster, nproc=nproc,
                           master_port=env_base["MASTER_PORT"], waited=waited, cancel=cancel)
    return failed
