"""Per-rank RAM and VRAM timelines of a ``torch.distributed`` load.

:func:`run_distributed` launches N ranks on this machine (fresh processes, gloo on CPU,
NCCL when every rank has its own GPU), each running a distributed strategy
(:mod:`bigviz.strategies.distributed`) under its own recorder. Rank 0 gathers every
rank's Recording (``gather_object``) into one :class:`~bigviz.data.recording.Recording`
whose ``ranks`` are the per-rank lanes on one clock, and whose series are node totals:

=============  ======================================================================
``node.pss``   Σ of the ranks' proportional set size: the honest node RAM when ranks
               share pages (a page mapped by N ranks counts 1/N in each); only at
               instants where every rank's PSS reading is ≤ 20 ms old (launched
               by :func:`run_distributed`: read by the launcher, all ranks at once)
``node.uss``   Σ of the memory each rank alone holds
``node.anon``  Σ of anonymous memory (private to each rank)
``node.rss``   Σ of RSS: counts shared file pages once *per rank* (shown for contrast)
=============  ======================================================================

The same module is the rank program: under ``torchrun`` (which sets ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` …) it runs one rank, so multi-node jobs need nothing
extra::

    torchrun --nnodes 2 --nproc_per_node 4 ... -m bigviz.runner.distributed shared-mmap \\
        --model gpt:1GB --out result.json

Without those variables it launches the ranks itself
(``python -m bigviz.runner.distributed shared-mmap --nproc 2 --model gpt:100MB``).

Clocks: on one host every rank's ``t0_monotonic`` is read from the same monotonic clock,
so lanes are aligned exactly; across hosts each rank's time is taken relative to the exit
of a barrier all ranks pass together (skew ≈ one network round trip).

A rank that fails stops the job: :func:`run_distributed` kills the other ranks and the
:class:`~bigviz.data.result.RunResult` names the rank, its phase and how it died
(``checks.failed_rank``); under ``torchrun`` the elastic agent stops the others.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bigviz._errors import ConfigError, RunError
from bigviz.data.recording import Recording, Series
from bigviz.data.result import (
    Checks,
    NodeFigures,
    Prediction,
    PredictionCheck,
    RankFigures,
    RunResult,
)
from bigviz.recorder._procfs import read_kib
from bigviz.recorder.merge import (
    NODE_SERIES,
    merge_ranks,
    node_series,
)
from bigviz.runner._runner import (
    Timeline,
    _signal_name,
    oom_kill_count,
    sigkill_verdict,
    vram_peaks,
)
from bigviz.runner._worker import read_status, warm_up_cpu
from bigviz.units import format_size, parse_size

__all__ = ["NODE_SERIES", "main", "merge_ranks", "node_series", "run_distributed"]

EventCallback = Callable[[dict[str, Any]], None]

#: node-total series computed from the per-rank series of the same name (``ram.X``)

#: how often the launcher reads the ranks' /proc status for the RAM budget
WATCH_INTERVAL_S = 0.005
#: how often each rank's sidecar reads smaps_rollup for PSS/USS (ms)
SMAPS_MS = 20.0
#: how long a killed rank may take to exit before the launcher stops waiting
_REAP_S = 10.0


# -- memory snapshots --------------------------------------------------------------


def snapshot(pid: int | str = "self") -> dict[str, int]:
    """RSS, anonymous, file-backed, shmem, PSS and USS of a process, in bytes, now.

    Example:
        >>> sorted(snapshot())
        ['anon', 'file', 'pss', 'rss', 'shmem', 'uss']
    """
    out = {"rss": 0, "anon": 0, "file": 0, "shmem": 0, "pss": 0, "uss": 0}
    st = snapshot_status(pid)
    if st:  # else not Linux, or the process is gone: zeros say "not measured"
        out.update(st)
        sm = read_kib(f"/proc/{pid}/smaps_rollup", ("Pss", "Private_Clean", "Private_Dirty"))
        out.update(pss=sm.get("Pss", 0),
                   uss=sm.get("Private_Clean", 0) + sm.get("Private_Dirty", 0))
    return out


def snapshot_status(pid: int | str) -> dict[str, int]:
    """RSS split of a process from ``/proc/PID/status`` only (cheap: no page-table walk);
    ``{}`` where it cannot be read."""
    st = read_status(pid, ("VmRSS", "RssAnon", "RssFile", "RssShmem"))
    if not st:
        return {}
    return {"rss": st.get("VmRSS", 0), "anon": st.get("RssAnon", 0),
            "file": st.get("RssFile", 0), "shmem": st.get("RssShmem", 0)}


# -- the rank program ----------------------------------------------------------------


@dataclass
class _Env:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int


def _dist_env() -> _Env | None:
    """The rank's place from torchrun-style variables, or ``None`` outside a job."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return _Env(rank, world, local, local_world)


class _Sink:
    """JSON lines to the launcher (one fd per rank); a no-op under torchrun."""

    def __init__(self, fd: int | None, rank: int) -> None:
        self._fd = fd
        self._rank = rank
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def send(self, event: dict[str, Any]) -> None:
        if self._fd is None:
            return
        data = (json.dumps({**event, "rank": self._rank, "pid": self._pid}, allow_nan=False,
                           default=str)
                + "\n").encode()
        with self._lock:
            try:
                _write_all(self._fd, data)
            except OSError:
                self._fd = None  # the launcher is gone; carry on quietly


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class _Boundaries:
    """Streams the recorder's events, and reads PSS/USS exactly at every phase boundary.

    The sidecar reads ``smaps_rollup`` at a low rate (it walks every page table, and
    backs off when that is slow: a few samples a second on a torch process), so short
    loads would get a node PSS of two points. Readings at the boundaries of the outer
    phases (depth 0 and 1) give every phase its own PSS at its start and end.
    """

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.recorder: Any = None
        self.t0: float | None = None
        self.depths: dict[int, int] = {}
        self.points: list[tuple[float, int, int]] = []

    def __call__(self, ev: dict[str, Any]) -> None:
        self.sink.send(ev)
        kind = ev.get("type")
        if kind == "phase_start":
            parent = ev.get("parent")
            depth = 0 if parent is None else self.depths.get(int(parent), 0) + 1
            self.depths[int(ev["index"])] = depth
        elif kind == "phase_end":
            depth = self.depths.get(int(ev["index"]), 0)
        else:
            return
        if depth > 1:
            return
        if self.t0 is None and self.recorder is not None:
            self.t0 = self.recorder.recording.meta.get("t0_monotonic")
        if self.t0 is None:
            return
        snap = snapshot()
        if snap["pss"]:
            self.points.append((time.monotonic() - self.t0, snap["pss"], snap["uss"]))

    def add_to(self, recording: Recording) -> Recording:
        """Merge the boundary readings into ``ram.pss`` / ``ram.uss`` (in time order)."""
        for i, name in ((1, "ram.pss"), (2, "ram.uss")):
            s = recording.series.get(name)
            if s is None or not self.points:
                continue
            pairs = sorted([*zip(s.t, s.v, strict=True),
                            *((p[0], p[i]) for p in self.points)])
            s.t = [t for t, _ in pairs]
            s.v = [int(v) for _, v in pairs]
        return recording


def _pick_backend(local_world: int) -> str:
    import torch

    try:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken driver means no usable GPU
        gpus = 0
    return "nccl" if gpus >= local_world > 0 else "gloo"


def _failed_phase(rec: Recording) -> str | None:
    bad = [p for p in rec.phases if p.error]
    if bad:
        return max(bad, key=lambda p: (p.depth, p.start)).name
    return rec.phases[-1].name if rec.phases else None


def _rank_main(ns: argparse.Namespace, env: _Env) -> int:
    sink = _Sink(ns.events_fd, env.rank)
    sink.send({"type": "started", "pid": os.getpid(), "host": socket.gethostname()})
    try:
        return _rank_body(ns, env, sink)
    except BaseException as exc:
        sink.send({"type": "error", "message": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(), "phase": None})
        raise


def _rank_body(ns: argparse.Namespace, env: _Env, sink: _Sink) -> int:
    import torch
    import torch.distributed as dist

    import bigviz.recorder as record
    from bigviz.checkpoint import inspect_checkpoint
    from bigviz.recorder import CudaSource, NvmlSource, ProcSource
    from bigviz.strategies import distributed as dstrat
    from bigviz.strategies._base import compare_checksums, first_use

    strategy = dstrat.get(ns.strategy)
    backend = ns.backend or _pick_backend(env.local_world_size)
    device = f"cuda:{env.local_rank}" if backend == "nccl" else "cpu"
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=ns.pg_timeout))
    # objects (recordings) travel on a CPU group whatever carries the weights
    ctrl = None if backend == "gloo" else dist.new_group(backend="gloo")
    folder = _checkpoint_folder(ns, env, dist, ctrl)
    ckpt = folder / "checkpoint"
    info = inspect_checkpoint(ckpt)
    expected = json.loads((folder / "checksums.json").read_text())
    import safetensors.torch  # noqa: F401  (imports belong to the baseline)

    # the same fixed costs the single-process worker keeps out of its phases (thread
    # pool, first module build; ~35 MiB a rank), and this rank's CUDA context
    warm_up_cpu()
    if device != "cpu":
        torch.empty(1, device=device)
        torch.cuda.synchronize()
    job_id = os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("MASTER_PORT", "job")
    root = Path(ns.scratch or folder.parent.parent / "runs" / f"dist-{job_id}")
    scratch = root / f"rank{env.rank}"
    scratch.mkdir(parents=True, exist_ok=True)
    label = f"{strategy.name} · rank {env.rank}/{env.world_size}"
    boundaries = _Boundaries(sink)
    rec = record.record(
        interval_ms=ns.interval_ms, name=label, on_event=boundaries,
        sources=[ProcSource(smaps_ms=SMAPS_MS), CudaSource(), NvmlSource()],
    )
    boundaries.recorder = rec
    dist.barrier(group=ctrl)  # every rank has imported and initialised: baselines now
    error: dict[str, Any] | None = None
    verify: str | None = None
    loaded: dict[str, int] = {}
    with rec:
        dist.barrier(group=ctrl)
        t_sync = time.monotonic()  # all ranks leave this barrier together (clock alignment)
        base = snapshot()
        rec.mark("baseline", **base)
        t0 = rec.recording.meta.get("t0_monotonic")
        sink.send({"type": "hello", "t0_monotonic": t0, "t_sync": t_sync,
                   "host": socket.gethostname(), "pid": os.getpid(), "device": device,
                   "baseline": base})
        from bigviz.strategies.distributed import DistContext

        ctx = DistContext(
            model=ns.model, checkpoint=ckpt, info=info, recorder=rec, scratch=scratch,
            dtype=ns.dtype, device_map=device, format=info.format,
            shard_size=ns.max_shard_size, seed=ns.seed, rank=env.rank,
            world_size=env.world_size, local_rank=env.local_rank, device=device,
            per_rank=ns.per_rank,
        )
        model: Any = None
        try:
            model = strategy.run(ctx)
            with rec.phase("first use", what="read every weight once (checksums)"):
                sums = first_use(model)
            verify = compare_checksums(expected, sums)
            with rec.phase("loaded", what="every rank holds its weights"):
                dist.barrier(group=ctrl)
                loaded = snapshot()
                rec.mark("loaded", **loaded)
                dist.barrier(group=ctrl)  # nobody frees before every rank has measured
        except Exception as exc:
            error = {"message": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc()}
    recording = boundaries.add_to(rec.recording)
    if error is not None:
        sink.send({"type": "error", **error, "phase": _failed_phase(recording)})
        _remove(scratch, root if ns.scratch is None else None)
        return 1
    del model
    part = {
        "rank": env.rank, "local_rank": env.local_rank, "host": socket.gethostname(),
        "pid": os.getpid(), "device": device, "t0_monotonic": t0, "t_sync": t_sync,
        "baseline": base, "loaded": loaded, "verify": verify,
        "recording": recording.to_dict(),
    }
    parts: list[Any] | None = [None] * env.world_size if env.rank == 0 else None
    dist.gather_object(part, parts, dst=0, group=ctrl)
    if env.rank == 0:
        assert parts is not None
        result = build_result(
            strategy.name, parts, info=info, model=ns.model, nproc=env.world_size,
            per_rank=ns.per_rank, backend=backend, shard_size=ns.max_shard_size,
            params={"checkpoint": str(ckpt), "interval_ms": ns.interval_ms,
                    "dtype": ns.dtype, "seed": ns.seed},
        )
        out = Path(ns.out)
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        tmp.write_text(result.to_json(), encoding="utf-8")
        tmp.replace(out)
        sink.send({"type": "written", "path": str(out)})
    dist.barrier(group=ctrl)
    dist.destroy_process_group()
    _remove(scratch, root if ns.scratch is None else None)
    return 0


def _remove(scratch: Path, root: Path | None) -> None:
    shutil.rmtree(scratch, ignore_errors=True)
    if root is not None:
        with contextlib.suppress(OSError):
            root.rmdir()  # the last rank out removes the folder


def _checkpoint_folder(ns: argparse.Namespace, env: _Env, dist: Any, ctrl: Any) -> Path:
    if ns.checkpoint_root:
        return Path(ns.checkpoint_root)
    # under torchrun: one rank per node saves (each node may have its own disk); the
    # weights are seeded, so every node's copy is the same checkpoint
    from bigviz.runner import close, prepare_checkpoint

    kw = {"max_shard_size": ns.max_shard_size, "format": ns.format, "dtype": ns.dtype,
          "work_dir": ns.work_dir, "seed": ns.seed}
    if env.local_rank == 0:
        prepare_checkpoint(ns.model, **kw)
        close()  # the fork server that saved it is no part of this rank's memory
    dist.barrier(group=ctrl)
    folder = prepare_checkpoint(ns.model, **kw)  # already there: returns its folder
    return folder


# -- the gathered result (built in rank 0) -------------------------------------------


def _above(v: int | None, base: int) -> int | None:
    return None if v is None else max(0, int(v) - int(base))


def _max_after(s: Series | None, t: float) -> int | None:
    return None if s is None else s.max_between(t, None)


def _baseline_t(lane: Recording) -> float:
    """When the rank took its baseline (its ``baseline`` mark; 0 without one)."""
    return next((mk.t for mk in lane.marks if mk.name == "baseline"), 0.0)


def _measured_from(lanes: Sequence[Recording]) -> float:
    """When every rank had its baseline: node figures count from there."""
    return max((_baseline_t(lane) for lane in lanes), default=0.0)


def _rank_figures(part: Mapping[str, Any], lane: Recording, t_base: float) -> RankFigures:
    base = part.get("baseline") or {}
    loaded = part.get("loaded") or {}
    exact = [p.ram_peak for p in lane.phases if p.ram_peak_exact and p.ram_peak is not None
             and p.start >= t_base]
    device = part.get("device")
    return RankFigures(
        rank=part.get("rank"), host=part.get("host"), pid=part.get("pid"),
        device=None if device is None else str(device),
        baseline={k: int(v) for k, v in base.items()},
        ram_peak=_above(max(exact), base.get("rss", 0)) if exact else None,
        ram_peak_exact=bool(exact),
        ram_anon_peak=_above(_max_after(lane.series.get("ram.anon"), t_base),
                             base.get("anon", 0)),
        ram_file_peak=_above(_max_after(lane.series.get("ram.file"), t_base),
                             base.get("file", 0)),
        pss_peak=_above(_max_after(lane.series.get("ram.pss"), t_base), base.get("pss", 0)),
        loaded={k: int(v) - int(base.get(k, 0)) for k, v in loaded.items()},
        vram_peak=vram_peaks(lane.phases),
        verify=part.get("verify") or "ok",
        phase_reached=lane.phases[-1].name if lane.phases else None,
    )


def _add_barrier_points(rec: Recording, totals: Mapping[str, int]) -> None:
    """Put the node PSS of the barrier snapshots into ``node.pss``.

    Every rank reads its PSS right after the same barrier (at the ``baseline`` and
    ``loaded`` marks), so their sum is a node-wide reading at that moment, placed at
    rank 0's mark.
    """
    if not rec.ranks:
        return
    points = [(mk.t, int(totals[mk.name])) for mk in rec.ranks[0].marks
              if totals.get(mk.name)]
    if not points:
        return
    s = rec.series.get("node.pss") or Series("node.pss", source="node")
    pairs = sorted([*zip(s.t, s.v, strict=True), *points])
    s.t = [t for t, _ in pairs]
    s.v = [v for _, v in pairs]
    rec.series["node.pss"] = s


def build_result(
    strategy: str,
    parts: Sequence[Mapping[str, Any]],
    *,
    info: Any,
    model: str,
    nproc: int,
    per_rank: str = "naive",
    backend: str = "gloo",
    shard_size: int | None = None,
    params: Mapping[str, Any] | None = None,
) -> RunResult:
    """The job's RunResult from the gathered per-rank parts (see :func:`merge_ranks`).

    Node figures (``ram_peak``, ``ram_anon_peak``, ``baseline``) are sums over the
    ranks: ``ram_peak`` is the node RAM peak above the sum of the ranks' baseline PSS —
    the largest of the sampled ``node.pss`` series, the exact PSS snapshot taken while
    every rank holds its weights, and the ``node.anon`` peak (sampled every
    ``interval_ms``; anonymous pages are private, so always part of PSS).
    ``checks.node.pss_peak`` is the PSS figure alone. ``ram_file_peak`` is the
    largest rank's file-backed
    growth (the ranks of a node map the same files). Per-rank figures are in
    ``checks.ranks``; the rank's ``ram_peak`` there is exact (``VmHWM``).
    """
    from bigviz.strategies import distributed as dstrat

    strat = dstrat.get(strategy)
    merged = merge_ranks(parts, name=f"{strategy} · {model} · {nproc} ranks")
    m_bytes = int(info.total_size)
    gpu = backend == "nccl"
    ranks: list[RankFigures] = []
    for part, lane in zip(parts, merged.ranks, strict=True):
        fig = _rank_figures(part, lane, _baseline_t(lane))
        pred = strat.predict_rank(info, int(part.get("rank") or 0), nproc=nproc,
                                  per_rank=per_rank, device=str(part.get("device")))
        fig.predicted = pred.ram_peak
        fig.formula = pred.formula
        ranks.append(fig)
    bases = [p.get("baseline") or {} for p in parts]
    node_base = {k: sum(int(b.get(k, 0)) for b in bases) for k in NODE_SERIES}
    t_all = _measured_from(merged.ranks)
    loaded_pss = sum(int((p.get("loaded") or {}).get("pss", 0)) for p in parts)
    _add_barrier_points(merged, {"baseline": node_base["pss"], "loaded": loaded_pss})
    pss_abs = [v for v in (_max_after(merged.series.get("node.pss"), t_all), loaded_pss) if v]
    anon_peak = _above(_max_after(merged.series.get("node.anon"), t_all), node_base["anon"])
    pss_peak = _above(max(pss_abs), node_base["pss"]) if pss_abs else None
    # PSS is sampled every ≥ 20 ms (smaps_rollup walks page tables) and can miss a short
    # spike; anonymous pages are private to a rank, hence part of its PSS at every
    # instant, and node.anon is sampled every interval_ms: the larger is the better bound
    ram_peak = max((v for v in (pss_peak, anon_peak) if v is not None), default=None)
    node = NodeFigures(
        baseline=node_base,
        ram_peak=ram_peak,
        pss_peak=pss_peak,
        pss_loaded=loaded_pss - node_base["pss"] if loaded_pss else None,
        uss_loaded=sum(int((p.get("loaded") or {}).get("uss", 0)) for p in parts)
                   - node_base["uss"],
        rss_loaded_sum=sum(int((p.get("loaded") or {}).get("rss", 0)) for p in parts)
                       - node_base["rss"],
        anon_peak=anon_peak,
        rss_peak_sum=_above(_max_after(merged.series.get("node.rss"), t_all),
                            node_base["rss"]),
    )
    try:
        predicted: Prediction | None = strat.predict(
            info, "cuda" if gpu else "cpu", nproc=nproc, per_rank=per_rank)
    except Exception as exc:  # a prediction must never cost the measurement
        predicted = Prediction(ram_peak=0, formula="unavailable", notes=f"predict failed: {exc}")
    wrong = [f"rank {f.rank}: {f.verify}" for f in ranks if f.verify != "ok"]
    outcome = "ok" if not wrong else "error"
    align = merged.meta.get("clock_alignment")
    checks = Checks(
        weights="ok" if not wrong else "; ".join(wrong),
        ranks=ranks,
        node=node,
        clock_alignment=None if align is None else str(align),
        backend=backend,
    )
    measured = node.ram_peak
    if predicted is not None and measured is not None and predicted.formula != "unavailable":
        checks.prediction = PredictionCheck.judge(measured, predicted.ram_peak, m_bytes,
                                                  nproc=nproc)
    vram: dict[str, int] = {}
    hosts = {str(f.host) for f in ranks}
    for f in ranks:
        for dev, v in f.vram_peak.items():
            key = dev if len(hosts) == 1 else f"{f.host}/{dev}"
            vram[key] = max(vram.get(key, 0), int(v))
    files = [f.ram_file_peak for f in ranks if f.ram_file_peak is not None]
    seconds = max((lane.duration + float(lane.meta.get("clock_offset", 0.0))
                   for lane in merged.ranks), default=0.0)
    return RunResult(
        strategy=strategy,
        outcome=outcome,  # type: ignore[arg-type]
        model=model,
        model_bytes=m_bytes,
        error=None if not wrong else "wrong weights: " + "; ".join(wrong),
        phase_reached=merged.phases[-1].name if merged.phases else None,
        shard_size=shard_size,
        format=str(info.format),
        device_map="cuda" if gpu else "cpu",
        baseline=node_base["pss"],
        ram_peak=node.ram_peak,
        ram_anon_peak=node.anon_peak,
        ram_file_peak=max(files) if files else None,
        vram_peak=vram,
        predicted=predicted,
        seconds=round(seconds, 6),
        recording=merged,
        params={"model": model, "nproc": nproc, "per_rank": per_rank, "backend": backend,
                "max_shard_size": shard_size, "format": str(info.format),
                **dict(params or {})},
        checks=checks,
    )


# -- the launcher --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _RankProc:
    """The launcher's view of one rank: its process and event stream; the runner's
    :class:`~bigviz.runner._runner.Timeline` rebuilds its phases and samples."""

    rank: int
    proc: subprocess.Popen[bytes]
    fd: int | None
    log: Path
    interval_ms: float = 1.0
    buf: bytearray = field(default_factory=bytearray)
    timeline: Timeline = field(default_factory=Timeline)
    hello: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    exit_code: int | None = None
    t_exit: float | None = None

    def phase(self) -> str | None:
        """The innermost open phase, else the last one started."""
        return self.timeline.current() or self.timeline.last_started()

    def feed(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "hello":
            self.hello = ev
        elif kind == "error":
            self.error = ev
        else:
            self.timeline.feed(ev)

    def partial(self) -> dict[str, Any]:
        """What the launcher saw of this rank, as a part for :func:`merge_ranks`."""
        rec = self.timeline.recording(f"rank {self.rank} (partial)", self.proc.pid,
                                      self.interval_ms, None)
        return {"recording": rec, "t0_monotonic": self.hello.get("t0_monotonic", 0.0),
                "t_sync": self.hello.get("t_sync"), "host": self.hello.get("host", "")}


def _describe_exit(code: int) -> str:
    return f"died of {_signal_name(code)}" if code < 0 else f"exited with code {code}"


def _tail(path: Path, n: int = 2000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-n:].decode(errors="replace")


def _check_args(
    strategy: str, *, nproc: int, model: Any, format: str, dtype: str, per_rank: str,
    backend: str | None, interval_ms: float,
) -> Any:
    from bigviz.models import parse_spec
    from bigviz.runner import _check_format, _check_ranks
    from bigviz.strategies import distributed as dstrat

    strat = dstrat.get(strategy)
    _check_ranks(nproc, model)
    _check_format(format)
    if format not in strat.formats:
        raise ConfigError(
            f"strategy {strat.name!r} ({strat.description}) does not read format "
            f"{format!r}; use format={strat.formats[0]!r}"
        )
    if isinstance(strat, dstrat.EveryRankLoads):
        strat.check_options(per_rank)
    if backend not in (None, "gloo", "nccl"):
        raise ConfigError(f"backend {backend!r} is not supported; use 'gloo', 'nccl' or None")
    parse_spec(model, dtype)
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, (int, float)) \
            or interval_ms <= 0:
        raise ConfigError(f"interval_ms must be a positive number, got {interval_ms!r}")
    return strat


def run_distributed(
    strategy: str,
    *,
    nproc: int = 2,
    model: str = "gpt:100MB",
    max_shard_size: int | str = "500MB",
    format: str = "safetensors",
    dtype: str = "float32",
    per_rank: str = "naive",
    work_dir: str | os.PathLike[str] | None = None,
    ram_budget: int | str | None = None,
    interval_ms: float = 1.0,
    on_event: EventCallback | None = None,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
    seed: int = 0,
    backend: str | None = None,
) -> RunResult:
    """Launch ``nproc`` ranks on this machine, each loading with ``strategy``, and measure.

    Each rank is a fresh ``python -m bigviz.runner.distributed`` process with the variables
    torchrun would set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR=127.0.0.1``,
    a free ``MASTER_PORT``, ``OMP_NUM_THREADS=1`` unless set). Every rank records its own
    timeline; rank 0 gathers them into ``result.recording`` (``ranks`` holds the lanes,
    ``series["node.pss"]`` the node total).

    Args:
        strategy: ``"every-rank-loads"``, ``"rank0-broadcast"`` or ``"shared-mmap"``.
        nproc: number of ranks.
        model: a zoo spec (``"gpt:1GB"``) or ``"package.module:function"``.
        max_shard_size: shard size of the checkpoint (saved once in ``work_dir``, reused).
        format: ``"safetensors"`` or ``"bin"`` (``shared-mmap``: safetensors only).
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
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
    from bigviz.runner import _budget, prepare_checkpoint

    strat = _check_args(strategy, nproc=nproc, model=model, format=format, dtype=dtype,
                        per_rank=per_rank, backend=backend, interval_ms=interval_ms)
    shard = parse_size(max_shard_size)
    budget = _budget(ram_budget)
    folder = prepare_checkpoint(model, max_shard_size=shard, format=format, dtype=dtype,
                                work_dir=work_dir, seed=seed)
    scratch = folder.parent.parent / "runs" / f"dist-{strat.name}-{uuid.uuid4().hex[:8]}"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        return _launch(strat.name, nproc=nproc, model=model, shard=shard, format=format,
                       dtype=dtype, per_rank=per_rank, folder=folder, scratch=scratch,
                       budget=budget, interval_ms=float(interval_ms), on_event=on_event,
                       timeout=timeout, cancel=cancel, seed=seed, backend=backend)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _launch(
    strategy: str, *, nproc: int, model: str, shard: int, format: str, dtype: str,
    per_rank: str, folder: Path, scratch: Path, budget: int | None, interval_ms: float,
    on_event: EventCallback | None, timeout: float | None, cancel: threading.Event | None,
    seed: int, backend: str | None,
) -> RunResult:
    out = scratch / "result.json"
    port = _free_port()
    env_base = dict(os.environ)
    env_base.setdefault("OMP_NUM_THREADS", "1")  # N ranks share the cores
    env_base["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env_base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(nproc),
                    LOCAL_WORLD_SIZE=str(nproc), GROUP_RANK="0")
    pg_timeout = max(60.0, float(timeout)) if timeout else 1800.0
    ranks: list[_RankProc] = []
    sampler = _NodeSampler()
    t_start = time.monotonic()
    oom_before = oom_kill_count()
    try:
        for r in range(nproc):
            rfd, wfd = os.pipe()
            env = {**env_base, "RANK": str(r), "LOCAL_RANK": str(r)}
            args = [sys.executable, "-m", "bigviz.runner.distributed", strategy,
                    "--model", model, "--max-shard-size", str(shard), "--format", format,
                    "--dtype", dtype, "--per-rank", per_rank, "--interval-ms",
                    repr(interval_ms), "--seed", str(seed), "--out", str(out),
                    "--checkpoint-root", str(folder), "--scratch", str(scratch),
                    "--events-fd", str(wfd), "--pg-timeout", repr(pg_timeout)]
            if backend:
                args += ["--backend", backend]
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
            os.set_blocking(rfd, False)
            ranks.append(_RankProc(r, proc, rfd, log, interval_ms=interval_ms))
        state = _follow(ranks, on_event=on_event, budget=budget, timeout=timeout,
                        cancel=cancel, t_start=t_start, sampler=sampler)
    finally:
        for rp in ranks:
            _kill(rp)
        for rp in ranks:
            _reap(rp)
            if rp.fd is not None:
                with contextlib.suppress(OSError):
                    os.close(rp.fd)
                rp.fd = None
    seconds = time.monotonic() - t_start
    codes = {str(rp.rank): rp.exit_code for rp in ranks}  # str keys: JSON round-trips
    if state is None and all(c == 0 for c in codes.values()) and out.exists():
        res = RunResult.from_json(out.read_text(encoding="utf-8"))
        res.seconds = round(seconds, 6)
        res.checks.exit_codes = codes
        sampler.apply(res)
        if budget is not None:
            res.params["ram_budget"] = budget
        return res
    return _failure(strategy, ranks, state, model=model, shard=shard, format=format,
                    nproc=nproc, per_rank=per_rank, folder=folder, seconds=seconds,
                    budget=budget, backend=backend, oom_before=oom_before)


@dataclass
class _Stop:
    outcome: str
    error: str
    rank: int | None


class _NodeSampler:
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

    def maybe_sample(self, ranks: Sequence[_RankProc], now: float) -> None:
        if now < self.next or any(rp.exit_code is not None or not rp.hello for rp in ranks):
            return
        c0 = time.monotonic()
        total = 0
        for rp in ranks:
            pss = snapshot(rp.proc.pid)["pss"]
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
            _add_barrier_points(rec, {"baseline": base,
                                      "loaded": base + int(loaded) if loaded else 0})
        rec.meta["node_pss"] = (f"sampled by the launcher, all ranks within "
                                f"{self.spread * 1000:.1f} ms, plus the barrier snapshots")
        if node is None:
            return
        t_all = _measured_from(lanes)
        base = int(node.baseline.get("pss", 0))
        sampled = _above(_max_after(rec.series["node.pss"], t_all), base)
        cands = [v for v in (sampled, node.pss_loaded) if v is not None]
        node.pss_peak = max(cands) if cands else None
        peaks = [v for v in (node.pss_peak, node.anon_peak) if v is not None]
        node.ram_peak = max(peaks) if peaks else None
        res.ram_peak = node.ram_peak
        pred = res.checks.prediction
        if pred is not None and res.ram_peak is not None:
            res.checks.prediction = PredictionCheck.judge(
                res.ram_peak, pred.predicted, res.model_bytes,
                nproc=int(res.params.get("nproc") or 1))


def _follow(
    ranks: list[_RankProc], *, on_event: EventCallback | None, budget: int | None,
    timeout: float | None, cancel: threading.Event | None, t_start: float,
    sampler: _NodeSampler | None = None,
) -> _Stop | None:
    """Pump events until every rank exited; stop them all at the first failure.

    Returns why the launcher stopped the job (timeout, budget, cancel), else ``None``.
    """
    by_fd = {rp.fd: rp for rp in ranks if rp.fd is not None}
    stop: _Stop | None = None
    while True:
        # forget pipes _pump closed (EOF) before waiting on them: a closed fd in select()
        # is EBADF, or worse, a number the process has reused for another file
        for fd in [fd for fd, rp in by_fd.items() if rp.fd is None]:
            del by_fd[fd]
        if by_fd:
            readable, _, _ = select.select(list(by_fd), [], [], WATCH_INTERVAL_S)
            for fd in readable:
                _pump(by_fd[fd], on_event)
        else:
            time.sleep(WATCH_INTERVAL_S)
        for fd in [fd for fd, rp in by_fd.items() if rp.fd is None]:
            del by_fd[fd]
        now = time.monotonic()
        if sampler is not None and stop is None:
            sampler.maybe_sample(ranks, now)
        for rp in ranks:
            if rp.exit_code is None:
                code = rp.proc.poll()
                if code is not None:
                    rp.exit_code, rp.t_exit = code, now
        failed = [rp for rp in ranks if rp.exit_code not in (None, 0)]
        if failed and stop is None:
            for rp in ranks:  # the others would wait in a collective forever
                _kill(rp)
        alive = [rp for rp in ranks if rp.exit_code is None]
        if not alive and not by_fd:
            return stop
        if not alive:
            # every rank exited: drain what is left in the pipes, then finish (a pipe a
            # stray grandchild still holds open must not keep us here)
            last = max(rp.t_exit or now for rp in ranks)
            if now - last > 2.0:
                return stop
            for fd in list(by_fd):
                _pump(by_fd[fd], on_event)
            continue
        if stop is not None:
            continue
        if timeout is not None and now - t_start > timeout:
            where = ", ".join(f"rank {rp.rank} in {rp.phase()!r}" for rp in alive)
            stop = _Stop("error", f"timed out after {timeout:g} s ({where})",
                         _laggard(alive).rank)
        elif cancel is not None and cancel.is_set():
            stop = _Stop("cancelled", "cancelled while running", None)
        elif budget is not None:
            used, worst = _node_ram(alive)
            if used > budget:
                stop = _Stop("budget_exceeded",
                             f"would not fit in {format_size(budget, binary=False)}: the ranks "
                             f"reached {format_size(used, binary=False)} together (rank "
                             f"{worst.rank} in phase {worst.phase()!r})", worst.rank)
        if stop is not None:
            for rp in alive:
                _kill(rp)


def _laggard(alive: Sequence[_RankProc]) -> _RankProc:
    """The rank that got least far (fewest phases started): the one the others wait for."""
    return min(alive, key=lambda rp: (len(rp.timeline.phases), rp.rank))


def _node_ram(alive: Sequence[_RankProc]) -> tuple[int, _RankProc]:
    total, files, worst, worst_v = 0, 0, alive[0], -1
    for rp in alive:
        st = snapshot_status(rp.proc.pid)
        own = st.get("anon", 0) + st.get("shmem", 0)
        total += own
        files = max(files, st.get("file", 0))
        if own > worst_v:
            worst, worst_v = rp, own
    return total + files, worst


def _pump(rp: _RankProc, on_event: EventCallback | None) -> None:
    if rp.fd is None:
        return
    while True:
        try:
            data = os.read(rp.fd, 1 << 20)
        except BlockingIOError:
            break
        except OSError:
            data = b""
        if not data:
            os.close(rp.fd)
            rp.fd = None
            break
        rp.buf.extend(data)
    while True:
        nl = rp.buf.find(b"\n")
        if nl < 0:
            break
        line = bytes(rp.buf[:nl])
        del rp.buf[: nl + 1]
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        rp.feed(ev)
        if on_event is not None and ev.get("type") not in ("started", "written"):
            with contextlib.suppress(Exception):  # the user's callback never kills a run
                on_event(ev)


def _kill(rp: _RankProc) -> None:
    # the rank's own session: the rank, its sampler sidecar, and anything left behind by
    # a rank that already died (its pid stays reserved until we reap it)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(rp.proc.pid, signal.SIGKILL)


def _reap(rp: _RankProc) -> None:
    try:
        code = rp.proc.wait(_REAP_S)
    except subprocess.TimeoutExpired:
        return
    if rp.exit_code is None:
        rp.exit_code, rp.t_exit = code, time.monotonic()


def _failure(
    strategy: str, ranks: list[_RankProc], stop: _Stop | None, *, model: str, shard: int,
    format: str, nproc: int, per_rank: str, folder: Path, seconds: float,
    budget: int | None, backend: str | None, oom_before: int | None = None,
) -> RunResult:
    """A RunResult for a job that did not finish: who failed, where, and how."""
    from bigviz.checkpoint import inspect_checkpoint
    from bigviz.strategies import distributed as dstrat

    phases = {str(rp.rank): rp.phase() for rp in ranks}  # str keys: JSON round-trips
    codes = {str(rp.rank): rp.exit_code for rp in ranks}
    culprit: _RankProc | None = None
    if stop is not None:
        outcome, error = stop.outcome, stop.error
        culprit = ranks[stop.rank] if stop.rank is not None else None
    else:
        failed = [rp for rp in ranks if rp.exit_code not in (None, 0)]
        # the first to go is the cause; the others failed because it left their collective
        if failed:
            culprit = min(failed, key=lambda rp: (
                rp.t_exit if rp.t_exit is not None else float("inf"),
                0 if (rp.exit_code or 0) < 0 else 1))
        if culprit is None:
            culprit = ranks[0]
        code = culprit.exit_code
        phase = (culprit.error or {}).get("phase") or culprit.phase()
        who = f"rank {culprit.rank} (pid {culprit.proc.pid})"
        if culprit.error is not None and (code or 0) >= 0:
            outcome = "error"
            error = f"{who} failed in phase {phase!r}: {culprit.error.get('message')}"
        elif code is not None and code == -signal.SIGKILL:
            outcome, error = sigkill_verdict(oom_before, who, phase)
            error += "; the other ranks were stopped"
        elif code is not None and code != 0:
            outcome = "crashed"
            error = f"{who} {_describe_exit(code)} in phase {phase!r}; the other ranks were stopped"
        else:
            outcome = "crashed"
            error = "rank 0 exited without writing the gathered result"
    parts = [rp.partial() for rp in ranks]
    try:
        recording = merge_ranks(parts, name=f"{strategy} · {model} · {nproc} ranks (partial)")
    except Exception as exc:  # a partial timeline must never hide the failure itself
        recording = Recording(name=f"{strategy} (partial)", errors=[f"merge failed: {exc!r}"])
    recording.meta["partial"] = True
    m_bytes = 0
    predicted: Prediction | None = None
    with contextlib.suppress(Exception):
        info = inspect_checkpoint(folder / "checkpoint")
        m_bytes = int(info.total_size)
        predicted = dstrat.get(strategy).predict(info, "cpu", nproc=nproc, per_rank=per_rank)
    checks = Checks(
        weights="unchecked",
        failed_rank=culprit.rank if culprit is not None else None,
        rank_phases=phases,
        exit_codes=codes,
    )
    if culprit is not None:
        if culprit.error and culprit.error.get("traceback"):
            checks.traceback = str(culprit.error["traceback"])
        checks.log_tail = _tail(culprit.log) or None
    return RunResult(
        strategy=strategy,
        outcome=outcome,  # type: ignore[arg-type]
        model=model,
        model_bytes=m_bytes,
        error=error,
        phase_reached=phases.get(str(culprit.rank)) if culprit is not None else None,
        shard_size=shard,
        format=format,
        device_map="cpu",
        predicted=predicted,
        seconds=round(seconds, 6),
        recording=recording,
        params={"model": model, "nproc": nproc, "per_rank": per_rank, "backend": backend,
                "max_shard_size": shard, "format": format, "ram_budget": budget},
        checks=checks,
    )


# -- command line --------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from bigviz.strategies import distributed as dstrat

    p = argparse.ArgumentParser(
        prog="python -m bigviz.runner.distributed",
        description="Per-rank RAM/VRAM timelines of a torch.distributed load. Under torchrun "
                    "this is one rank; otherwise it launches --nproc ranks itself.",
    )
    p.add_argument("strategy", choices=dstrat.names())
    p.add_argument("--nproc", type=int, default=2, help="ranks to launch (not under torchrun)")
    p.add_argument("--model", default="gpt:100MB")
    p.add_argument("--max-shard-size", default="500MB")
    p.add_argument("--format", default="safetensors", choices=("safetensors", "bin"))
    p.add_argument("--dtype", default="float32")
    p.add_argument("--per-rank", default="naive", choices=dstrat.PER_RANK)
    p.add_argument("--work-dir", default=None)
    p.add_argument("--ram-budget", default=None)
    p.add_argument("--interval-ms", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default=None, choices=("gloo", "nccl"))
    p.add_argument("--out", default=None, help="write the RunResult JSON here")
    # set by the launcher for its ranks
    p.add_argument("--checkpoint-root", default=None, help=argparse.SUPPRESS)
    p.add_argument("--scratch", default=None, help=argparse.SUPPRESS)
    p.add_argument("--events-fd", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--pg-timeout", type=float, default=1800.0, help=argparse.SUPPRESS)
    return p


def _summary(r: RunResult) -> str:
    m = r.model_bytes or 1
    lines = [f"{r.strategy} · {r.model} · {r.params.get('nproc')} ranks: {r.outcome}"
             + (f" — {r.error}" if r.error else "")]
    node = r.checks.node
    if r.ram_peak is not None:
        lines.append(f"  node RAM peak {format_size(r.ram_peak)} ({r.ram_peak / m:.2f} × model)"
                     + (f", predicted {r.predicted.ram_peak / m:.2f} × ({r.predicted.formula})"
                        if r.predicted else ""))
    if node is not None and node.pss_loaded is not None:
        lines.append(f"  node PSS with weights loaded {node.pss_loaded / m:.2f} × model; "
                     f"Σ RSS would say {(node.rss_loaded_sum or 0) / m:.2f} ×")
    for f in r.checks.ranks:
        peak = f.ram_peak
        lines.append(f"  rank {f.rank}: peak {'?' if peak is None else f'{peak / m:.2f}'} × "
                     f"model (predicted {(f.predicted or 0) / m:.2f} ×, {f.formula}), weights "
                     f"{f.verify}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry of ``python -m bigviz.runner.distributed``: one rank under torchrun, else launch.

    Returns:
        The exit code: 0 when the job finished and every rank's weights checked out.

    Example:
        >>> # main(["shared-mmap", "--nproc", "2", "--model", "gpt:50MB", "--out", "r.json"])
    """
    ns = _parser().parse_args(argv)
    env = _dist_env()
    if env is not None:  # one rank of a job (torchrun's or our own launcher's)
        if ns.out is None:
            ns.out = "bigviz-distributed.json"
        ns.max_shard_size = parse_size(ns.max_shard_size)
        return _rank_main(ns, env)
    result = run_distributed(
        ns.strategy, nproc=ns.nproc, model=ns.model, max_shard_size=ns.max_shard_size,
        format=ns.format, dtype=ns.dtype, per_rank=ns.per_rank, work_dir=ns.work_dir,
        ram_budget=ns.ram_budget, interval_ms=ns.interval_ms, timeout=ns.timeout,
        seed=ns.seed, backend=ns.backend,
    )
    if ns.out:
        Path(ns.out).write_text(result.to_json(), encoding="utf-8")
    print(_summary(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
