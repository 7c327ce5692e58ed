"""Checkpoints already on disk as models: a local folder or ``hf:ORG/NAME[@REVISION]``.

A Transformers folder (``config.json`` plus ``model.safetensors`` or shards plus an index,
or ``.bin`` files) is built from its config on the meta device with the class named in
``config.json``'s ``architectures``; any other folder that
:func:`~bigviz.checkpoint.inspect_checkpoint` reads takes a factory
(``"package.module:function"``) that builds the skeleton.

``hf:`` ids are resolved in the local Hugging Face cache only, in huggingface_hub's own
layout (``$HF_HUB_CACHE`` or ``$HF_HOME/hub``: ``models--ORG--NAME/refs/REVISION`` holds
a commit hash, ``snapshots/HASH/`` the files). bigviz never downloads: a model that is not
cached is a one-line error saying how to fetch it.

Example:
    >>> is_folder_spec("hf:gpt2"), is_folder_spec("gpt:1GB")
    (True, False)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigviz._errors import ConfigError

if TYPE_CHECKING:  # torch is imported lazily: `import bigviz` must stay cheap
    from torch import nn

__all__ = [
    "HF_PREFIX",
    "hub_cache_dir",
    "is_folder_spec",
    "read_config",
    "resolve_folder",
    "resolve_hf",
    "skeleton_from_config",
    "transformers_class",
]

#: prefix of a Hugging Face id resolved from the local cache
HF_PREFIX = "hf:"

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder, resolved as huggingface_hub resolves it.

    ``$HF_HUB_CACHE``, else the legacy ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``,
    where ``$HF_HOME`` defaults to ``$XDG_CACHE_HOME/huggingface`` (``~/.cache``).

    Example:
        >>> hub_cache_dir().name
        'hub'
    """
    home = os.getenv("HF_HOME") or os.path.join(
        os.getenv("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface",
    )
    home = os.path.expandvars(os.path.expanduser(home))
    legacy = os.getenv("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(os.getenv("HF_HUB_CACHE") or legacy)))


def is_folder_spec(text: str) -> bool:
    """Whether a model spec names files on disk (``hf:…``, a path, an existing folder).

    Example:
        >>> is_folder_spec("./ckpt"), is_folder_spec("mypkg.models:build")
        (True, False)
    """
    if text.startswith(HF_PREFIX):
        return True
    if text.startswith(("/", "./", "../", "~")) or text in (".", ".."):
        return True
    return (os.sep in text and ":" not in text) or Path(text).is_dir()


def resolve_hf(ref: str) -> Path:
    """The snapshot folder of ``hf:ORG/NAME[@REVISION]`` in the local cache.

    ``REVISION`` is a branch or tag (looked up in ``refs/``) or a 40-hex commit hash;
    the default is ``main``.

    Raises:
        ConfigError: a malformed id, or a model (or revision) that is not cached —
            the message says how to fetch it; bigviz never downloads.

    Example:
        >>> # resolve_hf("hf:gpt2@main") -> ~/.cache/huggingface/hub/models--gpt2/snapshots/<hash>
    """
    body = ref[len(HF_PREFIX):] if ref.startswith(HF_PREFIX) else ref
    repo, _, revision = body.partition("@")
    revision = revision or "main"
    if not _REPO_ID.match(repo) or ".." in repo:
        raise ConfigError(
            f"model {ref!r}: {repo!r} is not a Hugging Face model id; use hf:ORG/NAME[@REVISION]"
        )
    cache = hub_cache_dir()
    storage = cache / ("models--" + repo.replace("/", "--"))
    fetch = (f"bigviz never downloads: fetch it first with `hf download {repo}"
             f"{'' if revision == 'main' else ' --revision ' + revision}` "
             f"(needs network and, for gated models, an accepted licence), or set HF_HUB_CACHE "
             f"to the cache that holds it")
    if not storage.is_dir():
        raise ConfigError(f"model {ref!r} is not in the local Hugging Face cache ({cache}); "
                          + fetch)
    commit = revision if _COMMIT.match(revision) else None
    if commit is None:
        ref_file = storage / "refs" / revision
        try:
            commit = ref_file.read_text(encoding="utf-8").strip()
        except OSError:
            raise ConfigError(
                f"model {ref!r}: revision {revision!r} is not in the local cache ({storage}); "
                + fetch
            ) from None
    snap = storage / "snapshots" / commit
    if not _COMMIT.match(commit) or not snap.is_dir():
        raise ConfigError(
            f"model {ref!r}: the cache names commit {commit!r} but holds no snapshot of it "
            f"({snap}); " + fetch
        )
    return snap


def resolve_folder(text: str) -> Path:
    """The folder a folder spec names, checked to hold weights.

    Raises:
        ConfigError: the folder does not exist or holds no weight files.

    Example:
        >>> # resolve_folder("./my-checkpoint") -> Path(".../my-checkpoint")
    """
    path = resolve_hf(text) if text.startswith(HF_PREFIX) else Path(text).expanduser()
    if not path.exists():
        raise ConfigError(f"model folder {text!r} does not exist; give a checkpoint folder, "
                          "an hf:ORG/NAME id from the local cache, or a zoo spec like 'gpt:1GB'")
    if not path.is_dir():
        raise ConfigError(f"model {text!r} is a file, not a folder; give the folder that "
                          "holds the weights (and config.json)")
    try:
        names = [p.name for p in path.iterdir()]
    except OSError as exc:
        raise ConfigError(f"model folder {text!r} cannot be read: {exc.strerror}") from exc
    if not any(n.endswith(_WEIGHT_SUFFIXES) for n in names):
        raise ConfigError(f"model folder {text!r} holds no weights (no *.safetensors or *.bin "
                          "file); point at the folder save_pretrained or bigviz wrote")
    return path.resolve()


def read_config(folder: Path) -> dict[str, Any] | None:
    """The folder's ``config.json`` as a dict, or ``None`` when there is none.

    Raises:
        ConfigError: a ``config.json`` that is not a JSON object.

    Example:
        >>> read_config(Path("/nonexistent")) is None
        True
    """
    path = folder / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); fix or re-save the config") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object; fix or re-save the config")
    return data


def transformers_class(folder: Path, spec: str | None = None) -> Any:
    """The Transformers model class a folder's ``config.json`` names (``architectures[0]``).

    Raises:
        ConfigError: no config.json (pass a factory), no ``architectures`` entry,
            Transformers missing, or an architecture it does not know.

    Example:
        >>> # transformers_class(Path("gpt2-folder")).__name__ -> 'GPT2LMHeadModel'
    """
    spec = spec or str(folder)
    cfg = read_config(folder)
    if cfg is None:
        raise ConfigError(
            f"model folder {spec!r} has no config.json, so bigviz cannot build the model; "
            "pass a factory that builds it (--factory package.module:function)"
        )
    archs = cfg.get("architectures")
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise ConfigError(
            f"{folder / 'config.json'} names no architecture ('architectures' is missing); "
            "pass a factory (--factory package.module:function)"
        )
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            f"model folder {spec!r} is a Transformers checkpoint ({archs[0]}) but Transformers "
            "is not installed; pip install transformers, or pass a factory"
        ) from None
    try:
        cls = getattr(transformers, archs[0], None)
    except Exception:  # a lazy module that fails to import (a missing extra)
        cls = None
    if cls is None:
        raise ConfigError(
            f"architecture {archs[0]!r} of {spec!r} is unknown to the installed Transformers "
            f"{transformers.__version__}; upgrade transformers or pass a factory"
        )
    return cls


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Parameters go to the meta device as they are registered; buffers stay real.

    This is Accelerate's ``init_empty_weights()`` (``include_buffers=False``), without
    needing Accelerate: buffers an architecture computes in ``__init__`` and never saves
    (rotary frequencies, ``position_ids``) keep their values, which no checkpoint could
    restore, while no parameter memory is ever touched (``torch.empty`` before the move).
    """
    import torch
    from torch import nn

    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        held = module._parameters[name]
        if held is not None and not held.is_meta:
            kwargs = dict(held.__dict__)
            kwargs["requires_grad"] = held.requires_grad
            module._parameters[name] = type(held)(held.to(torch.device("meta")), **kwargs)

    nn.Module.register_parameter = register  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def skeleton_from_config(folder: Path, spec: str, dtype: str | None) -> nn.Module:
    """Build the model of a Transformers folder with its parameters on the meta device.

    The class is ``config.json``'s first ``architectures`` entry, looked up in the
    installed Transformers; ``dtype`` (``None``: the config's ``dtype``/``torch_dtype``,
    else float32) is the parameters' dtype. Buffers the architecture computes (and never
    saves) are real, as with Accelerate's ``init_empty_weights()``.

    Raises:
        ConfigError: no config.json (pass a factory), no ``architectures`` entry,
            Transformers missing, or an architecture it does not know.

    Example:
        >>> # skeleton_from_config(Path("ckpt"), "ckpt", None) -> GPT2LMHeadModel on meta
    """
    cls = transformers_class(folder, spec)
    import torch
    import transformers

    cfg = read_config(folder) or {}
    config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    name = dtype or _config_dtype(cfg) or "float32"
    torch_dtype = getattr(torch, name, None)
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        raise ConfigError(f"dtype {name!r} for {spec!r} is not a floating torch dtype; "
                          "use float32, bfloat16 or float16")
    default = torch.get_default_dtype()
    try:
        # the default dtype decides the parameters' dtype at construction: no cast later
        torch.set_default_dtype(torch_dtype)
        with _parameters_on_meta():
            model: nn.Module = cls(config)
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def _config_dtype(cfg: dict[str, Any]) -> str | None:
    value = cfg.get("dtype", cfg.get("torch_dtype"))
    if value in ("float32", "bfloat16", "float16"):
        return str(value)
    return None
