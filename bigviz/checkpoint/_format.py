"""On-disk format: file names, the index JSON, safetensors headers, path safety.

Everything here reads metadata only (an index file, the first bytes of a safetensors
file); nothing touches tensor data. The rules follow the real sources:

- names and index layout: huggingface_hub ``save_torch_state_dict`` /
  ``constants.*_WEIGHTS_FILE_PATTERN`` and Transformers 5 ``save_pretrained``
  (``json.dumps(index, indent=2, sort_keys=True) + "\\n"``);
- safetensors header: 8-byte little-endian length ``n``, ``n`` bytes of UTF-8 JSON,
  then the data; ``n`` above ``100_000_000`` is refused (``MAX_HEADER_SIZE`` in
  ``safetensors/src/tensor.rs``); offsets must tile the data section exactly and end at
  the end of the file (``Metadata::validate`` and ``MetadataIncompleteBuffer`` there);
- weight_map safety: huggingface_hub ``_load_sharded_checkpoint`` (no drive, no root,
  no ``..``, extension must match the index) plus a resolved-path check against symlinks.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any, Literal

import torch

from bigviz._errors import CheckpointError

Format = Literal["safetensors", "bin"]

#: safetensors refuses headers above this many bytes (``MAX_HEADER_SIZE`` in tensor.rs).
MAX_HEADER_SIZE = 100_000_000
#: huggingface_hub refuses index files above 10 MiB (``MAX_INDEX_FILE_SIZE``); so do we.
MAX_INDEX_FILE_SIZE = 10 * 1024 * 1024

PATTERNS: dict[str, str] = {
    "safetensors": "model{suffix}.safetensors",
    "bin": "pytorch_model{suffix}.bin",
}
EXTENSIONS: dict[str, str] = {"safetensors": ".safetensors", "bin": ".bin"}

_SHARD_RE = re.compile(r"-\d{5}-of-\d{5}$")

# safetensors dtype codes -> torch dtypes (as in safetensors.torch._TYPES); optional
# dtypes only where this torch has them.
_ST_TO_TORCH: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "C64": torch.complex64,
}
for _code, _attr in [
    ("F8_E4M3", "float8_e4m3fn"),
    ("F8_E4M3FNUZ", "float8_e4m3fnuz"),
    ("F8_E5M2", "float8_e5m2"),
    ("F8_E5M2FNUZ", "float8_e5m2fnuz"),
    ("U64", "uint64"),
    ("U32", "uint32"),
    ("U16", "uint16"),
]:
    if hasattr(torch, _attr):
        _ST_TO_TORCH[_code] = getattr(torch, _attr)
_TORCH_TO_ST: dict[torch.dtype, str] = {v: k for k, v in _ST_TO_TORCH.items()}


def shard_filename(fmt: str, index: int, count: int) -> str:
    """``model-00001-of-00003.safetensors``; a single shard keeps the plain name."""
    suffix = "" if count == 1 else f"-{index + 1:05d}-of-{count:05d}"
    return PATTERNS[fmt].format(suffix=suffix)


def index_filename(fmt: str) -> str:
    """``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``."""
    return PATTERNS[fmt].format(suffix="") + ".index.json"


def is_weight_file(name: str) -> bool:
    """True for names bigviz, Transformers or huggingface_hub write as weights or index."""
    for fmt in PATTERNS:
        plain = PATTERNS[fmt].format(suffix="")
        ext = EXTENSIONS[fmt]
        if name in (plain, index_filename(fmt)):
            return True
        stem = name[: -len(ext)] if name.endswith(ext) else None
        if stem is not None and stem.startswith(plain[: -len(ext)]) and _SHARD_RE.search(stem):
            return True
    return False


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def torch_dtype_of(code: str, *, file: Path, key: str) -> torch.dtype:
    """The torch dtype for a safetensors dtype code, or a CheckpointError naming file and key."""
    try:
        return _ST_TO_TORCH[code]
    except KeyError:
        raise CheckpointError(
            f"{file}: tensor {key!r} has dtype {code!r}, which this torch cannot represent; "
            f"supported: {', '.join(sorted(_ST_TO_TORCH))}"
        ) from None


@dataclass(frozen=True)
class HeaderEntry:
    """One tensor of a safetensors header; offsets are absolute file offsets."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class SafetensorsHeader:
    """A parsed, validated safetensors header."""

    path: Path
    entries: dict[str, HeaderEntry]  # in file (offset) order
    metadata: dict[str, str]
    data_start: int
    file_size: int


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """Read and validate the header of a safetensors file without touching its data.

    Applies the same checks as the safetensors library (header size limit, UTF-8 JSON,
    offsets tiling the data section, shape × dtype size matching the offsets, file size
    matching the last offset), so a file accepted here loads with ``safe_open`` too.

    Raises:
        CheckpointError: naming the file (and the key, where one is at fault).
    """
    try:
        file_size = path.stat().st_size
        with open(path, "rb", buffering=0) as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(
                    f"{path}: truncated safetensors file ({file_size} bytes; the 8-byte header "
                    "length is missing); re-save or re-download it"
                )
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_SIZE:
                raise CheckpointError(
                    f"{path}: safetensors header of {n:,} bytes is larger than the "
                    f"{MAX_HEADER_SIZE:,}-byte limit of the safetensors library; the file is "
                    "corrupt or not a safetensors file"
                )
            if 8 + n > file_size:
                raise CheckpointError(
                    f"{path}: truncated safetensors file: the header claims {n:,} bytes but the "
                    f"file has only {file_size:,}; re-save or re-download it"
                )
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read safetensors header: {e}") from e
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(
            f"{path}: corrupt safetensors header (not UTF-8 JSON: {e}); re-save or re-download it"
        ) from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (JSON is not an object)")
    meta_raw = header.pop("__metadata__", None)
    metadata: dict[str, str] = {}
    if meta_raw is not None:
        if not isinstance(meta_raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta_raw.items()
        ):
            raise CheckpointError(
                f"{path}: corrupt safetensors header (__metadata__ must map strings to strings)"
            )
        metadata = dict(meta_raw)
    data_start = 8 + n
    parsed: list[tuple[int, int, str, HeaderEntry]] = []
    for key, spec in header.items():
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("dtype"), str)
            or not isinstance(spec.get("shape"), list)
            or not all(isinstance(d, int) and d >= 0 for d in spec["shape"])
            or not isinstance(spec.get("data_offsets"), list)
            or len(spec["data_offsets"]) != 2
            or not all(isinstance(o, int) and o >= 0 for o in spec["data_offsets"])
        ):
            raise CheckpointError(
                f"{path}: corrupt safetensors header entry for tensor {key!r}: {spec!r}"
            )
        dtype = torch_dtype_of(spec["dtype"], file=path, key=key)
        s, end = spec["data_offsets"]
        shape = tuple(spec["shape"])
        numel = 1
        for d in shape:
            numel *= d
        if end < s or end - s != numel * dtype.itemsize:
            raise CheckpointError(
                f"{path}: tensor {key!r} has offsets [{s}, {end}] that do not match its shape "
                f"{list(shape)} and dtype {spec['dtype']} ({numel * dtype.itemsize} bytes); "
                "the file is corrupt"
            )
        parsed.append((s, end, key, HeaderEntry(dtype, shape, data_start + s, data_start + end)))
    parsed.sort(key=lambda item: (item[0], item[1]))
    cursor = 0
    for s, end, key, _ in parsed:
        if s != cursor:
            raise CheckpointError(
                f"{path}: tensor {key!r} starts at data offset {s} but the previous tensor ends "
                f"at {cursor}; the file is corrupt"
            )
        cursor = end
    if data_start + cursor != file_size:
        raise CheckpointError(
            f"{path}: {'truncated' if data_start + cursor > file_size else 'corrupt'} safetensors "
            f"file: the header describes {data_start + cursor:,} bytes but the file has "
            f"{file_size:,}; re-save or re-download it"
        )
    return SafetensorsHeader(
        path=path,
        entries={key: entry for _, _, key, entry in parsed},
        metadata=metadata,
        data_start=data_start,
        file_size=file_size,
    )


@dataclass(frozen=True)
class Index:
    """A parsed index file."""

    path: Path
    weight_map: dict[str, str]
    metadata: dict[str, Any]


def read_index(path: Path, fmt: str) -> Index:
    """Read and check an index file: JSON shape, size limit, shard names.

    Raises:
        CheckpointError: bad JSON, wrong structure, a shard name that escapes the folder or
            has the wrong extension.
    """
    try:
        size = path.stat().st_size
        if size > MAX_INDEX_FILE_SIZE:
            raise CheckpointError(
                f"{path}: index file of {size:,} bytes is larger than {MAX_INDEX_FILE_SIZE:,}; "
                "an index only maps names to files, this is not a valid index"
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read index file: {e}") from e
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(
            f"{path}: index is not valid JSON ({str(e)[:200]}); re-save the checkpoint or fix "
            "the file"
        ) from e
    if not isinstance(data, dict) or not isinstance(data.get("weight_map"), dict):
        raise CheckpointError(
            f"{path}: index must be a JSON object with a 'weight_map' object "
            '({"metadata": {...}, "weight_map": {name: file}})'
        )
    meta = data.get("metadata", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: index 'metadata' must be a JSON object, got {meta!r}")
    if "total_size" in meta and (
        not isinstance(meta["total_size"], int) or isinstance(meta["total_size"], bool)
    ):
        raise CheckpointError(
            f"{path}: index metadata.total_size must be an integer, got {meta['total_size']!r}"
        )
    weight_map: dict[str, str] = {}
    folder = path.parent
    checked: set[str] = set()
    for key, file in data["weight_map"].items():
        if not isinstance(file, str):
            raise CheckpointError(
                f"{path}: weight_map entry for {key!r} must be a file name string, got {file!r}"
            )
        if file not in checked:
            # once per file, not per key: resolving through symlinks costs syscalls, and
            # an index maps thousands of keys to a handful of files
            check_shard_name(folder, file, fmt, index=path, key=key)
            checked.add(file)
        weight_map[key] = file
    return Index(path=path, weight_map=weight_map, metadata=meta)


def allowed_root(folder: Path) -> Path:
    """The folder shard files must resolve into.

    Normally the checkpoint folder itself. A Hugging Face cache snapshot
    (``…/models--org--name/snapshots/<rev>/``) holds symlinks to ``../../blobs/``, so there
    the repository folder two levels up is the boundary.
    """
    real = folder.resolve()
    if real.parent.name == "snapshots" and real.parent.parent.name.startswith(
        ("models--", "datasets--", "spaces--")
    ):
        return real.parent.parent
    return real


def check_shard_name(folder: Path, name: str, fmt: str, *, index: Path, key: str) -> None:
    """Refuse a weight_map file name that escapes ``folder`` or has the wrong extension."""
    if "\0" in name:  # no file has such a name; os calls would raise a bare ValueError
        raise CheckpointError(
            f"{index}: weight_map entry for {key!r} points to {name!r}, which holds a NUL "
            "byte; the index is corrupt: re-save or re-download it"
        )
    win = PureWindowsPath(name)
    if not name or win.drive or win.root or ".." in win.parts or os.path.isabs(name):
        raise CheckpointError(
            f"{index}: weight_map entry for {key!r} points to {name!r}, outside the checkpoint "
            "folder; shard names must be plain relative names without '..'"
        )
    if not name.endswith(EXTENSIONS[fmt]):
        raise CheckpointError(
            f"{index}: weight_map entry for {key!r} points to {name!r}, but a {fmt} index may "
            f"only name '{EXTENSIONS[fmt]}' files"
        )
    check_inside(folder, folder / name, what=f"{index}: weight_map entry for {key!r}")


def check_inside(folder: Path, path: Path, *, what: str) -> None:
    """Refuse ``path`` when it resolves (through symlinks) outside the folder."""
    root = allowed_root(folder)
    real = path.resolve()
    if real != root and root not in real.parents:
        raise CheckpointError(
            f"{what} resolves to {real}, outside the checkpoint folder {root} (a symlink out?); "
            "copy the file into the folder instead"
        )


def dump_index(total_size: int, weight_map: Mapping[str, str], metadata: Mapping[str, Any]) -> str:
    """The index text, as Transformers 5 writes it: indent 2, keys sorted, trailing newline."""
    index = {"metadata": {"total_size": total_size, **metadata}, "weight_map": dict(weight_map)}
    return json.dumps(index, indent=2, sort_keys=True) + "\n"
