"""reshard: rewrite a checkpoint with another shard size or format, one input shard at a time.

The output is what huggingface_hub's ``save_torch_state_dict`` writes for the checkpoint's
state dict — the input's tensors in the order they come when the input shards are read in
file order, each file's tensors in stored order (safetensors: data offsets; ``.bin``: pickle
order). To get there without holding the state dict:

- the split is planned before any tensor data is read, with the greedy rule of
  :mod:`bigviz.checkpoint._plan` and huggingface_hub's storage identities reproduced from the
  files: a safetensors tensor is its own storage, keyed by its offset (two empty tensors at
  one offset share a data pointer once loaded, so huggingface_hub stores the second with the
  first); a ``.bin`` tensor has the storage ``torch.load`` gives it, keyed per file (mapped
  addresses may be reused once a file is unmapped);
- input shards are opened one after another (safetensors ``safe_open``, ``.bin`` memory-mapped
  with ``weights_only=True``); tensors are views of the mapped file, so nothing is copied
  until a writer reads them. An output shard is written as soon as its last tensor has
  arrived, by the same writers huggingface_hub uses (``safetensors.torch.save_file``, which
  writes from the tensors' memory, and ``torch.save``).

Resident memory stays under largest input shard + largest output shard: the pages of the open
file that were read (at most the input shard), plus the pages of an earlier file whose tail
still waits for an output shard (at most that output shard).

Everything goes into a temporary sibling folder that is renamed into place at the end (the
machinery of :mod:`bigviz.checkpoint._save`), so a failure or Ctrl-C leaves no partial output.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bigviz._errors import CheckpointError, ConfigError
from bigviz.checkpoint._format import (
    PATTERNS,
    SafetensorsHeader,
    dump_index,
    index_filename,
    is_weight_file,
    shard_filename,
)
from bigviz.checkpoint._inspect import inspect_checkpoint, load_bin, scan
from bigviz.checkpoint._plan import duplicate_names, split, storage_size
from bigviz.checkpoint._save import _write_shard, checked_target, describe_failure
from bigviz.checkpoint._staging import Stage, fsync_path, staged, write_text
from bigviz.checkpoint._types import CheckpointInfo, ShardInfo
from bigviz.units import parse_size

__all__ = ["reshard"]


@dataclass
class _Plan:
    """What to read from each input file and which output shard each name goes to."""

    fmt_in: str
    fmt_out: str
    files: list[Path]
    keys_by_file: list[list[str]]  # names to take from each input file, in stored order
    shards: list[list[str]]  # output shards, huggingface_hub's split (followers at the end)
    shard_bytes: list[int]
    total: int
    aliases: dict[str, str] = field(default_factory=dict)  # safetensors out: {dropped: kept}
    # .bin out: names the input stored once (safetensors aliases), written as the kept tensor
    also_as: dict[str, list[str]] = field(default_factory=dict)


def _bin_key(fi: int, t: torch.Tensor, size: int) -> Hashable:
    ptr = int(t.untyped_storage().data_ptr())
    # huggingface_hub keys storages by (device, data_ptr, nbytes); a null pointer (empty
    # storage outside an mmap) is the same key in every file
    return ("null", size) if ptr == 0 else (fi, ptr, size)


def _plan_bin_file(
    fi: int, path: Path, fmt_out: str, aliases: dict[str, str]
) -> tuple[list[str], list[tuple[str, int, Hashable | None]]]:
    sd = load_bin(path)
    dropped: set[str] = set()
    if fmt_out == "safetensors":
        # huggingface_hub drops names that alias the same bytes before a safetensors save,
        # over the whole state dict; storages never span two .bin files, so per file is equal
        for kept, names in duplicate_names(sd).items():
            for name in names:
                aliases.setdefault(name, kept)
                dropped.add(name)
    keys: list[str] = []
    entries: list[tuple[str, int, Hashable | None]] = []
    for name, t in sd.items():
        if name in dropped:
            continue
        keys.append(name)
        if fmt_out == "safetensors" and not t.is_contiguous():
            # huggingface_hub saves t.contiguous(): a fresh storage of the tensor's own size
            entries.append((name, t.nelement() * t.element_size(), None))
        else:
            size = storage_size(t)
            entries.append((name, size, _bin_key(fi, t, size)))
    del sd
    return keys, entries


def _plan(
    info: CheckpointInfo, headers: dict[str, SafetensorsHeader], fmt_out: str, limit: int
) -> _Plan:
    folder = Path(info.path)
    files = [folder / f.name for f in info.files]
    keys_by_file: list[list[str]] = []
    entries: list[tuple[str, int, Hashable | None]] = []
    aliases: dict[str, str] = {}
    also_as: dict[str, list[str]] = {}
    key_of: dict[str, Hashable | None] = {}
    size_of: dict[str, int] = {}
    for fi, path in enumerate(files):
        if info.format == "safetensors":
            keys = list(headers[path.name].entries)
            for name, e in headers[path.name].entries.items():
                if e.nbytes == 0 and fmt_out == "bin":
                    # written as a fresh empty tensor (see _fresh_empty): a null pointer
                    entries.append((name, 0, ("null", 0)))
                else:
                    entries.append((name, e.nbytes, (fi, e.start, e.nbytes)))
        else:
            keys, file_entries = _plan_bin_file(fi, path, fmt_out, aliases)
            entries.extend(file_entries)
        keys_by_file.append(keys)
    for name, size, key in entries:
        key_of[name], size_of[name] = key, size
    if info.format == "safetensors" and info.aliases:
        if fmt_out == "safetensors":
            # as huggingface_hub records the names it dropped: {dropped: kept}
            aliases.update(info.aliases)
        else:
            # .bin has no metadata: store the names again, sharing the kept tensor's storage
            # (torch.save writes it once; the split puts them in the kept tensor's shard)
            for dropped, kept in sorted(info.aliases.items()):
                also_as.setdefault(kept, []).append(dropped)
                entries.append((dropped, size_of[kept], key_of[kept]))
    if not entries:
        raise CheckpointError(
            f"{info.path}: the checkpoint holds no tensors; there is nothing to reshard"
        )
    shards, shard_bytes, total = split(entries, limit)
    return _Plan(
        fmt_in=info.format,
        fmt_out=fmt_out,
        files=files,
        keys_by_file=keys_by_file,
        shards=shards,
        shard_bytes=shard_bytes,
        total=total,
        aliases=aliases,
        also_as=also_as,
    )


def _fresh_empty(t: torch.Tensor) -> torch.Tensor:
    """An empty tensor with a storage of its own.

    safetensors hands out empty tensors pointing into the mapped file, at the same address
    as the next tensor; ``torch.save`` refuses two storages at one address with different
    dtypes (huggingface_hub's own ``.bin`` save of such a state dict fails that way).
    """
    return torch.empty(t.shape, dtype=t.dtype) if t.nbytes == 0 else t


@contextmanager
def _opened(fmt: str, path: Path) -> Iterator[Callable[[str], torch.Tensor]]:
    """A getter for one input file's tensors, as views of the mapped file (no data read)."""
    if fmt == "bin":
        sd = load_bin(path)
        try:
            yield sd.__getitem__
        finally:
            del sd
        return
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        yield f.get_tensor


def _target(dst: str | os.PathLike[str], src_folder: Path, *, overwrite: bool) -> Path:
    """The output folder, checked as save_sharded checks it, and never the source."""
    # the checks save_sharded makes (a usable path, links followed, not a file), all but
    # "not empty", which comes after "not the source" so that case gets its own message
    target = checked_target(dst, overwrite=True)
    real_src, real_dst = src_folder.resolve(), target.resolve()
    if real_dst == real_src or real_dst in real_src.parents:
        raise CheckpointError(
            f"{target} is the source checkpoint folder or holds it; replacing it would delete "
            "the source: write to a new folder, then swap the folders yourself"
        )
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        shown = sorted(p.name for p in target.iterdir())[:4]
        raise CheckpointError(
            f"{target} is not empty ({', '.join(shown)}…); pass overwrite=True (--overwrite) to "
            "replace the checkpoint there, or choose an empty folder"
        )
    return target


def _companions(info: CheckpointInfo, src: Path) -> list[Path]:
    """Files beside the weights (config.json, tokenizer files…) that keep DST a
    Transformers folder: top-level regular files that are neither this checkpoint's weights
    and index nor names a loader would read as weights (a stale pytorch_model.bin beside new
    safetensors files would shadow or contradict them). Only for a folder or index SRC."""
    if src.is_file() and not src.name.endswith(".index.json"):
        return []
    folder = Path(info.path)
    skip = {f.name for f in info.files} | ({info.index_file} if info.index_file else set())
    out = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name in skip or is_weight_file(entry.name) or not entry.is_file():
            continue
        out.append(Path(entry.path))
    return out


def reshard(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    max_shard_size: int | str,
    format: str | None = None,
    overwrite: bool = False,
    on_shard: Callable[[ShardInfo], None] | None = None,
) -> CheckpointInfo:
    """Rewrite a checkpoint with another shard size or format, one input shard at a time.

    ``dst`` gets exactly what huggingface_hub's ``save_torch_state_dict`` writes for the
    source's state dict (its tensors in the order the input shards hold them): the same
    greedy split, file names (``model-00001-of-00003.safetensors``, a single shard as
    ``model.safetensors`` without index; ``pytorch_model-…bin`` for ``.bin``), index and
    tensor bytes. Tensors sharing storage are stored once; a tensor larger than the maximum
    gets a shard of its own. Names the source recorded as aliases of a stored tensor stay
    aliases (safetensors metadata) or are stored again sharing its storage (``.bin``).
    Other top-level files of a source folder (``config.json``, ``generation_config.json``,
    tokenizer files…) are copied, so a Transformers folder stays one; the source's own
    weight and index files are not.

    Peak RAM is at most largest input shard + largest output shard (plus Python's own
    overhead): tensors are mapped, not loaded, and a shard is written as soon as it is full.
    The output is written into a temporary sibling folder and renamed into place at the end,
    so a failure or Ctrl-C leaves ``dst`` as it was. With ``overwrite=True`` an existing
    checkpoint there is replaced and its other files (not weights) are kept, as in
    :func:`save_sharded`. Nothing is ever written into ``src``.

    Args:
        src: a checkpoint folder :func:`inspect_checkpoint` reads (safetensors or ``.bin``,
            sharded with an index or one file), an index file, or one weight file.
        dst: the folder to write; missing or empty unless ``overwrite``.
        max_shard_size: bytes or a size string (``"2GB"`` decimal, ``"2GiB"`` binary), > 0.
        format: ``"safetensors"`` or ``"bin"``; ``None`` keeps the source's format.
        overwrite: replace a non-empty ``dst``.
        on_shard: called with each output file's ShardInfo once it is written (progress).

    Returns:
        The CheckpointInfo of ``dst``.

    Raises:
        CheckpointError: ``src`` has no weights or a corrupt shard; ``dst`` is not empty
            (without ``overwrite``), is a file, or is (or holds) ``src``; writing failed.
        ConfigError: a ``max_shard_size`` of 0 or below, or an unknown ``format``.
        SizeError: an unreadable ``max_shard_size``.

    Example:
        >>> # info = bigviz.checkpoint.reshard("gpt2-ckpt/", "gpt2-2gb/", max_shard_size="2GB")
        >>> # [f.name for f in info.files]
        >>> # ['model-00001-of-00003.safetensors', ...]
    """
    if format is not None and format not in PATTERNS:
        raise ConfigError(
            f"format {format!r} is not 'safetensors' or 'bin'; pick one, or None to keep the "
            "source's format"
        )
    limit = parse_size(max_shard_size)
    if limit <= 0:
        raise ConfigError(
            f"max_shard_size {max_shard_size!r} must be above 0; give a size such as '2GB'"
        )
    src_path = Path(src).absolute()
    info, headers = scan(src_path)
    fmt_out = format or info.format
    target = _target(dst, Path(info.path), overwrite=overwrite)
    plan = _plan(info, headers, fmt_out, limit)
    companions = _companions(info, src_path)

    n = len(plan.shards)
    names = [shard_filename(fmt_out, i, n) for i in range(n)]
    file_meta = {"format": "pt", **(plan.aliases if n == 1 else {})}
    shard_of = {name: i for i, keys in enumerate(plan.shards) for name in keys}
    remaining = [len(keys) for keys in plan.shards]
    pending: dict[str, torch.Tensor] = {}

    stage: Stage | None = None
    try:
        with staged(target, overwrite=overwrite) as stage:
            tmp = stage.dir
            _write_all(plan, names, fmt_out, file_meta, shard_of, remaining, pending, tmp,
                       companions, stage, on_shard)
    except BaseException as e:
        pending.clear()
        if isinstance(e, Exception) and not isinstance(e, (CheckpointError, ConfigError)):
            what = stage.current if stage is not None else "(making the folder)"
            raise CheckpointError(
                f"resharding into {target}: {what} failed: {describe_failure(e)}; "
                f"{target} is as it was and no partial checkpoint was left"
            ) from e
        raise
    info_out = inspect_checkpoint(target, format=fmt_out)
    info_out.notes.extend(stage.notes)
    return info_out


def _write_all(
    plan: _Plan, names: list[str], fmt_out: str, file_meta: dict[str, str],
    shard_of: dict[str, int], remaining: list[int], pending: dict[str, torch.Tensor],
    tmp: Path, companions: list[Path], stage: Stage,
    on_shard: Callable[[ShardInfo], None] | None,
) -> None:
    """Stream the input shards into the output shards in ``tmp``, one input file open at
    a time; ``stage.current`` names what is being written (for the error message)."""
    # a helper thread fsyncs each finished shard while the next one is read and written
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bigviz-reshard-fsync") as sync:
        synced = []

        def write(s: int) -> None:
            stage.current = names[s]
            tensors = {k: pending.pop(k) for k in plan.shards[s]}
            if fmt_out == "safetensors":
                tensors = {k: v.contiguous() for k, v in tensors.items()}
            _write_shard(fmt_out, tensors, tmp / names[s], file_meta)
            del tensors  # unmaps an input file whose last tensor this was
            synced.append(sync.submit(fsync_path, tmp / names[s]))
            if on_shard is not None:
                size = (tmp / names[s]).stat().st_size
                on_shard(ShardInfo(names[s], plan.shard_bytes[s], size, len(plan.shards[s])))

        for path, keys in zip(plan.files, plan.keys_by_file, strict=True):
            stage.current = f"{path.name} (reading)"
            with _opened(plan.fmt_in, path) as get:
                for key in keys:
                    try:
                        t = get(key)
                    except Exception as e:
                        raise CheckpointError(
                            f"{path}: cannot read tensor {key!r} ({type(e).__name__}: "
                            f"{str(e)[:200]}); the file is corrupt: re-save or re-download it"
                        ) from e
                    if plan.fmt_in == "safetensors" and fmt_out == "bin":
                        t = _fresh_empty(t)
                    for name in (key, *plan.also_as.get(key, ())):
                        pending[name] = t
                        s = shard_of[name]
                        remaining[s] -= 1
                        if remaining[s] == 0:
                            write(s)
                    del t
            del get  # the getter holds the file's mapping: drop it before the next file
        if len(names) > 1:
            stage.current = index_filename(fmt_out)
            weight_map = {k: names[i] for i, keys in enumerate(plan.shards) for k in keys}
            write_text(tmp / stage.current, dump_index(plan.total, weight_map, plan.aliases))
        for path in companions:
            stage.current = path.name
            shutil.copy2(path, tmp / path.name)  # follows links: HF cache blobs come along
        for fut in synced:
            fut.result()
