"""``dispatch``: meta build + a device map (cpu / cuda:N / disk offload), shard by shard.

Automatic maps (``"auto"``, ``"balanced"``, ``"sequential"``) come from accelerate's
``get_balanced_memory`` / ``infer_auto_device_map``; weights mapped to ``"disk"`` are
written as accelerate memmap files into the run's scratch folder, and accelerate's
``dispatch_model`` attaches the hooks that move them at forward time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bigviz.data.result import Prediction
from bigviz.models import NO_SPLIT, build_model
from bigviz.strategies.base import RunContext, Strategy
from bigviz.strategies.devices import (
    DeviceMap,
    device_of,
    module_sizes,
    placement_bytes,
    resolve_device_map,
)
from bigviz.strategies.weights import largest_shard, largest_tensor, load_shard, model_size, tie

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Dispatch", "aliased_bytes", "largest_tensor", "predict_placed"]


def aliased_bytes(info: Any) -> int:
    """A: bytes of the names the checkpoint stores once for several (tied weights such as
    ``lm_head`` = ``wte``): a loader that treats them as missing allocates them again."""
    tensors = getattr(info, "tensors", {}) or {}
    return sum(int(tensors[stored].nbytes)
               for stored in (getattr(info, "aliases", {}) or {}).values() if stored in tensors)


def predict_placed(
    info: Any, placement: Mapping[str, int], *, mapped: bool, name: str
) -> Prediction:
    """Prediction for a device-mapped load by bigviz's ``dispatch``: the CPU share C stays
    in RAM, the rest passes through RAM one shard at a time (S in transit), and weights
    offloaded to disk are written, then read back at first use, through a file mapping
    of one weight at a time (up to T file-backed). Each GPU holds its share.
    ``mapped``: the CPU share is mapped from the checkpoint (file-backed), not read."""
    m, s, t = model_size(info), largest_shard(info), largest_tensor(info)
    cpu = int(placement.get("cpu", 0))
    disk = int(placement.get("disk", 0))
    vram = {d: int(b) for d, b in placement.items() if d.startswith("cuda")}
    transit = s if cpu < m else 0
    mapping = t if disk else 0
    terms = f"C = {cpu} bytes mapped to cpu of M = {m}; S = {s}; T = {t}; disk {disk}"
    if mapped:
        formula = "C (file-backed) + S in transit" if transit else "M, file-backed"
        return Prediction(
            ram_peak=cpu + transit, formula=formula, ram_anon=transit, ram_file=cpu,
            vram=vram, notes=terms, low=cpu, high=cpu + transit + mapping,
            low_formula="C (file-backed)" if transit else "M, file-backed",
            high_formula=("C + S" + (" + T" if mapping else "")) if transit else "",
            width="mapped pages count once touched; the shard in transit is not always "
                  "resident at once" if transit else "one value: the mapped weights, once",
            above="anonymous copies of mapped weights (something materialised them)",
            below="mapped pages never touched: first use did not read every weight",
        )
    formula = "C + S (C = bytes mapped to cpu)" if transit else "M"
    return Prediction(
        ram_peak=cpu + transit, formula=formula, ram_anon=cpu + transit, ram_file=0,
        vram=vram,
        notes=f"{terms} ({name}: GPU and disk shares pass through one shard in RAM)",
        low=max(cpu, transit) if transit else cpu, high=cpu + transit + mapping,
        low_formula="max(C, S)" if transit else "M",
        high_formula=("C + S + T" if mapping else "C + S") if transit else "",
        width=("shards are read in order, so the last one in transit may find most of C "
               "not yet loaded (at least the larger of C and S is resident)"
               + ("; offloaded weights are written, and read back at first use, through a "
                  "file mapping of one weight at a time: up to T file-backed" if mapping
                  else "")
               if transit else "one value: each weight is read once, into its final place"),
        above="more than one shard in transit, or offloaded weights kept in RAM",
        below="less than the CPU share: weights left on meta, or the map put fewer on cpu",
    )


def placement_for(info: Any, device_map: DeviceMap,
                  max_memory: Mapping[int | str, int] | None, model: Any = None,
                  dtype: str | None = None, *,
                  placement: Mapping[str, int] | None = None) -> dict[str, int]:
    """Bytes per device for a device map. Named single-device maps need no model;
    automatic maps need the (meta) model to run accelerate's planner. A ``placement``
    already planned (by the runner, with the real model) is used as it is."""
    if placement:
        return dict(placement)
    m = model_size(info)
    if isinstance(device_map, str) and device_map not in ("auto", "balanced", "sequential"):
        dev = "cuda:0" if device_map == "cuda" else device_map
        return {dev: m}
    sizes = dict(getattr(info, "module_sizes", {}) or {})
    if model is not None:
        resolved = resolve_device_map(model, device_map, max_memory=max_memory, dtype=dtype,
                                      no_split=NO_SPLIT)
        sizes = sizes or module_sizes(model, dtype)
    elif isinstance(device_map, Mapping):
        resolved = {k: ("cuda:" + str(v) if isinstance(v, int) else str(v))
                    for k, v in device_map.items()}
    else:
        return {"cpu": m}
    return placement_bytes(resolved, sizes)


class Dispatch(Strategy):
    """Meta build, plan a device map, stream shards to their devices, attach hooks."""

    name = "dispatch"
    description = "build on meta, place each shard's weights per device_map (cpu/cuda/disk)"
    phases = ("build", "plan", "load shard i/n", "dispatch", "first use")
    device_maps = True

    def predict(
        self,
        info: Any,
        device_map: DeviceMap = "cpu",
        *,
        max_memory: Mapping[int | str, int] | None = None,
        placement: Mapping[str, int] | None = None,
        nproc: int = 1,
        per_rank: str = "naive",
    ) -> Prediction:
        place = placement_for(info, device_map, max_memory, placement=placement)
        return predict_placed(info, place, mapped=False, name=self.name)

    def run(self, ctx: RunContext) -> nn.Module:
        from accelerate import dispatch_model
        from accelerate.utils import offload_weight, save_offload_index, set_module_tensor_to_device

        with ctx.phase("build", device="meta"):
            model = build_model(ctx.model, dtype=ctx.dtype, factory=ctx.factory,
                                device="meta")
        with ctx.phase("plan"):
            dmap = resolve_device_map(model, ctx.device_map, max_memory=ctx.max_memory,
                                      dtype=ctx.dtype, no_split=NO_SPLIT)
            ctx.notes["device_map"] = dmap
            ctx.notes["placement"] = placement_bytes(dmap, module_sizes(model, ctx.dtype))
        offload_dir = ctx.scratch / "offload"
        index: dict[str, Any] = {}
        shards = ctx.shards()
        aliases = dict(getattr(ctx.info, "aliases", {}) or {})
        for i, path in enumerate(shards, 1):
            with ctx.phase(f"load shard {i}/{len(shards)}", file=path.name):
                sd = load_shard(path, mmap=False)
                for key in list(sd):
                    value = sd.pop(key)
                    names = [key] + [a for a, stored in aliases.items() if stored == key]
                    for name in names:
                        dev = device_of(name, dmap)
                        if dev == "disk":
                            offload_dir.mkdir(parents=True, exist_ok=True)
                            index = offload_weight(value, name, offload_dir, index=index)
                        else:
                            set_module_tensor_to_device(model, name, dev, value=value)
                    del value
                del sd
        with ctx.phase("dispatch"):
            if index:
                save_offload_index(index, offload_dir)
            devices = set(dmap.values())
            if devices != {"cpu"}:
                # a str, not torch.device: accelerate compares main_device == "cpu"
                # to decide whether CPU weights are kept in place or offloaded too
                main = next((d for d in dmap.values() if d not in ("cpu", "disk")), "cpu")
                model = dispatch_model(
                    model, device_map=dmap, main_device=main,
                    offload_dir=str(offload_dir) if index else None,
                    offload_index=index or None, force_hooks=True,
                )
            else:
                tie(model)
        return model
