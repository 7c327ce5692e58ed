"""The shard split and shared-storage handling, exactly as huggingface_hub does them.

- ``split``: ``split_state_dict_into_shards_factory`` (huggingface_hub/serialization/_base.py):
  greedy in state-dict order; a tensor whose storage was already seen is skipped and later
  put in the shard of the first name with that storage (counted once); a tensor larger than
  the maximum gets a shard of its own (appended *before* the current shard, as there); a new
  shard opens when ``current + size > max``.
- storage identity and size: ``get_torch_storage_id`` = ``(device, storage data_ptr,
  storage nbytes)``, ``None`` on the meta device; size = ``untyped_storage().nbytes()``.
- for safetensors, names that alias the same bytes are dropped first
  (``_remove_duplicate_names``): keep the alphabetically first name that covers the whole
  storage, preferring names not in ``discard_names``; the dropped names are recorded in the
  metadata as ``{dropped: kept}``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import torch

from bigviz._errors import CheckpointError, ConfigError
from bigviz.checkpoint._types import PlannedShard, ShardPlan
from bigviz.units import parse_size


def storage_size(tensor: torch.Tensor) -> int:
    """Bytes of the tensor's whole storage (what huggingface_hub counts)."""
    try:
        return int(tensor.untyped_storage().nbytes())
    except (NotImplementedError, RuntimeError):
        return tensor.nelement() * tensor.element_size()


def _storage_ptr(tensor: torch.Tensor) -> int:
    try:
        return int(tensor.untyped_storage().data_ptr())
    except (NotImplementedError, RuntimeError):
        return 0


def storage_id(tensor: torch.Tensor) -> tuple[Any, ...] | None:
    """huggingface_hub's ``get_torch_storage_id``: ``None`` for meta tensors."""
    if tensor.device.type == "meta":
        return None
    return (tensor.device, _storage_ptr(tensor), storage_size(tensor))


def split(
    sizes: Iterable[tuple[str, int, Hashable | None]], max_shard_size: int
) -> tuple[list[list[str]], list[int], int]:
    """Greedy split over ``(name, size, storage_key)`` in order.

    Returns:
        (keys per shard, bytes per shard, total unique bytes).
    """
    first_of: dict[Hashable, str] = {}
    followers: dict[str, list[str]] = defaultdict(list)
    shards: list[list[str]] = []
    shard_bytes: list[int] = []
    current: list[str] = []
    current_size = 0
    total = 0
    for name, size, key in sizes:
        if key is not None:
            if key in first_of:
                followers[first_of[key]].append(name)
                continue
            first_of[key] = name
        if size > max_shard_size:
            total += size
            shards.append([name])
            shard_bytes.append(size)
            continue
        if current_size + size > max_shard_size:
            shards.append(current)
            shard_bytes.append(current_size)
            current = []
            current_size = 0
        current.append(name)
        current_size += size
        total += size
    if current:
        shards.append(current)
        shard_bytes.append(current_size)
    if followers:
        for shard in shards:
            extra = [f for name in shard for f in followers.get(name, ())]
            shard.extend(extra)
    return shards, shard_bytes, total


def plan_shards(
    state_dict_or_sizes: Mapping[str, torch.Tensor] | Mapping[str, int] | torch.nn.Module,
    max_shard_size: int | str = "5GB",
) -> ShardPlan:
    """Split a state dict into shards the way huggingface_hub and Transformers do, without I/O.

    Args:
        state_dict_or_sizes: a state dict (tensors may be on any device, meta too), a
            mapping of names to byte sizes (no sharing), or an ``nn.Module``. For a module,
            tied parameters are found by identity, so ties are counted once even on the
            meta device (huggingface_hub cannot see sharing between meta tensors).
        max_shard_size: bytes or a size string (``"200MB"``, ``"1GiB"``).

    Returns:
        The ShardPlan: shards (keys, bytes), ``total_size`` (unique storage bytes),
        ``largest_shard``, ``n_shards``; ``filenames(format)`` names the files.

    Raises:
        SizeError: an unreadable ``max_shard_size``.
        ConfigError: a value that is neither a tensor nor an int.

    Example:
        >>> plan = plan_shards({"a": 6, "b": 6, "c": 2}, 10)
        >>> [s.keys for s in plan.shards], plan.total_size
        ([['a'], ['b', 'c']], 14)
    """
    limit = parse_size(max_shard_size)
    entries: list[tuple[str, int, Hashable | None]] = []
    if isinstance(state_dict_or_sizes, torch.nn.Module):
        # keep_vars returns the Parameter objects themselves: tied ones are the same object.
        sd = state_dict_or_sizes.state_dict(keep_vars=True)
        for name, t in sd.items():
            key: Hashable | None = storage_id(t)
            if key is None:
                key = ("object", id(t))
            entries.append((name, storage_size(t), key))
    else:
        for name, value in state_dict_or_sizes.items():
            if isinstance(value, torch.Tensor):
                entries.append((name, storage_size(value), storage_id(value)))
            elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                entries.append((name, value, None))
            else:
                raise ConfigError(
                    f"plan_shards: value for {name!r} is {type(value).__name__}; give tensors or "
                    "non-negative byte counts"
                )
    shards, shard_bytes, total = split(entries, limit)
    return ShardPlan(
        shards=[PlannedShard(keys=k, bytes=b) for k, b in zip(shards, shard_bytes, strict=True)],
        total_size=total,
        max_shard_size=limit,
    )


# ---------------------------------------------------------------------------------------------
# shared tensors (safetensors cannot store aliases)


def _end_ptr(tensor: torch.Tensor) -> int:
    # from the strides, not tensor.view(-1): a transposed view cannot be flattened
    if tensor.nelement():
        last = sum((n - 1) * st for n, st in zip(tensor.shape, tensor.stride(), strict=True))
        return int(tensor.data_ptr()) + (last + 1) * tensor.element_size()
    return int(tensor.data_ptr())


def _find_shared(state_dict: Mapping[str, torch.Tensor]) -> list[set[str]]:
    groups: dict[tuple[Any, ...], set[str]] = defaultdict(set)
    for k, v in state_dict.items():
        if v.device.type != "meta" and _storage_ptr(v) != 0 and storage_size(v) != 0:
            groups[(v.device, _storage_ptr(v), storage_size(v))].add(k)
    # sorted() over sets as the original does, for the same group order
    ordered = sorted(groups.values())  # type: ignore[type-var]
    result: list[set[str]] = []
    for shared in ordered:
        if len(shared) < 2:
            result.append(shared)
            continue
        areas = sorted((state_dict[n].data_ptr(), _end_ptr(state_dict[n]), n) for n in shared)
        _, last_stop, last_name = areas[0]
        result.append({last_name})
        for start, stop, name in areas[1:]:
            if start >= last_stop:
                result.append({name})
            else:
                result[-1].add(name)
            last_stop = stop
    return result


def _is_complete(tensor: torch.Tensor) -> bool:
    return tensor.data_ptr() == _storage_ptr(
        tensor
    ) and tensor.nelement() * tensor.element_size() == storage_size(tensor)


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
            and a.dtype == b.dtype)


def detach_views(
    state_dict: Mapping[str, torch.Tensor], *, discard_names: Iterable[str] = ()
) -> dict[str, torch.Tensor]:
    """The state dict with views that must not be saved as such replaced by copies.

    Names that are the same tensor (tied weights) stay shared, so they are stored once.
    A different view of shared memory (a buffer that is one row of a weight) gets its own
    copy: stored as an alias it would load back as the whole weight. A view that alone
    covers only part of its storage (a 4-byte slice of 100 MB) is copied too, as
    safetensors does: ``torch.save`` would write the whole storage.

    Example:
        >>> w = torch.arange(6.0).reshape(2, 3)
        >>> out = detach_views({"w": w, "tied": w, "row": w[1]})
        >>> out["tied"] is w, out["row"].data_ptr() != w.data_ptr()
        (True, True)
    """
    discard = set(discard_names)
    out = dict(state_dict)
    groups: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for k, v in state_dict.items():
        if v.device.type != "meta" and _storage_ptr(v) != 0 and storage_size(v) != 0:
            groups[(v.device, _storage_ptr(v), storage_size(v))].append(k)
    for names in groups.values():
        complete = sorted(n for n in names if _is_complete(state_dict[n]))
        keep = (sorted(set(complete) - discard) or complete or sorted(names))[0]
        kept = state_dict[keep]
        if not _is_complete(kept):
            kept = kept.clone()  # only part of its storage: copy just that part
        for name in names:
            same = _same_view(state_dict[name], state_dict[keep])
            out[name] = kept if same else state_dict[name].clone()
    return out


def duplicate_names(
    state_dict: Mapping[str, torch.Tensor], *, discard_names: Iterable[str] = ()
) -> dict[str, list[str]]:
    """``{kept_name: [dropped names]}`` for tensors that alias the same bytes.

    Raises:
        CheckpointError: aliases none of which covers its whole storage (safetensors
            would have to store more than the tensors hold).
    """
    discard = set(discard_names)
    to_remove: dict[str, list[str]] = defaultdict(list)
    for shared in _find_shared(state_dict):
        if len(shared) < 2:
            continue
        complete = {n for n in shared if _is_complete(state_dict[n])}
        if not complete:
            raise CheckpointError(
                f"tensors {sorted(shared)} share memory but none of them covers the whole "
                "storage; save .clone()d copies, or use format='bin'"
            )
        keep = sorted(complete)[0]
        preferred = complete - discard
        if preferred:
            keep = sorted(preferred)[0]
        for name in sorted(shared):
            if name != keep:
                to_remove[keep].append(name)
    return dict(to_remove)


def tied_discard_names(module: torch.nn.Module, names: Iterable[str]) -> list[str]:
    """Names Transformers marks as tied copies (``_tied_weights_keys``), to be dropped first.

    ``_tied_weights_keys`` is a list (Transformers 4) or a ``{target: source}`` dict
    (Transformers 5) of names or regex patterns, relative to the submodule declaring it.
    """
    patterns: list[str] = []
    for prefix, sub in module.named_modules():
        tied = getattr(sub, "_tied_weights_keys", None) or {}
        for k in tied:
            patterns.append(f"{prefix}.{k}" if prefix else str(k))
    if not patterns:
        return []
    compiled = []
    for p in patterns:
        try:
            compiled.append(re.compile(p))
        except re.error:
            compiled.append(re.compile(re.escape(p)))
    return [n for n in names if any(c.search(n) for c in compiled)]
