"""save_sharded: the huggingface_hub / Transformers layout, written atomically."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import tempfile
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
    is_weight_file,
    shard_filename,
)
from bigviz.checkpoint._inspect import inspect_checkpoint
from bigviz.checkpoint._plan import (
    duplicate_names,
    split,
    storage_id,
    storage_size,
    tied_discard_names,
)
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
        torch.save(tensors, path)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _carry_over(old: Path, new: Path) -> None:
    """Hard-link (or copy) everything but weight files from the old folder into the new one,
    so ``overwrite=True`` keeps config.json, tokenizer files and the like."""
    for entry in os.scandir(old):
        src, dst = Path(entry.path), new / entry.name
        if is_weight_file(entry.name) or dst.exists():
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(src), str(dst))


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)
    return dst


def _publish(tmp: Path, target: Path) -> None:
    """Move the finished temporary folder into place; the old checkpoint, if any, goes away
    only after the new one is visible."""
    if target.exists() and any(target.iterdir()):
        _carry_over(target, tmp)
        _fsync_path(tmp)
        if _exchange(tmp, target):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / "ckpt")
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
    else:
        # rename() replaces an empty directory atomically, and creates a missing one
        os.rename(tmp, target)
    _fsync_path(target.parent)


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
    target = Path(path).absolute()
    if target.is_symlink():
        # a linked folder (ckpt -> /big/disk/ckpt) is saved into where the link points:
        # the temporary sibling must sit beside the real folder (same file system, and
        # the swap must replace the folder, not the link)
        try:
            target = target.resolve(strict=False)
        except (OSError, RuntimeError) as e:  # a link loop
            raise CheckpointError(f"{path}: cannot follow the symlink ({e}); fix the link") from e
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"{target} exists and is not a folder; choose a folder path")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        shown = sorted(p.name for p in target.iterdir())[:4]
        raise CheckpointError(
            f"{target} is not empty ({', '.join(shown)}…); pass overwrite=True to replace the "
            "checkpoint there, or choose an empty folder"
        )

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

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    # mkdtemp makes the folder 0700; give the checkpoint the mode a plain mkdir would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, target.stat().st_mode & 0o7777 if target.is_dir() else 0o777 & ~umask)
    current = "?"
    try:
        # Each finished shard is fsynced by a helper thread while the next one is written,
        # so flushing to disk overlaps writing instead of adding to it.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bigviz-ckpt-fsync") as syncer:
            synced = []
            for name, keys in zip(names, shards, strict=True):
                current = name
                _write_shard(format, {k: sd[k] for k in keys}, tmp / name, file_meta)
                synced.append((name, syncer.submit(_fsync_path, tmp / name)))
            if n > 1:
                current = index_filename(format)
                weight_map = {
                    k: name for name, keys in zip(names, shards, strict=True) for k in keys
                }
                _write_text(tmp / current, dump_index(total, weight_map, all_meta))
            for name, fut in synced:
                current = f"{name} (fsync)"
                fut.result()
        _fsync_path(tmp)
        current = "(moving into place)"
        _publish(tmp, target)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception) and not isinstance(e, (CheckpointError, ConfigError)):
            raise CheckpointError(
                f"saving {target}: writing {current} failed ({type(e).__name__}: {e}); the "
                "previous checkpoint there (if any) is untouched and no partial checkpoint was left"
            ) from e
        raise
    return inspect_checkpoint(target, format=format)
