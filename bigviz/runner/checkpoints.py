"""Checkpoints saved once per (model, dtype, shard size, format, seed) in the work folder
under a hash of those settings, with every tensor's checksum beside them, and reused.

A checkpoint folder the user already has (a local folder, ``hf:ORG/NAME``) is never
re-saved and never written to: :func:`prepare_folder` takes its tensors' checksums once
(read-only, in a worker) into the work folder, keyed by the folder's path and its files'
sizes and modification times (a changed folder is checked again), beside a
``checkpoint`` link to the folder itself; other shard sizes are resharded into the work
folder (:func:`bigviz.checkpoint.reshard`, streaming) once, and reused.

Each prepared folder holds ``checkpoint/`` (files or a link) and ``checksums.json``.

Example:
    >>> # folder = prepare_checkpoint("gpt:100MB", max_shard_size="20MB")
    >>> # folder = prepare_folder(Path("./my-gpt2"), shard=None)   # as saved
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
from typing import TYPE_CHECKING, Any

from bigviz._errors import ConfigError
from bigviz.models import ModelLike, parse_spec
from bigviz.runner.single import execute, raise_if_failed
from bigviz.runner.validate import check_dtype, check_format, model_id, work_folder
from bigviz.units import format_size, parse_size

if TYPE_CHECKING:
    from bigviz.checkpoint import CheckpointInfo

__all__ = ["as_saved_text", "files_dtype", "prepare_checkpoint", "prepare_folder"]


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


# -- checkpoints the user already has -------------------------------------------------


def _stamp(folder: Path) -> list[list[Any]]:
    """Name, size and modification time of every top-level file (links followed: a hub
    snapshot's files are links to its blobs)."""
    out: list[list[Any]] = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        try:
            st = entry.stat()  # follows links
        except OSError:
            continue
        if entry.is_file():
            out.append([entry.name, st.st_size, st.st_mtime_ns])
    return out


def _folder_key(folder: Path, shard: int | None, fmt: str | None) -> str:
    # the last item versions this layout (1: checkpoint link or reshard + checksums.json)
    blob = json.dumps([str(folder), _stamp(folder), shard, fmt, 1])
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9.]+", "-", folder.name).strip("-")[:40] or "folder"
    how = "as-saved" if shard is None else f"{fmt}-{shard}"
    return f"folder-{safe}-{how}-{digest}"


def prepare_folder(
    folder: str | os.PathLike[str],
    *,
    shard: int | None = None,
    format: str | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Make a checkpoint folder the user has ready to load, without writing into it.

    ``shard=None`` (as saved): the work folder gets the checksums of the folder's tensors,
    read from its files once (read-only, in a worker: the caller's memory is untouched),
    and a ``checkpoint`` link to the folder. A shard size: the folder is resharded into
    the work folder (streaming one input shard at a time), with ``config.json`` and the
    other small files copied, and the checksums of the *source* files, so every load of
    the resharded files is checked against what the user saved. Both are reused until the
    folder's files change (path, names, sizes and modification times are the key).

    Args:
        folder: the resolved checkpoint folder (see :func:`bigviz.models.folders.resolve_folder`).
        shard: max shard size in bytes to reshard to; ``None`` loads the files as saved.
        format: the resharded files' format (``None``: the folder's own).
        work_dir: the work folder (default ``$TMPDIR/bigviz-work``).

    Returns:
        The folder holding ``checkpoint/`` and ``checksums.json``.

    Raises:
        RunError: reading (a corrupt shard) or resharding failed; the message says which.

    Example:
        >>> # prepare_folder(Path("/data/my-gpt2"))  -> .../folder-my-gpt2-as-saved-1a2b…
    """
    src = Path(folder).resolve()
    if format is not None:
        check_format(format)
    root = work_folder(work_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / _folder_key(src, shard, format)
    if (final / "checksums.json").exists():
        return final
    tmp = root / f".tmp-{uuid.uuid4().hex[:8]}"
    job = {"kind": "prepare-folder", "src": str(src), "dir": str(tmp), "shard_size": shard,
           "format": format, "sys_path": sys.path, "label": f"prepare {final.name}"}
    try:
        out = execute(job)
        what = (f"reading the checksums of {src}" if shard is None else
                f"resharding {src} into {format_size(shard, binary=False)} shards")
        raise_if_failed(out, what)
        try:
            tmp.rename(final)
        except OSError:  # another process prepared it first; theirs is as good as ours
            if not (final / "checksums.json").exists():
                raise
    finally:
        if tmp.is_symlink() or tmp.exists():
            # the link to the user's folder is unlinked, never followed (rmtree does not)
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def files_dtype(info: CheckpointInfo, spec: str) -> str:
    """The dtype a checkpoint's weights are saved in: the floating dtype holding the most
    bytes (a model saved in bfloat16 with a few float32 norms is bfloat16).

    Raises:
        ConfigError: the checkpoint holds no floating-point tensors.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> files_dtype(NS(dtypes={"bfloat16": 90, "float32": 10, "int64": 999}), "x")
        'bfloat16'
    """
    floating = {k: v for k, v in info.dtypes.items()
                if k.startswith(("float", "bfloat", "complex"))}
    if not floating:
        raise ConfigError(f"model {spec!r} holds no floating-point weights "
                          f"(dtypes {sorted(info.dtypes)}); give a checkpoint of a model")
    return max(sorted(floating), key=lambda k: floating[k])


def as_saved_text(info: CheckpointInfo) -> str:
    """How a checkpoint is cut, for the shard-size axis of runs on the files as saved.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> as_saved_text(NS(files=[NS(file_size=9_800_000)] * 3))
        '3 × ≤ 9.8 MB'
    """
    sizes = [int(f.file_size) for f in info.files]
    if len(sizes) == 1:
        return f"1 file, {format_size(sizes[0], binary=False)}"
    return f"{len(sizes)} × ≤ {format_size(max(sizes), binary=False)}"
