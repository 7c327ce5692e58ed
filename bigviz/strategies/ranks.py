"""Distributed loading strategies: what N ranks of one ``torch.distributed`` job cost.

"If you use torch.distributed, each process loads the pretrained model and keeps two
copies in RAM." These strategies run inside every rank (see
:func:`bigviz.runner.launcher.run_distributed`) and show the problem and its remedies:

====================  ===========================================================  ===============
name                  what every rank does                                         node RAM (PSS)
====================  ===========================================================  ===============
``every-rank-loads``  its own single-process load (``naive`` by default)           N × per-rank
``rank0-broadcast``   rank 0 reads shard by shard; the others build on ``meta``     N × M (+ T)
                      and receive each tensor by broadcast straight into its
                      final storage (on GPUs: CPU ≈ S on rank 0, ≈ 0 elsewhere)
``shared-mmap``       maps the same safetensors files; the page cache holds the    M once
                      weights once for the whole node
====================  ===========================================================  ===============

(M = model bytes, S = largest shard, T = largest tensor, N = ranks on the node.)

They are registered with ``kind = "distributed"`` (they need a process group): the
registry lists them apart, ``bigviz.strategies.names(kind="distributed")``.

Example:
    >>> import bigviz.strategies as strategies
    >>> strategies.names(kind="distributed")[:3]
    ['every-rank-loads', 'rank0-broadcast', 'shared-mmap']

The FSDP2 strategies (``fsdp-broadcast``, ``fsdp-dcp``, ``fsdp-hf``) are in
:mod:`bigviz.strategies.fsdp`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bigviz._errors import StrategyError
from bigviz.data.result import Prediction
from bigviz.models import build_model
from bigviz.strategies.base import Kind, RunContext, Strategy
from bigviz.strategies.devices import DeviceMap
from bigviz.strategies.meta import Meta, load_assigned
from bigviz.strategies.naive import Naive
from bigviz.strategies.sharded import Sharded
from bigviz.strategies.weights import (
    assign_shard,
    first_use,
    largest_shard,
    largest_tensor,
    load_shard,
    model_size,
    require_loaded,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "PER_RANK",
    "DistContext",
    "DistStrategy",
    "EveryRankLoads",
    "Rank0Broadcast",
    "SharedMmap",
    "node_sum",
    "ranks_note",
]

#: single-process strategies ``every-rank-loads`` can run in each rank
PER_RANK: tuple[str, ...] = ("naive", "sharded", "meta")
_PER_RANK: dict[str, Strategy] = {s.name: s for s in (Naive(), Sharded(), Meta())}


@dataclass
class DistContext(RunContext):
    """A :class:`RunContext` plus where this rank stands in the job.

    ``device`` is where the weights end up: ``"cpu"`` with gloo, ``"cuda:<local rank>"``
    with NCCL. ``group`` is the process group the weights travel on (``None``: the
    default group).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    per_rank: str = "naive"
    group: Any = None


class DistStrategy(Strategy):
    """A strategy every rank of a distributed job runs; predictions are per node.

    :meth:`predict` gives the node total (the sum over ranks of each rank's
    proportional share, PSS); :meth:`predict_rank` one rank's own peak.
    """

    kind: ClassVar[Kind] = "distributed"
    device_maps: ClassVar[bool] = False

    def predict(
        self,
        info: Any,
        device_map: DeviceMap = "cpu",
        *,
        max_memory: Mapping[int | str, int] | None = None,
        placement: Mapping[str, int] | None = None,
        nproc: int = 2,
        per_rank: str = "naive",
    ) -> Prediction:
        """Node RAM (sum of the ranks' PSS) above the ranks' baselines.

        Args:
            info: the checkpoint's ``CheckpointInfo``.
            device_map: ``"cpu"`` (gloo) or ``"cuda"`` (each rank on its own GPU).
            nproc: ranks on the node.
            per_rank: the single-process strategy of ``every-rank-loads``.

        Example:
            >>> # get("shared-mmap").predict(info, nproc=4).formula
            >>> # 'M once per node (page cache shared), N × M RSS'
        """
        return self._predict_node(info, device_map, nproc=nproc, per_rank=per_rank)

    def predict_rank(
        self,
        info: Any,
        rank: int,
        device_map: DeviceMap = "cpu",
        *,
        max_memory: Mapping[int | str, int] | None = None,
        placement: Mapping[str, int] | None = None,
        nproc: int = 2,
        per_rank: str = "naive",
    ) -> Prediction:
        """One rank's own expected peak (RSS above its baseline; VRAM on its GPU);
        ``device_map`` is the rank's device (``"cpu"``, ``"cuda:N"``)."""
        return self._predict_rank(info, rank, device_map, nproc=nproc, per_rank=per_rank)

    # A subclass implements these two: no distributed strategy reads ``max_memory`` or
    # ``placement``, so the public signatures above are written once, here.

    def _predict_node(self, info: Any, device_map: DeviceMap, *, nproc: int,
                      per_rank: str) -> Prediction:
        """:meth:`predict` of this strategy."""
        raise NotImplementedError

    def _predict_rank(self, info: Any, rank: int, device_map: DeviceMap, *, nproc: int,
                      per_rank: str) -> Prediction:
        """:meth:`predict_rank` of this strategy."""
        raise NotImplementedError

    def _rank_parts(self, info: Any, nproc: int, device_map: DeviceMap = "cpu",
                    ) -> list[Prediction]:
        """Every rank's own prediction, rank 0 first."""
        return [self.predict_rank(info, r, device_map, nproc=nproc) for r in range(nproc)]

    def run(self, ctx: RunContext) -> nn.Module:
        if not isinstance(ctx, DistContext):
            raise StrategyError(
                f"strategy {self.name!r} runs in the ranks of a distributed job; "
                "start it with bigviz.runner.distributed.run_distributed(...) or torchrun"
            )
        return self.run_rank(ctx)

    def run_rank(self, ctx: DistContext) -> nn.Module:
        """Load inside one rank under its recorder; return the rank's model."""
        raise NotImplementedError

    def rank_first_use(self, ctx: DistContext, model: nn.Module) -> dict[str, list[int]]:
        """The *first use* pass of one rank: every weight read once, ``{key: checksum}``
        of the full weights (a sharded strategy adds up every rank's part; then it is a
        collective every rank calls)."""
        return first_use(model)

    def prepared(self, folder: Path) -> tuple[Path, str] | None:
        """What this strategy needs beside a prepared checkpoint ``folder``, if anything:
        ``(path, python code that creates it)``. The rank program runs the code once, in
        a fresh interpreter, before any rank takes its baseline."""
        return None


def _to_device(ctx: DistContext, model: nn.Module) -> nn.Module:
    if ctx.device == "cpu":
        return model
    with ctx.phase("to device", device=ctx.device):
        return model.to(ctx.device)


def _gpu(device: str) -> bool:
    return device.startswith("cuda")


def ranks_note(parts: list[Prediction], nproc: int) -> str:
    """``"N = 4; rank 0: M + M/N; rank 1: M/N; …"``: the node's ranks and the formulas of
    the first two (the others are as rank 1)."""
    return (f"N = {nproc}; " + "; ".join(f"rank {r}: {p.formula}"
                                          for r, p in enumerate(parts[:2]))
            + ("; …" if nproc > 2 else ""))


def node_sum(parts: list[Prediction], *, formula: str, high_formula: str, width: str,
             above: str, below: str, notes: str, low: int | None = None,
             low_formula: str = "") -> Prediction:
    """The node's prediction from every rank's own (:meth:`DistStrategy.predict_rank`):
    anonymous memory, the ranks' peaks and both bounds added up (``low``: another lower
    bound, e.g. the largest rank's where the ranks need not peak together)."""
    peak = sum(p.ram_peak for p in parts)
    return Prediction(
        ram_peak=peak, formula=formula, ram_anon=peak, ram_file=0,
        low=sum(p.bounds[0] for p in parts) if low is None else low,
        high=sum(p.bounds[1] for p in parts), low_formula=low_formula or formula,
        high_formula=high_formula, width=width, above=above, below=below, notes=notes)


class EveryRankLoads(DistStrategy):
    """The problem: each rank runs its own full load, so the node pays N times."""

    name = "every-rank-loads"
    description = "each rank loads the checkpoint on its own (naive by default)"
    phases = ("build", "read shard i/n", "assign", "first use", "loaded")

    def _inner(self, per_rank: str) -> Strategy:
        if per_rank not in _PER_RANK:
            raise StrategyError(
                f"per_rank {per_rank!r} is not supported by {self.name!r}; use one of "
                f"{list(PER_RANK)} (for mapped files use the 'shared-mmap' strategy)"
            )
        return _PER_RANK[per_rank]

    def _predict_rank(self, info: Any, rank: int, device_map: DeviceMap, *, nproc: int,
                      per_rank: str) -> Prediction:
        device = str(device_map)  # the rank's own device
        p = self._inner(per_rank).predict(info, "cpu")
        m = model_size(info)
        if _gpu(device):
            then = f", then to {device}"
            return replace(
                p, formula=p.formula + then, low_formula=p.low_formula + then,
                high_formula=p.high_formula + then, vram={device: m},
                notes=f"rank {rank}: loads on the CPU as {per_rank!r}, then moves to its GPU")
        return replace(p, notes=f"rank {rank}: {per_rank!r} load")

    def _predict_node(self, info: Any, device_map: DeviceMap, *, nproc: int,
                      per_rank: str) -> Prediction:
        p = self.predict_rank(info, 0, nproc=nproc, per_rank=per_rank)
        m = model_size(info)
        low, high = p.bounds
        # the ranks do not reach their peaks at the same instant; at the "loaded" barrier
        # each holds its M, and one rank alone reaches its own peak
        node_low = max(nproc * m, low)
        return Prediction(
            ram_peak=nproc * p.ram_peak,
            formula=f"N × ({p.formula})",
            ram_anon=None if p.ram_anon is None else nproc * p.ram_anon,
            ram_file=None if p.ram_file is None else nproc * p.ram_file,
            notes=f"N = {nproc} ranks, each {per_rank!r} ({p.formula} = {p.ram_peak} bytes); "
                  "nothing is shared, so the node pays every copy",
            low=node_low, high=nproc * high,
            low_formula=f"max(N × M, {p.low_formula})", high_formula=f"N × ({p.high_formula})",
            width="the ranks do not peak at the same instant: at least every rank's M (the "
                  "barrier after loading) or one rank's own peak; at most all peaks at once",
            above=f"more than N ranks' {per_rank!r} peaks: {p.above}",
            below="less than every rank holding its model: a rank did not load",
        )

    def check_options(self, per_rank: str) -> None:
        """Raise StrategyError for a per-rank strategy this one cannot run."""
        self._inner(per_rank)

    def run_rank(self, ctx: DistContext) -> nn.Module:
        model = self._inner(ctx.per_rank).run(ctx)
        return _to_device(ctx, model)


class Rank0Broadcast(DistStrategy):
    """Rank 0 reads; the others build on meta and receive every tensor by broadcast."""

    name = "rank0-broadcast"
    description = ("rank 0 reads shard by shard and broadcasts each tensor; the others "
                   "build on meta and receive into empty tensors")
    phases = ("build", "shard i/n", "read", "broadcast", "assign", "first use", "loaded")

    def _predict_rank(self, info: Any, rank: int, device_map: DeviceMap, *, nproc: int,
                      per_rank: str) -> Prediction:
        device = str(device_map)  # the rank's own device
        m, s, t = model_size(info), largest_shard(info), largest_tensor(info)
        if _gpu(device):
            if rank == 0:
                return Prediction(ram_peak=s, formula="S", ram_anon=s, ram_file=0,
                                  vram={device: m},
                                  notes="rank 0 reads one shard at a time into RAM, sends "
                                        "each tensor from its GPU")
            return Prediction(ram_peak=0, formula="≈ 0", ram_anon=0, ram_file=0,
                              vram={device: m},
                              notes=f"rank {rank} receives straight into GPU memory")
        if rank == 0:
            return Prediction(ram_peak=m, formula="M", ram_anon=m, ram_file=0,
                              notes="rank 0 reads each shard into RAM; the shard becomes "
                                    "its weights (no second copy)", low=m, high=m,
                              above="more than one copy on rank 0: a shard was copied",
                              below="rank 0 did not hold the whole model")
        return Prediction(ram_peak=m, formula="M (+ transient T)", ram_anon=m, ram_file=0,
                          notes=f"rank {rank} receives each tensor into its final storage; "
                                f"at most one tensor (T = {t} bytes) in flight in the backend",
                          low=m, high=m + t, low_formula="M", high_formula="M + T",
                          width="the backend may hold one tensor in flight beside the "
                                "weights received so far",
                          above="more than one tensor in flight: received tensors were "
                                "copied", below="the rank did not receive the whole model")

    def _predict_node(self, info: Any, device_map: DeviceMap, *, nproc: int,
                      per_rank: str) -> Prediction:
        dev = "cuda:0" if device_map != "cpu" else "cpu"
        parts = self._rank_parts(info, nproc, dev)
        formula = "S (rank 0 only)" if _gpu(dev) else "N × M"
        node = node_sum(
            parts, formula=formula, high_formula="N × M + (N − 1) × T",
            width="one tensor may be in flight in each receiver's backend",
            above="more than one copy per rank: received or read tensors were copied",
            below="a rank did not hold the whole model",
            notes=ranks_note(parts, nproc)
                  + ". One reader of the checkpoint; receivers never hold a second copy",
        )
        # no tensor in flight (GPU ranks receive straight into VRAM): the range is one value
        return replace(node, high_formula=formula) if node.high == node.ram_peak else node

    def run_rank(self, ctx: DistContext) -> nn.Module:
        import torch
        import torch.distributed as dist

        with ctx.phase("build", device="meta"):
            model = build_model(ctx.model, dtype=ctx.dtype, factory=ctx.factory,
                                device="meta")
        info = ctx.info
        by_shard = info.keys_by_shard()
        paths = {p.name: p for p in ctx.shards()}
        n = len(by_shard)
        role = "send" if ctx.rank == 0 else "receive"
        for i, (fname, keys) in enumerate(by_shard.items(), 1):
            with ctx.phase(f"shard {i}/{n}", file=fname, role=role):
                sd: dict[str, torch.Tensor] = {}
                if ctx.rank == 0:
                    with ctx.phase("read", file=fname):
                        sd = load_shard(paths[fname], mmap=False)
                got: dict[str, torch.Tensor] = {}
                with ctx.phase("broadcast", tensors=len(keys), role=role):
                    for key in keys:  # same order on every rank: the header's
                        got[key] = self._one(ctx, key, sd, torch, dist)
                sd.clear()  # on a GPU the CPU copies go now; on CPU they are the weights
                with ctx.phase("assign", tensors=len(got)):
                    assign_shard(model, got)
                del got
        with ctx.phase("tie", what="tie weights, check nothing is left on meta"):
            require_loaded(model, self.name)
        return model

    @staticmethod
    def _one(ctx: DistContext, key: str, sd: dict[str, torch.Tensor], torch: Any,
             dist: Any) -> torch.Tensor:
        ti = ctx.info.tensors[key]
        if ctx.rank == 0:
            t = sd[key]
            if ctx.device != "cpu":
                t = t.to(ctx.device)
            t = t.contiguous()
        else:
            dtype = getattr(torch, ti.dtype, None)
            if not isinstance(dtype, torch.dtype):
                raise StrategyError(f"tensor {key!r} has dtype {ti.dtype!r}, unknown to torch")
            t = torch.empty(tuple(ti.shape), dtype=dtype, device=ctx.device)
        if t.numel():
            # as bytes: every dtype (bf16, bool, fp8) travels on every backend
            dist.broadcast(t.reshape(-1).view(torch.uint8), src=0, group=ctx.group)
        return t


class SharedMmap(DistStrategy):
    """Every rank maps the same files: the page cache holds one copy for the node."""

    name = "shared-mmap"
    description = "every rank maps the same safetensors files zero-copy; pages shared"
    phases = ("build", "load shard i/n", "assign", "first use", "loaded")
    formats = ("safetensors",)  # .bin files cannot be mapped zero-copy

    def _predict_rank(self, info: Any, rank: int, device_map: DeviceMap, *, nproc: int,
                      per_rank: str) -> Prediction:
        device = str(device_map)  # the rank's own device
        m = model_size(info)
        if _gpu(device):
            return Prediction(ram_peak=m, formula="M file-backed (shared), then to GPU",
                              ram_anon=0, ram_file=m, vram={device: m},
                              notes="mapped pages are read once for the node, then copied "
                                    "to each rank's GPU")
        return Prediction(ram_peak=m, formula="M file-backed (PSS M / N)", ram_anon=0,
                          ram_file=m,
                          notes=f"rank {rank}: RSS ≈ M of page cache it shares with the other "
                                f"{nproc - 1} rank(s); its proportional share is M / {nproc}")

    def _predict_node(self, info: Any, device_map: DeviceMap, *, nproc: int,
                      per_rank: str) -> Prediction:
        m = model_size(info)
        return Prediction(
            ram_peak=m,
            formula="M once per node (page cache shared), N × M RSS",
            ram_anon=0,
            ram_file=m,
            low=m, high=m, low_formula="M once per node",
            width="one value: the ranks map the same page-cache pages, counted once by PSS",
            above="pages counted more than once per node, or anonymous copies of the weights",
            below="mapped pages never touched: first use did not read every weight",
            notes=f"N = {nproc}; each rank's RSS shows M, but the pages are the same page "
                  "cache pages: summing RSS would count them N times, summing PSS once",
        )

    def run_rank(self, ctx: DistContext) -> nn.Module:
        model = load_assigned(ctx, mmap=True)
        return _to_device(ctx, model)
