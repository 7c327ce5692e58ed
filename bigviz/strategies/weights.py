"""What every strategy does to weights: read a shard, assign it onto a meta model, check
nothing is left unloaded, and the **first use** pass whose checksums prove the weights
equal the checkpoint.

Example:
    >>> import torch
    >>> checksum(torch.zeros(2, dtype=torch.float32))
    [8, 0]
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigviz._errors import StrategyError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "assign_shard",
    "checksum",
    "compare_checksums",
    "first_use",
    "iter_weights",
    "largest_shard",
    "largest_tensor",
    "load_shard",
    "meta_leftovers",
    "model_size",
    "require_loaded",
    "tie",
]


def largest_shard(info: Any) -> int:
    """Bytes of the largest shard file of a ``CheckpointInfo``."""
    sizes = [int(f.bytes) for f in getattr(info, "files", [])]
    return max(sizes) if sizes else int(info.total_size)


def largest_tensor(info: Any) -> int:
    """T: the largest tensor of the checkpoint, in bytes (0 when unknown)."""
    sizes = [int(t.nbytes) for t in (getattr(info, "tensors", {}) or {}).values()]
    return max(sizes, default=0)


def model_size(info: Any) -> int:
    """M: unique tensor bytes of the checkpoint."""
    return int(info.total_size)


@functools.cache
def _safetensors_has_backend() -> bool:
    from safetensors.torch import load_file

    return "backend" in inspect.signature(load_file).parameters


def load_shard(path: Path, *, mmap: bool) -> dict[str, torch.Tensor]:
    """Read one shard file into a state dict.

    ``mmap=True``: zero-copy (safetensors' mmap backend, ``torch.load(mmap=True)``), pages
    arrive on first touch and are file-backed. ``mmap=False``: materialised into
    anonymous memory (safetensors' ``pread`` backend, plain ``torch.load``).
    """
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        if mmap:
            return load_file(path)
        if _safetensors_has_backend():
            return load_file(path, backend="pread")
        return {k: v.clone() for k, v in load_file(path).items()}
    sd = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    return dict(sd)


def tie(model: nn.Module) -> None:
    """Re-tie shared weights after loading (checkpoints store a tied tensor once)."""
    fn = getattr(model, "tie_weights", None)
    if callable(fn):
        fn()


def meta_leftovers(model: nn.Module) -> list[str]:
    """Names of parameters / persistent buffers still on the meta device."""
    names = [n for n, p in model.named_parameters() if p.is_meta]
    names += [n for n, b in model.named_buffers() if b.is_meta]
    return names


def assign_shard(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> None:
    """``load_state_dict(assign=True)`` of one shard onto a meta model, checking keys."""
    result = model.load_state_dict(sd, strict=False, assign=True)
    if result.unexpected_keys:
        raise StrategyError(
            f"checkpoint keys not in the model: {result.unexpected_keys[:5]}; "
            "the checkpoint was saved from another model"
        )


def require_loaded(model: nn.Module, strategy: str) -> None:
    """Raise unless every weight has data (no meta tensors left)."""
    tie(model)
    left = meta_leftovers(model)
    if left:
        raise StrategyError(
            f"strategy {strategy!r} left {len(left)} weights unloaded ({left[:5]}); "
            "the checkpoint lacks them"
        )


# -- first use and checksums ----------------------------------------------------


def checksum(t: torch.Tensor) -> list[int]:
    """An exact, order-independent checksum of a tensor's bytes: ``[nbytes, word sum]``.

    The bytes are summed as wrapping 64-bit words (the last ``nbytes % 8`` bytes one by
    one), which reads every byte once at memory speed and gives the same value wherever
    the same bytes are summed (CPU or GPU). No copy of the tensor is made: a checksum pass
    is the "first use" phase, and a temporary the size of a weight would show up in its
    peak (summing int32 words into an int64 total did exactly that).

    Example:
        >>> import torch
        >>> checksum(torch.zeros(3, dtype=torch.float32))
        [12, 0]
    """
    import torch

    data = t.detach()
    if not data.is_contiguous():
        data = data.contiguous()
    flat = data.reshape(-1).view(torch.uint8)
    nbytes = flat.numel()
    if nbytes == 0:
        return [0, 0]
    n8 = nbytes - nbytes % 8
    total = 0
    if n8:
        head = flat[:n8]
        if head.data_ptr() % 8 == 0:
            total += int(head.view(torch.int64).sum().item())
        else:  # misaligned view (an odd offset into a shard): copy small chunks only
            step = 1 << 23
            for i in range(0, n8, step):
                total += int(head[i : i + step].clone().view(torch.int64).sum().item())
    if n8 < nbytes:
        total += int(flat[n8:].to(torch.int64).sum().item())
    # wrap like the int64 sums above, so every path gives the same value
    total = (total + (1 << 63)) % (1 << 64) - (1 << 63)
    return [nbytes, total]


def _offload_stores(model: nn.Module) -> list[Any]:
    """accelerate's offloaded-weight stores (keyed by full state-dict name) found on the
    model's hooks: ``weights_map.dataset`` of every offloading ``AlignDevicesHook``."""
    stores: dict[int, Any] = {}
    for module in model.modules():
        hook = getattr(module, "_hf_hook", None)
        for h in list(getattr(hook, "hooks", [hook])) if hook is not None else []:
            wmap = getattr(h, "weights_map", None)
            if getattr(h, "offload", False) and wmap is not None:
                store = getattr(wmap, "dataset", wmap)
                stores[id(store)] = store
    return list(stores.values())


def iter_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every state-dict entry as ``(key, tensor)``, fetching disk-offloaded weights.

    Weights that accelerate offloaded sit on the meta device in the model; their data is
    read from accelerate's store (a memmap or the checkpoint itself), as at forward time.
    A tied weight is found under any of its names.
    """
    entries: list[tuple[str, torch.Tensor]] = []
    for mod_name, module in model.named_modules(remove_duplicate=False):
        skip: set[str] = set(getattr(module, "_non_persistent_buffers_set", set()))
        own = list(module.named_parameters(recurse=False))
        own += [(n, b) for n, b in module.named_buffers(recurse=False) if n not in skip]
        entries += [(f"{mod_name}.{name}" if mod_name else name, t) for name, t in own]
    stores: list[Any] | None = None
    aliases: dict[int, list[str]] = {}
    for key, t in entries:
        aliases.setdefault(id(t), []).append(key)
    for key, t in entries:
        if t.is_meta:
            if stores is None:
                stores = _offload_stores(model)
            t = _fetch(stores, [key, *(a for a in aliases[id(t)] if a != key)], t)
        yield key, t


def _fetch(stores: list[Any], names: list[str], meta: torch.Tensor) -> torch.Tensor:
    for store in stores:
        for name in names:
            try:
                found: torch.Tensor = store[name]
            except (KeyError, IndexError):
                continue
            return found
    return meta  # first_use reports it as not loaded


def first_use(model: nn.Module) -> dict[str, list[int]]:
    """Touch every weight once (a checksum pass) and return ``{key: checksum}``.

    Lazily mapped loads look nearly free until their pages are read; this pass is what
    makes their real cost visible, and its checksums prove the weights are right.
    """
    import torch

    out: dict[str, list[int]] = {}
    with torch.no_grad():
        for key, t in iter_weights(model):
            if t.is_meta:
                raise StrategyError(f"weight {key!r} is still on the meta device after loading")
            out[key] = checksum(t)
    return out


def compare_checksums(
    expected: Mapping[str, list[int]], got: Mapping[str, list[int]]
) -> str | None:
    """A message describing the first mismatches, or ``None`` when all agree."""
    missing = [k for k in expected if k not in got]
    wrong = [k for k in expected if k in got and list(got[k]) != list(expected[k])]
    if not missing and not wrong:
        return None
    parts = []
    if wrong:
        parts.append(f"{len(wrong)} weights differ from the checkpoint (e.g. {wrong[:3]})")
    if missing:
        parts.append(f"{len(missing)} checkpoint weights missing from the model ({missing[:3]})")
    return "; ".join(parts)

