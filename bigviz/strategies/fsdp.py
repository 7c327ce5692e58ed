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
"""

from __future__ import annotations

import math
import shutil
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bigviz._errors import StrategyError
from bigviz.data.result import Prediction
from bigviz.models import build_model
from bigviz.strategies.devices import DeviceMap
from bigviz.strategies.ranks import DistContext, DistStrategy
from bigviz.strategies.weights import largest_shard, load_shard, model_size, require_loaded

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

#: the DCP copy of a prepared checkpoint, beside its ``checkpoint/`` folder
DCP_DIR = "dcp"

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


def _largest_tensor(info: Any) -> int:
    sizes = [int(t.nbytes) for t in getattr(info, "tensors", {}).values()]
    return max(sizes) if sizes else 0


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

    entries: list[tuple[str, Any]] = []
    for mod_name, module in model.named_modules(remove_duplicate=False):
        skip: set[str] = set(getattr(module, "_non_persistent_buffers_set", set()))
        own: list[tuple[str, Any]] = list(module.named_parameters(recurse=False))
        own += [(n, b) for n, b in module.named_buffers(recurse=False) if n not in skip]
        entries += [(f"{mod_name}.{n}" if mod_name else n, t) for n, t in own]
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


# -- the DCP copy of a checkpoint -------------------------------------------------


def save_dcp(checkpoint: str | Path, dest: str | Path) -> Path:
    """Save a safetensors/.bin checkpoint folder as a ``torch.distributed.checkpoint``
    folder ``dest`` (one process, no process group), once: an existing ``dest`` is kept.

    Run it in a fresh process (it holds the whole state dict): the rank program does so
    before its baseline for ``fsdp-dcp``. Written to a temporary folder, then renamed.

    Example:
        >>> # save_dcp(folder / "checkpoint", folder / "dcp")
    """

    from torch.distributed.checkpoint import state_dict_saver

    from bigviz.checkpoint import inspect_checkpoint

    dest = Path(dest)
    if dest.is_dir():
        return dest
    info = inspect_checkpoint(Path(checkpoint))
    sd: dict[str, Any] = {}
    for path in info.shard_paths():
        sd.update(load_shard(Path(path), mmap=True))
    tmp = dest.with_name(f".{dest.name}-{uuid.uuid4().hex[:8]}")
    try:
        with warnings.catch_warnings():  # "assuming ... a single process": it is one
            warnings.filterwarnings("ignore", message=".*single process", category=UserWarning)
            state_dict_saver.save(sd, checkpoint_id=str(tmp), no_dist=True)
        try:
            tmp.rename(dest)
        except OSError:  # another process saved it first
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def check_dcp(folder: Path, sd: Mapping[str, Any]) -> None:
    """Raise StrategyError unless the DCP checkpoint ``folder`` holds every weight of
    ``sd`` with its shape and dtype (read from its ``.metadata`` only).

    Example:
        >>> # check_dcp(folder / "dcp", fsdp.state_dict(ctx, model))
    """
    from torch.distributed.checkpoint.filesystem import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    meta = FileSystemReader(str(folder)).read_metadata().state_dict_metadata
    missing = [k for k in sd if k not in meta]
    wrong = []
    for key, t in sd.items():
        md = meta.get(key)
        if isinstance(md, TensorStorageMetadata) and (
                tuple(md.size) != tuple(t.shape) or md.properties.dtype != t.dtype):
            wrong.append(f"{key} {tuple(md.size)} {md.properties.dtype} "
                         f"(model: {tuple(t.shape)} {t.dtype})")
    if missing or wrong:
        what = (f"lacks {len(missing)} of the model's weights (e.g. {missing[:3]})"
                if missing else f"holds other shapes or dtypes: {wrong[:2]}")
        raise StrategyError(f"the DCP checkpoint {folder} {what}; it was saved from another "
                            "model: delete the folder and it is saved again")


# -- the strategies ---------------------------------------------------------------


class FsdpStrategy(DistStrategy):
    """Meta build, ``fully_shard`` on a CPU (or GPU) mesh of every rank, then fill shards."""

    #: phases every FSDP strategy records before filling its shards
    _common = ("build", "shard", "allocate")

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
        for mod_name, module in model.named_modules(remove_duplicate=False):
            skip: set[str] = set(getattr(module, "_non_persistent_buffers_set", set()))
            own: list[tuple[str, Any]] = list(module.named_parameters(recurse=False))
            own += [(n, b) for n, b in module.named_buffers(recurse=False) if n not in skip]
            for n, t in own:
                names.setdefault(id(t), []).append(f"{mod_name}.{n}" if mod_name else n)
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

    def _per_rank(self, info: Any, rank: int, nproc: int, *, extra: int, extra_formula: str,
                  what: str) -> Prediction:
        shard = shard_bytes(info, nproc)
        return Prediction(
            ram_peak=shard, formula="M/N", ram_anon=shard, ram_file=0,
            low=shard, high=shard + extra, low_formula="M/N",
            high_formula=f"M/N + {extra_formula}",
            width=f"{what} in flight beside the shards",
            above=f"more than one rank's shard plus {extra_formula}: a full copy was kept",
            below="the rank did not hold its whole shard",
            notes=f"rank {rank}: M/N = {shard} bytes (rows padded to ceil(rows / {nproc}))")

    def _node(self, parts: list[Prediction], formula: str, high_formula: str,
              nproc: int) -> Prediction:
        low = sum(p.bounds[0] for p in parts)
        high = sum(p.bounds[1] for p in parts)
        return Prediction(
            ram_peak=sum(p.ram_peak for p in parts), formula=formula,
            ram_anon=sum(p.ram_peak for p in parts), ram_file=0,
            low=low, high=high, low_formula=formula, high_formula=high_formula,
            width="read buffers in flight on each rank",
            above="more than the shards and read buffers: a full copy was kept",
            below="a rank did not hold its shard",
            notes=f"N = {nproc}; " + "; ".join(f"rank {r}: {p.formula}"
                                              for r, p in enumerate(parts[:2]))
                  + ("; …" if nproc > 2 else ""))


class FsdpBroadcast(FsdpStrategy):
    """Rank 0 reads the full state dict; ``set_model_state_dict`` broadcasts it."""

    name = "fsdp-broadcast"
    description = ("FSDP2: rank 0 reads the full state dict, set_model_state_dict("
                   "broadcast_from_rank0=True) sends every tensor, each rank keeps its shard")
    phases = ("build", "shard", "allocate", "read", "broadcast", "first use", "loaded")

    def predict_rank(
        self, info: Any, rank: int, device_map: DeviceMap = "cpu", *,
        max_memory: Mapping[int | str, int] | None = None,
        placement: Mapping[str, int] | None = None, nproc: int = 2, per_rank: str = "naive",
    ) -> Prediction:
        m, t = model_size(info), _largest_tensor(info)
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
        return self._per_rank(info, rank, nproc, extra=2 * t, extra_formula="2 × T",
                              what="one full broadcast tensor (and gloo's staging copy)")

    def predict(
        self, info: Any, device_map: DeviceMap = "cpu", *,
        max_memory: Mapping[int | str, int] | None = None,
        placement: Mapping[str, int] | None = None, nproc: int = 2, per_rank: str = "naive",
    ) -> Prediction:
        parts = [self.predict_rank(info, r, nproc=nproc) for r in range(nproc)]
        return self._node(parts, "M + N × M/N", "M + N × M/N + (2N − 1) × T", nproc)

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

    def prepared(self, folder: Path) -> tuple[Path, str]:
        """What this strategy needs beside a prepared checkpoint ``folder``: the DCP copy,
        and the Python code that saves it (run once, in a fresh process)."""
        dest = Path(folder) / DCP_DIR
        code = (f"from bigviz.strategies.fsdp import save_dcp; "
                f"save_dcp({str(Path(folder) / 'checkpoint')!r}, {str(dest)!r})")
        return dest, code

    def predict_rank(
        self, info: Any, rank: int, device_map: DeviceMap = "cpu", *,
        max_memory: Mapping[int | str, int] | None = None,
        placement: Mapping[str, int] | None = None, nproc: int = 2, per_rank: str = "naive",
    ) -> Prediction:
        return self._per_rank(info, rank, nproc, extra=_largest_tensor(info),
                              extra_formula="T", what="one saved item read whole")

    def predict(
        self, info: Any, device_map: DeviceMap = "cpu", *,
        max_memory: Mapping[int | str, int] | None = None,
        placement: Mapping[str, int] | None = None, nproc: int = 2, per_rank: str = "naive",
    ) -> Prediction:
        parts = [self.predict_rank(info, r, nproc=nproc) for r in range(nproc)]
        return self._node(parts, "N × M/N ≈ M", "N × (M/N + T)", nproc)

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

    def predict_rank(
        self, info: Any, rank: int, device_map: DeviceMap = "cpu", *,
        max_memory: Mapping[int | str, int] | None = None,
        placement: Mapping[str, int] | None = None, nproc: int = 2, per_rank: str = "naive",
    ) -> Prediction:
        extra = math.ceil((largest_shard(info) + _largest_tensor(info)) / nproc)
        return self._per_rank(info, rank, nproc, extra=extra, extra_formula="(S + T)/N",
                              what="the rank's slices of the open file (mapped) and one "
                                   "slice read before its copy into the shard")

    def predict(
        self, info: Any, device_map: DeviceMap = "cpu", *,
        max_memory: Mapping[int | str, int] | None = None,
        placement: Mapping[str, int] | None = None, nproc: int = 2, per_rank: str = "naive",
    ) -> Prediction:
        parts = [self.predict_rank(info, r, nproc=nproc) for r in range(nproc)]
        return self._node(parts, "N × M/N ≈ M", "N × M/N + S + T", nproc)

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

    def predict_rank(
        self, info: Any, rank: int, device_map: DeviceMap = "cpu", *,
        max_memory: Mapping[int | str, int] | None = None,
        placement: Mapping[str, int] | None = None, nproc: int = 2, per_rank: str = "naive",
    ) -> Prediction:
        p = super().predict_rank(info, rank, nproc=nproc)
        extra = math.ceil(_largest_tensor(info) / nproc)
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


_SAVED_SUMS = """
import json, sys
from pathlib import Path
from safetensors import safe_open
from bigviz.strategies.weights import checksum
out = {}
for p in sorted(Path(sys.argv[1]).glob("*.safetensors")):
    with safe_open(str(p), framework="pt") as f:
        for k in f.keys():
            out[k] = checksum(f.get_tensor(k))
print(json.dumps(out))
"""


def saved_checksums(folder: Path) -> dict[str, list[int]]:
    """Checksums of every tensor of the safetensors files in ``folder``, computed in a
    fresh interpreter (no rank's memory holds the files).

    Raises:
        StrategyError: the files could not be read.

    Example:
        >>> # saved_checksums(Path("out/consolidated"))["lm_head.weight"]
    """
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", _SAVED_SUMS, str(folder)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StrategyError(f"reading back the consolidated files in {folder} failed: "
                            f"{done.stderr.strip()[-1000:]}")
    sums: dict[str, list[int]] = json.loads(done.stdout)
    return sums


class FsdpHfSave(FsdpHf):
    """Saving to Hugging Face safetensors from FSDP2 ranks: every rank writes its shards
    (``HuggingFaceStorageWriter(save_distributed=True)``), and rank 0 consolidates them
    into full-tensor safetensors files (``enable_consolidation=True``)."""

    name = "fsdp-hf-save"
    description = ("FSDP2: load as fsdp-hf, then every rank writes its shards as "
                   "safetensors and rank 0 consolidates them into full tensors")
    phases: ClassVar[tuple[str, ...]] = ("build", "shard", "allocate", "read", "save",
                                         "check saved", "first use", "loaded")

    def predict_rank(
        self, info: Any, rank: int, device_map: DeviceMap = "cpu", *,
        max_memory: Mapping[int | str, int] | None = None,
        placement: Mapping[str, int] | None = None, nproc: int = 2, per_rank: str = "naive",
    ) -> Prediction:
        shard, t = shard_bytes(info, nproc), _largest_tensor(info)
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


# -- consolidating a DCP checkpoint into Hugging Face safetensors -------------------

#: the DCP copy of a prepared checkpoint in DCP's safetensors layout (the input of
#: ``dcp-consolidate``), beside its ``checkpoint/`` folder
DCP_HF_DIR = "dcp-hf"


def _output_files(info: Any) -> list[str]:
    """The checkpoint's own file names, in order: the consolidated files are named so."""
    return sorted({str(t.shard) for t in getattr(info, "tensors", {}).values()})


def _rank_files(info: Any, rank: int, nproc: int) -> list[str]:
    """The output files rank ``rank`` writes: file ``i`` goes to rank ``i % N`` (as
    ``consolidate_safetensors_files_on_every_rank`` assigns them)."""
    return [f for i, f in enumerate(_output_files(info)) if i % nproc == rank]


def save_dcp_hf(checkpoint: str | Path, dest: str | Path) -> Path:
    """Save a checkpoint folder as a DCP checkpoint in DCP's safetensors layout
    (``HuggingFaceStorageWriter(save_distributed=True)``: files with DCP's sharding
    metadata, what ranks write before consolidation), one process, once: an existing
    ``dest`` is kept. Tensors keep the checkpoint's file split.

    Example:
        >>> # save_dcp_hf(folder / "checkpoint", folder / "dcp-hf")
    """
    from torch.distributed.checkpoint import state_dict_saver
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageWriter

    from bigviz.checkpoint import inspect_checkpoint

    dest = Path(dest)
    if dest.is_dir():
        return dest
    info = inspect_checkpoint(Path(checkpoint))
    files = _output_files(info)
    index = {k: files.index(str(t.shard)) + 1 for k, t in info.tensors.items()}
    sd: dict[str, Any] = {}
    for path in info.shard_paths():
        sd.update(load_shard(Path(path), mmap=True))
    tmp = dest.with_name(f".{dest.name}-{uuid.uuid4().hex[:8]}")
    try:
        writer = HuggingFaceStorageWriter(str(tmp), save_distributed=True,
                                          fqn_to_index_mapping=index)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*single process", category=UserWarning)
            state_dict_saver.save(sd, storage_writer=writer, no_dist=True)
        try:
            tmp.rename(dest)
        except OSError:  # another process saved it first
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def read_dcp_hf_metadata(folder: Path) -> dict[str, tuple[list[int], str]]:
    """``{name: (full shape, dtype name)}`` of every tensor in a DCP safetensors
    checkpoint ``folder``, from the files' headers and DCP's sharding metadata (the
    offsets of each saved slice), as torch's consolidation reads them.

    Raises:
        StrategyError: no safetensors file, or a file without DCP's metadata.

    Example:
        >>> # read_dcp_hf_metadata(folder / "dcp-hf")["lm_head.weight"]
        >>> # ([1024, 256], 'float32')
    """
    from safetensors.torch import _getdtype
    from torch.distributed.checkpoint._hf_utils import (
        DEFAULT_EXTRA_METADATA_KEY,
        DTYPE_KEY,
        SAVED_OFFSETS_KEY,
        SHAPE_KEY,
        _get_dcp_custom_metadata,
        _get_safetensors_file_metadata,
    )

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise StrategyError(f"no DCP safetensors checkpoint at {folder}; the rank program "
                            "saves it before the baseline (save_dcp_hf)")
    out: dict[str, tuple[list[int], str]] = {}
    for path in files:
        with open(path, "rb") as f:
            header, _ = _get_safetensors_file_metadata(f)
        custom = _get_dcp_custom_metadata(header)
        if not custom:
            raise StrategyError(f"{path} has no DCP sharding metadata; it was not saved with "
                                "HuggingFaceStorageWriter(save_distributed=True)")
        for key, val in header.items():
            if key == DEFAULT_EXTRA_METADATA_KEY:
                continue
            offsets = custom[key][SAVED_OFFSETS_KEY]
            ends = [int(s) + int(o) for s, o in zip(val[SHAPE_KEY], offsets, strict=True)]
            dtype = str(_getdtype(val[DTYPE_KEY])).removeprefix("torch.")
            if key in out:
                ends = [max(a, b) for a, b in zip(out[key][0], ends, strict=True)]
            out[key] = (ends, dtype)
    return out


def check_dcp_hf(folder: Path, info: Any) -> None:
    """Raise StrategyError unless the DCP safetensors checkpoint ``folder`` holds exactly
    the checkpoint's tensors with their shapes and dtypes."""
    meta = read_dcp_hf_metadata(folder)
    want = {k: (list(t.shape), str(t.dtype)) for k, t in info.tensors.items()}
    missing = sorted(set(want) - set(meta))
    extra = sorted(set(meta) - set(want))
    wrong = [f"{k} {meta[k][0]} {meta[k][1]} (checkpoint: {want[k][0]} {want[k][1]})"
             for k in want if k in meta and meta[k] != want[k]]
    if missing or extra or wrong:
        what = (f"lacks {len(missing)} of the checkpoint's tensors (e.g. {missing[:3]})"
                if missing else f"holds tensors the checkpoint lacks (e.g. {extra[:3]})"
                if extra else f"holds other shapes or dtypes: {wrong[:2]}")
        raise StrategyError(f"the DCP checkpoint {folder} {what}; it was saved from another "
                            "model: delete the folder and it is saved again")


class DcpConsolidate(DistStrategy):
    """Consolidate a DCP checkpoint into full-tensor Hugging Face safetensors files with
    torch's own consolidation (:mod:`torch.distributed.checkpoint._consolidate_hf_safetensors`),
    each rank writing its share of the output files."""

    name = "dcp-consolidate"
    description = ("torch.distributed.checkpoint's consolidation of a DCP safetensors "
                   "checkpoint into full-tensor HF files; file i written by rank i % N")
    phases: ClassVar[tuple[str, ...]] = ("read metadata", "consolidate <file>",
                                         "write index", "first use", "loaded")
    formats = ("safetensors",)

    def warm_up(self, checkpoint: Path) -> None:
        """Import the consolidation code and safetensors (part of the baseline)."""
        import safetensors.torch  # noqa: F401
        import torch.distributed.checkpoint._consolidate_hf_safetensors  # noqa: F401

    def prepared(self, folder: Path) -> tuple[Path, str]:
        """The DCP safetensors copy of the prepared checkpoint ``folder`` (the input), and
        the code that saves it once, in a fresh process."""
        dest = Path(folder) / DCP_HF_DIR
        code = (f"from bigviz.strategies.fsdp import save_dcp_hf; "
                f"save_dcp_hf({str(Path(folder) / 'checkpoint')!r}, {str(dest)!r})")
        return dest, code

    def predict_rank(
        self, info: Any, rank: int, device_map: DeviceMap = "cpu", *,
        max_memory: Mapping[int | str, int] | None = None,
        placement: Mapping[str, int] | None = None, nproc: int = 2, per_rank: str = "naive",
    ) -> Prediction:
        files = set(_rank_files(info, rank, nproc))
        sizes = sorted((int(t.nbytes) for t in info.tensors.values() if t.shard in files),
                       reverse=True)
        t = sizes[0] if sizes else 0
        t2 = sizes[1] if len(sizes) > 1 else 0
        return Prediction(
            ram_peak=2 * t, formula="2 × T", ram_anon=2 * t, ram_file=0,
            low=2 * t, high=2 * t + 3 * t2, low_formula="2 × T",
            high_formula="2 × T + 3 × T₂",
            width="one tensor at a time: its full-size buffer and the item read into it "
                  "(2 T; the DCP copy holds whole tensors); the streaming of the smaller "
                  "tensors peaks at 3 × T₂ (a buffer and item still referenced when the "
                  "next buffer is allocated), which glibc's heap keeps after free; the "
                  "files themselves are read() and write()n, page cache only",
            above="more than two full tensors: a whole file or the state dict was held",
            below="less than a full tensor and its item: the rank wrote no file",
            notes=f"rank {rank}: writes {len(files)} of {len(_output_files(info))} files; "
                  f"T = {t} (its largest tensor), T₂ = {t2} (its second largest)")

    def predict(
        self, info: Any, device_map: DeviceMap = "cpu", *,
        max_memory: Mapping[int | str, int] | None = None,
        placement: Mapping[str, int] | None = None, nproc: int = 2, per_rank: str = "naive",
    ) -> Prediction:
        parts = [self.predict_rank(info, r, nproc=nproc) for r in range(nproc)]
        low = max((p.bounds[0] for p in parts), default=0)
        high = sum(p.bounds[1] for p in parts)
        return Prediction(
            ram_peak=sum(p.ram_peak for p in parts), formula="Σ ranks 2 × T_r",
            ram_anon=sum(p.ram_peak for p in parts), ram_file=0, low=low, high=high,
            low_formula="max 2 × T_r", high_formula="Σ ranks (2 × T_r + 3 × T₂_r)",
            width="the ranks stream their own files; their peaks need not coincide",
            above="more than every rank's two largest tensors: a file was held whole",
            below="no rank held a full tensor",
            notes=f"N = {nproc}; independent of M: consolidation streams tensor by tensor")

    def run_rank(self, ctx: DistContext) -> nn.Module:
        import json

        import torch.distributed as dist
        from torch import nn
        from torch.distributed.checkpoint._consolidate_hf_safetensors import (
            _consolidate_safetensors_files,
        )

        src = ctx.checkpoint.parent / DCP_HF_DIR
        dest = self._dest(ctx)
        try:
            with ctx.phase("read metadata", folder=str(src), how="safetensors headers and "
                           "DCP sharding metadata"):
                check_dcp_hf(src, ctx.info)
            if ctx.rank == 0:
                dest.mkdir(parents=True, exist_ok=True)
            dist.barrier(group=ctx.group)
            for name in _rank_files(ctx.info, ctx.rank, ctx.world_size):
                keys = [k for k, t in ctx.info.tensors.items() if t.shard == name]
                with ctx.phase(f"consolidate {name}", tensors=len(keys),
                               how="_consolidate_safetensors_files"):
                    _consolidate_safetensors_files(str(src), str(dest),
                                                   dict.fromkeys(keys, name), 1)
            dist.barrier(group=ctx.group)  # every file is written
            if ctx.rank == 0:
                with ctx.phase("write index", file="model.safetensors.index.json"):
                    index = {"metadata": {"total_size": model_size(ctx.info)},
                             "weight_map": {k: str(t.shard)
                                            for k, t in sorted(ctx.info.tensors.items())}}
                    (dest / "model.safetensors.index.json").write_text(
                        json.dumps(index, indent=2), encoding="utf-8")
        except BaseException:
            if ctx.rank == 0:
                shutil.rmtree(dest, ignore_errors=True)
            raise
        return nn.Module()  # nothing is loaded: the files are the result

    @staticmethod
    def _dest(ctx: DistContext) -> Path:
        return ctx.scratch.parent / "consolidated"  # shared by the ranks of this run

    def rank_first_use(self, ctx: DistContext, model: nn.Module) -> dict[str, list[int]]:
        """Checksums of the consolidated files, read by rank 0 in a fresh interpreter and
        sent to every rank (a collective); the files are removed afterwards."""
        import torch.distributed as dist

        dest = self._dest(ctx)
        box: list[Any] = [None]
        try:
            if ctx.rank == 0:
                try:
                    box[0] = saved_checksums(dest)
                except StrategyError as exc:
                    box[0] = str(exc)
            dist.broadcast_object_list(box, src=0, group=ctx.group)
        finally:
            if ctx.rank == 0:
                shutil.rmtree(dest, ignore_errors=True)
        if isinstance(box[0], str):
            raise StrategyError(box[0])
        sums: dict[str, list[int]] = box[0]
        # a tied weight is stored once; report it under each of its names (meta build)
        meta = build_model(ctx.model, dtype=ctx.dtype, factory=ctx.factory, device="meta")
        aliases: dict[int, list[str]] = {}
        for key, t in meta.state_dict(keep_vars=True).items():
            aliases.setdefault(id(t), []).append(key)
        for names in aliases.values():
            found = [n for n in names if n in sums]
            for n in names:
                if found and n not in sums:
                    sums[n] = sums[found[0]]
        return sums
