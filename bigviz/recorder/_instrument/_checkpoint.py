"""What a checkpoint argument names: its weight files and their bytes, read from the
folder (index file or single file) without loading anything."""

from __future__ import annotations

import json
import os
from typing import Any

from bigviz.units import format_size

__all__ = ["checkpoint_facts", "files_of", "summary"]

_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE = ("model.safetensors", "pytorch_model.bin")
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth")


def files_of(path: Any) -> list[str]:
    """The weight files a checkpoint path stands for, in shard order (``[]``: unknown).

    A folder (its index's files, else its single weights file), an index file, or a
    weights file.

    Example:
        >>> files_of("/nonexistent")
        []
    """
    if not isinstance(path, (str, os.PathLike)):
        return []
    p = os.fspath(path)
    index = None
    if os.path.isdir(p):
        for name in _INDEXES:
            if os.path.isfile(os.path.join(p, name)):
                index = os.path.join(p, name)
                break
        else:
            return [os.path.join(p, n) for n in _SINGLE if os.path.isfile(os.path.join(p, n))][:1]
    elif p.endswith(".index.json") and os.path.isfile(p):
        index = p
    elif p.endswith(_WEIGHTS) and os.path.isfile(p):
        return [p]
    if index is None:
        return []
    try:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map", {})
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, AttributeError):
        return []
    return [os.path.join(os.path.dirname(index), n) for n in names]


def checkpoint_facts(path: Any) -> tuple[str, dict[str, Any]]:
    """``(short name, detail)`` of a checkpoint argument; the detail carries the files
    under the private key ``_shards`` (for shard numbering, not kept on the phase)."""
    if isinstance(path, (str, os.PathLike)):
        p = os.fspath(path)
        short = os.path.basename(p.rstrip("/")) or p
    else:
        p, short = None, f"<{type(path).__name__}>"
    files = files_of(path)
    detail: dict[str, Any] = {"checkpoint": p}
    if files:
        sizes = [os.path.getsize(f) for f in files if os.path.isfile(f)]
        detail.update(shards=len(files), bytes=sum(sizes), _shards=files)
        detail["format"] = "safetensors" if files[0].endswith(".safetensors") else "pickle"
    return short, detail


def summary(detail: dict[str, Any], *extra: str | None) -> str:
    """``"(7 shards, 4.2 MiB, …)"`` from a :func:`checkpoint_facts` detail, or ``""``."""
    parts = []
    if detail.get("shards"):
        n = detail["shards"]
        parts.append(f"{n} shard{'s' if n != 1 else ''}")
    if detail.get("bytes") is not None:
        parts.append(format_size(detail["bytes"]))
    parts += [e for e in extra if e]
    return f" ({', '.join(parts)})" if parts else ""
