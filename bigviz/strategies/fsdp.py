"""FSDP2 loading strategies: every rank ends with only its shard of the weights.

PyTorch's own answer to "every rank loads its own copy": build the model on ``meta``,
``fully_shard`` it (:func:`torch.distributed.fsdp.fully_shard`, FSDP2) on a device mesh
of the job's ranks, allocate each rank's shard, and fill the shards from a checkpoint.

==================  =========================================================  ===================
name                how the shards are filled                                  one rank's peak
==================  =========================================================  ===================
``fsdp-broadcast``  rank 0 reads the full state dict; ``set_model_state_dict``  rank 0: M + M/N;
                    (``full_state_dict``, ``broadcast_from_rank0``) sends each  others:
                    tensor, every rank keeps its slice                          M/N + ≤ 2 T
``fsdp-dcp``        ``torch.distributed.checkpoint.load`` from a DCP checkpoint  M/N + T
                    (saved once beside the safetensors files): each rank reads
                    only the items holding its slices
``fsdp-hf``         ``dcp.load`` with ``HuggingFaceStorageReader`` straight      M/N + (S + T)/N
                    from the safetensors files: each rank reads its slices
==================  =========================================================  ===================

(M = model bytes, S = largest shard file, M/N = one rank's shard — FSDP2 pads every tensor's rows to
``ceil(rows / N)`` per rank —, T = largest tensor, N = ranks.) The node holds about M
(``fsdp-broadcast``: 2 M at rank 0's peak).

The weights are checked shard by shard: each rank sums the checksums of its local shards
at their offsets in the full tensors (:func:`local_checksums`), the ranks add up their
sums, and the totals must equal the checkpoint's.

Example:
    >>> import bigviz.strategies as strategies
    >>> [n for n in strategies.names(kind="distributed") if n.startswith("fsdp")]
    ['fsdp-broadcast', 'fsdp-dcp', 'fsdp-hf', 'fsdp-dcp-save', 'fsdp-hf-save']

``fsdp-dcp-save`` profiles saving: it loads as ``fsdp-hf``, then every rank writes its
own shards with ``dcp.save`` (phase ``save``; M/N + one serialised slice).
``fsdp-hf-save`` writes them as safetensors and consolidates them on rank 0 into
full-tensor files (``HuggingFaceStorageWriter(save_distributed=True,
enable_consolidation=True)``), whose checksums are then compared with the checkpoint's.

``dcp-consolidate`` profiles that consolidation on its own: torch's
``_consolidate_safetensors_files`` turns a DCP checkpoint in DCP's safetensors layout
(``dcp-hf/``, saved once beside the checkpoint by :func:`save_dcp_hf`) into full-tensor
files, file ``i`` by rank ``i % N``, streaming tensor by tensor (2 × T a rank, + ≤ 3 × T₂).
It lives in :mod:`bigviz.strategies.dcp` with the DCP copies of a checkpoint
(:func:`save_dcp`, :func:`save_dcp_hf`), their checks and :func:`saved_checksums`; their
names are importable from here too.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bigviz._errors import StrategyError
from bigviz.data.result import Prediction
from bigviz.models import build_model
from bigviz.strategies.dcp import (
    DCP_DIR,
    DCP_HF_DIR,
    DcpConsolidate,
    check_dcp,
    check_dcp_hf,
    read_dcp_hf_metadata,
    save_dcp,
    save_dcp_hf,
    saved_checksums,
)
from bigviz.strategies.devices import DeviceMap
from bigviz.strategies.ranks import DistContext, DistStrategy, node_sum, ranks_note
from bigviz.strategies.weights import (
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
    "DCP_DIR",
    "DCP_HF_DIR",
    "DcpConsolidate",
    "FsdpBroadcast",
    "FsdpDcp",
    "FsdpDcpSave",
    "FsdpHf",
    "FsdpHfSave",
    "FsdpStrategy",
    "check_dcp",
    "check_dcp_hf",
    "local_checksums",
    "read_dcp_hf_metadata",
    "save_dcp",
    "save_dcp_hf",
    "saved_checksums",
    "shard_bytes",
]

_U64 = 1 << 64


def shard_bytes(info: Any, nproc: int) -> int:
    """One rank's FSDP2 shard in bytes: every tensor's dim-0 rows padded to
    ``ceil(rows / N)`` per rank (0-dim tensors whole).

    Example:
        >>> from types import SimpleNamespace as NS
        >>> t = NS(shape=[5, 2], nbytes=40)
        >>> shard_bytes(NS(tensors={"w": t}), 2)   # 3 rows of 8 bytes
        24
    """
    total = 0
    for t in getattr(info, "tensors", {}).values():
        shape = list(t.shape)
        nbytes = int(t.nbytes)
        if not shape or not shape[0]:
            total += nbytes
            continue
        rows = int(shape[0])
        total += math.ceil(rows / nproc) * (nbytes // rows)
    return total


# -- checksums of local shards ----------------------------------------------------


def _positioned_sum(flat: torch.Tensor, offset: int, total: int) -> int:
    """The part of :func:`~bigviz.strategies.weights.checksum`'s word sum that the bytes
    ``flat`` contribute when they sit at byte ``offset`` of a tensor of ``total`` bytes.

    The full checksum sums little-endian 64-bit words over the first ``total - total % 8``
    bytes and the last ``total % 8`` bytes one by one; a slice starting mid-word adds its
    edge bytes shifted to their place in the word.
    """
    import torch

    n = flat.numel()
    n8 = total - total % 8
    acc = 0
    end = offset + n
    # bytes in the tail of the full tensor (summed one by one there)
    if end > n8:
        start = max(offset, n8)
        acc += int(flat[start - offset:].to(torch.int64).sum().item())
        end = start
    if end <= offset:
        return acc % _U64
    # word region [offset, end): unaligned head, aligned middle, unaligned tail
    a = min(end, -(-offset // 8) * 8)
    b = max(a, end - end % 8)
    edge = [*range(offset, a), *range(b, end)]
    if edge:
        vals = flat[[i - offset for i in edge]].tolist()
        acc += sum(int(v) << (8 * (i % 8)) for i, v in zip(edge, vals, strict=True))
    if b > a:
        mid = flat[a - offset:b - offset]
        if mid.data_ptr() % 8 == 0:
            acc += int(mid.view(torch.int64).sum().item())
        else:
            step = 1 << 23
            for i in range(0, b - a, step):
                acc += int(mid[i:i + step].clone().view(torch.int64).sum().item())
    return acc % _U64


def _local_part(t: torch.Tensor, owner: bool) -> tuple[int, int]:
    """``(bytes, positioned word sum)`` this rank holds of one weight."""
    import torch
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        local = t.to_local().detach()
        shape, offset = compute_local_shape_and_global_offset(t.shape, t.device_mesh,
                                                              t.placements)
        if any(o for o in offset[1:]):
            raise StrategyError(f"a shard of a {tuple(t.shape)} weight starts at {offset}; "
                                "only dim-0 sharding (FSDP2) is supported")
        row = t.element_size() * math.prod(t.shape[1:]) if t.dim() else t.element_size()
        start = int(offset[0]) * row if t.dim() else 0
        total = t.element_size() * t.numel()
        if math.prod(shape) == 0:
            return 0, 0
    else:
        if not owner:  # a replicated tensor (buffer) is counted by rank 0 only
            return 0, 0
        local, start = t.detach(), 0
        total = t.element_size() * t.numel()
    if not local.is_contiguous():
        local = local.contiguous()
    flat = local.reshape(-1).view(torch.uint8)
    return flat.numel(), _positioned_sum(flat, start, total)


def _signed(v: int) -> int:
    v %= _U64
    return v - _U64 if v >= 1 << 63 else v


def _own_weights(model: nn.Module) -> list[tuple[str, Any]]:
    """``(name, tensor)`` of every parameter and persistent buffer under each of its
    names (a tied weight once per module holding it), as ``state_dict`` names them."""
    out: list[tuple[str, Any]] = []
    for mod_name, module in model.named_modules(remove_duplicate=False):
        skip: set[str] = set(getattr(module, "_non_persistent_buffers_set", set()))
        own: list[tuple[str, Any]] = list(module.named_parameters(recurse=False))
        own += [(n, b) for n, b in module.named_buffers(recurse=False) if n not in skip]
        out += [(f"{mod_name}.{n}" if mod_name else n, t) for n, t in own]
    return out


def local_checksums(model: nn.Module, rank: int, group: Any = None) -> dict[str, list[int]]:
    """Every weight's checksum, computed from the local shards of every rank.

    Each rank sums the bytes it holds at their place in the full tensor; the ranks'
    ``[bytes, sum]`` pairs are gathered and added up (a collective: every rank calls it),
    so the result equals :func:`~bigviz.strategies.weights.checksum` of the full tensors,
    on every rank. Tied weights are reported under each of their names.

    Example:
        >>> # local_checksums(fsdp_model, dist.get_rank())["lm_head.weight"]
    """
    import torch
    import torch.distributed as dist

    entries = _own_weights(model)
    parts: dict[str, tuple[int, int]] = {}
    done: dict[int, tuple[int, int]] = {}
    with torch.no_grad():
        for key, t in entries:
            if t.is_meta:
                raise StrategyError(f"weight {key!r} is still on the meta device after loading")
            if id(t) not in done:
                done[id(t)] = _local_part(t, rank == 0)
            parts[key] = done[id(t)]
    gathered: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, parts, group=group)
    out: dict[str, list[int]] = {}
    for key in parts:
        nbytes = sum(int(g[key][0]) for g in gathered)
        out[key] = [nbytes, _signed(sum(int(g[key][1]) for g in gathered))]
    return out


# -- the strategies ---------------------------------------------------------------


class FsdpStrategy(DistStrategy):
    """Meta build, ``fully_shard`` on a CPU (or GPU) mesh of every rank, then fill shards."""

    #: phases every FSDP strategy records before filling its shards
    _common = ("build", "shard", "allocate")

    #: the node's formulas (nominal = low, high), set by each strategy: the ranks'
    #: shards and what each holds in flight beside them (:meth:`_in_flight`)
    _node_formulas: ClassVar[tuple[str, str]]

    def warm_up(self, checkpoint: Path) -> None:
        """Import FSDP2, DTensor and DCP, and shard a tiny module once (no collective):
        their code (about 30 MiB a rank) is no part of the load."""
        import torch.distributed as dist
        import torch.distributed.checkpoint
        import torch.distributed.checkpoint.state_dict  # noqa: F401
        from torch import nn
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        if dist.is_initialized():
            gpu = dist.get_backend() == "nccl"
            mesh = init_device_mesh("cuda" if gpu else "cpu", (dist.get_world_size(),))
            tiny = nn.Linear(8, 8, device="meta")
            fully_shard(tiny, mesh=mesh)
            tiny.to_empty(device="cuda" if gpu else "cpu")

    def shard(self, ctx: DistContext) -> nn.Module:
        """Build on meta, ``fully_shard`` every block of each ``ModuleList`` and the root,
        then allocate this rank's shards (``to_empty``): phases ``build``, ``shard``,
        ``allocate``."""
        import torch.distributed as dist
        from torch import nn
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        world = dist.get_world_size(ctx.group)
        if world != ctx.world_size:
            raise StrategyError(f"the process group has {world} ranks, the job "
                                f"{ctx.world_size}; start every rank of the job")
        with ctx.phase("build", device="meta"):
            model = build_model(ctx.model, dtype=ctx.dtype, factory=ctx.factory,
                                device="meta")
        dev = "cpu" if ctx.device == "cpu" else "cuda"
        with ctx.phase("shard", mesh=f"{dev} × {world}", how="fully_shard"):
            mesh = init_device_mesh(dev, (world,))
            for module in list(model.modules()):
                if isinstance(module, nn.ModuleList):
                    for block in module:
                        fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
        # buffers a config-built skeleton computes and no checkpoint holds (rotary
        # frequencies) are real: to_empty would leave them uninitialised, so keep them
        kept = {n: b.detach().clone() for n, b in model.named_buffers() if not b.is_meta}
        with ctx.phase("allocate", device=ctx.device, what="this rank's shards (to_empty)"):
            model.to_empty(device=ctx.device)
            for n, b in model.named_buffers():
                if n in kept:
                    b.detach().copy_(kept[n])
        return model

    def state_dict(self, ctx: DistContext, model: nn.Module) -> dict[str, Any]:
        """The model's weights (DTensors) under the checkpoint's names, one entry per
        tensor (a tied weight under the name the checkpoint stores)."""
        saved = set(ctx.info.tensors)
        names: dict[int, list[str]] = {}
        tensors: dict[int, Any] = {}
        for name, t in _own_weights(model):
            names.setdefault(id(t), []).append(name)
            tensors[id(t)] = t
        out: dict[str, Any] = {}
        for key, aliases in names.items():
            found = [a for a in aliases if a in saved]
            if not found:
                raise StrategyError(
                    f"weight {aliases[0]!r} is not in the checkpoint {ctx.checkpoint}; "
                    "the checkpoint was saved from another model")
            out[found[0]] = tensors[key]
        extra = sorted(saved - {a for al in names.values() for a in al})
        if extra:
            raise StrategyError(f"checkpoint keys not in the model: {extra[:5]}; the "
                                "checkpoint was saved from another model")
        return out

    def rank_first_use(self, ctx: DistContext, model: nn.Module) -> dict[str, list[int]]:
        """Checksums of the full weights from every rank's local shards (collective)."""
        return local_checksums(model, ctx.rank, ctx.group)

    def _in_flight(self, info: Any, nproc: int) -> tuple[int, str, str]:
        """What a rank holds at most beside its shards while they fill: ``(bytes,
        formula, what)``."""
        raise NotImplementedError

    def _predict_rank(self, info: Any, rank: int, device_map: DeviceMap, *, nproc: int,
                      per_rank: str) -> Prediction:
        extra, extra_formula, what = self._in_flight(info, nproc)
        shard = shard_bytes(info, nproc)
        return Prediction(
            ram_peak=shard, formula="M/N", ram_anon=shard, ram_file=0,
            low=shard, high=shard + extra, low_formula="M/N",
            high_formula=f"M/N + {extra_formula}",
            width=f"{what} in flight beside the shards",
            above=f"more than one rank's shard plus {extra_formula}: a full copy was kept",
            below="the rank did not hold its whole shard",
            notes=f"rank {rank}: M/N = {shard} bytes (rows padded to ceil(rows / {nproc}))")

    def _predict_node(self, info: Any, device_map: DeviceMap, *, nproc: int,
                      per_rank: str) -> Prediction:
        formula, high_formula = self._node_formulas
        parts = self._rank_parts(info, nproc)
        return node_sum(parts, formula=formula, high_formula=high_formula,
                        width="read buffers in flight on each rank",
                        above="more than the shards and read buffers: a full copy was kept",
                        below="a rank did not hold its shard", notes=ranks_note(parts, nproc))


class FsdpBroadcast(FsdpStrategy):
    """Rank 0 reads the full state dict; ``set_model_state_dict`` broadcasts it."""

    name = "fsdp-broadcast"
    description = ("FSDP2: rank 0 reads the full state dict, set_model_state_dict("
                   "broadcast_from_rank0=True) sends every tensor, each rank keeps its shard")
    phases = ("build", "shard", "allocate", "read", "broadcast", "first use", "loaded")
    _node_formulas = ("M + N × M/N", "M + N × M/N + (2N − 1) × T")

    def _in_flight(self, info: Any, nproc: int) -> tuple[int, str, str]:
        return (2 * largest_tensor(info), "2 × T",
                "one full broadcast tensor (and gloo's staging copy)")

    def _predict_rank(self, info: Any, rank: int, device_map: DeviceMap, *, nproc: int,
                      per_rank: str) -> Prediction:
        m, t = model_size(info), largest_tensor(info)
        if rank == 0:
            shard = shard_bytes(info, nproc)
            return Prediction(
                ram_peak=m + shard, formula="M + M/N", ram_anon=m + shard, ram_file=0,
                low=m + shard, high=m + shard + t, low_formula="M + M/N",
                high_formula="M + M/N + T",
                width="the full state dict, the rank's shards and one tensor in flight",
                above="more than the full state dict and the shards: a copy was kept",
                below="rank 0 did not hold the whole state dict and its shard",
                notes=f"rank 0 reads the whole checkpoint (M = {m}) beside its shards "
                      f"(M/N = {shard})")
        return super()._predict_rank(info, rank, device_map, nproc=nproc, per_rank=per_rank)

    def run_rank(self, ctx: DistContext) -> nn.Module:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
        )

        model = self.shard(ctx)
        full: dict[str, Any] = {}
        if ctx.rank == 0:
            with ctx.phase("read", files=len(ctx.shards()), what="the full state dict"):
                for path in ctx.shards():
                    full.update(load_shard(path, mmap=False))
        role = "send" if ctx.rank == 0 else "receive"
        with ctx.phase("broadcast", role=role, how="set_model_state_dict"):
            set_model_state_dict(model, full, options=StateDictOptions(
                full_state_dict=True, broadcast_from_rank0=True, strict=False))
        full.clear()
        require_loaded(model, self.name)
        return model


class FsdpDcp(FsdpStrategy):
    """Each rank reads its slices from a ``torch.distributed.checkpoint`` folder."""

    name = "fsdp-dcp"
    description = ("FSDP2: dcp.load from a DCP checkpoint (saved once beside the "
                   "safetensors files); each rank reads only its slices")
    phases = ("build", "shard", "allocate", "read", "first use", "loaded")
    _node_formulas = ("N × M/N ≈ M", "N × (M/N + T)")

    def prepared(self, folder: Path) -> tuple[Path, str]:
        """What this strategy needs beside a prepared checkpoint ``folder``: the DCP copy,
        and the Python code that saves it (run once, in a fresh process)."""
        dest = Path(folder) / DCP_DIR
        code = (f"from bigviz.strategies.dcp import save_dcp; "
                f"save_dcp({str(Path(folder) / 'checkpoint')!r}, {str(dest)!r})")
        return dest, code

    def _in_flight(self, info: Any, nproc: int) -> tuple[int, str, str]:
        return largest_tensor(info), "T", "one saved item read whole"

    def run_rank(self, ctx: DistContext) -> nn.Module:
        from torch.distributed.checkpoint import state_dict_loader as dcp

        src = ctx.checkpoint.parent / DCP_DIR
        if not (src / ".metadata").is_file():
            raise StrategyError(f"no DCP checkpoint at {src}; the rank program saves it "
                                "before the baseline (save_dcp)")
        model = self.shard(ctx)
        sd = self.state_dict(ctx, model)
        check_dcp(src, sd)
        with ctx.phase("read", how="dcp.load", folder=str(src)):
            dcp.load(sd, checkpoint_id=str(src), process_group=ctx.group)
        require_loaded(model, self.name)
        return model


class FsdpHf(FsdpStrategy):
    """Each rank reads its slices straight from the safetensors files."""

    name = "fsdp-hf"
    description = ("FSDP2: dcp.load with HuggingFaceStorageReader; each rank reads its "
                   "slices straight from the safetensors files")
    phases: ClassVar[tuple[str, ...]] = ("build", "shard", "allocate", "read", "first use",
                                         "loaded")
    formats = ("safetensors",)
    _node_formulas = ("N × M/N ≈ M", "N × M/N + S + T")

    def _in_flight(self, info: Any, nproc: int) -> tuple[int, str, str]:
        extra = math.ceil((largest_shard(info) + largest_tensor(info)) / nproc)
        return (extra, "(S + T)/N", "the rank's slices of the open file (mapped) and one "
                                    "slice read before its copy into the shard")

    def run_rank(self, ctx: DistContext) -> nn.Module:
        from torch.distributed.checkpoint import (  # type: ignore[attr-defined]
            HuggingFaceStorageReader,
        )
        from torch.distributed.checkpoint import state_dict_loader as dcp

        model = self.shard(ctx)
        sd = self.state_dict(ctx, model)
        with ctx.phase("read", how="dcp.load(HuggingFaceStorageReader)",
                       folder=str(ctx.checkpoint)):
            dcp.load(sd, storage_reader=HuggingFaceStorageReader(str(ctx.checkpoint)),
                     process_group=ctx.group)
        require_loaded(model, self.name)
        return model


class FsdpDcpSave(FsdpHf):
    """Saving from FSDP2 ranks: load as ``fsdp-hf``, then every rank ``dcp.save``s its
    shards into a DCP folder of the run's scratch space."""

    name = "fsdp-dcp-save"
    description = ("FSDP2: load as fsdp-hf, then dcp.save from every rank (each writes "
                   "its own shards)")
    phases: ClassVar[tuple[str, ...]] = ("build", "shard", "allocate", "read", "save",
                                         "first use", "loaded")

    def _predict_rank(self, info: Any, rank: int, device_map: DeviceMap, *, nproc: int,
                      per_rank: str) -> Prediction:
        p = super()._predict_rank(info, rank, device_map, nproc=nproc, per_rank=per_rank)
        extra = math.ceil(largest_tensor(info) / nproc)
        high = p.bounds[1]
        return replace(p, high=high + extra, high_formula=p.high_formula + " + T/N",
                       width=p.width + "; one shard serialised while saving",
                       notes=p.notes + "; saving writes the shards as they are")

    def run_rank(self, ctx: DistContext) -> nn.Module:
        import torch.distributed as dist
        from torch.distributed.checkpoint import state_dict_saver

        model = super().run_rank(ctx)
        sd = self.state_dict(ctx, model)
        dest = ctx.scratch.parent / "dcp-save"  # shared by the ranks of this run
        try:
            with ctx.phase("save", how="dcp.save", folder=str(dest)):
                state_dict_saver.save(sd, checkpoint_id=str(dest), process_group=ctx.group)
            dist.barrier(group=ctx.group)  # every rank has written before the folder goes
        finally:
            if ctx.rank == 0:
                shutil.rmtree(dest, ignore_errors=True)
        return model


class FsdpHfSave(FsdpHf):
    """Saving to Hugging Face safetensors from FSDP2 ranks: every rank writes its shards
    (``HuggingFaceStorageWriter(save_distributed=True)``), and rank 0 consolidates them
    into full-tensor safetensors files (``enable_consolidation=True``)."""

    name = "fsdp-hf-save"
    description = ("FSDP2: load as fsdp-hf, then every rank writes its shards as "
                   "safetensors and rank 0 consolidates them into full tensors")
    phases: ClassVar[tuple[str, ...]] = ("build", "shard", "allocate", "read", "save",
                                         "check saved", "first use", "loaded")

    def _predict_rank(self, info: Any, rank: int, device_map: DeviceMap, *, nproc: int,
                      per_rank: str) -> Prediction:
        shard, t = shard_bytes(info, nproc), largest_tensor(info)
        return Prediction(
            ram_peak=3 * shard, formula="3 × M/N", ram_anon=3 * shard, ram_file=0,
            low=2 * shard, high=3 * shard + t, low_formula="2 × M/N",
            high_formula="3 × M/N + T",
            width="the writer serialises the rank's whole file in memory before writing "
                  "it (measured: two more copies of the shards, 3 × M/N); rank 0 then "
                  "consolidates one full tensor at a time",
            above="more than the shards and their serialised file: a full copy was kept",
            below="the shards were written without being serialised in memory",
            notes=f"rank {rank}: M/N = {shard} bytes; load as fsdp-hf (M/N + (S + T)/N), "
                  "then HuggingFaceStorageWriter builds each file in memory")

    def run_rank(self, ctx: DistContext) -> nn.Module:
        import torch.distributed as dist
        from torch.distributed.checkpoint import state_dict_saver
        from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageWriter

        model = super().run_rank(ctx)
        sd = self.state_dict(ctx, model)
        dest = ctx.scratch.parent / "hf-save"  # shared by the ranks of this run
        try:
            with ctx.phase("save", how="dcp.save(HuggingFaceStorageWriter, consolidated)",
                           folder=str(dest)):
                writer = HuggingFaceStorageWriter(str(dest), save_distributed=True,
                                                  enable_consolidation=True)
                state_dict_saver.save(sd, storage_writer=writer, process_group=ctx.group)
            dist.barrier(group=ctx.group)
            if ctx.rank == 0:
                with ctx.phase("check saved", what="consolidated files' checksums, read "
                                                   "in a fresh interpreter"):
                    self._check(ctx, dest)
            dist.barrier(group=ctx.group)
        finally:
            if ctx.rank == 0:
                shutil.rmtree(dest, ignore_errors=True)
        return model

    @staticmethod
    def _check(ctx: DistContext, dest: Path) -> None:
        import json

        expected = json.loads((ctx.checkpoint.parent / "checksums.json").read_text())
        got = saved_checksums(dest)
        # the files' own names (a tied weight is stored once, under one of its names)
        bad = [k for k in ctx.info.tensors if got.get(k) != list(expected.get(k, []))]
        bad += sorted(set(got) - set(ctx.info.tensors))
        if bad:
            raise StrategyError(f"the consolidated safetensors in {dest} differ from the "
                                f"checkpoint in {len(bad)} tensors (e.g. {bad[:3]})")
