"""The rank program: one rank of a ``torch.distributed`` load under its own recorder.

Started by the launcher (:mod:`bigviz.runner.launcher`) or by ``torchrun``, through the
command line of :mod:`bigviz.runner.distributed`. Each rank streams its events to the
launcher (:class:`~bigviz.runner.events.Channel` on an inherited pipe), takes its baseline
after a barrier every rank passes together, loads with a distributed strategy, checks its
weights, and sends its part to rank 0, which merges the parts into the job's RunResult
(:func:`~bigviz.runner.results.rank_result`).

Example:
    >>> rank_env() is None  # outside a job: no RANK / WORLD_SIZE
    True
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import socket
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bigviz.strategies as strategies
from bigviz.data.recording import Recording
from bigviz.data.result import NodeFigures, RunResult
from bigviz.runner.events import Channel
from bigviz.runner.memory import snapshot
from bigviz.runner.results import rank_result
from bigviz.runner.worker import warm_up_cpu

__all__ = ["SMAPS_MS", "RankEnv", "group_by_node", "rank_env", "rank_main", "rank_shard_size"]

#: how often each rank's sidecar reads smaps_rollup for PSS/USS (ms)
SMAPS_MS = 20.0


@dataclass
class RankEnv:
    """Where this rank stands, from torchrun-style variables."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node: int = 0


def rank_shard_size(text: str | int | None) -> int | None:
    """A rank's ``--max-shard-size``: bytes, or ``None`` for a checkpoint folder's files
    as saved (``None``, ``"as-saved"``, ``"as saved"``; a zoo model then gets 500 MB).

    Example:
        >>> rank_shard_size("20MB"), rank_shard_size("as-saved")
        (20000000, None)
    """
    from bigviz.options import is_as_saved
    from bigviz.units import parse_size

    if text is None or (isinstance(text, str) and is_as_saved(text)):
        return None
    return parse_size(text)


def rank_env() -> RankEnv | None:
    """The rank's place from torchrun-style variables, or ``None`` outside a job
    (``node`` is torchrun's ``GROUP_RANK``, the node's index)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    node = int(os.environ.get("GROUP_RANK", "0") or 0)
    return RankEnv(rank, world, local, local_world, node)


def group_by_node(result: RunResult, parts: Sequence[Mapping[str, Any]]) -> None:
    """Tag every rank (and its lane) with its node and, when the ranks ran on more than
    one node, give ``result.checks.nodes`` each node's totals from the barrier
    snapshots all ranks took together (baseline, loaded PSS/USS, Σ RSS), gathered over
    the process group; ``checks.node`` stays the cluster total. Each node's launcher
    adds its sampled PSS peak (:mod:`bigviz.runner.launcher`).

    Example:
        >>> # group_by_node(rank_result(...), parts)
    """
    lanes = result.recording.ranks
    nodes = sorted({int(p.get("node") or 0) for p in parts})
    for i, part in enumerate(parts):
        node = int(part.get("node") or 0)
        if i < len(result.checks.ranks):
            result.checks.ranks[i].node = node
        if i < len(lanes) and len(nodes) > 1:
            lanes[i].meta["node"] = node  # the plots label (and so group) lanes by node
    if lanes and parts[0].get("t_sync") is not None and parts[0].get("t0_monotonic"):
        # when rank 0 left the alignment barrier, on the recording's clock: each node's
        # launcher places its own samples from there
        result.recording.meta["t_sync"] = (float(parts[0]["t_sync"])
                                           - float(parts[0]["t0_monotonic"]))
    if len(nodes) < 2:
        return
    result.params["nnodes"] = len(nodes)
    for k in nodes:
        mine = [p for p in parts if int(p.get("node") or 0) == k]

        def total(what: str, key: str, ps: Sequence[Mapping[str, Any]] = mine) -> int:
            return sum(int((p.get(what) or {}).get(key, 0)) for p in ps)

        loaded = total("loaded", "pss")
        result.checks.nodes.append(NodeFigures(
            baseline={key: total("baseline", key) for key in ("pss", "uss", "rss", "anon")},
            pss_loaded=loaded - total("baseline", "pss") if loaded else None,
            uss_loaded=total("loaded", "uss") - total("baseline", "uss"),
            rss_loaded_sum=total("loaded", "rss") - total("baseline", "rss"),
            ram_peak=loaded - total("baseline", "pss") if loaded else None,
            node=k, host=str(mine[0].get("host")), ranks=[int(p["rank"]) for p in mine],
            sampled="the barrier snapshot (no samples of this node's launcher here)",
        ))


class _Boundaries:
    """Streams the recorder's events, and reads PSS/USS exactly at every phase boundary.

    The sidecar reads ``smaps_rollup`` at a low rate (it walks every page table, and
    backs off when that is slow: a few samples a second on a torch process), so short
    loads would get a node PSS of two points. Readings at the boundaries of the outer
    phases (depth 0 and 1) give every phase its own PSS at its start and end.
    """

    def __init__(self, sink: Channel) -> None:
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


def rank_main(ns: argparse.Namespace, env: RankEnv) -> int:
    """Run one rank of a job (torchrun's or the launcher's); returns its exit code.

    Events go to the launcher through ``ns.events_fd`` (none under torchrun); rank 0
    gathers every rank's part and writes the RunResult to ``ns.out``.

    Example:
        >>> # rank_main(parser().parse_args([...]), rank_env())
    """
    sink = Channel(ns.events_fd, rank=env.rank, pid=os.getpid())
    sink.send({"type": "started", "pid": os.getpid(), "host": socket.gethostname()})
    try:
        return _rank_body(ns, env, sink)
    except BaseException as exc:
        sink.send({"type": "error", "message": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(), "phase": None})
        raise


def _rank_body(ns: argparse.Namespace, env: RankEnv, sink: Channel) -> int:
    import torch
    import torch.distributed as dist

    import bigviz.recorder as record
    from bigviz.checkpoint import inspect_checkpoint
    from bigviz.models import build_model
    from bigviz.models.folders import is_folder_spec
    from bigviz.recorder import CudaSource, NvmlSource, ProcSource
    from bigviz.strategies import DistContext
    from bigviz.strategies.weights import compare_checksums, first_use

    strategy = strategies.get(ns.strategy, kind="distributed")
    backend = ns.backend or _pick_backend(env.local_world_size)
    device = f"cuda:{env.local_rank}" if backend == "nccl" else "cpu"
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=ns.pg_timeout))
    # objects (recordings) travel on a CPU group whatever carries the weights
    ctrl = None if backend == "gloo" else dist.new_group(backend="gloo")
    folder, built = _checkpoint_folder(ns, env, dist, ctrl)
    _strategy_files(strategy, folder, env, dist, ctrl)
    # a folder as saved: a link to the user's folder, read where it is (never written)
    ckpt = folder / "checkpoint"
    info = inspect_checkpoint(ckpt)
    expected = json.loads((folder / "checksums.json").read_text())
    import safetensors.torch  # noqa: F401  (imports belong to the baseline)

    # the same fixed costs the single-process worker keeps out of its phases (thread
    # pool, first module build; ~35 MiB a rank), and this rank's CUDA context
    warm_up_cpu()
    if is_folder_spec(built):
        # a checkpoint folder: the first skeleton build imports Transformers and the
        # architecture's module (tens of MiB, the library's cost, not the strategy's)
        skeleton = build_model(built, dtype=ns.dtype, factory=ns.factory, device="meta")
        del skeleton
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
        ctx = DistContext(
            model=built, checkpoint=ckpt, info=info, recorder=rec, scratch=scratch,
            dtype=ns.dtype, device_map=device, format=info.format,
            shard_size=ns.max_shard_size, seed=ns.seed, rank=env.rank,
            world_size=env.world_size, local_rank=env.local_rank, device=device,
            per_rank=ns.per_rank, factory=ns.factory,
        )
        model: Any = None
        try:
            model = strategy.run(ctx)
            with rec.phase("first use", what="read every weight once (checksums)"):
                per_rank_use = getattr(strategy, "rank_first_use", None)
                sums = per_rank_use(ctx, model) if per_rank_use else first_use(model)
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
        "recording": recording.to_dict(), "node": env.node,
    }
    parts: list[Any] | None = [None] * env.world_size if env.rank == 0 else None
    dist.gather_object(part, parts, dst=0, group=ctrl)
    if env.rank == 0:
        assert parts is not None
        result = rank_result(
            strategy.name, parts, info=info, model=ns.model, nproc=env.world_size,
            per_rank=ns.per_rank, backend=backend, shard_size=ns.max_shard_size,
            params={"checkpoint": str(ckpt), "interval_ms": ns.interval_ms,
                    "dtype": ns.dtype, "seed": ns.seed},
        )
        group_by_node(result, parts)
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


def _strategy_files(strategy: Any, folder: Path, env: RankEnv, dist: Any, ctrl: Any) -> None:
    """Before any baseline: the strategy's own fixed costs (``warm_up``), and what it
    needs beside the checkpoint (``fsdp-dcp``: its DCP copy), made once per node by local
    rank 0 in a fresh interpreter (so no rank's memory holds it)."""
    strategy.warm_up(folder / "checkpoint")  # its imports belong to the baseline
    need = getattr(strategy, "prepared", None)
    made = need(folder) if callable(need) else None
    if made is None:
        return
    path, code = made
    if env.local_rank == 0 and not Path(path).exists():
        import subprocess

        from bigviz.runner.interpreter import child_argv, child_env

        done = subprocess.run(child_argv(code), env=child_env(), capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"preparing {path} for {strategy.name!r} failed: "
                               f"{done.stderr.strip()[-2000:]}")
    dist.barrier(group=ctrl)


def _checkpoint_folder(ns: argparse.Namespace, env: RankEnv, dist: Any,
                       ctrl: Any) -> tuple[Path, str]:
    """The prepared folder (``checkpoint/`` + ``checksums.json``) and what the ranks
    build the model from (a checkpoint folder: its resolved path). Sets ``ns.dtype``
    and ``ns.max_shard_size`` where they were left to their defaults."""
    ns.factory = getattr(ns, "factory", None)
    if ns.checkpoint_root:  # the launcher prepared it, and resolved the model
        ns.dtype = ns.dtype or "float32"
        return Path(ns.checkpoint_root), ns.model
    # under torchrun: one rank per node prepares (each node may have its own disk); the
    # weights are seeded, so every node's copy is the same checkpoint
    from bigviz.runner.checkpoints import prepare_checkpoint, prepare_folder
    from bigviz.runner.forkserver import close
    from bigviz.runner.plan import Settings

    settings = Settings(ns.model, dtype=ns.dtype, factory=ns.factory).resolved()
    ns.dtype = settings.dtype or "float32"
    src = settings.folder
    if src is None and ns.max_shard_size is None:
        ns.max_shard_size = 500_000_000
    shard = ns.max_shard_size

    def prepare() -> Path:
        if src is not None:  # the user's folder: checksums (or a reshard), never written
            return prepare_folder(src, shard=shard, format=None if shard is None
                                  else ns.format, work_dir=ns.work_dir)
        return prepare_checkpoint(ns.model, max_shard_size=shard, format=ns.format,
                                  dtype=ns.dtype, work_dir=ns.work_dir, seed=ns.seed)

    if env.local_rank == 0:
        prepare()
        close()  # the fork server that prepared it is no part of this rank's memory
    dist.barrier(group=ctrl)
    folder = prepare()  # already there: returns its folder
    return folder, ns.model if src is None else str(src)
