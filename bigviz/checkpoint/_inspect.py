"""Find a checkpoint in a folder and describe it from headers only; validate it."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bigviz._errors import CheckpointError, ConfigError
from bigviz.checkpoint._format import (
    EXTENSIONS,
    PATTERNS,
    SafetensorsHeader,
    check_inside,
    dtype_name,
    index_filename,
    read_index,
    read_safetensors_header,
)
from bigviz.checkpoint._match import check_against_model
from bigviz.checkpoint._types import CheckpointInfo, ShardInfo, TensorInfo


@dataclass
class Layout:
    """Where a checkpoint's files are: folder, format, index, weight files in shard order."""

    folder: Path
    fmt: str
    index: Path | None
    files: list[str]
    weight_map: dict[str, str] | None = None
    index_metadata: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _few(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f", … ({len(names)} in all)" if len(names) > n else "")


def _fmt_of_file(name: str) -> str | None:
    for fmt, ext in EXTENSIONS.items():
        if name.endswith(ext + ".index.json") or name.endswith(ext):
            return fmt
    return None


def _pick(folder: Path, names: list[str], fmt: str) -> tuple[str | None, str | None]:
    """(index name, single-file name) for ``fmt`` among ``names``; raises on ambiguity."""
    ext = EXTENSIONS[fmt]
    plain = PATTERNS[fmt].format(suffix="")
    indexes = sorted(n for n in names if n.endswith(ext + ".index.json"))
    files = sorted(n for n in names if n.endswith(ext))
    if index_filename(fmt) in indexes:
        return index_filename(fmt), None
    if plain in files:
        return None, plain
    if len(indexes) == 1:
        return indexes[0], None
    if len(indexes) > 1:
        raise CheckpointError(
            f"{folder}: several {fmt} index files ({', '.join(indexes)}); pass the path of the "
            "one to use"
        )
    if len(files) == 1:
        return None, files[0]
    if files:
        raise CheckpointError(
            f"{folder}: {len(files)} {ext} files ({_few(files)}) "
            f"but no index file ({index_filename(fmt)}); the index is missing — re-save the "
            "checkpoint, or pass the path of one file"
        )
    return None, None


def locate(path: str | os.PathLike[str], *, format: str | None = None) -> Layout:
    """Find the checkpoint at ``path`` (a folder, an index file or a single weight file).

    Raises:
        CheckpointError: nothing there, an empty folder, no checkpoint, a broken index.
    """
    if format is not None and format not in PATTERNS:
        raise ConfigError(f"format {format!r} is not 'safetensors' or 'bin' (or None to detect)")
    p = Path(path).absolute()
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint folder or file")
    notes: list[str] = []
    if p.is_file():
        fmt = _fmt_of_file(p.name)
        if fmt is None:
            raise CheckpointError(
                f"{p}: not a checkpoint file; expected a .safetensors, .bin or *.index.json file"
            )
        folder = p.parent
        if p.name.endswith(".index.json"):
            return _from_index(folder, p, fmt, notes)
        check_inside(folder, p, what=str(p))
        return Layout(folder=folder, fmt=fmt, index=None, files=[p.name], notes=notes)
    if not p.is_dir():
        raise CheckpointError(
            f"{p}: not a checkpoint folder or file (a device, FIFO or socket); give the folder "
            "that holds the weights, or one weight or index file"
        )
    folder = p
    entries = list(os.scandir(folder))
    # regular files only (links to them too): opening a FIFO named model.safetensors
    # would wait forever for a writer
    names = sorted(e.name for e in entries if e.is_file())
    if not entries:
        raise CheckpointError(
            f"{folder}: the folder is empty; save a checkpoint there first (bigviz.save_sharded)"
        )
    found: dict[str, tuple[str | None, str | None]] = {}
    for fmt in PATTERNS:
        if format is not None and fmt != format:
            continue
        idx, single = _pick(folder, names, fmt)
        if idx or single:
            found[fmt] = (idx, single)
    if not found:
        want = (
            [index_filename(format), PATTERNS[format].format(suffix="")]
            if format
            else [index_filename(f) for f in PATTERNS]
            + [PATTERNS[f].format(suffix="") for f in PATTERNS]
        )
        shown = _few(sorted(e.name for e in entries), 6)
        raise CheckpointError(
            f"{folder}: no {format + ' ' if format else ''}checkpoint here (found: {shown}); "
            f"expected one of {', '.join(want)}"
        )
    if len(found) > 1:
        fmt = "safetensors"
        other = found["bin"][0] or found["bin"][1]
        notes.append(
            f"both formats present ({other} next to the safetensors files); using safetensors"
        )
    else:
        fmt = next(iter(found))
    idx, single = found[fmt]
    plain = PATTERNS[fmt].format(suffix="")
    if idx is not None and plain in names:
        notes.append(
            f"both {idx} and {plain} present; using the index (Transformers would load {plain})"
        )
    if idx is not None:
        return _from_index(folder, folder / idx, fmt, notes)
    assert single is not None
    check_inside(folder, folder / single, what=str(folder / single))
    return Layout(folder=folder, fmt=fmt, index=None, files=[single], notes=notes)


def _from_index(folder: Path, index_path: Path, fmt: str, notes: list[str]) -> Layout:
    check_inside(folder, index_path, what=str(index_path))
    index = read_index(index_path, fmt)
    files = sorted(set(index.weight_map.values()))
    first_key: dict[str, str] = {}
    for key, file in index.weight_map.items():
        first_key.setdefault(file, key)
    for file in files:
        if not (folder / file).is_file():
            raise CheckpointError(
                f"{index_path}: shard {file!r} (holding {first_key[file]!r} and others) is missing "
                f"from {folder}; re-save or re-download the checkpoint"
            )
    if not files:
        notes.append("the index lists no tensors")
    # a weight file the index does not name is not loaded: say so (a re-save that left
    # an old shard behind, a copy into the wrong folder)
    plain = PATTERNS[fmt].format(suffix="")
    stray = sorted(e.name for e in os.scandir(folder) if e.is_file()
                   and e.name.endswith(EXTENSIONS[fmt]) and e.name not in files
                   and e.name != plain)
    if stray:
        notes.append(f"{len(stray)} {EXTENSIONS[fmt]} file(s) in the folder are not in "
                     f"{index_path.name} and are not loaded: {_few(stray)}")
    return Layout(
        folder=folder,
        fmt=fmt,
        index=index_path,
        files=files,
        weight_map=index.weight_map,
        index_metadata=index.metadata,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------
# .bin files, read with weights_only=True only


def refused_pickle(message: str) -> str:
    """What a ``weights_only`` refusal was about, from torch's message: the global the
    pickle asked for (``posix.system``), not torch's advice and documentation link.

    Example:
        >>> refused_pickle("Weights only load failed. ...\\n\\nTrying to load unsupported GLOBAL "
        ...                "posix.system whose module posix is blocked.\\n\\nCheck the docs")
        'the file asks to call posix.system, which would run code'
    """
    m = re.search(r"GLOBAL ([A-Za-z_][\w.]*\w)", message)
    if m:
        return f"the file asks to call {m.group(1)}, which would run code"
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith(("Weights only load failed", "Check the doc"))]
    what = (keep or lines or ["(no reason given)"])[0]
    return ("the file holds Python objects that torch.load(weights_only=True) refuses "
            f"({what[:200]})")


def load_bin(path: Path, *, mmap: bool = True) -> dict[str, torch.Tensor]:
    """``torch.load(path, weights_only=True)`` (memory-mapped: no data copied), or a clear error.

    Raises:
        CheckpointError: the file holds Python objects other than tensors (a pickle that
            would run code is refused, nothing runs), is truncated, or is not a state dict.
    """
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as e:
            if mmap and "mmap" in str(e):
                # legacy (pre-zip) torch.save files cannot be memory-mapped
                obj = torch.load(path, map_location="cpu", weights_only=True)
            else:
                raise
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to unpickle: {refused_pickle(str(e))}. bigviz never runs "
            "pickled code; if you trust the file, convert it to safetensors yourself"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(
            f"{path}: cannot read .bin file (truncated or corrupt? {str(e)[:200]}); re-save or "
            "re-download it"
        ) from e
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(
                f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor; a weight file must "
                "hold only tensors"
            )
    return dict(obj)


# ---------------------------------------------------------------------------------------------


def _module_sizes(sizes: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for name, size in sizes.items():
        parts = name.split(".")
        for i in range(len(parts) + 1):
            out[".".join(parts[:i])] += size
    if not out:
        out[""] = 0
    return dict(out)


def scan(
    path: str | os.PathLike[str], *, format: str | None = None
) -> tuple[CheckpointInfo, dict[str, SafetensorsHeader]]:
    """inspect_checkpoint plus the parsed safetensors headers by file name, so that
    load_sharded reads each header once (empty for ``.bin``)."""
    try:
        layout = locate(path, format=format)
    except OSError as e:  # a symlink loop, a folder we may not list, …
        where = e.filename or path
        raise CheckpointError(
            f"{where}: cannot read the checkpoint ({e.strerror or e}); fix the link or the "
            "permissions, or point at another folder"
        ) from e
    folder = layout.folder
    tensors: dict[str, TensorInfo] = {}
    files: list[ShardInfo] = []
    tied: list[list[str]] = []
    counted: dict[str, int] = {}  # name -> bytes, one name per unique storage
    headers: dict[str, SafetensorsHeader] = {}
    file_meta: dict[str, str] = {}
    unindexed: dict[str, str] = {}  # stored in a shard, absent from the index
    for name in layout.files:
        fpath = folder / name
        if layout.fmt == "safetensors":
            header = read_safetensors_header(fpath)
            headers[name] = header
            if len(layout.files) == 1:
                file_meta = dict(header.metadata)
            shard_bytes = 0
            for key, entry in header.entries.items():
                if key in tensors:
                    raise CheckpointError(
                        f"{fpath}: tensor {key!r} is also stored in {tensors[key].shard}"
                    )
                tensors[key] = TensorInfo(
                    shard=name,
                    dtype=dtype_name(entry.dtype),
                    shape=list(entry.shape),
                    nbytes=entry.nbytes,
                )
                counted[key] = entry.nbytes
                shard_bytes += entry.nbytes
            files.append(ShardInfo(name, shard_bytes, header.file_size, len(header.entries)))
        else:
            sd = load_bin(fpath)
            by_storage: dict[tuple[int, int], list[str]] = defaultdict(list)
            shard_bytes = 0
            seen_storage: set[int] = set()
            for key, t in sd.items():
                if key in tensors:
                    raise CheckpointError(
                        f"{fpath}: tensor {key!r} is also stored in {tensors[key].shard}"
                    )
                nbytes = t.nelement() * t.element_size()
                tensors[key] = TensorInfo(
                    shard=name, dtype=dtype_name(t.dtype), shape=list(t.shape), nbytes=nbytes
                )
                counted[key] = nbytes
                sptr = t.untyped_storage().data_ptr()
                if nbytes and sptr:
                    by_storage[(t.data_ptr(), nbytes)].append(key)
                # unique storages, as torch.save stores them and huggingface_hub counts them
                if sptr == 0 or sptr not in seen_storage:
                    seen_storage.add(sptr)
                    shard_bytes += t.untyped_storage().nbytes()
            for group in by_storage.values():
                if len(group) > 1:
                    tied.append(sorted(group))
                    for key in group[1:]:
                        counted.pop(key)
            files.append(ShardInfo(name, shard_bytes, fpath.stat().st_size, len(sd)))
            del sd
    if layout.weight_map is not None:
        for key, shard in layout.weight_map.items():
            if key not in tensors:
                raise CheckpointError(
                    f"{layout.index}: key {key!r} is listed in shard {shard!r}, but that file "
                    "does not contain it; the index and the shards disagree: re-save it"
                )
            if tensors[key].shard != shard:
                raise CheckpointError(
                    f"{layout.index}: key {key!r} is listed in {shard!r} but stored in "
                    f"{tensors[key].shard!r}; re-save the checkpoint"
                )
        extra = sorted(set(tensors) - set(layout.weight_map))
        if extra:
            # the index is the checkpoint's contract (Transformers loads what it lists):
            # such a tensor is not part of the checkpoint, and a load says so
            layout.notes.append(
                f"{len(extra)} tensor(s) stored in shards but absent from the index are not "
                f"loaded (the index and the shards disagree: re-save it): {_few(extra)}"
            )
            for key in extra:
                unindexed[key] = tensors.pop(key).shard
                counted.pop(key, None)
    raw_meta: dict[str, Any] = dict(layout.index_metadata) if layout.index else dict(file_meta)
    metadata = {
        k: v if isinstance(v, str) else str(v) for k, v in raw_meta.items() if k != "total_size"
    }
    aliases = {
        k: v
        for k, v in raw_meta.items()
        if isinstance(v, str) and v in tensors and k not in tensors
    }
    groups: dict[str, list[str]] = defaultdict(list)
    for dropped, kept in sorted(aliases.items()):
        groups[kept].append(dropped)
    tied.extend([kept, *dropped] for kept, dropped in sorted(groups.items()))
    computed_total = sum(f.bytes for f in files)
    if unindexed:  # what a load reads: the indexed tensors only
        computed_total = max(0, computed_total - sum(
            e.nbytes for name in set(unindexed.values()) if name in headers
            for k, e in headers[name].entries.items() if k in unindexed))
    # sizes and predictions come from the tensors in the files, never from the index's
    # word for them: a forged total_size (10**18, -5) must not become "888.2 PiB"
    total = computed_total
    notes = list(layout.notes)
    idx_total = layout.index_metadata.get("total_size") if layout.index else None
    if isinstance(idx_total, int) and idx_total != computed_total:
        on_disk = sum(f.file_size for f in files)
        if idx_total < 0 or idx_total > on_disk:
            notes.append(
                f"warning: the index's total_size {idx_total:,} cannot be true (the weight "
                f"files hold {on_disk:,} bytes); it is ignored: sizes and predictions use the "
                f"{computed_total:,} tensor bytes in the files")
        else:
            notes.append(
                f"index total_size {idx_total:,} differs from the {computed_total:,} tensor "
                "bytes in the files (views of larger storages count their whole storage); "
                "sizes and predictions use the tensor bytes")
    dtypes: dict[str, int] = defaultdict(int)
    for key, nbytes in counted.items():
        dtypes[tensors[key].dtype] += nbytes
    info = CheckpointInfo(
        path=str(folder),
        format=layout.fmt,
        files=files,
        index_file=layout.index.name if layout.index else None,
        total_size=total,
        n_tensors=len(tensors),
        largest_shard=max((f.bytes for f in files), default=0),
        dtypes=dict(dtypes),
        tensors=tensors,
        module_sizes=_module_sizes(counted),
        tied=tied,
        aliases=aliases,
        metadata=metadata,
        notes=notes,
        unindexed=unindexed,
    )
    return info, headers


def inspect_checkpoint(
    path: str | os.PathLike[str], *, format: str | None = None
) -> CheckpointInfo:
    """Describe a checkpoint (bigviz, Transformers or huggingface_hub) without loading its data.

    safetensors files: only the header is read (8-byte length + JSON), and checked as the
    safetensors library checks it. ``.bin`` files: ``torch.load(mmap=True, weights_only=True)``
    maps the file and builds tensor objects over it; no tensor data is copied.

    Args:
        path: a checkpoint folder, an index file or a single weight file.
        format: force ``"safetensors"`` or ``"bin"`` when a folder holds both.

    Returns:
        A CheckpointInfo (files in shard order, sizes, dtypes, per-module sizes, notes).

    Raises:
        CheckpointError: missing or empty folder, bad index, a shard name escaping the
            folder, a missing, truncated or corrupt shard, an index key absent from its shard.

    Example:
        >>> # info = bigviz.inspect_checkpoint("ckpt/"); print(info.summary())
    """
    info, _ = scan(path, format=format)
    return info


def validate_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module | None = None,
    *,
    format: str | None = None,
    strict: bool = True,
) -> CheckpointInfo:
    """Check a checkpoint completely (headers and keys of every shard), optionally against a model.

    Everything :func:`inspect_checkpoint` checks, plus, with ``model``: every model key is in
    the checkpoint (tied copies excepted) and none is extra (with ``strict``), and every
    shape and dtype matches.

    Args:
        path: a checkpoint folder, an index file or a single weight file.
        model: a model (may be on the meta device) to compare with.
        format: force ``"safetensors"`` or ``"bin"``.
        strict: with ``model``, also fail on missing or unexpected keys.

    Returns:
        The CheckpointInfo, when everything is valid.

    Raises:
        CheckpointError: naming the file and key at fault.

    Example:
        >>> # bigviz.validate_checkpoint("ckpt/", model)
    """
    info, _ = scan(path, format=format)
    if model is not None:
        check_against_model(model, info, strict=strict, allow_dtype_cast=False)
    return info
