"""Match a checkpoint's keys to a model's state dict before any byte is read.

Shared by :func:`~bigviz.checkpoint.validate_checkpoint` (inspection) and
:func:`~bigviz.checkpoint.load_sharded` (loading), which is why it lives in neither.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from bigviz._errors import CheckpointError, ConfigError
from bigviz.checkpoint._format import dtype_name
from bigviz.checkpoint._types import CheckpointInfo

__all__ = ["KeyMatch", "check_against_model"]


@dataclass
class KeyMatch:
    """Which checkpoint key fills which model names (tied names form one group).

    Example:
        >>> KeyMatch().missing
        []
    """

    targets: dict[str, list[list[str]]] = field(default_factory=dict)  # ckpt key -> groups
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    model_tensors: dict[str, torch.Tensor] = field(default_factory=dict)


def _group_key(t: torch.Tensor) -> tuple[object, ...]:
    # Tied parameters are one object; buffers may alias by memory instead.
    if t.device.type == "meta" or t.nelement() == 0:
        return ("id", id(t))
    return ("mem", t.device, t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)


def check_against_model(
    model: torch.nn.Module, info: CheckpointInfo, *, strict: bool, allow_dtype_cast: bool
) -> KeyMatch:
    """Match checkpoint keys to the model's state dict, before any data is read.

    Raises:
        CheckpointError: missing/unexpected keys (``strict``), shape mismatches, dtype
            mismatches (unless ``allow_dtype_cast``).

    Example:
        >>> # check_against_model(meta_model, inspect_checkpoint("ckpt/"), strict=True,
        >>> #                     allow_dtype_cast=False).targets
    """
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model must be an nn.Module, got {type(model).__name__}")
    msd = model.state_dict(keep_vars=True)
    groups: dict[tuple[object, ...], list[str]] = defaultdict(list)
    for name, t in msd.items():
        groups[_group_key(t)].append(name)
    match = KeyMatch(model_tensors=dict(msd))
    for names in groups.values():
        src = next((n for n in names if n in info.tensors), None)
        if src is None:
            src = next(
                (info.aliases[n] for n in names if info.aliases.get(n) in info.tensors), None
            )
        if src is None:
            match.missing.extend(names)
            continue
        match.targets.setdefault(src, []).append(names)
    match.unexpected = sorted(k for k in info.tensors if k not in msd)
    match.missing.sort()
    problems: list[str] = []
    # a tensor the shards hold but the index does not list is never loaded silently
    unlisted = [n for n in match.missing if n in info.unindexed]
    if strict and unlisted:
        problems.append(
            f"stored in a shard but not listed in the index: {_few(unlisted)} (in "
            f"{info.unindexed[unlisted[0]]}); the index and the shards disagree: re-save the "
            "checkpoint, or add the names to its index")
        match.missing = [n for n in match.missing if n not in info.unindexed]
    if strict and (match.missing or match.unexpected):
        if match.missing:
            problems.append(f"missing from the checkpoint: {_few(match.missing)}")
        if match.unexpected:
            problems.append(f"not in the model: {_few(match.unexpected)}")
    for src, gs in match.targets.items():
        ti = info.tensors[src]
        for names in gs:
            mt = msd[names[0]]
            if list(mt.shape) != ti.shape:
                problems.append(
                    f"{ti.shard}: {src!r} has shape {ti.shape} but the model's {names[0]!r} has "
                    f"{list(mt.shape)}"
                )
            elif dtype_name(mt.dtype) != ti.dtype and not allow_dtype_cast:
                problems.append(
                    f"{ti.shard}: {src!r} is {ti.dtype} but the model's {names[0]!r} is "
                    f"{dtype_name(mt.dtype)} (pass allow_dtype_cast=True to convert)"
                )
    if problems:
        raise CheckpointError(
            f"checkpoint {info.path} does not match {type(model).__name__}:\n  "
            + "\n  ".join(problems[:20])
            + (f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else "")
        )
    return match


def _few(names: Sequence[str], n: int = 10) -> str:
    shown = ", ".join(repr(x) for x in names[:n])
    return shown + (f", … ({len(names)} in all)" if len(names) > n else "")
