"""A synthetic model zoo sized by bytes, built from config with no downloads.

Specs:

=============================  =========================================================
``"gpt:1GB"``                  GPT-2-shaped decoder (embedding, N attention+MLP blocks,
                               head tied to the embedding), width and depth chosen so the
                               unique parameter bytes land on the target
``"mlp:500MB"``                a stack of square ``Linear`` layers
``"bert-base"``                BERT-base encoder shapes (108.9 M parameters, no pooler)
``"package.module:function"``  a user factory, called with no arguments
a callable                     the same, passed directly (must be importable by name so
                               a worker process can find it)
``"./checkpoint"``             a checkpoint folder on disk: a Transformers folder is built
                               from its ``config.json``; any other takes a ``factory``
``"hf:ORG/NAME[@REVISION]"``   a model in the local Hugging Face cache (never downloaded)
=============================  =========================================================

The ``gpt`` model uses GPT-2's parameter names and shapes, so its checkpoints load in
Transformers' ``GPT2LMHeadModel`` too (see :func:`transformers_config`).

Random init of a 4 GB model takes ~20 s, most of it in ``kaiming_uniform_``. The zoo
therefore builds on the ``meta`` device (milliseconds) and :func:`materialize` fills the
weights with a fast seeded pattern: a random block per tensor, tiled by ``memcpy``.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import re
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigviz._errors import ConfigError
from bigviz.models.folders import (
    is_folder_spec,
    read_config,
    resolve_folder,
    skeleton_from_config,
)
from bigviz.models.zoo import NO_SPLIT, zoo_classes
from bigviz.units import parse_size

if TYPE_CHECKING:  # torch is imported lazily: `import bigviz` must stay cheap
    import torch
    from torch import nn

__all__ = [
    "DTYPES",
    "NO_SPLIT",
    "FactoryError",
    "ModelSpec",
    "build_model",
    "materialize",
    "model_bytes",
    "parse_spec",
    "spec_name",
    "transformers_config",
]

#: dtype names accepted by the zoo, with their size in bytes.
DTYPES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}

ModelLike = str | Callable[[], Any]

_VALID_FORMS = (
    "'gpt:<size>' (e.g. 'gpt:1GB'), 'mlp:<size>' (e.g. 'mlp:500MB'), 'bert-base', "
    "'package.module:function' (a factory returning an nn.Module), a checkpoint folder "
    "('./ckpt'), 'hf:ORG/NAME' from the local Hugging Face cache, or a callable"
)
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

# BERT-base (Devlin et al. 2018; Transformers' BertModel without the pooler).
_BERT_BASE = {"vocab": 30522, "hidden": 768, "layers": 12, "intermediate": 3072, "positions": 512}


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: which architecture and its shape parameters.

    Example:
        >>> parse_spec("mlp:10MB").kind
        'mlp'
    """

    kind: str  # "gpt", "mlp", "bert", "factory", "folder"
    spec: str
    target_bytes: int | None = None
    config: dict[str, int] = field(default_factory=dict)
    factory: str | None = None
    path: str | None = None  # kind "folder": the resolved folder holding the weights


def spec_name(model: ModelLike) -> str:
    """A printable name for a spec or factory (``"gpt:1GB"``, ``"mypkg.models:make"``)."""
    if isinstance(model, str):
        return model
    mod = getattr(model, "__module__", None)
    qual = getattr(model, "__qualname__", None)
    if mod and qual:
        return f"{mod}:{qual}"
    return repr(model)


def parse_spec(
    model: ModelLike, dtype: str | None = "float32", *, factory: str | None = None
) -> ModelSpec:
    """Parse a model spec, checking it fully before anything is built.

    Args:
        model: a zoo spec (``"gpt:1GB"``, ``"mlp:500MB"``, ``"bert-base"``), a factory
            path ``"package.module:function"``, a callable, a checkpoint folder or
            ``"hf:ORG/NAME[@REVISION]"`` (local cache only).
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``; zoo shapes are chosen so
            the bytes in this dtype hit the target (``None``: float32).
        factory: for a folder without ``config.json``, the ``"package.module:function"``
            that builds its model.

    Returns:
        The :class:`ModelSpec`.

    Raises:
        ConfigError: naming the bad spec and listing the valid forms.

    Example:
        >>> parse_spec("gpt:100MB").config["layers"] >= 1
        True
    """
    if factory is not None and (not isinstance(factory, str) or not _FACTORY_RE.match(factory)):
        raise ConfigError(f"factory {factory!r} is not valid; use 'package.module:function'")
    if callable(model) and not isinstance(model, str):
        name = spec_name(model)
        if "<lambda>" in name or "<locals>" in name:
            raise ConfigError(
                f"model factory {name} cannot be found by name in a worker process; "
                "define it at module level and pass it or 'package.module:function'"
            )
        _itemsize(dtype or "float32")
        return ModelSpec(kind="factory", spec=name, factory=name)
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"model spec {model!r} is not valid; use {_VALID_FORMS}")
    text = model.strip()
    if factory is not None and not is_folder_spec(text):
        raise ConfigError(f"factory {factory!r} goes with a checkpoint folder; model {text!r} "
                          "is not one (give a factory alone as the model)")
    if text == "bert-base":
        _itemsize(dtype or "float32")
        return ModelSpec(kind="bert", spec=text, config=dict(_BERT_BASE))
    kind, sep, rest = text.partition(":")
    if sep and kind in ("gpt", "mlp"):
        itemsize = _itemsize(dtype or "float32")
        try:
            target = parse_size(rest)
        except ConfigError as exc:
            raise ConfigError(
                f"model spec {text!r}: bad size {rest!r} ({exc}); use {_VALID_FORMS}"
            ) from exc
        n_params = target // itemsize
        if target < 1_000_000:
            raise ConfigError(
                f"model spec {text!r} is too small ({target} bytes); use at least '1MB'"
            )
        cfg = _gpt_config(n_params) if kind == "gpt" else _mlp_config(n_params)
        return ModelSpec(kind=kind, spec=text, target_bytes=target, config=cfg)
    if is_folder_spec(text):
        folder = resolve_folder(text)
        return ModelSpec(kind="folder", spec=text, factory=factory, path=str(folder))
    if _FACTORY_RE.match(text) and kind not in ("gpt", "mlp"):
        _itemsize(dtype or "float32")
        return ModelSpec(kind="factory", spec=text, factory=text)
    raise ConfigError(f"model spec {text!r} is not valid; use {_VALID_FORMS}")


def _itemsize(dtype: str) -> int:
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not supported; use one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def _gpt_params(c: dict[str, int]) -> int:
    d, n_layers = c["width"], c["layers"]
    block = 12 * d * d + 13 * d  # c_attn 3d²+3d, c_proj d²+d, c_fc 4d²+4d, mlp proj 4d²+d, 2 LN 4d
    return (c["vocab"] + c["positions"]) * d + n_layers * block + 2 * d


def _gpt_config(n_params: int) -> dict[str, int]:
    # Depth and width grow together (width ≈ 64 × layers, between GPT-2 small and the
    # 20 × 2048 model of ANCHORS.md); about 90 % of the bytes sit in the blocks.
    layers = max(1, round((0.9 * n_params / (12 * 64 * 64)) ** (1 / 3)))
    width = max(64, int(math.sqrt(0.9 * n_params / (12 * layers))) // 64 * 64)
    positions = 1024 if 1024 * width <= 0.05 * n_params else 64
    while layers > 1 and layers * (12 * width * width + 13 * width) > 0.95 * n_params:
        layers -= 1
    cfg = {"width": width, "layers": layers, "heads": max(1, width // 64), "positions": positions}
    # The vocabulary absorbs the rest, so the total lands within one row of the target.
    fixed = _gpt_params({**cfg, "vocab": 0})
    cfg["vocab"] = max(16, (n_params - fixed) // width)
    return cfg


def _mlp_config(n_params: int) -> dict[str, int]:
    # At least 4 layers so there is something to shard; at most 4096 wide.
    layers = max(4, math.ceil(n_params / (4096 * 4097)))
    width = int(math.sqrt(n_params / layers))
    while layers * (width * width + width) > n_params:
        width -= 1
    return {"width": width, "layers": layers}


def _param_count(spec: ModelSpec) -> int:
    c = spec.config
    if spec.kind == "gpt":
        return _gpt_params(c)
    if spec.kind == "mlp":
        return c["layers"] * (c["width"] ** 2 + c["width"])
    if spec.kind == "bert":
        h, i = c["hidden"], c["intermediate"]
        emb = (c["vocab"] + c["positions"] + 2) * h + 2 * h
        layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
        return emb + c["layers"] * layer
    raise AssertionError(spec.kind)


def model_bytes(
    model: ModelLike, dtype: str | None = "float32", *, factory: str | None = None
) -> int:
    """Unique parameter bytes of a model (tied weights counted once), without building it.

    Zoo specs are computed from their shapes; a factory is built on the meta device; a
    checkpoint folder counts its files' unique tensor bytes as saved (``dtype`` ignored).

    Raises:
        ConfigError: for a bad spec or dtype.

    Example:
        >>> abs(model_bytes("gpt:100MB") - 100_000_000) < 100_000
        True
    """
    spec = parse_spec(model, dtype, factory=factory)
    if spec.kind == "folder":
        from bigviz.checkpoint import inspect_checkpoint

        return int(inspect_checkpoint(spec.path or "").total_size)
    if spec.kind != "factory":
        return _param_count(spec) * DTYPES[dtype or "float32"]
    m = build_model(model, dtype=dtype, device="meta")
    unique = {id(t): t for t in [*m.parameters(), *m.buffers()]}  # a tied tensor once
    return sum(t.numel() * t.element_size() for t in unique.values())


class FactoryError(ConfigError):
    """A user factory (``package.module:function``) raised: the message is its last line,
    ``details`` the traceback (``bigviz … --verbose`` prints it)."""

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.details = details


def _call_factory(fn: Callable[[], Any], name: str) -> Any:
    import traceback

    try:
        return fn()
    except Exception as exc:
        last = " ".join(str(exc).split())[:300]
        raise FactoryError(
            f"model factory {name!r} raised {type(exc).__name__}"
            + (f": {last}" if last else "") + "; fix the factory (--verbose shows where)",
            "".join(traceback.format_exception(exc))) from exc


def _load_factory(path: str) -> Callable[[], Any]:
    """Import a ``"package.module:function"`` factory: this IMPORTS AND RUNS user code.

    The module is looked up on ``sys.path`` and then, last, in the working directory
    (after the standard library and installed packages, so a file there can provide
    a factory but never shadow a library; bigviz's child interpreters search it last too).
    """
    mod_name, _, attr = path.partition(":")
    try:
        obj: Any = _import_searching_cwd_last(mod_name)
    except ImportError as exc:
        raise ConfigError(
            f"model factory {path!r}: cannot import {mod_name!r} ({exc}); put the module "
            "on sys.path (PYTHONPATH) or in the working directory"
        ) from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"model factory {path!r}: {mod_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"model factory {path!r} is not callable")
    return obj  # type: ignore[no-any-return]


def _import_searching_cwd_last(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        if exc.name != name.split(".")[0] or cwd in sys.path:
            raise
        sys.path.append(cwd)  # last: it must never shadow a library
        try:
            return importlib.import_module(name)
        finally:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)


def build_model(
    model: ModelLike,
    *,
    dtype: str | None = "float32",
    device: str = "cpu",
    seed: int = 0,
    factory: str | None = None,
) -> nn.Module:
    """Build a zoo model, call a factory, or build a checkpoint folder's skeleton, on
    ``"meta"`` (no memory) or ``"cpu"``.

    On ``"cpu"`` the weights are filled by :func:`materialize` (fast, seeded), not by
    the layers' own random init: the content only has to be deterministic and varied.

    Args:
        model: a spec or factory (see :func:`parse_spec`).
        dtype: parameter dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``; ``None``
            keeps a folder's dtype (its config's) and means float32 for the zoo.
        device: ``"meta"`` or ``"cpu"``.
        seed: seed of the fill pattern.
        factory: for a checkpoint folder, the ``"package.module:function"`` that builds
            its model (needed when the folder has no ``config.json``).

    Returns:
        The ``nn.Module`` (in eval mode).

    Raises:
        ConfigError: for a bad spec, dtype or device, or a factory that does not return
            an ``nn.Module``.

    Example:
        >>> m = build_model("mlp:1MB", device="meta")
        >>> next(m.parameters()).is_meta
        True
    """
    import torch
    from torch import nn

    spec = parse_spec(model, dtype, factory=factory)
    if device not in ("meta", "cpu"):
        raise ConfigError(f"build_model device {device!r} is not supported; use 'meta' or 'cpu'")
    if spec.kind == "folder" and spec.factory is None:
        made: Any = skeleton_from_config(Path(spec.path or ""), spec.spec, dtype)
    else:
        with torch.device("meta"):
            if spec.kind in ("factory", "folder"):
                fn = model if callable(model) and not isinstance(model, str) else None
                made = _call_factory(fn or _load_factory(spec.factory or ""),
                                     spec.factory or spec.spec)
            else:
                made = zoo_classes()[spec.kind](spec.config)
    if not isinstance(made, nn.Module):
        raise ConfigError(
            f"model factory {spec.factory or spec.spec!r} returned {type(made).__name__}, "
            "not an nn.Module"
        )
    built: nn.Module = made
    # a config-built skeleton already has its dtype (set at construction, so buffers the
    # architecture keeps in float32, like rotary frequencies, stay as Transformers makes them)
    from_config = spec.kind == "folder" and spec.factory is None
    if not from_config and (dtype is not None or spec.kind != "folder"):
        built = built.to(_torch_dtype(dtype or "float32", spec.spec))
    built = built.eval()
    tie = getattr(built, "tie_weights", None)
    if callable(tie):
        tie()
    if device == "cpu":
        materialize(built, seed=seed)
    return built


def _torch_dtype(name: str, spec: str) -> torch.dtype:
    import torch

    found = getattr(torch, name, None)
    if not isinstance(found, torch.dtype):
        raise ConfigError(f"dtype {name!r} of model {spec!r} is not a torch dtype; "
                          f"use one of {sorted(DTYPES)}")
    return found


def _fill(t: torch.Tensor, name: str, seed: int) -> None:
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    flat = t.detach().view(-1)
    n = flat.numel()
    block_n = min(n, 1 << 18)
    block = (torch.randn(block_n, generator=g) * 0.02).to(t.dtype)
    whole = n // block_n * block_n
    if whole:
        flat[:whole].view(-1, block_n).copy_(block.expand(whole // block_n, block_n))
    if whole < n:
        flat[whole:].copy_(block[: n - whole])


def materialize(model: nn.Module, *, seed: int = 0, device: str = "cpu") -> nn.Module:
    """Give a meta-device model real storage and a fast deterministic fill.

    Each tensor gets a random block (seeded by ``seed`` and its name) repeated to its
    size, so a 4 GB model fills at memory bandwidth rather than in ~20 s of random init.
    Tied weights stay tied.

    Returns:
        The same model, now on ``device``.

    Example:
        >>> m = materialize(build_model("mlp:1MB", device="meta"))
        >>> float(next(m.parameters()).detach().abs().sum()) > 0
        True
    """
    import torch

    # buffers that already hold data (a config-built skeleton computes its non-persistent
    # buffers, e.g. rotary frequencies or position ids, on the CPU) keep their values:
    # to_empty would leave them uninitialised and no checkpoint restores them
    real = {n: b for n, b in model.named_buffers(remove_duplicate=True) if not b.is_meta}
    model.to_empty(device=device)
    for name, value in real.items():
        model.get_buffer(name).copy_(value)
    tie = getattr(model, "tie_weights", None)
    if callable(tie):
        tie()
    done: set[int] = set()
    with torch.no_grad():
        named: list[tuple[str, torch.Tensor]] = list(model.named_parameters(remove_duplicate=True))
        named += list(model.named_buffers(remove_duplicate=True))
        for name, t in named:
            if id(t) in done or t.numel() == 0 or name in real:
                continue
            done.add(id(t))
            if t.is_floating_point():
                _fill(t, name, seed)
            else:
                t.zero_()
    return model


def transformers_config(model: ModelLike, dtype: str = "float32") -> dict[str, Any] | None:
    """A Transformers ``config.json`` (GPT-2) for a ``gpt:`` spec, a folder's own
    ``config.json``, else ``None``.

    The zoo's GPT uses GPT-2's names and shapes, so ``GPT2LMHeadModel.from_pretrained``
    loads its checkpoints with this config written beside them.

    Example:
        >>> transformers_config("gpt:10MB")["model_type"]
        'gpt2'
    """
    spec = parse_spec(model, dtype)
    if spec.kind == "folder":
        return read_config(Path(spec.path or ""))
    if spec.kind != "gpt":
        return None
    c = spec.config
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c["vocab"],
        "n_positions": c["positions"],
        "n_embd": c["width"],
        "n_layer": c["layers"],
        "n_head": c["heads"],
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "dtype": dtype,
    }
