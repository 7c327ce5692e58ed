"""Checkpoints saved once per (model, dtype, shard size, format, seed) in the work folder
under a hash of those settings, with every tensor's checksum beside them, and reused.

A checkpoint folder the user already has (a local folder, ``hf:ORG/NAME``) is never
re-saved and never written to: :func:`prepare_folder` takes its tensors' checksums once
(read-only, in a worker) into the work folder, keyed by the folder's path and its files'
sizes and modification times (a changed folder is checked again), beside a
``checkpoint`` link to the folder itself; other shard sizes are resharded into the work
folder (:func:`bigviz.checkpoint.reshard`, streaming) once, and reused.

Each prepared folder holds ``checkpoint/`` (files or a link) and ``checksums.json``.
The work folder is per user (``$XDG_CACHE_HOME/bigviz``, see
:func:`~bigviz.runner.validate.work_folder`); :func:`cache_entries` lists what it holds
and :func:`clear_cache` removes it (``bigviz cache list|clear``).

A preparation is made in a hidden ``.tmp-PID-…`` folder and renamed into place only when
complete: a cancelled or failed one (Ctrl-C, the OOM killer) leaves nothing behind, and
the hidden folder of a process that was killed outright is removed by the next one.

Example:
    >>> # folder = prepare_checkpoint("gpt:100MB", max_shard_size="20MB")
    >>> # folder = prepare_folder(Path("./my-gpt2"), shard=None)   # as saved
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigviz._errors import ConfigError, RunError
from bigviz._process import pid_alive
from bigviz.models import ModelLike, parse_spec
from bigviz.runner.single import Outcome, execute
from bigviz.runner.validate import (
    check_dtype,
    check_format,
    model_id,
    shard_bytes,
    work_folder,
)
from bigviz.units import format_size

if TYPE_CHECKING:
    from bigviz.checkpoint import CheckpointInfo

__all__ = ["CacheEntry", "PreparationCancelled", "WorkerError", "as_saved_text",
           "cache_entries", "clear_cache", "files_dtype", "prepare_checkpoint",
           "prepare_folder"]


class WorkerError(RunError):
    """A worker failed to prepare a checkpoint: the message is one line (the step and the
    last line of the error); ``details`` holds the worker's traceback (``--verbose``)."""

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.details = details


class PreparationCancelled(RunError):
    """``cancel`` was set (Ctrl-C) while a checkpoint was prepared: the worker was
    stopped and nothing of the checkpoint was kept."""


def _last_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    # bigviz's own errors say what and how to fix; their class path adds nothing
    return re.sub(r"^bigviz(\.\w+)*\.\w+: ", "", last)


def _check_prepared(out: Outcome, what: str) -> None:
    """Raise for a preparation that did not finish, naming the step it was in."""
    if out.outcome == "ok" and not out.error:
        return
    step = out.phase_reached
    where = f" while {step}" if step else ""
    if out.outcome == "cancelled":
        raise PreparationCancelled(f"{what} was cancelled{where}; nothing of it was kept")
    if out.outcome == "oom":
        server = ("" if "fork server died" not in (out.error or "")
                  else " and the bigviz fork server")
        raise WorkerError(
            f"{what} ran out of memory{where}: the kernel's OOM killer ended the worker"
            f"{server}; free memory or prepare a smaller model", out.traceback)
    # the supervisor's own wording names a phase; here the step says where
    reason = re.sub(r" in phase (None|'[^']*')", "", out.error or out.outcome)
    if out.outcome == "error" and out.traceback:
        reason = _last_line(out.traceback) or _last_line(reason)
    hint = (" (--verbose shows the worker's traceback)"
            if out.traceback and "--verbose" not in reason else "")
    raise WorkerError(f"{what} failed{where}: {_last_line(reason) or out.outcome}{hint}",
                      out.traceback)


def _tmp_name() -> str:
    return f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _remove_stale(root: Path) -> None:
    """Remove the hidden folders of preparations whose process is gone (killed)."""
    for entry in os.scandir(root):
        m = re.match(r"^\.tmp-(\d+)-[0-9a-f]{8}$", entry.name)
        if m is None or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
            continue
        _remove(Path(entry.path))


def _remove(path: Path) -> None:
    # a link (to a user's folder, as saved) is unlinked, never followed
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _run_prepare(job: dict[str, Any], root: Path, final: Path, what: str,
                 cancel: threading.Event | None) -> Path:
    """Run a preparation job into a hidden folder of ``root`` and rename it to ``final``."""
    _remove_stale(root)
    tmp = Path(job["dir"])
    try:
        out = execute(job, cancel=cancel)
        _check_prepared(out, what)
        try:
            tmp.rename(final)
        except OSError:  # another process prepared it first; theirs is as good as ours
            if not (final / "checksums.json").exists():
                raise
    finally:
        if tmp.is_symlink() or tmp.exists():
            _remove(tmp)
    return final


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
    cancel: threading.Event | None = None,
) -> Path:
    """Save ``model`` as a sharded checkpoint in the work folder once, and reuse it.

    The model is built and saved in a worker process (the caller's memory is untouched);
    tensor checksums go to ``checksums.json`` beside the ``checkpoint/`` folder, and a
    GPT-2 ``config.json`` into it for ``gpt:`` specs.

    ``cancel`` set while it runs stops the worker at once; nothing is kept.

    Returns:
        The folder holding ``checkpoint/`` and ``checksums.json``.

    Raises:
        ConfigError: a bad spec, size, format or dtype.
        WorkerError: the worker failed to save (the message names the step: building
            the model, checksums, writing the shards; ``details`` is its traceback).
        PreparationCancelled: ``cancel`` was set.

    Example:
        >>> # d = prepare_checkpoint("gpt:100MB", max_shard_size="20MB")
    """
    check_format(format)
    check_dtype(dtype)
    shard = shard_bytes(max_shard_size)
    parse_spec(model, dtype)
    root = work_folder(work_dir) / "checkpoints"
    final = root / _key(model, dtype, shard, format, seed)
    if (final / "checksums.json").exists():
        os.utime(final)  # last used: what `bigviz cache list` shows
        return final
    job = {"kind": "prepare", "model": model_id(model), "dtype": dtype, "seed": seed,
           "shard_size": shard, "format": format, "dir": str(root / _tmp_name()),
           "sys_path": sys.path, "label": f"prepare {final.name}"}
    return _run_prepare(job, root, final, f"saving {model_id(model)} as a {format} checkpoint",
                        cancel)


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
    cancel: threading.Event | None = None,
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
        work_dir: the work folder (default: the per-user cache, ``~/.cache/bigviz``).
        cancel: set it to stop the worker (nothing is kept).

    Returns:
        The folder holding ``checkpoint/`` and ``checksums.json``.

    Raises:
        WorkerError: reading (a corrupt shard) or resharding failed; the message says which.
        PreparationCancelled: ``cancel`` was set.

    Example:
        >>> # prepare_folder(Path("/data/my-gpt2"))  -> .../folder-my-gpt2-as-saved-1a2b…
    """
    src = Path(folder).resolve()
    if format is not None:
        check_format(format)
    root = work_folder(work_dir) / "checkpoints"
    final = root / _folder_key(src, shard, format)
    if (final / "checksums.json").exists():
        os.utime(final, follow_symlinks=False)
        return final
    job = {"kind": "prepare-folder", "src": str(src), "dir": str(root / _tmp_name()),
           "shard_size": shard, "format": format, "sys_path": sys.path,
           "label": f"prepare {final.name}"}
    what = (f"reading the checksums of {src}" if shard is None else
            f"resharding {src} into {format_size(shard, binary=False)} shards")
    return _run_prepare(job, root, final, what, cancel)


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


# -- the cache: what the work folder holds ---------------------------------------------


@dataclass
class CacheEntry:
    """One prepared checkpoint (or leftover) in the work folder.

    Attributes:
        path: the entry's folder.
        kind: ``"checkpoint"`` (saved by bigviz), ``"folder"`` (a user's folder as saved:
            checksums and a link), ``"reshard"`` (a user's folder resharded), ``"partial"``
            (a preparation that did not finish) or ``"run"`` (a run's scratch files).
        bytes: bytes on disk of its own files (a link to a user's folder counts nothing).
        last_used: modification time (seconds since the epoch; prepared entries are
            touched each time a run reuses them).
    """

    path: Path
    kind: str
    bytes: int
    last_used: float

    @property
    def name(self) -> str:
        """The entry's folder name (its cache key)."""
        return self.path.name


def _disk_bytes(path: Path) -> int:
    total = 0
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(OSError):
            total += path.lstat().st_blocks * 512
        return total
    for dirpath, dirnames, filenames in os.walk(path):  # links are not followed
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _kind(entry: Path, parent: str) -> str | None:
    if parent == "runs":  # a run's scratch folder: STRATEGY-1a2b3c4d, dist-STRATEGY-…
        ours = re.match(r"^[a-z0-9][a-z0-9-]*-[0-9a-f]{8}$", entry.name) is not None
        return "run" if ours and entry.is_dir() and not entry.is_symlink() else None
    if entry.name.startswith(".tmp-"):
        return "partial"
    if not (entry / "checksums.json").is_file():
        return None  # not something bigviz made: never listed, never removed
    if not entry.name.startswith("folder-"):
        return "checkpoint"
    return "folder" if (entry / "checkpoint").is_symlink() else "reshard"


def cache_entries(work_dir: str | os.PathLike[str] | None = None) -> list[CacheEntry]:
    """What bigviz keeps in the work folder: prepared checkpoints, unfinished
    preparations and run scratch folders, largest first. Files bigviz did not make are
    never listed.

    Raises:
        ConfigError: the work folder is unsafe (see
            :func:`~bigviz.runner.validate.work_folder`).

    Example:
        >>> # sum(e.bytes for e in cache_entries())   # what `bigviz cache clear` frees
    """
    root = work_folder(work_dir)
    out: list[CacheEntry] = []
    for parent in ("checkpoints", "runs"):
        for entry in sorted(os.scandir(root / parent), key=lambda e: e.name):
            path = Path(entry.path)
            kind = _kind(path, parent)
            if kind is None:
                continue
            try:
                used = path.lstat().st_mtime
            except OSError:
                continue
            out.append(CacheEntry(path, kind, _disk_bytes(path), used))
    return sorted(out, key=lambda e: (-e.bytes, e.name))


def clear_cache(work_dir: str | os.PathLike[str] | None = None) -> list[CacheEntry]:
    """Remove everything :func:`cache_entries` lists (and nothing else: a link to a
    user's checkpoint folder is unlinked, never followed). The hidden folder of a
    preparation still running in another process is left alone.

    Returns:
        The entries removed.

    Example:
        >>> # freed = sum(e.bytes for e in clear_cache())
    """
    removed = []
    for e in cache_entries(work_dir):
        m = re.match(r"^\.tmp-(\d+)-", e.name)
        if m is not None and pid_alive(int(m.group(1))) and time.time() - e.last_used < 86400:
            continue  # another sweep is preparing it right now
        _remove(e.path)
        removed.append(e)
    return removed
