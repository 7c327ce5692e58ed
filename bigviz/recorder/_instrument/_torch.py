"""torch: ``load``, ``save``, ``nn.Module.load_state_dict``, ``nn.Module.to`` and
``torch.distributed.checkpoint`` ``load``/``save``."""

from __future__ import annotations

import os
import sys
from typing import Any

from bigviz.recorder._instrument._core import (
    Named,
    Target,
    device_str,
    file_facts,
    label,
    loaded_tensors,
    module_bytes,
    shard_prefix,
    tensor_bytes,
)
from bigviz.units import format_size

__all__ = ["TARGETS"]


def _torch_load(f: Any, map_location: Any = None, *a: Any, **kw: Any) -> Named:
    name, detail = file_facts(f)
    dev = device_str(map_location)
    detail.update(map_location=dev, mmap=bool(kw.get("mmap")))
    op = "torch.load" + (" (mmap)" if kw.get("mmap") else "")
    return label(op, shard_prefix(detail["file"]) + name, detail.get("bytes"), dev), detail


def _torch_save(obj: Any, f: Any, *a: Any, **kw: Any) -> Named:
    name, detail = file_facts(f)
    detail.pop("bytes", None)  # the old file's size, if any, is not what is saved
    tb = tensor_bytes(obj)
    if tb is not None:
        detail.update(tensors=tb[0], bytes=tb[1])
    return label("torch.save", name, detail.get("bytes"), None), detail


def _load_state_dict(module: Any, state_dict: Any, *a: Any, **kw: Any) -> Named:
    tb = tensor_bytes(state_dict)
    strict = a[0] if a else kw.get("strict", True)
    assign = a[1] if len(a) > 1 else kw.get("assign", False)
    detail: dict[str, Any] = {"module": type(module).__name__, "strict": bool(strict)}
    detail["assign"] = bool(assign)
    name = f"{type(module).__name__}.load_state_dict"
    if tb is not None:
        detail.update(tensors=tb[0], bytes=tb[1])
        name += f" ({tb[0]} tensors, {format_size(tb[1])})"
    return name, detail


def _module_to(module: Any, *a: Any, **kw: Any) -> Named:
    torch = sys.modules["torch"]
    device, dtype, _nb, _fmt = torch._C._nn._parse_to(*a, **kw)
    size = module_bytes(module)
    target = " ".join(str(x) for x in (device, dtype) if x is not None) or "(no change)"
    detail: dict[str, Any] = {"module": type(module).__name__, "bytes": size}
    detail.update(device=device_str(device), dtype=None if dtype is None else str(dtype))
    return f"{type(module).__name__}.to {target} ({format_size(size)})", detail


def _folder_bytes(path: Any) -> int | None:
    if not isinstance(path, (str, os.PathLike)) or not os.path.isdir(path):
        return None
    return sum(int(e.stat().st_size) for e in os.scandir(os.fspath(path)) if e.is_file())


def _dcp(op: str) -> Any:
    def describe(state_dict: Any, *a: Any, **kw: Any) -> Named:
        where = kw.get("checkpoint_id")
        if where is None:
            writer = kw.get("storage_writer") or kw.get("storage_reader")
            where = getattr(writer, "path", None) or getattr(writer, "fs_path", None)
        tb = tensor_bytes(state_dict)
        detail: dict[str, Any] = {"checkpoint": None if where is None else str(where)}
        if tb is not None:
            detail.update(tensors=tb[0], bytes=tb[1])
        folder = os.path.basename(os.fspath(where).rstrip("/")) if where is not None else "?"
        size = tb[1] if tb else None
        if op == "load" and (fb := _folder_bytes(where)) is not None:
            detail["folder_bytes"] = fb
        return label(f"dcp.{op}", folder, size, None), detail

    return describe


TARGETS = [
    Target("torch", "load", _torch_load, after=loaded_tensors),
    Target("torch", "save", _torch_save),
    Target("torch.nn.modules.module", "Module.load_state_dict", _load_state_dict),
    Target("torch.nn.modules.module", "Module.to", _module_to),
    Target("torch.distributed.checkpoint.state_dict_loader", "load", _dcp("load")),
    Target("torch.distributed.checkpoint.state_dict_saver", "save", _dcp("save")),
]
