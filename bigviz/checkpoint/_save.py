"""save_sharded: the huggingface_hub / Transformers layout, written atomically."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import torch

from bigviz._errors import CheckpointError, ConfigError
from bigviz.checkpoint._format import (
    PATTERNS,
    dump_index,
    index_filename,
    shard_filename,
)
from bigviz.checkpoint._inspect import inspect_checkpoint
from bigviz.checkpoint._plan import (
    detach_views,
    duplicate_names,
    split,
    storage_id,
    storage_size,
    tied_discard_names,
)
from bigviz.checkpoint._staging import Stage, fsync_path, resolve_target, staged, write_text
from bigviz.checkpoint._types import CheckpointInfo
from bigviz.units import parse_size

_RESERVED_METADATA = ("total_size", "format")


def _write_shard(
    fmt: str, tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]
) -> None:
    """Write one weight file (kept separate so tests can inject failures)."""
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path), metadata=metadata)
    else:
        # by path, as huggingface_hub does (the archive's inner folder is named after the
        # file, so the bytes match); torch's zip writer reports a full disk only as
        # "unexpected pos": ask the file system whether that is what happened
        try:
            torch.save(tensors, path)
        except RuntimeError as e:
            st = os.statvfs(path.parent)
            if st.f_bavail * st.f_frsize < 2**20:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
            raise


def describe_failure(e: BaseException) -> str:
    """What went wrong while writing, in words a user acts on (disk full, read-only, …).

    Example:
        >>> import errno
        >>> describe_failure(OSError(errno.ENOSPC, "No space left on device"))
        'the disk is full (OSError: [Errno 28] No space left on device)'
    """
    raw = f"{type(e).__name__}: {str(e)[:200]}"
    cause: BaseException | None = e
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__  # torch wraps the OSError it hit
    words = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EEXIST: "a part of the path is a file, not a folder",
    }
    if isinstance(cause, OSError) and cause.errno in words:
        return f"{words[cause.errno]} ({raw})"
    return raw


def _state_dict_of(
    model_or_state_dict: torch.nn.Module | Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    if isinstance(model_or_state_dict, torch.nn.Module):
        sd = model_or_state_dict.state_dict()
        return dict(sd), tied_discard_names(model_or_state_dict, sd)
    if not isinstance(model_or_state_dict, Mapping):
        raise ConfigError(
            "save_sharded needs an nn.Module or a state dict, got "
            f"{type(model_or_state_dict).__name__}"
        )
    return dict(model_or_state_dict), []


def save_sharded(
    model_or_state_dict: torch.nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    max_shard_size: int | str = "5GB",
    format: Literal["safetensors", "bin"] = "safetensors",
    overwrite: bool = False,
    metadata: dict[str, str] | None = None,
    shared_tensors_to_discard: list[str] | None = None,
) -> CheckpointInfo:
    """Save a model or state dict as a sharded checkpoint, atomically.

    The layout is huggingface_hub's ``save_torch_state_dict`` / Transformers'
    ``save_pretrained``: a greedy split in state-dict order (a new shard opens when
    ``current + size > max``, a tensor larger than the maximum gets its own shard),
    ``model-00001-of-00003.safetensors`` or ``pytorch_model-00001-of-00003.bin``, a single
    shard keeps the plain name and gets no index; the index is
    ``{"metadata": {"total_size": N}, "weight_map": {...}}`` with sorted keys.
    safetensors files carry ``{"format": "pt"}``; names aliasing the same memory are stored
    once (for a Transformers model the ``_tied_weights_keys`` copy is dropped) and recorded in
    the metadata as ``{dropped: kept}``.

    Everything is written into a temporary sibling folder, fsynced, then renamed into place
    (an atomic swap when replacing a folder), so a crash or a full disk leaves the previous
    checkpoint intact and no partial one visible. With ``overwrite=True`` files other than
    weights (config.json, …) already in the folder are kept. A ``path`` that is a symlink
    to a folder is saved into that folder; the link stays.

    Args:
        model_or_state_dict: an ``nn.Module`` (its ``state_dict()``) or a name -> tensor mapping.
        path: the checkpoint folder to create.
        max_shard_size: bytes or a size string (``"200MB"`` decimal, ``"200MiB"`` binary).
        format: ``"safetensors"`` (default) or ``"bin"`` (``torch.save`` pickles).
        overwrite: replace a non-empty folder; otherwise that is refused.
        metadata: extra string metadata for the index (and a single safetensors file).
        shared_tensors_to_discard: names to prefer dropping among aliases (safetensors).

    Returns:
        The CheckpointInfo of the written checkpoint.

    Raises:
        CheckpointError: the target is a non-empty folder (without ``overwrite``) or a
            file, writing failed (disk full, …), or aliased tensors cannot be stored.
        ConfigError: a bad option or a state dict value that is not a saveable tensor.
        SizeError: an unreadable ``max_shard_size``.

    Example:
        >>> # info = bigviz.save_sharded(model, "ckpt/", max_shard_size="200MB")
        >>> # info.n_shards, info.index_file
    """
    if format not in PATTERNS:
        raise ConfigError(f"format {format!r} is not 'safetensors' or 'bin'")
    limit = parse_size(max_shard_size)
    user_meta = dict(metadata or {})
    for k, v in user_meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ConfigError(f"metadata entry {k!r}: {v!r} must map a string to a string")
        if k in _RESERVED_METADATA:
            raise ConfigError(f"metadata key {k!r} is reserved; bigviz writes it itself")
    target = checked_target(path, overwrite=overwrite)

    sd, discard = _state_dict_of(model_or_state_dict)
    if shared_tensors_to_discard is not None:
        discard = list(shared_tensors_to_discard)
    if not sd:
        raise ConfigError("the state dict is empty; there is nothing to save")
    for k, value in sd.items():
        if not isinstance(k, str):
            raise ConfigError(f"state dict key {k!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise ConfigError(f"state dict entry {k!r} is a {type(value).__name__}, not a tensor")
        if value.device.type == "meta":
            raise ConfigError(
                f"tensor {k!r} is on the meta device and has no data to save; load or "
                "materialise the model first"
            )
        if value.layout != torch.strided:
            raise ConfigError(f"tensor {k!r} is sparse; save t.to_dense() instead")
    if format == "safetensors":
        _check_safetensors_dtypes(sd)

    sd = detach_views(sd, discard_names=discard)
    aliases: dict[str, str] = {}
    if format == "safetensors":
        for kept, dropped in duplicate_names(sd, discard_names=discard).items():
            for name in dropped:
                if name not in user_meta:  # as huggingface_hub: never override user data
                    aliases[name] = kept
                del sd[name]
        sd = {k: v.contiguous() for k, v in sd.items()}
    all_meta = {**user_meta, **aliases}

    shards, _, total = split(((k, storage_size(v), storage_id(v)) for k, v in sd.items()), limit)
    n = len(shards)
    names = [shard_filename(format, i, n) for i in range(n)]
    file_meta = {"format": "pt", **(all_meta if n == 1 else {})}

    stage: Stage | None = None
    try:
        with staged(target, overwrite=overwrite) as stage:
            tmp = stage.dir
            # Each finished shard is fsynced by a helper thread while the next one is
            # written, so flushing to disk overlaps writing instead of adding to it.
            with ThreadPoolExecutor(max_workers=1,
                                    thread_name_prefix="bigviz-ckpt-fsync") as syncer:
                synced = []
                for name, keys in zip(names, shards, strict=True):
                    stage.current = name
                    _write_shard(format, {k: sd[k] for k in keys}, tmp / name, file_meta)
                    synced.append((name, syncer.submit(fsync_path, tmp / name)))
                if n > 1:
                    stage.current = index_filename(format)
                    weight_map = {
                        k: name for name, keys in zip(names, shards, strict=True) for k in keys
                    }
                    write_text(tmp / stage.current, dump_index(total, weight_map, all_meta))
                for name, fut in synced:
                    stage.current = f"{name} (fsync)"
                    fut.result()
    except BaseException as e:
        if isinstance(e, Exception) and not isinstance(e, (CheckpointError, ConfigError)):
            what = stage.current if stage is not None else "(making the folder)"
            raise CheckpointError(
                f"saving {target}: writing {what} failed: {describe_failure(e)}; the "
                "previous checkpoint there (if any) is untouched and no partial checkpoint was left"
            ) from e
        raise
    info = inspect_checkpoint(target, format=format)
    info.notes.extend(stage.notes)
    return info


def _check_safetensors_dtypes(sd: Mapping[str, torch.Tensor]) -> None:
    """Refuse, before any I/O, a dtype the safetensors format cannot store (complex128…):
    safetensors itself would fail halfway with a bare ``KeyError``."""
    from safetensors.torch import save

    seen: dict[torch.dtype, str] = {}
    for k, v in sd.items():
        seen.setdefault(v.dtype, k)
    for dtype, key in seen.items():
        try:
            save({"probe": torch.empty(0, dtype=dtype)})  # an empty tensor: a header only
        except (KeyError, ValueError, TypeError):
            name = str(dtype).removeprefix("torch.")
            raise ConfigError(
                f"tensor {key!r} is {name}, a dtype the safetensors format cannot store; "
                "save with format='bin', or convert it first (e.g. complex128 -> complex64)"
            ) from None


def checked_target(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """:func:`resolve_target` after checking that ``path`` is a usable path at all.

    Raises:
        ConfigError: ``path`` is not a string or path, or holds a NUL character.
        CheckpointError: see :func:`resolve_target`.

    Example:
        >>> checked_target("ckpt", overwrite=False).name
        'ckpt'
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"checkpoint path {path!r} is a {type(path).__name__}; give a folder "
                          "path (str or pathlib.Path)")
    if "\0" in os.fspath(path):  # type: ignore[operator]
        raise ConfigError(f"checkpoint path {os.fspath(path)!r} contains a NUL character; "
                          "remove it")
    try:
        return resolve_target(path, overwrite=overwrite)
    except (CheckpointError, ConfigError):
        raise
    except OSError as e:
        raise CheckpointError(f"{path}: cannot use this folder: {describe_failure(e)}") from e
