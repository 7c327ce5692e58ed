"""Checks that run before any process starts, shared by :func:`~bigviz.runner.run`,
:func:`~bigviz.runner.sweep` and the distributed launcher: each error names the value
and the fix.

Example:
    >>> check_format("bin")
    'bin'
    >>> parse_budget("8GB")
    8000000000
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from bigviz._errors import ConfigError
from bigviz.models import ModelLike, spec_name
from bigviz.options import DTYPES, FORMATS, check_nproc
from bigviz.units import parse_size

__all__ = [
    "check_dtype",
    "check_format",
    "check_interval",
    "check_ranks",
    "check_ranks_options",
    "default_work_folder",
    "model_id",
    "parse_budget",
    "shard_bytes",
    "work_folder",
]


def default_work_folder() -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME/bigviz``, else ``~/.cache/bigviz``.

    Example:
        >>> default_work_folder().name
        'bigviz'
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # the XDG spec: a relative value is invalid and must be ignored
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "bigviz"


def _check_private(p: Path, flag: str) -> None:
    """Refuse a folder another user could write into: bigviz loads the checkpoints it
    finds there (a planted one at the predictable key would be trusted)."""
    try:
        st = p.stat()
    except OSError as exc:
        raise ConfigError(f"work folder {str(p)!r} cannot be used ({exc.strerror or exc}); "
                          f"give another with {flag}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"work folder {str(p)!r} is not a folder; give a folder with {flag}")
    if st.st_uid != os.geteuid():
        raise ConfigError(
            f"work folder {str(p)!r} belongs to another user (uid {st.st_uid}), who could "
            f"plant checkpoints there; use a folder of your own ({flag} DIR, default "
            "~/.cache/bigviz)")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"work folder {str(p)!r} is writable by other users (mode "
            f"{stat.S_IMODE(st.st_mode):o}), who could plant checkpoints there; run "
            f"`chmod go-w {p}` or use a folder only you can write ({flag} DIR)")


def work_folder(work_dir: str | os.PathLike[str] | None, *, flag: str = "--work-dir") -> Path:
    """The work folder, created (mode 0700) if missing: ``work_dir``, or the per-user
    cache folder :func:`default_work_folder` (``$XDG_CACHE_HOME/bigviz``).

    Checkpoints bigviz finds in it are loaded, so a folder another user owns or may
    write into (``/tmp`` itself, a group-writable share) is refused, as are its
    ``checkpoints`` and ``runs`` subfolders.

    Raises:
        ConfigError: the folder (or a subfolder) is owned by another user or writable
            by others, or cannot be made; naming the folder and the fix.

    Example:
        >>> import tempfile
        >>> work_folder(tempfile.mkdtemp()).is_dir()
        True
    """
    p = Path(work_dir).expanduser() if work_dir is not None else default_work_folder()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"work folder {str(p)!r} cannot be made ({exc.strerror or exc}); "
                          f"give another with {flag}") from None
    _check_private(p, flag)
    for sub in ("checkpoints", "runs"):
        try:
            (p / sub).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"work folder {str(p)!r}: cannot make {sub}/ "
                              f"({exc.strerror or exc}); give another with {flag}") from None
        _check_private(p / sub, flag)
    return p


def model_id(model: ModelLike) -> str:
    """The text that names a model in results: a spec, or a factory's import path."""
    if callable(model) and not isinstance(model, str):
        return spec_name(model)
    return str(model)


def check_format(fmt: str) -> str:
    """Raise ConfigError unless ``fmt`` is a checkpoint format bigviz writes."""
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r} is not supported; use 'safetensors' or 'bin'")
    return fmt


def check_dtype(dtype: str) -> str:
    """Raise ConfigError unless ``dtype`` is a dtype the model zoo builds."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not supported; use one of {list(DTYPES)}")
    return dtype


def parse_budget(ram_budget: int | str | None) -> int | None:
    """The RAM budget in bytes (``None``: no budget)."""
    if ram_budget is None:
        return None
    if isinstance(ram_budget, str) and ram_budget.strip().startswith("-"):
        raise ConfigError(f"ram_budget {ram_budget!r} must be a positive size like '8GB'")
    b = parse_size(ram_budget)
    if b <= 0:
        raise ConfigError(f"ram_budget {ram_budget!r} must be a positive size like '8GB'")
    return b


def shard_bytes(size: int | str) -> int:
    """A max shard size in bytes; zero and negative sizes are refused.

    Raises:
        ConfigError: naming the size ("must be positive").

    Example:
        >>> shard_bytes("20MB")
        20000000
    """
    if isinstance(size, str) and size.strip().startswith("-"):
        raise ConfigError(f"shard size {size!r} must be positive, e.g. '200MB'")
    n = parse_size(size)
    if n <= 0:
        raise ConfigError(f"shard size {size!r} must be positive, e.g. '200MB' (0 would "
                          "give every tensor a file of its own)")
    return n


def check_interval(interval_ms: Any) -> float:
    """Raise ConfigError unless ``interval_ms`` is a positive number."""
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, (int, float)) \
            or interval_ms <= 0:
        raise ConfigError(f"interval_ms must be a positive number, got {interval_ms!r}")
    return float(interval_ms)


def check_ranks(nproc: Any, model: Any) -> None:
    """What every distributed launch needs: a rank count, and a model a rank can import."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"nproc {nproc!r} must be a whole number of ranks >= 1, e.g. nproc=2")
    check_nproc(nproc)  # nproc=1000 on two cores is a typo, not a measurement
    if not isinstance(model, str):
        raise ConfigError(f"model {model!r}: distributed ranks are separate programs, so pass "
                          "a spec string ('gpt:1GB') or 'package.module:function'")


def check_ranks_options(nproc: Any, device_map: Any, max_memory: Any, model: Any) -> None:
    """:func:`check_ranks`, and no single-process options with ``nproc``."""
    check_ranks(nproc, model)
    if device_map not in ("cpu", None) or max_memory:
        raise ConfigError(
            f"device_map={device_map!r} / max_memory={max_memory!r} apply to single-process "
            "runs; distributed ranks load on CPU (gloo) or each on its own GPU (NCCL): "
            "leave them out with nproc"
        )
