"""load_sharded: keys checked against the index first, then one shard at a time.

How the bytes move (safetensors):

- into a model that already has its weights in CPU memory (``assign=False``), each tensor's
  bytes are read straight into the parameter's own memory with ``preadv`` — no staging copy;
- otherwise (``assign=True``, e.g. a model built on the meta device) each tensor gets fresh
  memory of its own (``torch.empty``, so it owns its storage and saves/frees like any
  tensor) and is read into it, then becomes the parameter.

Reads of consecutive tensors are batched into one ``preadv`` (up to 1024 buffers) and the
batches are spread over a few threads: filling fresh memory is bound by page faults, which
run in parallel on several cores (the GIL is released during ``preadv``).

``.bin`` shards are opened with ``torch.load(mmap=True, weights_only=True)`` and copied.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from bigviz._errors import CheckpointError, ConfigError
from bigviz.checkpoint._format import HeaderEntry
from bigviz.checkpoint._inspect import load_bin, scan
from bigviz.checkpoint._match import KeyMatch, check_against_model
from bigviz.checkpoint._types import LoadReport

_CHUNK = 32 * 1024 * 1024  # bytes per read call: big enough to amortise, small enough to balance
_IOV_MAX = 1024


# ---------------------------------------------------------------------------------------------
# reading bytes


def _bytes_view(t: torch.Tensor) -> memoryview:
    """A writable memoryview over a contiguous CPU tensor's bytes."""
    arr = t.detach().reshape(-1).view(torch.uint8).numpy()
    return memoryview(arr).cast("B")  # type: ignore[arg-type]


def _batches(pieces: list[tuple[int, memoryview]]) -> list[tuple[int, list[memoryview]]]:
    """Group (file offset, buffer) pieces, sorted by offset, into preadv calls of <= _CHUNK
    bytes over consecutive file ranges."""
    batches: list[tuple[int, list[memoryview]]] = []
    cur_off, cur_len = 0, 0
    cur: list[memoryview] = []
    for off, mv in pieces:
        pos = 0
        while pos < len(mv):
            contiguous = off + pos == cur_off + cur_len
            if cur and (not contiguous or len(cur) >= _IOV_MAX or cur_len >= _CHUNK):
                batches.append((cur_off, cur))
                cur, cur_len = [], 0
            if not cur:
                cur_off = off + pos
            take = min(len(mv) - pos, _CHUNK - cur_len)
            cur.append(mv[pos : pos + take])
            cur_len += take
            pos += take
    if cur:
        batches.append((cur_off, cur))
    return batches


def _pread_all(fd: int, offset: int, bufs: list[memoryview], path: Path) -> int:
    total = 0
    while bufs:
        n = os.preadv(fd, bufs, offset)
        if n == 0:
            raise CheckpointError(f"{path}: unexpected end of file at byte {offset}; truncated?")
        total += n
        offset += n
        while bufs and n >= len(bufs[0]):
            n -= len(bufs[0])
            bufs = bufs[1:]
        if bufs and n:
            bufs = [bufs[0][n:], *bufs[1:]]
    return total


def read_into(path: Path, pieces: list[tuple[int, memoryview]], *, threads: int) -> int:
    """Fill each buffer with the file bytes at its offset; returns bytes read."""
    pieces = sorted((p for p in pieces if len(p[1])), key=lambda p: p[0])
    if not pieces:
        return 0
    fd = os.open(path, os.O_RDONLY)
    try:
        batches = _batches(pieces)
        total_bytes = sum(len(mv) for _, mv in pieces)
        if threads <= 1 or len(batches) < 2 or total_bytes < 2 * _CHUNK:
            return sum(_pread_all(fd, off, bufs, path) for off, bufs in batches)
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bigviz-ckpt-read") as ex:
            return sum(ex.map(lambda b: _pread_all(fd, b[0], b[1], path), batches))
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# putting tensors into the model


def _set_tensor(model: torch.nn.Module, names: list[str], value: torch.Tensor) -> None:
    """Make every name in ``names`` refer to ``value`` (one Parameter object: ties survive)."""
    param: torch.nn.Parameter | None = None
    for name in names:
        prefix, _, leaf = name.rpartition(".")
        try:
            module = model.get_submodule(prefix) if prefix else model
        except AttributeError:
            module = None
        if module is not None and leaf in module._parameters:
            old = module._parameters[leaf]
            if param is None:
                param = torch.nn.Parameter(
                    value, requires_grad=bool(old is not None and old.requires_grad)
                )
            module._parameters[leaf] = param
        elif module is not None and leaf in module._buffers:
            module._buffers[leaf] = value
        else:  # a name made by a custom state_dict hook: let torch map it
            model.load_state_dict({name: value}, strict=False, assign=True)


def _direct_ok(t: torch.Tensor, dtype: torch.dtype) -> bool:
    return t.device.type == "cpu" and t.is_contiguous() and t.dtype == dtype and t.nelement() > 0


def load_sharded(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    strict: bool = True,
    device: str | torch.device = "cpu",
    assign: bool = False,
    format: str | None = None,
    allow_dtype_cast: bool = False,
    threads: int | None = None,
) -> LoadReport:
    """Load a (sharded) checkpoint into ``model``, one shard at a time.

    Keys, shapes and dtypes are checked against the index and headers before any tensor
    data is read. Each shard is read, put into the model and let go before the next one, so
    the transient memory is at most one shard. Tied parameters (one Parameter under several
    names, e.g. ``lm_head.weight`` and ``transformer.wte.weight``) are filled once and stay tied;
    names a safetensors checkpoint left out as aliases are filled from the stored name.
    Works like Transformers' former ``load_sharded_checkpoint``.

    Args:
        model: the model to fill. With ``assign=False`` its tensors must hold memory (not meta).
        path: a checkpoint folder, an index file or a single weight file.
        strict: fail, before reading data, if the model and checkpoint keys differ.
        device: where new tensors are created with ``assign=True``. With ``assign=False`` the
            bytes go into the model's own tensors wherever they live.
        assign: replace the model's tensors with freshly read ones (for meta-device models)
            instead of copying into them.
        format: force ``"safetensors"`` or ``"bin"`` when a folder holds both.
        allow_dtype_cast: convert tensors whose dtype differs from the model's.
        threads: reader threads (default: up to 4, one per core).

    Returns:
        A LoadReport (missing_keys, unexpected_keys, bytes read, files, seconds).

    Raises:
        CheckpointError: an invalid checkpoint, key/shape/dtype mismatches, a meta model
            without ``assign=True``.

    Example:
        >>> # with torch.device("meta"): model = MyModel()
        >>> # report = bigviz.load_sharded(model, "ckpt/", assign=True)
    """
    t0 = time.perf_counter()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device {device!r} is not a torch device ('cpu', 'cuda:0', …)") from e
    if threads is not None and (isinstance(threads, bool) or threads < 1):
        raise ConfigError(f"threads={threads!r}: give a number of reader threads >= 1, or None")
    n_threads = threads if threads is not None else min(4, os.cpu_count() or 1)
    info, headers = scan(path, format=format)
    match = check_against_model(model, info, strict=strict, allow_dtype_cast=allow_dtype_cast)
    mt = match.model_tensors
    if not assign:
        on_meta = [
            g[0] for gs in match.targets.values() for g in gs if mt[g[0]].device.type == "meta"
        ]
        if on_meta:
            raise CheckpointError(
                f"the model's {on_meta[0]!r} (and {len(on_meta) - 1} more) are on the meta device "
                "and have no memory to load into; pass assign=True"
            )
    by_shard: dict[str, list[str]] = defaultdict(list)
    for key in match.targets:
        by_shard[info.tensors[key].shard].append(key)
    folder = Path(info.path)
    report = LoadReport(missing_keys=match.missing, unexpected_keys=match.unexpected)
    unlisted = [n for n in match.missing if n in info.unindexed]
    if unlisted:  # strict=False: left as they were, and said so
        report.notes.append(
            f"not loaded: {', '.join(unlisted[:10])} — stored in "
            f"{info.unindexed[unlisted[0]]} but not listed in the index")
    loaded = 0
    for shard in (f.name for f in info.files):
        keys = by_shard.get(shard)
        if not keys:
            continue
        fpath = folder / shard
        report.files.append(shard)
        if info.format == "safetensors":
            entries = headers[shard].entries
            report.bytes_read += _load_safetensors_shard(
                model, fpath, keys, entries, match, assign=assign, dev=dev, threads=n_threads
            )
        else:
            report.bytes_read += _load_bin_shard(model, fpath, keys, match, assign=assign, dev=dev)
        loaded += sum(len(g) for k in keys for g in match.targets[k])
    report.loaded_keys = loaded
    report.still_meta = sorted(
        name
        for name, t in [
            *model.named_parameters(remove_duplicate=False),
            *model.named_buffers(remove_duplicate=False),
        ]
        if t.is_meta
    )
    report.seconds = time.perf_counter() - t0
    return report


def _load_safetensors_shard(
    model: torch.nn.Module,
    fpath: Path,
    keys: list[str],
    entries: dict[str, HeaderEntry],
    match: KeyMatch,
    *,
    assign: bool,
    dev: torch.device,
    threads: int,
) -> int:
    mt = match.model_tensors
    pieces: list[tuple[int, memoryview]] = []
    fresh: dict[str, torch.Tensor] = {}
    for key in keys:
        e = entries[key]
        groups = match.targets[key]
        target = mt[groups[0][0]]
        if not assign and len(groups) == 1 and _direct_ok(target, e.dtype):
            # straight into the parameter's memory: no staging copy at all
            pieces.append((e.start, _bytes_view(target)))
            continue
        buf = torch.empty(e.shape, dtype=e.dtype)
        fresh[key] = buf
        if buf.nelement():
            pieces.append((e.start, _bytes_view(buf)))
    n = read_into(fpath, pieces, threads=threads)
    _place(model, fresh, match, assign=assign, dev=dev)
    return n


def _load_bin_shard(
    model: torch.nn.Module,
    fpath: Path,
    keys: list[str],
    match: KeyMatch,
    *,
    assign: bool,
    dev: torch.device,
) -> int:
    sd = load_bin(fpath, mmap=True)
    fresh: dict[str, torch.Tensor] = {}
    n = 0
    for key in keys:
        src = sd[key]
        n += src.nelement() * src.element_size()
        if assign:
            # copy out of the file mapping: the model must not depend on the file
            fresh[key] = src.to(dev, copy=True)
        else:
            fresh[key] = src
    _place(model, fresh, match, assign=assign, dev=dev)
    del sd, fresh
    return n


def _place(
    model: torch.nn.Module,
    fresh: dict[str, torch.Tensor],
    match: KeyMatch,
    *,
    assign: bool,
    dev: torch.device,
) -> None:
    mt = match.model_tensors
    with torch.no_grad():
        for key, value in fresh.items():
            for names in match.targets[key]:
                target = mt[names[0]]
                if assign:
                    # a second group (a name filled through an alias) gets its own copy
                    v = value if names is match.targets[key][0] else value.clone()
                    if v.dtype != target.dtype:
                        v = v.to(target.dtype)
                    if v.device != dev:
                        v = v.to(dev)
                    _set_tensor(model, names, v)
                else:
                    target.copy_(value)
