"""Accelerate and huggingface_hub: their checkpoint loaders and savers.

Accelerate 1.15 (read and traced): ``load_checkpoint_and_dispatch`` →
``infer_auto_device_map`` (with ``get_balanced_memory``) when ``device_map`` is a
string → ``load_checkpoint_in_model``, which loops over the shards calling
``accelerate.utils.modeling.load_state_dict(file, device_map=…)`` (safetensors
``load_file``, bound by name there) and then ``set_module_tensor_to_device`` per tensor →
``dispatch_model``. huggingface_hub 2.4: ``load_torch_model`` → per shard
``load_state_dict_from_file`` then ``model.load_state_dict``; ``save_torch_state_dict``
→ ``save_file``/``torch.save`` per shard.
"""

from __future__ import annotations

import os
from typing import Any

from bigviz.recorder._instrument._checkpoint import checkpoint_facts, summary
from bigviz.recorder._instrument._core import (
    Frame,
    Named,
    Target,
    file_facts,
    loaded_tensors,
    shard_prefix,
    tensor_bytes,
)
from bigviz.units import format_size

__all__ = ["TARGETS"]

AM = "accelerate.utils.modeling"
BM = "accelerate.big_modeling"
HT = "huggingface_hub.serialization._torch"


def _device_map_text(dm: Any) -> str | None:
    if dm is None:
        return None
    if isinstance(dm, dict):
        return "→ " + ", ".join(sorted({str(v) for v in dm.values()}))
    return f"device_map={dm}"


def _into(title: str) -> Any:
    """``TITLE MODEL ← CHECKPOINT (n shards, bytes, device map)``."""

    def describe(model: Any = None, checkpoint: Any = None, *a: Any, **kw: Any) -> Named:
        short, detail = checkpoint_facts(checkpoint)
        detail["model"] = type(model).__name__
        dm = kw.get("device_map", a[0] if a else None)
        dtype = kw.get("dtype", kw.get("map_location"))
        extra = [_device_map_text(dm), None if dtype is None else str(dtype).replace("torch.", "")]
        return f"{title} {detail['model']} ← {short}" + summary(detail, *extra), detail

    return describe


def _shard(title: str) -> Any:
    def describe(checkpoint_file: Any = None, *a: Any, **kw: Any) -> Named:
        name, detail = file_facts(checkpoint_file)
        size = f" ({format_size(detail['bytes'])})" if detail.get("bytes") is not None else ""
        return f"{title} {shard_prefix(detail['file'])}{name}{size}", detail

    return describe


def _dispatch(model: Any = None, device_map: Any = None, *a: Any, **kw: Any) -> Named:
    text = _device_map_text(device_map) or ""
    detail = {"model": type(model).__name__, "devices": text.removeprefix("→ ")}
    return f"dispatch_model {type(model).__name__} {text}".rstrip(), detail


def _infer(model: Any = None, max_memory: Any = None, *a: Any, **kw: Any) -> Named:
    detail: dict[str, Any] = {"model": type(model).__name__}
    if max_memory is not None:
        detail["max_memory"] = {str(k): str(v) for k, v in dict(max_memory).items()}
    mm = "" if max_memory is None else " (max_memory " + ", ".join(
        f"{k}: {v if isinstance(v, str) else format_size(v)}" for k, v in dict(max_memory).items()
    ) + ")"
    return f"infer_auto_device_map {type(model).__name__}{mm}", detail


def _device_map_after(result: Any, frame: Frame, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    if isinstance(result, dict):
        frame.op.phase.detail["device_map_devices"] = sorted({str(v) for v in result.values()})


def _save_state_dict(title: str) -> Any:
    def describe(obj: Any = None, save_directory: Any = None, *a: Any, **kw: Any) -> Named:
        sd = obj.state_dict() if hasattr(obj, "state_dict") else obj
        tb = tensor_bytes(sd)
        folder = os.path.basename(os.fspath(save_directory).rstrip("/")) if save_directory else "?"
        detail: dict[str, Any] = {"folder": None if save_directory is None else str(save_directory)}
        extra = []
        if tb is not None:
            detail.update(tensors=tb[0], bytes=tb[1])
            extra.append(f"{tb[0]} tensors, {format_size(tb[1])}")
        fmt = "safetensors" if kw.get("safe_serialization", True) else "pickle"
        detail["format"] = fmt
        extra.append(fmt)
        if "max_shard_size" in kw:
            detail["max_shard_size"] = str(kw["max_shard_size"])
            extra.append(f"shards ≤ {kw['max_shard_size']}")
        return f"{title} → {folder} ({', '.join(extra)})", detail

    return describe


TARGETS = [
    Target(BM, "load_checkpoint_and_dispatch", _into("load_checkpoint_and_dispatch"), leaf=False),
    Target(BM, "dispatch_model", _dispatch),
    Target(AM, "load_checkpoint_in_model", _into("load_checkpoint_in_model"), leaf=False),
    Target(AM, "load_state_dict", _shard("load"), after=loaded_tensors),
    Target(AM, "infer_auto_device_map", _infer, after=_device_map_after),
    Target(HT, "load_torch_model", _into("load_torch_model"), leaf=False),
    Target(HT, "load_state_dict_from_file", _shard("load"), after=loaded_tensors),
    Target(HT, "save_torch_state_dict", _save_state_dict("save_torch_state_dict"), leaf=False),
    Target(HT, "save_torch_model", _save_state_dict("save_torch_model"), leaf=False),
]
