"""The layouts a model can be loaded from, and the candidates to predict on them.

A zoo spec (``gpt:400MB``) is never saved: its layout per shard size is the split plan
(:func:`bigviz.plan_shards`) of the model built on the meta device, exactly the files
the runner would write. A checkpoint folder or ``hf:`` id is read as saved
(:func:`bigviz.inspect_checkpoint`: the real tensors, dtypes, tied weights), and other
shard sizes (resharding) are planned from its tensor sizes.

Example:
    >>> default_shard_sizes(400_000_000)
    [20000000, 100000000, 5000000000]
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bigviz.advisor._rank import Candidate
from bigviz.advisor._timing import estimate

if TYPE_CHECKING:
    from torch import nn

    from bigviz.checkpoint import CheckpointInfo

__all__ = ["Layout", "candidates", "default_shard_sizes", "layouts"]

#: nice shard sizes (decimal bytes) the default set is chosen from
_LADDER = [m * 10**e for e in range(6, 11) for m in (1, 2, 5)]
#: huggingface_hub's default max shard size: one file for most models
HUB_DEFAULT = 5_000_000_000
#: strategies that are not ways to load
_NOT_LOADERS = ("save",)


def default_shard_sizes(model_bytes: int) -> list[int]:
    """Three shard sizes for a model that is not saved yet: about M/16 and M/4 (from
    1/2/5 × 10^k bytes), and huggingface_hub's default (5 GB)."""
    picks: list[int] = []
    for target in (model_bytes / 16, model_bytes / 4):
        near = min(_LADDER, key=lambda s: abs(s - target))
        if near not in picks:
            picks.append(near)
    return sorted({*picks, HUB_DEFAULT})


@dataclass
class Layout:
    """One set of shard files: ``info`` as strategies' ``predict`` reads it, and the max
    shard size that makes it (``None``: as saved)."""

    info: Any
    shard_size: int | None


def _planned_info(plan: Any, fmt: str, module_sizes: dict[str, int],
                  tensors: Mapping[str, Any], aliases: dict[str, str]) -> CheckpointInfo:
    """A CheckpointInfo of files that are planned, not written: what ``predict`` reads
    (M, the shards' bytes, the largest tensor, tied names, per-module sizes)."""
    from bigviz.checkpoint import CheckpointInfo, ShardInfo, TensorInfo

    names = plan.filenames(fmt)
    files = [ShardInfo(name=n, bytes=s.bytes, file_size=s.bytes, n_keys=len(s.keys))
             for n, s in zip(names, plan.shards, strict=True)]
    where = {k: names[i] for i, s in enumerate(plan.shards) for k in s.keys}
    infos = {k: TensorInfo(shard=where[k], dtype=t.dtype, shape=list(t.shape),
                           nbytes=int(t.nbytes)) for k, t in tensors.items() if k in where}
    return CheckpointInfo(path="", format=fmt, files=files,
                          index_file=None if len(files) <= 1 else f"{fmt}.index.json",
                          total_size=plan.total_size, n_tensors=len(infos),
                          largest_shard=plan.largest_shard, dtypes={}, tensors=infos,
                          module_sizes=module_sizes, aliases=dict(aliases),
                          notes=["planned, not saved"])


def _skeleton_tensors(model: nn.Module) -> tuple[dict[str, Any], dict[str, str]]:
    """The state dict's tensors as (dtype name, shape, bytes), and the tied names each
    stored under the first name holding the same tensor (as a save stores them)."""
    from types import SimpleNamespace

    first: dict[int, str] = {}
    out: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in first:
            aliases[name] = first[id(t)]
            continue
        first[id(t)] = name
        out[name] = SimpleNamespace(dtype=str(t.dtype).removeprefix("torch."),
                                    shape=tuple(t.shape), nbytes=t.numel() * t.element_size())
    return out, aliases


def module_sizes_of(model: nn.Module, dtype: str | None) -> dict[str, int]:
    """accelerate's per-module sizes (``{}`` without accelerate: no automatic maps)."""
    try:
        from bigviz.strategies.devices import module_sizes

        return module_sizes(model, dtype)
    except ImportError:
        return {}


def layouts(spec: Any, skeleton: nn.Module | None, *, dtype: str | None, fmt: str,
            shard_sizes: Sequence[int] | None) -> list[Layout]:
    """The layouts to advise on: the folder as saved (plus ``shard_sizes`` planned from its
    tensors), or a zoo model's plan for each of ``shard_sizes`` (default set when None)."""
    from bigviz.checkpoint import inspect_checkpoint, plan_shards

    if spec.kind == "folder":
        info = inspect_checkpoint(spec.path or "")
        out = [Layout(info, None)]
        sizes = {k: t.nbytes for k, t in info.tensors.items()}
        for size in shard_sizes or ():
            out.append(Layout(_planned_info(plan_shards(sizes, size), info.format,
                                            dict(info.module_sizes), info.tensors,
                                            dict(info.aliases)), size))
        return out
    assert skeleton is not None
    msizes = module_sizes_of(skeleton, dtype)
    tensors, aliases = _skeleton_tensors(skeleton)
    total = plan_shards(skeleton, 2**62).total_size
    return [Layout(_planned_info(plan_shards(skeleton, size), fmt, msizes, tensors, aliases),
                   size)
            for size in (shard_sizes or default_shard_sizes(total))]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # accelerate logs "Device 0 is not available" for every planned GPU on a machine
    # without one: planning for a GPU elsewhere is the point here
    log = logging.getLogger("accelerate")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        log.setLevel(level)


def plan_placement(skeleton: nn.Module | None, device_map: str, max_memory: dict[Any, int],
                   dtype: str | None, sizes: Mapping[str, int]) -> dict[str, int]:
    """Bytes per device of an automatic map, from accelerate's own planner on the meta
    skeleton (what the ``dispatch`` strategy will do in its worker)."""
    from bigviz.models import NO_SPLIT
    from bigviz.strategies.devices import placement_bytes, resolve_device_map

    if skeleton is None or not sizes:
        return {}
    with _quiet():
        dmap = resolve_device_map(skeleton, device_map, max_memory=max_memory, dtype=dtype,
                                  no_split=NO_SPLIT)
    return placement_bytes(dmap, sizes)


def _maps(vram: Mapping[str, int], cpu_cap: int,
          largest: int) -> list[tuple[str, dict[Any, int] | None]]:
    """(device map, caps) pairs: cpu; each GPU alone; auto/balanced over the GPUs (CPU
    capped so the rest goes to disk); with only a CPU, auto with a CPU cap (disk)."""
    maps: list[tuple[str, dict[Any, int] | None]] = [("cpu", None)]
    gpus = {int(d.split(":")[1]): cap for d, cap in sorted(vram.items())}
    for i in gpus:
        maps.append((f"cuda:{i}", None))
    caps: dict[Any, int] = {**gpus, "cpu": max(cpu_cap, 1)}
    if gpus:
        maps.append(("auto", caps))
        if len(gpus) > 1:
            maps.append(("balanced", caps))
    elif largest:
        # disk offload is always planned: without --disk it is shown as "needs --disk"
        maps.append(("auto", caps))
    return maps


def candidates(layout: Layout, skeleton: nn.Module | None, *, strategies: Sequence[str],
               model: Any, dtype: str | None, vram: Mapping[str, int],
               cpu_room: int) -> list[Candidate]:
    """Every strategy × device map this layout can run with, predicted by the
    strategy's own ``predict`` (with accelerate's placement for automatic maps).

    ``cpu_room``: RAM left for weights (budget − baseline − margin); an automatic map's
    CPU cap is that minus two shards in transit (the one read, the one being placed).
    """
    import bigviz.strategies as registry

    info = layout.info
    out: list[Candidate] = []
    largest = int(info.largest_shard)
    sizes = dict(info.module_sizes or {})
    for dm, caps in _maps(vram, cpu_room - 2 * largest, largest):
        placement: dict[str, int] = {}
        if caps is not None:
            placement = plan_placement(skeleton, dm, caps, dtype, sizes)
            if not placement:
                continue
        for name in strategies:
            strat = registry.get(name)
            if strat.unavailable() or strat.incompatible(
                    model=model, format=info.format, device_map=dm, dtype=dtype or "float32"):
                continue
            if caps is not None and "disk" in placement and name != "dispatch":
                continue  # the libraries' own loaders fail on disk offload of safetensors
            pred = strat.predict(info, dm, max_memory=caps, placement=placement or None)
            place = placement or {("cuda:0" if dm == "cuda" else dm): int(info.total_size)}
            t = estimate(name, model_bytes=int(info.total_size), placement=place,
                         mapped=info.format == "safetensors")
            out.append(Candidate(
                strategy=name, device_map=dm,
                max_memory=None if caps is None else {str(k): int(v) for k, v in caps.items()},
                shard_size=layout.shard_size, largest_shard=largest,
                ram_peak=int(pred.ram_peak), formula=pred.formula, ram_low=pred.bounds[0],
                ram_high=pred.bounds[1], range_formula=pred.range_formula,
                ram_anon=pred.ram_anon,
                ram_file=pred.ram_file, vram=dict(pred.vram), placement=dict(place),
                seconds=None if t.low is None or t.high is None else (t.low, t.high),
                time_formula=t.formula, lazy=t.lazy, notes=pred.notes))
    return out


def loaders(strategies: Sequence[str] | None) -> list[str]:
    """The strategies to consider: the given ones, or every single-process loader."""
    import bigviz.strategies as registry

    if strategies:
        return [registry.get(s, kind="single").name for s in strategies]
    return [n for n in registry.names() if n not in _NOT_LOADERS]
