"""Checkpoints saved once per (model, dtype, shard size, format, seed) in the work folder
under a hash of those settings, with every tensor's checksum beside them, and reused.

Example:
    >>> # folder = prepare_checkpoint("gpt:100MB", max_shard_size="20MB")
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import uuid
from pathlib import Path

from bigviz.models import ModelLike, parse_spec
from bigviz.runner.single import execute, raise_if_failed
from bigviz.runner.validate import check_dtype, check_format, model_id, work_folder
from bigviz.units import parse_size

__all__ = ["prepare_checkpoint"]


def _key(model: ModelLike, dtype: str, shard: int, fmt: str, seed: int) -> str:
    spec = parse_spec(model, dtype)
    # the last item versions the stored checksums.json layout (2: copy-free word sums)
    blob = json.dumps([model_id(model), spec.config, dtype, shard, fmt, seed, 2],
                      sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9.]+", "-", model_id(model)).strip("-")[:40]
    return f"{safe}-{dtype}-{fmt}-{shard}-{digest}"


def prepare_checkpoint(
    model: ModelLike,
    *,
    max_shard_size: int | str = "500MB",
    format: str = "safetensors",
    dtype: str = "float32",
    work_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> Path:
    """Save ``model`` as a sharded checkpoint in the work folder once, and reuse it.

    The model is built and saved in a worker process (the caller's memory is untouched);
    tensor checksums go to ``checksums.json`` beside the ``checkpoint/`` folder, and a
    GPT-2 ``config.json`` into it for ``gpt:`` specs.

    Returns:
        The folder holding ``checkpoint/`` and ``checksums.json``.

    Raises:
        ConfigError: a bad spec, size, format or dtype.
        RunError: the worker failed to save.

    Example:
        >>> # d = prepare_checkpoint("gpt:100MB", max_shard_size="20MB")
    """
    check_format(format)
    check_dtype(dtype)
    shard = parse_size(max_shard_size)
    parse_spec(model, dtype)
    root = work_folder(work_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / _key(model, dtype, shard, format, seed)
    if (final / "checksums.json").exists():
        return final
    tmp = root / f".tmp-{uuid.uuid4().hex[:8]}"
    job = {"kind": "prepare", "model": model_id(model), "dtype": dtype, "seed": seed,
           "shard_size": shard, "format": format, "dir": str(tmp), "sys_path": sys.path,
           "label": f"prepare {final.name}"}
    try:
        out = execute(job)
        raise_if_failed(out, f"saving {model_id(model)} as a {format} checkpoint")
        try:
            tmp.rename(final)
        except OSError:  # another process saved it first; theirs is as good as ours
            if not (final / "checksums.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
