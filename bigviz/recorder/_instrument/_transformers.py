"""Transformers: ``from_pretrained`` and ``save_pretrained``, with the steps between.

Found by tracing ``GPT2LMHeadModel.from_pretrained`` of a sharded safetensors folder
with ``sys.setprofile`` (Transformers 5.24)::

    PreTrainedModel.from_pretrained
      (config, model built on the meta device)
      PreTrainedModel._load_pretrained_model(model, state_dict, checkpoint_files, …)
        safe_open(file, backend="mmap") for EVERY shard up front, get_slice(k) per key
            (lazy: nothing is read)          — or, for .bin shards, per shard:
        modeling_utils.load_state_dict(file) → torch.load(file, mmap=True)
        core_model_loading.convert_and_load_state_dict_in_model(model, state_dict, …)
            materialises parameter by parameter, reading through the mapping
      PreTrainedModel._finalize_model_loading
        _move_missing_keys_from_meta_to_device, _initialize_missing_keys, tie_weights

So in 5.x a shard's child phase is its opening ("safe_open shard i/n …", bytes mapped)
and the bytes arrive in "load weights into MODEL" (or on first use, when mapped).

Transformers 4.46.3, traced the same way (sharded safetensors and .bin)::

    PreTrainedModel.from_pretrained
      PreTrainedModel._load_pretrained_model(model, None, keys, [shard files], …)
        per shard, in the index's order:
          modeling_utils.load_state_dict(shard_file)   → "load shard i/n FILE"
              safe_open (metadata) + load_file, or torch.load(mmap=True) for zip .bin
          _load_state_dict_into_model(model, state_dict, prefix, assign)
              (_load_state_dict_into_meta_model with low_cpu_mem_usage / device_map)
      tie_weights

so each shard is a "load shard i/n" child followed by its own "load weights into"
step (tests/integration/test_transformers4.py). 4.5x calls ``load_shard_file(args)``
per shard (not traced). Every name is looked up where it exists and skipped where it
does not.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from bigviz.recorder._instrument._checkpoint import checkpoint_facts, summary
from bigviz.recorder._instrument._core import (
    Named,
    Target,
    file_facts,
    innermost,
    loaded_tensors,
    shard_prefix,
    tensor_bytes,
)
from bigviz.recorder._instrument._safetensors import slice_bytes
from bigviz.units import format_size

__all__ = ["TARGETS"]

MU = "transformers.modeling_utils"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")


def _dtype_text(kw: dict[str, Any]) -> str | None:
    d = kw.get("dtype", kw.get("torch_dtype"))
    return None if d is None else f"dtype={str(d).replace('torch.', '')}"


def _device_text(kw: dict[str, Any]) -> str | None:
    dm = kw.get("device_map")
    if dm is None:
        return None
    if isinstance(dm, dict):
        return "→ " + ", ".join(sorted({str(v) for v in dm.values()}))
    return f"→ {dm}"


def _from_pretrained(cls: Any, name_or_path: Any = None, *a: Any, **kw: Any) -> Named:
    short, detail = checkpoint_facts(name_or_path)
    if isinstance(name_or_path, str) and not os.path.isdir(name_or_path):
        short = name_or_path  # a hub id: its name as given
    detail.update(model=getattr(cls, "__name__", "?"))
    extra = [_dtype_text(kw), _device_text(kw)]
    return f"{detail['model']}.from_pretrained {short}" + summary(detail, *extra), detail


def _save_pretrained(model: Any, save_directory: Any = None, *a: Any, **kw: Any) -> Named:
    folder = os.path.basename(os.fspath(save_directory).rstrip("/")) if save_directory else "?"
    sd = kw.get("state_dict")
    tb = tensor_bytes(sd if sd is not None else dict(model.state_dict()))
    detail: dict[str, Any] = {"model": type(model).__name__, "folder": str(save_directory)}
    extra = []
    if tb is not None:
        detail.update(tensors=tb[0], bytes=tb[1])
        extra.append(f"{tb[0]} tensors, {format_size(tb[1])}")
    if kw.get("max_shard_size") is not None:
        detail["max_shard_size"] = str(kw["max_shard_size"])
        extra.append(f"shards ≤ {kw['max_shard_size']}")
    tail = f" ({', '.join(extra)})" if extra else ""
    return f"{type(model).__name__}.save_pretrained {folder}{tail}", detail


def _files_arg(args: tuple[Any, ...], kw: dict[str, Any]) -> list[str]:
    """The checkpoint's file list among a ``_load_pretrained_model``'s arguments (its
    position differs between versions: found by what it is)."""
    for key in ("checkpoint_files", "resolved_archive_file"):
        if isinstance(kw.get(key), (list, tuple)):
            return [os.fspath(f) for f in kw[key]]
    for v in args:
        if isinstance(v, (list, tuple)) and v and all(
            isinstance(f, (str, os.PathLike)) and os.fspath(f).endswith(_WEIGHT_SUFFIXES)
            for f in v
        ):
            return [os.fspath(f) for f in v]
        if isinstance(v, str) and v.endswith(_WEIGHT_SUFFIXES) and os.path.isfile(v):
            return [v]
    return []


def _model_arg(args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    torch = sys.modules.get("torch")
    module = getattr(getattr(torch, "nn", None), "Module", ())
    for v in (kw.get("model"), *args):
        if module and isinstance(v, module):
            return v
    return None


def _load_pretrained_model(*args: Any, **kw: Any) -> Named:
    files = _files_arg(args, kw)
    model = _model_arg(args, kw)
    sizes = [os.path.getsize(f) for f in files if os.path.isfile(f)]
    detail: dict[str, Any] = {"model": type(model).__name__ if model is not None else None,
                              "shards": len(files), "bytes": sum(sizes), "_shards": files}
    fmt = "safetensors" if files and files[0].endswith(".safetensors") else "pickle"
    detail["format"] = fmt
    what = f"{len(files)} {fmt} shard{'s' if len(files) != 1 else ''}, {format_size(sum(sizes))}"
    return f"load checkpoint into {detail['model']} ({what})", detail


def _slice_or_tensor_bytes(state_dict: Any) -> tuple[int, int]:
    tb = tensor_bytes(state_dict)
    if tb is not None:
        return tb
    # safetensors slices (5.x maps every shard and hands slices over)
    sizes = [slice_bytes(v) for v in (state_dict.values() if hasattr(state_dict, "values") else ())]
    return len(sizes), sum(sizes)


def _into_model(*args: Any, **kw: Any) -> Named:
    model = _model_arg(args, kw)
    sd = kw.get("state_dict")
    if sd is None:
        sd = next((a for a in args if isinstance(a, dict)), {})
    n, size = _slice_or_tensor_bytes(sd)
    name = type(model).__name__ if model is not None else "the model"
    parent = innermost()
    detail: dict[str, Any] = {"model": name, "tensors": n, "bytes": size,
                              "_files": parent.shards if parent is not None else []}
    return f"load weights into {name} ({n} tensors, {format_size(size)})", detail


def _shard_load_state_dict(checkpoint_file: Any = None, *a: Any, **kw: Any) -> Named:
    name, detail = file_facts(checkpoint_file)
    size = f" ({format_size(detail['bytes'])})" if detail.get("bytes") is not None else ""
    return f"load {shard_prefix(detail['file'])}{name}{size}", detail


def _load_shard_file(args: Any = None, *a: Any, **kw: Any) -> Named:
    shard = args[0] if isinstance(args, (tuple, list)) and args else None
    return _shard_load_state_dict(shard)


def _step(title: str) -> Any:
    def describe(*args: Any, **kw: Any) -> Named:
        model = _model_arg(args, kw)
        name = type(model).__name__ if model is not None else "model"
        return f"{title} ({name})", {"model": name}

    return describe


TARGETS = [
    Target(MU, "PreTrainedModel.from_pretrained", _from_pretrained, leaf=False),
    Target(MU, "PreTrainedModel.save_pretrained", _save_pretrained, leaf=False),
    Target(MU, "PreTrainedModel._load_pretrained_model", _load_pretrained_model, leaf=False),
    Target("transformers.core_model_loading", "convert_and_load_state_dict_in_model",
           _into_model, leaf=False),
    Target(MU, "_load_state_dict_into_meta_model", _into_model),  # 4.4x
    Target(MU, "_load_state_dict_into_model", _into_model),  # 4.4x
    Target(MU, "load_shard_file", _load_shard_file, leaf=False),  # 4.5x
    Target(MU, "load_state_dict", _shard_load_state_dict, after=loaded_tensors),
    Target(MU, "PreTrainedModel._finalize_model_loading",
           _step("finalize: missing keys, initialisation, tying"), leaf=False),
    Target(MU, "PreTrainedModel._move_missing_keys_from_meta_to_device",
           _step("move missing keys from meta to their device")),
    Target(MU, "PreTrainedModel._initialize_missing_keys", _step("initialise missing keys")),
    Target(MU, "PreTrainedModel.tie_weights", _step("tie weights")),
]
