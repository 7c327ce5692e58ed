"""Where a checkpoint is written before it becomes visible, and how it is published.

:func:`save_sharded` and :func:`reshard` write into a temporary folder and publish it
when every file is on disk, so a crash, a full disk or Ctrl-C never leaves a partial
checkpoint where the user looks:

* normally the temporary folder is a hidden sibling, ``.NAME.tmp-PID-XXXX``, renamed onto
  the target: without ``overwrite`` that rename only succeeds onto a missing or empty
  folder (the kernel re-checks at that instant, so of two saves racing to one folder the
  later one fails instead of replacing the first); with ``overwrite`` the two folders are
  swapped atomically (``renameat2(RENAME_EXCHANGE)``);
* a target that is a mount point (an empty volume or tmpfs root) cannot be renamed: the
  files are written into a hidden folder inside it and moved into place one by one, the
  index last, so each file is atomic but the checkpoint as a whole is not — the returned
  info's ``notes`` say so;
* temporary folders whose owner process is gone (a kill -9 mid-save) are removed at the
  next save into the same parent folder, and the notes say so.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bigviz._errors import CheckpointError
from bigviz._process import pid_alive
from bigviz.checkpoint._format import is_weight_file

__all__ = ["Stage", "fsync_path", "resolve_target", "staged", "write_text"]

_STALE = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-")


def fsync_path(path: Path) -> None:
    """fsync a file or folder by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    """Write and fsync a text file."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def resolve_target(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """The folder a checkpoint goes to, checked: a symlink is followed (the link stays), a
    file is refused, a non-empty folder is refused unless ``overwrite``.

    Raises:
        CheckpointError: naming the path and the fix.

    Example:
        >>> resolve_target("/tmp/no-such-bigviz-folder", overwrite=False).name
        'no-such-bigviz-folder'
    """
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
    if target.is_dir() and not overwrite and _visible(target):
        shown = sorted(_visible(target))[:4]
        raise CheckpointError(
            f"{target} is not empty ({', '.join(shown)}…); pass overwrite=True to replace the "
            "checkpoint there, or choose an empty folder"
        )
    return target


def _visible(folder: Path) -> list[str]:
    # our own hidden staging folder inside a mount point does not make it "not empty"
    return [p.name for p in folder.iterdir() if not _STALE.match(p.name)]


@dataclass
class Stage:
    """A checkpoint being written: put its files in :attr:`dir`; :attr:`current` names
    what is being written (for error messages); :attr:`notes` end up in the info."""

    target: Path
    dir: Path
    in_place: bool
    notes: list[str] = field(default_factory=list)
    current: str = "?"


@contextlib.contextmanager
def staged(target: Path, *, overwrite: bool) -> Iterator[Stage]:
    """Yield a :class:`Stage` to write into; publish it when the block ends normally,
    remove it (leaving the target as it was) when the block raises.

    Raises:
        CheckpointError: another save published a checkpoint at ``target`` first
            (without ``overwrite``); the target's file system refuses the swap.

    Example:
        >>> # with staged(resolve_target("ckpt", overwrite=False), overwrite=False) as st:
        >>> #     (st.dir / "model.safetensors").write_bytes(...)
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    in_place = target.is_dir() and _is_mount(target)
    where = target if in_place else target.parent
    notes = _clean_stale(where)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=where))
    # mkdtemp makes the folder 0700; give the checkpoint the mode a plain mkdir would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, target.stat().st_mode & 0o7777 if target.is_dir() else 0o777 & ~umask)
    stage = Stage(target, tmp, in_place, notes)
    try:
        yield stage
        fsync_path(tmp)
        stage.current = "(moving into place)"
        if in_place:
            _publish_in_place(tmp, target, overwrite=overwrite)
            stage.notes.append(
                f"{target} is a mount point, so the checkpoint was written inside it and each "
                "file moved into place on its own (index last): every file is atomic, the "
                "checkpoint as a whole is not (a crash can leave new shards beside old ones)"
            )
        else:
            _publish(tmp, target, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _is_mount(folder: Path) -> bool:
    try:
        return os.path.ismount(folder) or folder.stat().st_dev != folder.parent.stat().st_dev
    except OSError:
        return False


def _clean_stale(folder: Path) -> list[str]:
    """Remove temporary folders of saves whose process is gone; say what was removed."""
    removed: list[str] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            m = _STALE.match(entry.name)
            if not m or not entry.is_dir(follow_symlinks=False) or pid_alive(int(m["pid"])):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            if not os.path.exists(entry.path):
                removed.append(entry.name)
    if not removed:
        return []
    shown = ", ".join(removed[:3]) + (f", … ({len(removed)} in all)" if len(removed) > 3 else "")
    return [f"removed {len(removed)} temporary folder{'s' if len(removed) != 1 else ''} that "
            f"interrupted saves left in {folder} (their process is gone): {shown}"]


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
        if is_weight_file(entry.name) or dst.exists() or _STALE.match(entry.name):
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


def _publish(tmp: Path, target: Path, *, overwrite: bool) -> None:
    """Move the finished temporary folder into place; the old checkpoint, if any, goes away
    only after the new one is visible."""
    if overwrite and target.exists() and any(target.iterdir()):
        _carry_over(target, tmp)
        fsync_path(tmp)
        if _exchange(tmp, target):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-",
                                        dir=target.parent))
            os.rename(target, old / "ckpt")
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
    else:
        # rename() replaces a missing or EMPTY folder atomically and fails on a non-empty
        # one: the kernel re-checks "not empty" at this instant, so a save that raced us
        # and published first is never replaced
        try:
            os.rename(tmp, target)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise CheckpointError(
                f"{target} is no longer empty: another save published a checkpoint there "
                "while this one was writing; it was kept and this save was discarded (pass "
                "overwrite=True to replace it)"
            ) from e
    fsync_path(target.parent)


def _publish_in_place(tmp: Path, target: Path, *, overwrite: bool) -> None:
    """Move the files of ``tmp`` (inside the mount point ``target``) into ``target``:
    weights first, the index last, then drop old weight files the new index does not use."""
    names = sorted(os.listdir(tmp), key=lambda n: (n.endswith(".index.json"), n))
    if not overwrite and _visible(target):
        raise CheckpointError(
            f"{target} is no longer empty: another save wrote there while this one was "
            "writing; it was kept and this save was discarded (pass overwrite=True to replace)")
    old_weights = [n for n in _visible(target) if is_weight_file(n) and n not in names]
    for name in names:
        os.replace(tmp / name, target / name)
    fsync_path(target)
    for name in old_weights:
        with contextlib.suppress(FileNotFoundError):
            os.remove(target / name)
    os.rmdir(tmp)
    fsync_path(target)
